/**
 * Memory windows on rxe0: a window exposes part of a region under its own
 * rkey; after invalidation (LOCAL_INV, or the peer's SEND_WITH_INV) a write
 * with the stale key fails at the writer with a remote access error. QP B
 * owns the memory; QP A is the remote writer whose failure we observe.
 */
import { Access, WcFlags } from '../../lib';
import { bytes, completions, loopback, Loopback, region } from './helpers';

const MR_ACCESS = Access.LOCAL_WRITE | Access.REMOTE_WRITE | Access.REMOTE_READ | Access.MW_BIND;

let l: Loopback;
beforeEach(() => {
  l = loopback('rxe0');
});
afterEach(() => l.close());

async function write(src: ReturnType<typeof region>, addr: number, rkey: number, wrId: number) {
  const c = completions(l.cqA, 1);
  l.a.postSend([{ wrId, opcode: 'RDMA_WRITE', sge: [src.sge(0, 16)], remoteAddr: addr, rkey }]);
  return (await c)[0];
}

async function bindType2() {
  const mr = region(l.pd, 8192, MR_ACCESS);
  const mw = l.pd.allocMemoryWindow(2);
  const before = mw.rkey;
  const c = completions(l.cqB, 1);
  l.b.postSend([{ wrId: 7, opcode: 'BIND_MW', bind: { mw, mr, addr: mr.addr + 4096, length: 4096, access: Access.REMOTE_WRITE } }]);
  const [wc] = await c;
  expect(wc).toMatchObject({ ok: true, opcodeName: 'BIND_MW', wrId: 7 });
  expect(mw.rkey).not.toBe(before);
  return { mr, mw };
}

test('type 2: bind, a remote write through the window lands', async () => {
  const { mr, mw } = await bindType2();
  const src = region(l.pd, 64);
  bytes(src).fill(0xab, 0, 16);
  const wc = await write(src, mr.addr + 4096 + 32, mw.rkey, 1);
  expect(wc.statusName).toBe('SUCCESS');
  expect(bytes(mr).subarray(4096 + 32, 4096 + 48).every((x) => x === 0xab)).toBe(true);
  // outside the window: the MR's own bytes before it are untouched
  expect(bytes(mr).subarray(0, 4096).every((x) => x === 0)).toBe(true);
});

test('type 2: after LOCAL_INV a write with the stale key fails with a remote access error', async () => {
  const { mr, mw } = await bindType2();
  const src = region(l.pd, 64);
  expect((await write(src, mr.addr + 4096, mw.rkey, 1)).statusName).toBe('SUCCESS');
  const c = completions(l.cqB, 1);
  l.b.postSend([{ wrId: 8, opcode: 'LOCAL_INV', invalidateRkey: mw.rkey }]);
  expect((await c)[0]).toMatchObject({ ok: true, opcodeName: 'LOCAL_INV' });
  bytes(src).fill(0xee, 0, 16);
  const stale = await write(src, mr.addr + 4096, mw.rkey, 2);
  expect(stale.statusName).toBe('REM_ACCESS_ERR');
  expect(bytes(mr).subarray(4096, 4112).every((x) => x === 0)).toBe(true);
});

test("type 2: the peer's SEND_WITH_INV invalidates the window; the stale key then fails", async () => {
  const { mr, mw } = await bindType2();
  const src = region(l.pd, 64);
  const rx = region(l.pd, 64);
  const [ca, cb] = [completions(l.cqA, 1), completions(l.cqB, 1)];
  l.b.postRecv([{ wrId: 3, sge: [rx.sge()] }]);
  l.a.postSend([{ wrId: 4, opcode: 'SEND_WITH_INV', invalidateRkey: mw.rkey, sge: [src.sge(0, 4)] }]);
  const [[s], [r]] = await Promise.all([ca, cb]);
  expect(s.ok).toBe(true);
  // rxe flags this with the kernel's bit (read as IP_CSUM_OK); the CQ
  // reports it as the invalidation it is, with the key
  expect(r).toMatchObject({ ok: true, opcodeName: 'RECV', byteLen: 4, invalidatedRkey: mw.rkey });
  expect(r.wcFlags & WcFlags.WITH_INV).toBe(WcFlags.WITH_INV);
  const stale = await write(src, mr.addr + 4096, mw.rkey, 5);
  expect(stale.statusName).toBe('REM_ACCESS_ERR');
});

test('type 1: ibv_bind_mw exposes the range; unbound, the key fails', async () => {
  const mr = region(l.pd, 8192, MR_ACCESS);
  const mw = l.pd.allocMemoryWindow(1);
  let c = completions(l.cqB, 1);
  const rkey = mw.bind(l.b, mr, { addr: mr.addr, length: 4096, access: Access.REMOTE_WRITE, wrId: 9 });
  expect((await c)[0]).toMatchObject({ ok: true, wrId: 9 });
  expect(rkey).toBe(mw.rkey);
  const src = region(l.pd, 64);
  bytes(src).fill(0x11, 0, 16);
  expect((await write(src, mr.addr + 100, rkey, 1)).statusName).toBe('SUCCESS');
  expect(bytes(mr)[100]).toBe(0x11);
  c = completions(l.cqB, 1);
  mw.bind(l.b, null, { wrId: 10 });
  expect((await c)[0]).toMatchObject({ ok: true, wrId: 10 });
  expect((await write(src, mr.addr + 100, rkey, 2)).statusName).toBe('REM_ACCESS_ERR');
});

test('type 2: a caller-chosen key byte becomes the new rkey\'s low byte', async () => {
  const mr = region(l.pd, 4096, MR_ACCESS);
  const mw = l.pd.allocMemoryWindow(2);
  const keyByte = ((mw.rkey & 0xff) + 77) & 0xff;
  const c = completions(l.cqB, 1);
  l.b.postSend([{ wrId: 1, opcode: 'BIND_MW', bind: { mw, mr, access: Access.REMOTE_WRITE, keyByte } }]);
  expect((await c)[0].ok).toBe(true);
  expect(mw.rkey & 0xff).toBe(keyByte);
  const src = region(l.pd, 64);
  expect((await write(src, mr.addr, mw.rkey, 1)).statusName).toBe('SUCCESS');
  expect(() => l.b.postSend([{ opcode: 'BIND_MW', bind: { mw, mr, access: 0, keyByte: mw.rkey & 0xff } }])).toThrow(/differ/);
  expect(() => l.b.postSend([{ opcode: 'BIND_MW', bind: { mw, mr, access: 0, keyByte: 256 } }])).toThrow(RangeError);
});

test('window arguments are checked before any verb', () => {
  expect(() => l.pd.allocMemoryWindow(3 as 2)).toThrow(RangeError);
  const mw1 = l.pd.allocMemoryWindow(1);
  expect(() => l.b.postSend([{ opcode: 'BIND_MW', bind: { mw: mw1, mr: region(l.pd, 64), access: 0 } }])).toThrow(/type 2/);
  const mw2 = l.pd.allocMemoryWindow(2);
  expect(() => l.b.postSend([{ opcode: 'BIND_MW', bind: { mw: mw2, mr: null as never, access: 0 } }])).toThrow(/LOCAL_INV/);
  expect(() => mw1.bind(l.b, null)).toThrow(expect.objectContaining({ message: expect.stringMatching(/not bound/) }));
  expect(() => l.b.postSend([{ opcode: 'BIND_MW' }])).toThrow(/bind must be an object/);
});
