/**
 * Every public verbs call rejects bad arguments with a TypeError or
 * RangeError whose message names the argument (never a crash). Errors made
 * by the addon come from the main realm, so they are matched by name.
 */
import { Access, CmId, openDevice, Udmabuf } from '../../lib';
import { loopback, Loopback } from './helpers';

const typeErr = (re: RegExp) => expect.objectContaining({ name: 'TypeError', message: expect.stringMatching(re) });
const rangeErr = (re: RegExp) => expect.objectContaining({ name: 'RangeError', message: expect.stringMatching(re) });

let l: Loopback;
beforeAll(() => {
  l = loopback('rxe0');
});
afterAll(() => l.close());

test('openDevice / Device', () => {
  expect(() => openDevice(undefined as never)).toThrow(typeErr(/name/));
  expect(() => openDevice('nope0')).toThrow(expect.objectContaining({ code: 'ENODEV' }));
  expect(() => l.dev.queryPort(0)).toThrow(rangeErr(/port/));
  expect(() => l.dev.queryPort(1.5)).toThrow(rangeErr(/port/));
  expect(() => l.dev.queryPort('1' as never)).toThrow(typeErr(/port/));
  expect(() => l.dev.createCompletionQueue({ cqe: 0 })).toThrow(rangeErr(/cqe/));
  expect(() => l.dev.createCompletionQueue({ batch: 0 })).toThrow(rangeErr(/batch/));
});

test('ProtectionDomain', () => {
  const pd = l.pd;
  expect(() => pd.allocate(0)).toThrow(rangeErr(/size/));
  expect(() => pd.allocate('1' as never)).toThrow(typeErr(/size/));
  expect(() => pd.registerMemory('abc' as never)).toThrow(typeErr(/buffer/));
  expect(() => pd.registerMemory(new Uint8Array(0))).toThrow(rangeErr(/buffer must not be empty/));
  expect(() => pd.registerMemory(new Uint8Array(8), -1)).toThrow(rangeErr(/access/));
  expect(() => pd.registerMemory(new Uint8Array(8), 1 << 30)).toThrow(rangeErr(/access has unknown bits/));
  // REMOTE_WRITE without LOCAL_WRITE: the verb itself refuses (EINVAL)
  expect(() => pd.registerMemory(new Uint8Array(8), Access.REMOTE_WRITE)).toThrow(expect.objectContaining({ code: 'EINVAL', syscall: 'ibv_reg_mr' }));
  expect(() => pd.registerDmabuf(null as never)).toThrow(typeErr(/range/));
  expect(() => pd.registerDmabuf({ fd: 3, length: 0 })).toThrow(rangeErr(/length/));
  expect(() => pd.allocMemoryWindow(0 as 1)).toThrow(rangeErr(/type/));
  expect(() => pd.createQueuePair(null as never)).toThrow(typeErr(/init/));
  expect(() => pd.createQueuePair({ sendCq: {} as never, recvCq: l.cqA })).toThrow(typeErr(/sendCq/));
  expect(() => pd.createQueuePair({ sendCq: l.cqA, recvCq: l.cqA, type: 'XRC' as never })).toThrow(typeErr(/type/));
  expect(() => pd.createQueuePair({ sendCq: l.cqA, recvCq: l.cqA, maxSendWr: 0 })).toThrow(rangeErr(/maxSendWr/));
  expect(() => pd.createSharedReceiveQueue({ maxWr: -2 })).toThrow(rangeErr(/maxWr/));
});

test('MemoryRegion / MemoryWindow / Udmabuf', () => {
  const mr = l.pd.registerMemory(l.pd.allocate(4096));
  expect(() => mr.sge(-1)).toThrow(rangeErr(/offset/));
  expect(() => mr.sge(0, 4097)).toThrow(rangeErr(/length/));
  expect(() => mr.advise('NOPE' as never)).toThrow(typeErr(/advice/));
  expect(() => mr.advise('PREFETCH')).toThrow(expect.objectContaining({ code: 'EOPNOTSUPP', syscall: 'ibv_advise_mr' }));
  expect(() => new Udmabuf(100)).toThrow(rangeErr(/multiple of the page size/));
  expect(() => new Udmabuf('x' as never)).toThrow(typeErr(/size/));
  const mw = l.pd.allocMemoryWindow(1);
  expect(() => mw.bind({ handle: {} } as never, mr)).toThrow(typeErr(/qp must be a QueuePair/));
  // a wrong native object reaching the addon is refused by its type tag
  expect(() => (mw as any).handle.bind(mr.handle, mr.handle, 0, 0, 0, 0, 0)).toThrow(typeErr(/qp must be a QueuePair/));
  mr.close();
  mw.close();
  expect(() => mr.sge()).toThrow(expect.objectContaining({ code: 'ECLOSED' }));
  expect(() => mw.bind(l.b, null)).toThrow(expect.objectContaining({ code: 'ECLOSED' }));
});

test('QueuePair / SharedReceiveQueue', () => {
  expect(() => l.a.modify({ qpState: 'FLYING' as never })).toThrow(typeErr(/qpState/));
  expect(() => l.a.modify({})).toThrow(typeErr(/no attribute/));
  expect(() => l.a.modify({ pathMtu: 1000 as never })).toThrow(rangeErr(/pathMtu/));
  expect(() => l.a.modify({ ahAttr: { grh: { dgid: 'zzz' } } })).toThrow(typeErr(/dgid/));
  expect(() => l.a.connectTo(null as never)).toThrow(typeErr(/remote/));
  expect(() => l.a.postRecv({} as never)).toThrow(typeErr(/wrs/));
  expect(() => l.a.postRecv([{ sge: [{ addr: 1, length: -1, lkey: 1 }] }])).toThrow(rangeErr(/sge.length/));
  expect(() => l.a.postSend([{ opcode: 'SEND', sge: 'x' as never }])).toThrow(typeErr(/sge/));
  expect(() => l.a.postSend([{ opcode: 'SEND_WITH_IMM' }])).toThrow(typeErr(/imm/));
  expect(() => l.a.postSend([{ opcode: 'ATOMIC_CMP_AND_SWP', remoteAddr: 0, rkey: 0, compareAdd: 1 }])).toThrow(typeErr(/swap/));
  expect(() => l.a.postSend([{ opcode: 'LOCAL_INV' }])).toThrow(typeErr(/invalidateRkey/));
  expect(() => l.a.postSend([{ opcode: 'RDMA_READ', remoteAddr: -5, rkey: 1 }])).toThrow(rangeErr(/remoteAddr/));
  expect(() => l.a.postSend([{ opcode: 'RDMA_READ', remoteAddr: 2n ** 64n, rkey: 1 }])).toThrow(rangeErr(/remoteAddr/));
  const srq = l.pd.createSharedReceiveQueue();
  expect(() => srq.postRecv(5 as never)).toThrow(typeErr(/wrs/));
  expect(() => srq.setLimit(-1)).toThrow(rangeErr(/limit/));
  srq.close();
});

test('CmId', () => {
  const id = CmId.create();
  try {
    expect(() => id.resolveAddr('10.99.1.1', 1, { timeoutMs: 0 })).toThrow(rangeErr(/timeoutMs/));
    expect(() => id.resolveRoute(-1)).toThrow(rangeErr(/timeoutMs/));
    expect(() => id.listen('10.99.1.1', 1, -1)).toThrow(rangeErr(/backlog/));
    expect(() => id.connect({ privateData: 'x' as never })).toThrow(typeErr(/privateData/));
    expect(() => id.connect({ privateData: new Uint8Array(300) })).toThrow(rangeErr(/privateData/));
    expect(() => id.connect({ retryCount: 8 })).toThrow(rangeErr(/retryCount/));
    expect(() => id.reject('no' as never)).toThrow(typeErr(/privateData/));
  } finally {
    id.close();
  }
});
