/**
 * The allocation-free fast path: prepared sends (QueuePair.prepareSend) and
 * completions read in place (CompletionQueue.pollBatch), on rxe0.
 */
import { Access, CompletionBatch, CompletionQueue, WcOpcode, WorkCompletion } from '../../lib';
import { bytes, completions, inChildLoopback, loopback, Loopback, region } from './helpers';

const rangeErr = (re: RegExp) => expect.objectContaining({ name: 'RangeError', message: expect.stringMatching(re) });

let l: Loopback;
beforeEach(() => {
  l = loopback('rxe0', { maxSendWr: 64, maxRecvWr: 64, maxInlineData: 64 });
});
afterEach(() => l.close());

/** Spins on pollBatch() until `n` completions arrived; returns them as objects (read from the batch). */
function batchPoll(cq: CompletionQueue, n: number): WorkCompletion[] {
  const got: WorkCompletion[] = [];
  for (let spins = 0; got.length < n; spins++) {
    if (spins > 5e6) throw new Error(`only ${got.length} of ${n} completions`);
    const b = cq.pollBatch();
    for (let i = 0; i < b.length; i++) got.push(b.get(i));
  }
  return got;
}

test('a prepared WRITE_WITH_IMM posted 300 times: every immediate arrives once, in order, with its data', () => {
  const src = region(l.pd, 4096);
  const dst = region(l.pd, 4096);
  const send = l.a.prepareSend({ opcode: 'RDMA_WRITE_WITH_IMM', imm: 0, sge: [src.sge(0, 64)], remoteAddr: dst.addr, rkey: dst.rkey });
  expect(send.signaled).toBe(true);
  const seen: number[] = [];
  for (let i = 0; i < 300; i++) {
    l.b.postRecv([{ wrId: i }]);
    bytes(src).fill(i & 0xff, 0, 64);
    send.post(1000 + i, 0xabc00000 + i);
    const [rx] = batchPoll(l.cqB, 1);
    expect(rx).toMatchObject({ ok: true, opcode: WcOpcode.RECV_RDMA_WITH_IMM, byteLen: 64, wrId: i });
    seen.push(rx.imm!);
    expect(bytes(dst)[63]).toBe(i & 0xff);
    const [tx] = batchPoll(l.cqA, 1);
    expect(tx).toMatchObject({ ok: true, opcodeName: 'RDMA_WRITE', wrId: 1000 + i });
  }
  expect(seen).toEqual(Array.from({ length: 300 }, (_, i) => 0xabc00000 + i));
});

test('length and remoteAddr change what the next posts send and where it lands', () => {
  const src = region(l.pd, 4096);
  const dst = region(l.pd, 4096);
  bytes(src).fill(7);
  const send = l.a.prepareSend({ opcode: 'RDMA_WRITE_WITH_IMM', imm: 1, sge: [src.sge(0, 16)], remoteAddr: dst.addr, rkey: dst.rkey, signaled: false });
  l.b.postRecv([{ wrId: 1 }, { wrId: 2 }]);
  send.length = 100;
  send.remoteAddr = dst.addr + 1000;
  send.post();
  const [rx] = batchPoll(l.cqB, 1);
  expect(rx.byteLen).toBe(100);
  expect(bytes(dst).subarray(0, 1000).every((b) => b === 0)).toBe(true);
  expect(bytes(dst).subarray(1000, 1100).every((b) => b === 7)).toBe(true);
  expect(bytes(dst)[1100]).toBe(0);
  expect(send.length).toBe(100);
  expect(send.remoteAddr).toBe(dst.addr + 1000);
  // unsignaled: no completion at the sender
  expect(l.cqA.pollBatch().length).toBe(0);
});

test('an inline prepared SEND_WITH_IMM: the length cannot run past its region', async () => {
  const src = region(l.pd, 64);
  const rx = region(l.pd, 4096);
  bytes(src).fill(0x5a);
  const send = l.a.prepareSend({ opcode: 'SEND_WITH_IMM', imm: 9, sge: [src.sge(0, 8)], inline: true });
  expect(() => { send.length = 65; }).toThrow(RangeError);
  send.length = 64;
  const [ca, cb] = [completions(l.cqA, 1), completions(l.cqB, 1)];
  l.b.postRecv([{ wrId: 5, sge: [rx.sge()] }]);
  send.post(undefined, 10);
  const [[sent], [wc]] = await Promise.all([ca, cb]);
  expect(sent).toMatchObject({ ok: true, opcodeName: 'SEND' });
  expect(wc).toMatchObject({ ok: true, opcodeName: 'RECV', byteLen: 64, imm: 10 });
  expect(bytes(rx).subarray(0, 64).every((b) => b === 0x5a)).toBe(true);
});

test('a prepared send closes with its QP and with the regions its SGEs name', () => {
  const src = region(l.pd, 4096);
  const send = l.a.prepareSend({ opcode: 'SEND', sge: [src.sge(0, 8)] });
  src.close();
  expect(send.closed).toBe(true);
  expect(() => send.post()).toThrow(expect.objectContaining({ code: 'ECLOSED' }));
  const other = l.a.prepareSend({ opcode: 'SEND' });
  l.a.close();
  expect(other.closed).toBe(true);
  expect(() => l.a.prepareSend({ opcode: 'SEND' })).toThrow(expect.objectContaining({ code: 'ECLOSED' }));
});

test('prepareSend and post refuse what they cannot do, naming the argument', () => {
  const mr = region(l.pd, 4096);
  const mw = l.pd.allocMemoryWindow(2);
  const s = (n: number) => Array.from({ length: n }, () => mr.sge(0, 8));
  expect(() => l.a.prepareSend(null as never)).toThrow(TypeError);
  expect(() => l.a.prepareSend({ opcode: 'NOP' as never })).toThrow(/opcode/);
  expect(() => l.a.prepareSend({ opcode: 'BIND_MW', bind: { mw, mr, access: Access.REMOTE_WRITE } })).toThrow(/BIND_MW cannot be prepared/);
  expect(() => l.a.prepareSend({ opcode: 'SEND', sge: s(5) })).toThrow(/at most 4/);
  expect(() => l.a.prepareSend({ opcode: 'SEND_WITH_IMM' })).toThrow(/imm/);
  expect(() => l.a.prepareSend({ opcode: 'SEND_WITH_INV' })).toThrow(/invalidateRkey/);
  expect(() => l.a.prepareSend({ opcode: 'RDMA_WRITE', rkey: 1 })).toThrow(/remoteAddr/);
  expect(() => l.a.prepareSend({ opcode: 'RDMA_WRITE', remoteAddr: 0 })).toThrow(/rkey/);
  expect(() => l.a.prepareSend({ opcode: 'RDMA_WRITE', remoteAddr: 2n ** 60n, rkey: 1 })).toThrow(rangeErr(/remoteAddr/));
  expect(() => l.a.prepareSend({ opcode: 'RDMA_WRITE', remoteAddr: -5, rkey: 1 })).toThrow(rangeErr(/remoteAddr/));
  expect(() => l.a.prepareSend({ opcode: 'ATOMIC_CMP_AND_SWP', remoteAddr: 0, rkey: 1, compareAdd: 0 })).toThrow(/swap/);
  expect(() => l.a.prepareSend({ opcode: 'SEND', wrId: -1 })).toThrow(/wrId/);
  expect(() => l.a.prepareSend({ opcode: 'SEND', sge: [{ addr: 1, length: 1, lkey: 2 ** 32 }] })).toThrow(/sge\[0\]\.lkey/);
  // inline data from memory no region here covers
  expect(() => l.a.prepareSend({ opcode: 'SEND', inline: true, sge: [{ addr: 4096, length: 8, lkey: mr.lkey }] })).toThrow(/inline/);
  const send = l.a.prepareSend({ opcode: 'SEND' });
  expect(() => send.post(-1)).toThrow(RangeError);
  expect(() => send.post(2 ** 53)).toThrow(RangeError);
  expect(() => send.post(0, 1)).toThrow(/carries no immediate/);
  expect(() => { send.length = 1; }).toThrow(/no SGE/);
  expect(() => { send.remoteAddr = 0; }).toThrow(/no remote address/);
  const imm = l.a.prepareSend({ opcode: 'SEND_WITH_IMM', imm: 0 });
  expect(() => imm.post(0, 2 ** 32)).toThrow(RangeError);
  expect(() => imm.post(0, -1)).toThrow(RangeError);
  expect(() => imm.post(0, 1.5)).toThrow(RangeError);
});

test('pollBatch reads the same completions poll() would, in place, and refuses indexes outside the batch', () => {
  const src = region(l.pd, 4096);
  const dst = region(l.pd, 4096);
  for (let i = 0; i < 4; i++) l.b.postRecv([{ wrId: 40 + i }]);
  const send = l.a.prepareSend({ opcode: 'RDMA_WRITE_WITH_IMM', imm: 0, sge: [src.sge(0, 32)], remoteAddr: dst.addr, rkey: dst.rkey });
  for (let i = 0; i < 4; i++) send.post(i, 77 + i);
  batchPoll(l.cqA, 4);
  let b: CompletionBatch;
  for (let spins = 0; ; spins++) {
    b = l.cqB.pollBatch();
    if (b.length) break;
    if (spins > 5e6) throw new Error('no completion');
  }
  const n = b.length;
  for (let i = 0; i < n; i++) {
    const wc = b.get(i);
    expect([b.wrId(i), b.ok(i), b.status(i), b.opcode(i), b.byteLen(i), b.imm(i), b.qpNum(i), b.wcFlags(i), b.invalidatedRkey(i)])
      .toEqual([wc.wrId, true, 0, WcOpcode.RECV_RDMA_WITH_IMM, 32, wc.imm, l.b.qpNum, wc.wcFlags, undefined]);
    expect(b.wrId(i)).toBe(40 + i);
    expect(b.imm(i)).toBe(77 + i);
    // fill() writes the same fields into a reused object, stale ones included
    const reused = { ...wc, imm: 1, invalidatedRkey: 5, wrId: -1 } as WorkCompletion;
    expect(b.fill(i, reused)).toBe(reused);
    expect(reused).toEqual({ ...wc, invalidatedRkey: undefined });
  }
  expect(() => b.fill(n, {} as WorkCompletion)).toThrow(RangeError);
  expect(b.toArray()).toHaveLength(n);
  expect(() => b.opcode(n)).toThrow(RangeError);
  expect(() => b.wrId(-1)).toThrow(RangeError);
  expect(() => b.get(0.5)).toThrow(RangeError);
  // the batch is the CQ's one view: the next poll empties it
  const rest = batchPoll(l.cqB, 4 - n);
  expect(rest.map((w) => w.wrId)).toEqual(Array.from({ length: 4 - n }, (_, i) => 40 + n + i));
  expect(l.cqB.pollBatch()).toBe(b);
  expect(b.length).toBe(0);
});

test("pollBatch still emits 'completions' when something listens", () => {
  const heard: WorkCompletion[] = [];
  l.cqA.on('completions', (wcs) => heard.push(...wcs));
  const send = l.a.prepareSend({ opcode: 'RDMA_WRITE', remoteAddr: 0, rkey: 0 });
  l.b.postRecv([{ wrId: 1 }]);
  l.a.postSend([{ opcode: 'SEND', wrId: 3 }]);
  const got = batchPoll(l.cqA, 1);
  expect(heard).toEqual(got);
  expect(send.closed).toBe(false);
});

test('signaled prepared posts reaped by pollBatch do not keep the process alive', () => {
  // a CQ keeps node alive while signaled sends are outstanding: prepared
  // posts must count, and pollBatch must settle them, or node would hang
  const r = inChildLoopback(`
    const mr = pd.registerMemory(pd.allocate(4096), Access.LOCAL_WRITE | Access.REMOTE_WRITE);
    const send = a.prepareSend({ opcode: 'RDMA_WRITE', sge: [mr.sge(0, 8)], remoteAddr: mr.addr + 8, rkey: mr.rkey });
    for (let i = 0; i < 10; i++) send.post(i);
    let n = 0;
    for (let t = 0; t < 5e6 && n < 10; t++) n += cq.pollBatch().length;
    console.log('reaped', n);`);
  expect(r.error).toBeUndefined();
  expect(r.stdout.trim()).toBe('reaped 10');
  expect(r.status).toBe(0);
});

describe('postSend(wrs, recvFirst): receives posted ahead of the sends, in one call', () => {
  test('a ping-pong where each side replaces the receive a message consumed with its answer: every message lands in the receive posted for it', () => {
    const src = region(l.pd, 4096);
    const dstB = region(l.pd, 4096);
    const bufA = region(l.pd, 4096);
    l.a.postRecv([{ wrId: 0, sge: [bufA.sge(0, 64)] }]);
    l.b.postRecv([{ wrId: 0 }]);
    for (let i = 1; i <= 200; i++) {
      // A: a WRITE_WITH_IMM to B (it consumes B's receive)
      l.a.postSend([{ wrId: i, opcode: 'RDMA_WRITE_WITH_IMM', imm: i, sge: [src.sge(0, 8)], remoteAddr: dstB.addr, rkey: dstB.rkey, signaled: false }]);
      const [rb] = batchPoll(l.cqB, 1);
      expect(rb).toMatchObject({ ok: true, wrId: i - 1, imm: i });
      // B answers with a SEND into A's receive, and replaces its own receive in the same call
      bytes(src).writeUInt32LE(i, 0);
      l.b.postSend([{ wrId: i, opcode: 'SEND', sge: [src.sge(0, 4)] }], [{ wrId: i }]);
      const got = batchPoll(l.cqA, 1);
      expect(got[0]).toMatchObject({ ok: true, opcodeName: 'RECV', wrId: i - 1, byteLen: 4 });
      expect(bytes(bufA).readUInt32LE(0)).toBe(i);
      // A replaces its receive with the next post (a later iteration's send)
      l.a.postSend([], [{ wrId: i, sge: [bufA.sge(0, 64)] }]);
      expect(batchPoll(l.cqB, 1)[0]).toMatchObject({ ok: true, opcodeName: 'SEND', wrId: i });
    }
  });

  test('receives that need the general path (two SGEs) are posted too, and land', () => {
    const m = loopback('rxe0', { maxSendWr: 8, maxRecvWr: 8, maxSge: 2 });
    try {
      const a1 = region(m.pd, 64);
      const a2 = region(m.pd, 64);
      const src = region(m.pd, 64);
      bytes(src).fill(9, 0, 40);
      m.b.postSend([], [{ wrId: 77, sge: [a1.sge(0, 20), a2.sge(0, 20)] }]);
      m.a.postSend([{ wrId: 5, opcode: 'SEND', sge: [src.sge(0, 40)], signaled: false }]);
      const [rb] = batchPoll(m.cqB, 1);
      expect(rb).toMatchObject({ ok: true, wrId: 77, byteLen: 40 });
      expect(bytes(a1).subarray(0, 20).every((x) => x === 9)).toBe(true);
      expect(bytes(a2).subarray(0, 20).every((x) => x === 9)).toBe(true);
    } finally {
      m.close();
    }
  });

  test.each([
    ['a send the general path refuses (unknown opcode)', { wrId: 1, opcode: 'NOPE' }],
    ['a packed send with a field out of range (rkey > 2^32)', { wrId: 1, opcode: 'RDMA_WRITE', sge: [], remoteAddr: 0, rkey: 2 ** 33 }],
  ])('%s: the receives of the same call are not posted either', (_what, bad) => {
    expect(() => l.b.postSend([bad as never], [{ wrId: 90 }])).toThrow();
    // B's next receive is the one posted now, not the refused call's
    l.b.postRecv([{ wrId: 91 }]);
    l.a.postSend([{ wrId: 2, opcode: 'SEND', sge: [], signaled: false }]);
    expect(batchPoll(l.cqB, 1)[0]).toMatchObject({ ok: true, wrId: 91 });
  });

  test('a full receive queue: the receive fails (recv true, posted 0, recvPosted 0) and the send of that call is not posted', () => {
    let posted = 0;
    try {
      for (;;) {
        l.b.postRecv([{ wrId: 1000 + posted }]);
        posted++;
        if (posted > 100000) throw new Error('the receive queue never filled');
      }
    } catch (err) {
      expect(err).toMatchObject({ name: 'RdmaError' });
    }
    expect(posted).toBeGreaterThanOrEqual(64);
    let err: unknown;
    try {
      l.b.postSend([{ wrId: 7, opcode: 'SEND', sge: [] }], [{ wrId: 5 }]);
    } catch (e) {
      err = e;
    }
    expect(err).toMatchObject({ name: 'RdmaError', recv: true, posted: 0, recvPosted: 0 });
    // nothing reached A, and no send completion is due at B
    l.a.postRecv([{ wrId: 3 }]);
    const until = Date.now() + 300;
    while (Date.now() < until) {
      expect(l.cqA.pollBatch().length).toBe(0);
      expect(l.cqB.pollBatch().length).toBe(0);
    }
  });

  test('a receive list too long for the queue is refused before anything is posted; a bad receive posts no send', () => {
    const src = region(l.pd, 64);
    const n = l.a.maxRecvWr + 1;
    expect(n).toBeGreaterThan(64);
    const recvs = Array.from({ length: n }, (_, i) => ({ wrId: i }));
    expect(() => l.a.postSend([{ wrId: 1, opcode: 'SEND', sge: [src.sge(0, 4)] }], recvs)).toThrow(rangeErr(new RegExp(`recvFirst has ${n} work requests`)));
    expect(() => l.a.postSend([{ wrId: 1, opcode: 'SEND', sge: [src.sge(0, 4)] }], [{ wrId: 1, sge: [{ addr: -1, length: 4, lkey: 1 }] }]))
      .toThrow(expect.objectContaining({ name: 'RangeError' }));
    expect(() => l.a.postSend([], 'x' as never)).toThrow(TypeError);
    // nothing was sent by the refused calls: B's receive is still there for this one
    l.b.postRecv([{ wrId: 3 }]);
    l.a.postSend([{ wrId: 2, opcode: 'SEND', sge: [], signaled: false }]);
    expect(batchPoll(l.cqB, 1)[0]).toMatchObject({ ok: true, wrId: 3 });
    expect(l.cqB.pollBatch().length).toBe(0);
  });
});
