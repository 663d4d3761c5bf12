/**
 * Audit of argument checking in every public function of lib/verbs and
 * lib/p2p (complements verbs-args.test.ts): bad arguments must be refused
 * with a TypeError or RangeError whose message names the argument, never a
 * crash, a silent truncation or an unrelated error.
 *
 * The 'audit findings' block holds the holes the audit found (see
 * docs/hardening.md), each now closed in lib/ or native/ and tested here.
 */
import { Access, CmId, openDevice, p2p } from '../../lib';
import { inChildLoopback, loopback, Loopback } from './helpers';

const typeErr = (re: RegExp) => expect.objectContaining({ name: 'TypeError', message: expect.stringMatching(re) });
const rangeErr = (re: RegExp) => expect.objectContaining({ name: 'RangeError', message: expect.stringMatching(re) });
const argErr = (re: RegExp) => expect.objectContaining({ name: expect.stringMatching(/^(TypeError|RangeError)$/), message: expect.stringMatching(re) });
const gap = (name: string, fn: () => unknown) => test(name, fn as () => Promise<void>);

let l: Loopback;
beforeAll(() => {
  l = loopback('rxe0');
});
afterAll(() => l.close());

/** Runs `body` in a child node (loopback QPs a/b on rxe0, a receive posted on b); returns its result. */
function child(body: string) {
  return inChildLoopback(`
    const rx = pd.registerMemory(pd.allocate(4096), Access.LOCAL_WRITE);
    b.postRecv([{ wrId: 1, sge: [rx.sge()] }]);
    const poll = (n) => { const got = []; for (let t = 0; t < 2e6 && got.length < n; t++) got.push(...cq.poll()); return got; };
    try { ${body} } catch (e) { console.log(JSON.stringify({ thrown: e.name, message: e.message })); }
    dev.close();`);
}

describe('covered today', () => {
  test('work requests: wrId, sge fields, remoteAddr, rkey, bind fields are each named', () => {
    const mr = l.pd.registerMemory(l.pd.allocate(4096), Access.LOCAL_WRITE | Access.MW_BIND);
    const mw = l.pd.allocMemoryWindow(2);
    try {
      expect(() => l.a.postSend([{ wrId: -1, opcode: 'SEND' }])).toThrow(rangeErr(/wrId/));
      expect(() => l.a.postSend([{ wrId: 2 ** 53, opcode: 'SEND' }])).toThrow(rangeErr(/wrId/));
      expect(() => l.a.postSend([{ opcode: 'NOP' as never }])).toThrow(typeErr(/opcode/));
      expect(() => l.a.postSend([null as never])).toThrow(typeErr(/work request/));
      expect(() => l.a.postSend([{ opcode: 'SEND', sge: [null as never] }])).toThrow(typeErr(/sge\[0\]/));
      expect(() => l.a.postSend([{ opcode: 'SEND', sge: [{ addr: 'x' as never, length: 1, lkey: 1 }] }])).toThrow(typeErr(/sge.addr/));
      expect(() => l.a.postSend([{ opcode: 'SEND', sge: [{ addr: 1, length: 1, lkey: 2 ** 32 }] }])).toThrow(rangeErr(/sge.lkey/));
      expect(() => l.a.postSend([{ opcode: 'RDMA_WRITE', remoteAddr: -1n, rkey: 1 }])).toThrow(rangeErr(/remoteAddr/));
      expect(() => l.a.postSend([{ opcode: 'RDMA_WRITE', remoteAddr: 0 }])).toThrow(typeErr(/rkey/));
      expect(() => l.a.postSend([{ opcode: 'ATOMIC_FETCH_AND_ADD', remoteAddr: 0, rkey: 1, compareAdd: 1.5 }])).toThrow(rangeErr(/compareAdd/));
      expect(() => l.a.postSend([{ opcode: 'BIND_MW' }])).toThrow(typeErr(/bind/));
      expect(() => l.a.postSend([{ opcode: 'BIND_MW', bind: { mw: {} as never, mr, access: 0 } }])).toThrow(typeErr(/bind.mw/));
      expect(() => l.a.postSend([{ opcode: 'BIND_MW', bind: { mw, mr, access: -1 } }])).toThrow(rangeErr(/bind.access/));
      expect(() => l.a.postSend([{ opcode: 'BIND_MW', bind: { mw, mr, addr: -1, access: 0 } }])).toThrow(rangeErr(/bind\.addr/));
      expect(() => l.a.postRecv([{ wrId: 'x' as never }])).toThrow(typeErr(/wrId/));
    } finally {
      mw.close();
      mr.close();
    }
  });

  test('queue pair and SRQ init, modify and connectTo fields are each named', () => {
    const qpi = { sendCq: l.cqA, recvCq: l.cqA };
    expect(() => l.pd.createQueuePair({ ...qpi, recvCq: null as never })).toThrow(typeErr(/recvCq/));
    expect(() => l.pd.createQueuePair({ ...qpi, srq: {} as never })).toThrow(typeErr(/srq/));
    expect(() => l.pd.createQueuePair({ ...qpi, maxInlineData: -1 })).toThrow(rangeErr(/maxInlineData/));
    expect(() => l.pd.createQueuePair({ ...qpi, sigAll: 'yes' as never })).toThrow(typeErr(/sigAll/));
    expect(() => l.pd.createQueuePair({ ...qpi, maxRecvSge: 1.5 })).toThrow(rangeErr(/maxRecvSge/));
    expect(() => l.a.modify(null as never)).toThrow(typeErr(/attr/));
    expect(() => l.a.modify({ timeout: 256 })).toThrow(rangeErr(/timeout/));
    expect(() => l.a.modify({ ahAttr: { grh: 'x' as never } })).toThrow(typeErr(/grh/));
    const fresh = l.pd.createQueuePair(qpi);
    try {
      expect(() => fresh.connectTo({ qpNum: -1 })).toThrow(rangeErr(/qpNum/));
    } finally {
      fresh.close();
    }
    expect(() => l.pd.createSharedReceiveQueue({ maxSge: 0 })).toThrow(rangeErr(/maxSge/));
    expect(() => l.pd.createSharedReceiveQueue({ limit: 'x' as never })).toThrow(typeErr(/limit/));
  });

  test('devices, CQs, regions, windows: bad arguments are named', () => {
    expect(() => openDevice('')).toThrow(typeErr(/name/));
    expect(() => l.dev.on('event', 'x' as never)).toThrow(typeErr(/listener/));
    expect(() => l.dev.createCompletionQueue({ spinUs: -1 })).toThrow(rangeErr(/spinUs/));
    expect(() => l.dev.createCompletionQueue({ cqe: 2 ** 31 })).toThrow(rangeErr(/cqe/));
    expect(() => l.pd.registerMemory(new SharedArrayBuffer(64) as never)).toThrow(typeErr(/buffer/));
    expect(() => l.pd.registerMemory(new Uint8Array(64), 1.5)).toThrow(rangeErr(/access/));
    expect(() => l.pd.registerDmabuf({ fd: 'x' as never, length: 1 })).toThrow(typeErr(/fd/));
    expect(() => l.pd.registerDmabuf({ fd: 3, length: 1, offset: -1 })).toThrow(rangeErr(/offset/));
    const mr = l.pd.registerMemory(l.pd.allocate(4096));
    const mw = l.pd.allocMemoryWindow(1);
    try {
      expect(() => mr.sge(1.5)).toThrow(rangeErr(/offset/));
      expect(() => mr.sge(4096, 1)).toThrow(rangeErr(/length/));
      expect(() => mw.bind(l.b, {} as never)).toThrow(typeErr(/mr must be a MemoryRegion/));
      expect(() => mw.bind(l.b, mr, { access: -1 })).toThrow(rangeErr(/access/));
      expect(() => mw.bind(l.b, mr, { wrId: 'x' as never })).toThrow(typeErr(/wrId/));
    } finally {
      mw.close();
      mr.close();
    }
  });

  test('rdma_cm: host, source, port, privateData, conn params are named', () => {
    const id = CmId.create();
    try {
      expect(() => id.resolveAddr('10.99.1.1', 1, { source: 'nope' })).toThrow(typeErr(/source/));
      expect(() => id.resolveAddr('10.99.1.1', -1)).toThrow(rangeErr(/port/));
      expect(() => id.listen(7 as never, 1)).toThrow(typeErr(/host/));
      expect(() => id.connect({ initiatorDepth: 256 })).toThrow(rangeErr(/initiatorDepth/));
      expect(() => id.connect({ rnrRetryCount: 'x' as never })).toThrow(typeErr(/rnrRetryCount/));
      expect(() => id.accept({ privateData: [1, 2] as never })).toThrow(typeErr(/privateData/));
      expect(() => id.reject(new Uint8Array(256))).toThrow(rangeErr(/privateData/));
    } finally {
      id.close();
    }
  });

  test('p2p: BDFs, clients, sizes, options and IO ranges are named', async () => {
    expect(() => p2p.getProvider(42 as never)).toThrow(typeErr(/bdf/));
    expect(() => p2p.getProvider('03:00.0')).toThrow(rangeErr(/bdf/));
    expect(() => p2p.chooseProvider('rxe0' as never)).toThrow(typeErr(/clients/));
    expect(() => p2p.chooseProvider([])).toThrow(rangeErr(/clients/));
    expect(() => p2p.chooseProvider(['rxe0'], { size: 0 })).toThrow(rangeErr(/size/));
    expect(() => p2p.chooseProvider(['../etc'])).toThrow(rangeErr(/client/));
    expect(() => p2p.listProviders({ sysfsRoot: 5 as never })).toThrow(typeErr(/sysfsRoot/));
    expect(() => new p2p.P2pTopology({ hostBridgeWhitelist: {} as never })).toThrow(typeErr(/hostBridgeWhitelist/));
    expect(() => new p2p.P2pTopology(null as never)).toThrow(typeErr(/options/));
    expect(() => p2p.allocateP2pmem(null as never, 4096)).toThrow(typeErr(/provider/));
    expect(() => new p2p.P2pMemory('0000:03:00.0', new ArrayBuffer(4096))).toThrow(typeErr(/p2pmem mapping/));
    const providers = p2p.listProviders();
    if (providers.length) {
      // the guest's NVMe CMB (vm-run --nvme-cmb): size and IO ranges
      expect(() => p2p.allocateP2pmem(providers[0], 0)).toThrow(rangeErr(/size/));
      expect(() => p2p.allocateP2pmem(providers[0], 1.5)).toThrow(rangeErr(/size/));
      const m = p2p.allocateP2pmem(providers[0], 4096);
      try {
        expect(() => m.bytes(-1)).toThrow(rangeErr(/offset/));
        expect(() => m.bytes(0, 8192)).toThrow(rangeErr(/length/));
        expect(() => m.tryRegister('')).toThrow(typeErr(/rdmaDevice/));
        await expect(m.writeTo('', 0)).rejects.toThrow(typeErr(/file/));
        await expect(m.readFrom('/dev/null', -512)).rejects.toThrow(rangeErr(/position/));
      } finally {
        m.close();
      }
    }
  });
});

describe('audit findings', () => {
  const afterThis: Array<() => void> = [];
  afterEach(() => { for (const f of afterThis.splice(0)) f(); });

  gap('an inline SEND from an address outside any memory the library knows is refused with a RangeError', () => {
    const r = child(`a.postSend([{ opcode: 'SEND', inline: true, sge: [{ addr: 8, length: 16, lkey: 0 }] }]); poll(1); console.log(JSON.stringify({ posted: true }));`);
    expect(r.signal).toBeNull();
    expect(JSON.parse(r.stdout.trim())).toEqual({ thrown: 'RangeError', message: expect.stringMatching(/sge/) });
  });

  gap('an inline SEND whose SGE runs past the end of its region is refused', () => {
    const r = child(`
      const small = pd.registerMemory(new Uint8Array(16), Access.LOCAL_WRITE);
      a.postSend([{ opcode: 'SEND', inline: true, sge: [{ addr: small.addr, length: 64, lkey: small.lkey }] }]);
      const got = poll(2).find((w) => w.opcodeName === 'RECV');
      console.log(JSON.stringify({ posted: true, received: got && got.byteLen }));`);
    expect(r.signal).toBeNull();
    expect(JSON.parse(r.stdout.trim())).toEqual({ thrown: 'RangeError', message: expect.stringMatching(/sge/) });
  });

  gap('modify() refuses an attribute name it does not know', () => {
    const qp = l.pd.createQueuePair({ sendCq: l.cqA, recvCq: l.cqA });
    try {
      expect(() => qp.modify({ qpState: 'INIT', pkeyIndex: 0, portNum: 1, qpAccessFlags: 0, qpstate: 'RTR' } as never)).toThrow(typeErr(/qpstate/));
    } finally {
      qp.close();
    }
  });

  gap('modify() refuses values wider than their verbs field', () => {
    // on the live loopback QP (RTS accepts an rq_psn change), put back after
    try {
      expect(() => l.a.modify({ rqPsn: 2 ** 24 })).toThrow(rangeErr(/rqPsn/));
    } finally {
      l.a.modify({ rqPsn: 200 });
    }
  });

  gap('connectTo(remote, local) with local not an object names it', () => {
    expect(() => l.a.connectTo({ qpNum: 1 }, null as never)).toThrow(typeErr(/local/));
  });

  gap('options objects that are null are named: createCompletionQueue, createSharedReceiveQueue, CmId.resolveAddr, MemoryWindow.bind', () => {
    const id = CmId.create();
    const mr = l.pd.registerMemory(l.pd.allocate(4096), Access.LOCAL_WRITE | Access.MW_BIND);
    const mw = l.pd.allocMemoryWindow(1);
    const checks: Array<[string, () => unknown]> = [
      ['createCompletionQueue', () => l.dev.createCompletionQueue(null as never).close()],
      ['createSharedReceiveQueue', () => l.pd.createSharedReceiveQueue(null as never).close()],
      ['resolveAddr', () => id.resolveAddr('10.99.1.1', 1, null as never)],
      ['MemoryWindow.bind', () => mw.bind(l.b, mr, null as never)],
    ];
    afterThis.push(() => { mw.close(); mr.close(); id.close(); });
    const failures = checks.filter(([, fn]) => {
      try {
        fn();
        return true;
      } catch (e) {
        return !/options|init/.test((e as Error).message);
      }
    }).map(([n]) => n);
    expect(failures).toEqual([]);
  });

  gap("createCompletionQueue({ busyPoll }) refuses a non-boolean", () => {
    expect(() => l.dev.createCompletionQueue({ busyPoll: 'no' as never })).toThrow(typeErr(/busyPoll/));
  });

  gap('registerMemory refuses a resizable ArrayBuffer (resize() would leave the registered pages behind the JS view)', () => {
    const ab = new (ArrayBuffer as any)(4096, { maxByteLength: 65536 }) as ArrayBuffer;
    let mr;
    try {
      expect(() => { mr = l.pd.registerMemory(ab); }).toThrow(argErr(/buffer/));
    } finally {
      (mr as { close(): void } | undefined)?.close();
    }
  });

  gap('registered JS memory transferred away stays alive until deregistration: RDMA writes never land in memory reused by others', () => {
    // in a child: transfer the registered buffer, drop the new owner, force
    // GCs, allocate lots of fresh memory, then RDMA-write a pattern through
    // the rkey; no fresh allocation may see it (the MR holds the backing store)
    const r = child(`
      const { setFlagsFromString } = require('v8'); setFlagsFromString('--expose-gc');
      const gc = require('vm').runInNewContext('gc');
      const target = new Uint8Array(65536);
      const mr = pd.registerMemory(target, Access.LOCAL_WRITE | Access.REMOTE_WRITE);
      let moved = structuredClone(target.buffer, { transfer: [target.buffer] });
      moved = null; gc(); gc();
      const fresh = []; for (let i = 0; i < 64; i++) fresh.push(new Uint8Array(65536));
      const src = pd.registerMemory(pd.allocate(65536), Access.LOCAL_WRITE);
      new Uint8Array(src.buffer).fill(0xa5);
      a.postSend([{ wrId: 1, opcode: 'RDMA_WRITE', sge: [src.sge()], remoteAddr: mr.addr, rkey: mr.rkey }]);
      const wc = poll(1)[0];
      const hit = fresh.some((f) => f[0] === 0xa5 && f[65535] === 0xa5);
      console.log(JSON.stringify({ ok: wc.ok, hit, detached: target.byteLength === 0 }));`);
    expect(r.signal).toBeNull();
    expect(JSON.parse(r.stdout.trim())).toEqual({ ok: true, hit: false, detached: true });
  });

  gap('connect({ privateData }) over 56 bytes (the RC CM limit the API documents) is a RangeError naming privateData', async () => {
    const id = CmId.create();
    let pending: Promise<unknown> | undefined;
    try {
      await id.resolveAddr('10.99.1.1', 1);
      await id.resolveRoute();
      expect(() => { pending = id.connect({ privateData: new Uint8Array(100) }); }).toThrow(rangeErr(/privateData/));
    } finally {
      pending?.catch(() => undefined);
      id.close();
    }
  });

  gap('connectTo() checks remote before it changes the QP', () => {
    const qp = l.pd.createQueuePair({ sendCq: l.cqA, recvCq: l.cqA });
    try {
      expect(() => qp.connectTo({ qpNum: -1 })).toThrow(rangeErr(/qpNum/));
      expect(qp.query().qpState).toBe('RESET');
    } finally {
      qp.close();
    }
  });

  gap("p2pDistance(provider, client) names 'provider' for a bad provider", () => {
    expect(() => p2p.p2pDistance(5 as never, 'rxe0')).toThrow(typeErr(/provider/));
  });

  gap('resolveClient / listClients refuse a sysfs that is not a Sysfs', () => {
    expect(() => p2p.listClients(undefined as never)).toThrow(typeErr(/sysfs/));
  });
});
