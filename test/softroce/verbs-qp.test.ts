/**
 * RC queue pairs on rxe0, connected to each other by hand (RESET -> INIT ->
 * RTR -> RTS) and through rdma_cm: every opcode, inline sends and 10,000
 * round trips over both; attributes, gather/scatter, SRQ and argument
 * checks by hand.
 */
import { Access, AsyncEvent } from '../../lib';
import { bytes, cmLoopback, completions, ipv4GidIndex, loopback, Loopback, region } from './helpers';

let l: Loopback;

const setups: Array<[string, () => Promise<Loopback>]> = [
  ['by hand', async () => loopback('rxe0')],
  ['through rdma_cm', () => cmLoopback('10.99.1.1')],
];

describe.each(setups)('RC queue pairs connected %s', (_how, make) => {
  beforeEach(async () => {
    l = await make();
  });
  afterEach(() => l.close());

  test('SEND/RECV moves the bytes and reports both completions', async () => {
    const src = region(l.pd, 4096);
    const dst = region(l.pd, 4096);
    bytes(src).set(Buffer.from('hello, rdma'));
    const [ca, cb] = [completions(l.cqA, 1), completions(l.cqB, 1)];
    l.b.postRecv([{ wrId: 11, sge: [dst.sge()] }]);
    l.a.postSend([{ wrId: 22, opcode: 'SEND', sge: [src.sge(0, 11)] }]);
    const [[sent], [recv]] = await Promise.all([ca, cb]);
    expect(sent).toMatchObject({ wrId: 22, ok: true, opcodeName: 'SEND' });
    expect(recv).toMatchObject({ wrId: 11, ok: true, opcodeName: 'RECV', byteLen: 11 });
    expect(bytes(dst).subarray(0, 11).toString()).toBe('hello, rdma');
  });

  test('inline SEND: the payload is copied at post time (a Buffer registered on the PD)', async () => {
    const dst = region(l.pd, 256);
    const payload = Buffer.from('inline payload!');
    // inline data is copied into the WQE at post time; its SGE must still lie
    // in a region of this PD (checked before posting)
    const [ca, cb] = [completions(l.cqA, 1), completions(l.cqB, 1)];
    l.b.postRecv([{ wrId: 1, sge: [dst.sge()] }]);
    const reg = l.pd.registerMemory(payload);
    l.a.postSend([{ wrId: 2, opcode: 'SEND', inline: true, sge: [reg.sge()] }]);
    const [[s], [r]] = await Promise.all([ca, cb]);
    expect(s.ok).toBe(true);
    expect(r.byteLen).toBe(payload.length);
    expect(bytes(dst).subarray(0, payload.length).equals(payload)).toBe(true);
  });

  test('SEND_WITH_IMM delivers the immediate', async () => {
    const dst = region(l.pd, 64);
    const [ca, cb] = [completions(l.cqA, 1), completions(l.cqB, 1)];
    l.b.postRecv([{ wrId: 1, sge: [dst.sge()] }]);
    l.a.postSend([{ wrId: 2, opcode: 'SEND_WITH_IMM', imm: 0xdeadbeef, sge: [] }]);
    const [, [r]] = await Promise.all([ca, cb]);
    expect(r).toMatchObject({ ok: true, imm: 0xdeadbeef, byteLen: 0 });
  });

  test('RDMA WRITE lands in the peer region with no receive consumed', async () => {
    const src = region(l.pd, 8192);
    const dst = region(l.pd, 8192);
    for (let i = 0; i < 8192; i++) bytes(src)[i] = i & 0xff;
    const ca = completions(l.cqA, 1);
    l.a.postSend([{ wrId: 5, opcode: 'RDMA_WRITE', sge: [src.sge(0, 8192)], remoteAddr: dst.addr, rkey: dst.rkey }]);
    const [w] = await ca;
    expect(w).toMatchObject({ ok: true, opcodeName: 'RDMA_WRITE' });
    expect(bytes(dst).equals(bytes(src))).toBe(true);
  });

  test('RDMA WRITE_WITH_IMM: data lands and the immediate reaches the receiver', async () => {
    const src = region(l.pd, 4096);
    const dst = region(l.pd, 4096);
    bytes(src).fill(0x5a, 0, 1000);
    const [ca, cb] = [completions(l.cqA, 1), completions(l.cqB, 1)];
    l.b.postRecv([{ wrId: 9, sge: [] }]);
    l.a.postSend([{
      wrId: 10, opcode: 'RDMA_WRITE_WITH_IMM', imm: 0x12345678, sge: [src.sge(0, 1000)],
      remoteAddr: dst.addr + 100, rkey: dst.rkey,
    }]);
    const [, [r]] = await Promise.all([ca, cb]);
    expect(r).toMatchObject({ ok: true, opcodeName: 'RECV_RDMA_WITH_IMM', imm: 0x12345678, byteLen: 1000, wrId: 9 });
    expect(bytes(dst)[99]).toBe(0);
    expect(bytes(dst).subarray(100, 1100).every((x) => x === 0x5a)).toBe(true);
    expect(bytes(dst)[1100]).toBe(0);
  });

  test('RDMA READ fetches the peer region', async () => {
    const remote = region(l.pd, 4096);
    const local = region(l.pd, 4096);
    bytes(remote).fill(0xc3, 0, 3000);
    const ca = completions(l.cqA, 1);
    l.a.postSend([{ wrId: 3, opcode: 'RDMA_READ', sge: [local.sge(0, 3000)], remoteAddr: remote.addr, rkey: remote.rkey }]);
    const [r] = await ca;
    expect(r).toMatchObject({ ok: true, opcodeName: 'RDMA_READ', byteLen: 3000 });
    expect(bytes(local).subarray(0, 3000).every((x) => x === 0xc3)).toBe(true);
  });

  test('atomics: FETCH_AND_ADD and CMP_AND_SWP return the old value and update the target', async () => {
    const target = region(l.pd, 4096);
    const result = region(l.pd, 4096);
    const t = new DataView(target.buffer as ArrayBuffer);
    const r = new DataView(result.buffer as ArrayBuffer);
    t.setBigUint64(0, 40n, true);
    let c = completions(l.cqA, 1);
    l.a.postSend([{ wrId: 1, opcode: 'ATOMIC_FETCH_AND_ADD', sge: [result.sge(0, 8)], remoteAddr: target.addr, rkey: target.rkey, compareAdd: 2 }]);
    expect((await c)[0]).toMatchObject({ ok: true, opcodeName: 'FETCH_ADD' });
    expect(r.getBigUint64(0, true)).toBe(40n);
    expect(t.getBigUint64(0, true)).toBe(42n);

    c = completions(l.cqA, 2);
    l.a.postSend([
      // compare fails (not 7): no swap
      { wrId: 2, opcode: 'ATOMIC_CMP_AND_SWP', sge: [result.sge(8, 8)], remoteAddr: target.addr, rkey: target.rkey, compareAdd: 7, swap: 99 },
      // compare matches: swapped in
      { wrId: 3, opcode: 'ATOMIC_CMP_AND_SWP', sge: [result.sge(16, 8)], remoteAddr: target.addr, rkey: target.rkey, compareAdd: 42n, swap: 0x1_0000_0001n },
    ]);
    const wcs = await c;
    expect(wcs.map((w) => [w.wrId, w.statusName, w.opcodeName])).toEqual([[2, 'SUCCESS', 'COMP_SWAP'], [3, 'SUCCESS', 'COMP_SWAP']]);
    expect(r.getBigUint64(8, true)).toBe(42n);
    expect(r.getBigUint64(16, true)).toBe(42n);
    expect(t.getBigUint64(0, true)).toBe(0x1_0000_0001n);
  });

  test('unsignaled sends produce no completion; the signaled one after them does', async () => {
    const src = region(l.pd, 64);
    const dst = region(l.pd, 64);
    const ca = completions(l.cqA, 1);
    l.a.postSend([
      { wrId: 1, opcode: 'RDMA_WRITE', signaled: false, sge: [src.sge(0, 8)], remoteAddr: dst.addr, rkey: dst.rkey },
      { wrId: 2, opcode: 'RDMA_WRITE', signaled: false, sge: [src.sge(0, 8)], remoteAddr: dst.addr + 8, rkey: dst.rkey },
      { wrId: 3, opcode: 'RDMA_WRITE', sge: [src.sge(0, 8)], remoteAddr: dst.addr + 16, rkey: dst.rkey },
    ]);
    const wcs = await ca;
    expect(wcs.map((w) => w.wrId)).toEqual([3]);
    expect(l.cqA.poll()).toEqual([]);
  });

  test('10,000 send/recv round trips: no completion lost or duplicated', async () => {
    const N = 10_000;
    const DEPTH = 32;
    const ping = region(l.pd, 4096);
    const pong = region(l.pd, 4096);
    const seenA = new Uint8Array(N);
    const seenB = new Uint8Array(N);
    let recvA = 0;
    let sentB = 0;
    let sentA = 0;
    let recvB = 0;
    // B echoes every message back; A keeps DEPTH messages in flight
    l.b.postRecv(Array.from({ length: DEPTH }, (_, i) => ({ wrId: i, sge: [pong.sge(i * 8, 8)] })));
    l.a.postRecv(Array.from({ length: DEPTH }, (_, i) => ({ wrId: i, sge: [ping.sge(2048 + i * 8, 8)] })));
    const done = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`stalled at ${recvA}/${N} round trips`)), 110_000);
      const finish = () => {
        clearTimeout(timer);
        resolve();
      };
      l.cqB.on('completions', (wcs) => {
        for (const w of wcs) {
          if (!w.ok) return reject(new Error(`B: ${w.statusName}`));
          if (w.opcodeName === 'RECV') {
            if (seenB[w.imm!]++) return reject(new Error(`B saw ${w.imm} twice`));
            recvB++;
            l.b.postRecv([{ wrId: w.wrId, sge: [pong.sge(w.wrId * 8, 8)] }]);
            l.b.postSend([{ wrId: w.imm!, opcode: 'SEND_WITH_IMM', imm: w.imm!, sge: [] }]);
          } else sentB++;
          if (recvA === N && sentB === N) finish();
        }
      });
      l.cqA.on('completions', (wcs) => {
        for (const w of wcs) {
          if (!w.ok) return reject(new Error(`A: ${w.statusName}`));
          if (w.opcodeName !== 'RECV') continue;
          if (seenA[w.imm!]++) return reject(new Error(`A saw ${w.imm} twice`));
          recvA++;
          l.a.postRecv([{ wrId: w.wrId, sge: [ping.sge(2048 + w.wrId * 8, 8)] }]);
          if (sentA < N) {
            l.a.postSend([{ wrId: sentA, opcode: 'SEND_WITH_IMM', imm: sentA, sge: [], signaled: false }]);
            sentA++;
          }
          if (recvA === N && sentB === N) finish();
        }
      });
    });
    l.cqA.ref();
    for (; sentA < DEPTH; sentA++) l.a.postSend([{ wrId: sentA, opcode: 'SEND_WITH_IMM', imm: sentA, sge: [], signaled: false }]);
    try {
      await done;
    } finally {
      l.cqA.unref();
    }
    expect(recvA).toBe(N);
    expect(recvB).toBe(N);
    expect(sentB).toBe(N);
    expect(seenA.every((x) => x === 1)).toBe(true);
    expect(seenB.every((x) => x === 1)).toBe(true);
  });
});

describe('RC queue pairs connected by hand', () => {
  beforeEach(() => {
    l = loopback('rxe0');
  });
  afterEach(() => l.close());

  test('QPs reach RTS with the attributes given', () => {
    const q = l.a.query();
    expect(q.qpState).toBe('RTS');
    expect(q.destQpNum).toBe(l.b.qpNum);
    expect(q.pathMtu).toBe(1024);
    expect(q.sqPsn).toBe(200);
    expect(q.ahAttr?.grh?.dgid).toBe('::ffff:10.99.1.1');
  });

  test('gather and scatter: 2 to 6 SGEs per WR (packed path up to 4, general path beyond)', async () => {
    const g = loopback('rxe0', { maxSge: 6 });
    try {
      const src = region(g.pd, 4096);
      const dst = region(g.pd, 4096);
      bytes(src).set(Buffer.from('0123456789abcdefghijklmnopqrstuvwxyz'));
      for (const n of [2, 4, 6]) {
        bytes(dst).fill(0);
        // pieces of 3 bytes from every 6th byte, gathered into one message
        const sge = Array.from({ length: n }, (_, i) => src.sge(i * 6, 3));
        const want = Buffer.concat(sge.map((s) => bytes(src).subarray(s.addr - src.addr, s.addr - src.addr + 3)));
        const done = completions(g.cqA, 1);
        g.a.postSend([{ wrId: n, opcode: 'RDMA_WRITE', sge, remoteAddr: dst.addr + 100, rkey: dst.rkey }]);
        expect((await done)[0]).toMatchObject({ wrId: n, ok: true });
        expect(bytes(dst).subarray(100, 100 + 3 * n).equals(want)).toBe(true);
        expect(bytes(dst)[99]).toBe(0);
        expect(bytes(dst)[100 + 3 * n]).toBe(0);
      }
      // a SEND gathered from 3 SGEs, scattered into 2 receive SGEs (general recv path)
      bytes(dst).fill(0);
      const [ca, cb] = [completions(g.cqA, 1), completions(g.cqB, 1)];
      g.b.postRecv([{ wrId: 7, sge: [dst.sge(0, 4), dst.sge(1000, 100)] }]);
      g.a.postSend([{ wrId: 8, opcode: 'SEND', sge: [src.sge(0, 3), src.sge(10, 3), src.sge(20, 3)] }]);
      const [[s], [r]] = await Promise.all([ca, cb]);
      expect(s.ok).toBe(true);
      expect(r).toMatchObject({ wrId: 7, ok: true, byteLen: 9 });
      expect(bytes(dst).subarray(0, 4).toString()).toBe('012a');
      expect(bytes(dst).subarray(1000, 1005).toString()).toBe('bcklm');
    } finally {
      g.close();
    }
  });

  test('a shared receive queue feeds the receiving QP', async () => {
    const srq = l.pd.createSharedReceiveQueue({ maxWr: 64, maxSge: 1 });
    const cq = l.dev.createCompletionQueue();
    const rx = l.pd.createQueuePair({ sendCq: cq, recvCq: cq, srq });
    const tx = l.pd.createQueuePair({ sendCq: l.cqA, recvCq: l.cqA });
    const { gid, index } = { gid: '::ffff:10.99.1.1', index: l.dev.gids().find((g) => g.gid === '::ffff:10.99.1.1')!.index };
    rx.connectTo({ qpNum: tx.qpNum, gid }, { sgidIndex: index });
    tx.connectTo({ qpNum: rx.qpNum, gid }, { sgidIndex: index });
    const bufs = [0, 1, 2, 3].map(() => region(l.pd, 256));
    srq.postRecv(bufs.map((b, i) => ({ wrId: 100 + i, sge: [b.sge()] })));
    expect(() => rx.postRecv([])).toThrow(/SharedReceiveQueue/);
    const src = region(l.pd, 256);
    const got = completions(cq, 3);
    const sent = completions(l.cqA, 3);
    for (let i = 0; i < 3; i++) {
      bytes(src)[i] = 0x40 + i;
      tx.postSend([{ wrId: i, opcode: 'SEND', sge: [src.sge(i, 1)] }]);
    }
    const wcs = await got;
    await sent;
    expect(wcs.map((w) => [w.wrId, w.byteLen, w.ok])).toEqual([[100, 1, true], [101, 1, true], [102, 1, true]]);
    expect([0, 1, 2].map((i) => bytes(bufs[i])[0])).toEqual([0x40, 0x41, 0x42]);
    expect(srq.query().maxWr).toBeGreaterThanOrEqual(64);
  });

  test('modify: the migration state (the alternate path is refused on RoCE), then SQD with its SQ_DRAINED event; query reports them', async () => {
    const { index, gid } = ipv4GidIndex(l.dev);
    const cq = l.dev.createCompletionQueue();
    const a = l.pd.createQueuePair({ sendCq: cq, recvCq: cq });
    const b = l.pd.createQueuePair({ sendCq: cq, recvCq: cq });
    b.connectTo({ qpNum: a.qpNum, gid }, { sgidIndex: index });
    const path = { portNum: 1, grh: { dgid: gid, sgidIndex: index, hopLimit: 64 } };
    a.modify({ qpState: 'INIT', pkeyIndex: 0, portNum: 1, qpAccessFlags: 0xf });
    a.modify({ qpState: 'RTR', pathMtu: 1024, destQpNum: b.qpNum, rqPsn: 0, maxDestRdAtomic: 1, minRnrTimer: 12, ahAttr: path });
    const rts = { qpState: 'RTS', sqPsn: 0, timeout: 14, retryCnt: 7, rnrRetry: 7, maxRdAtomic: 1 } as const;
    // the alternate path reaches the kernel, which allows automatic path
    // migration on InfiniBand only (ib_core refuses IB_QP_ALT_PATH on RoCE)
    expect(() => a.modify({ ...rts, altPath: { ahAttr: path, pkeyIndex: 0, portNum: 1, timeout: 16 } }))
      .toThrow(expect.objectContaining({ code: 'EINVAL', syscall: 'ibv_modify_qp' }));
    expect(a.query().qpState).toBe('RTR');
    a.modify({ ...rts, pathMigState: 'REARM' });
    let q = a.query();
    expect(q).toMatchObject({ qpState: 'RTS', curQpState: 'RTS', pathMigState: 'REARM', enSqdAsyncNotify: false, sqDraining: false });
    const drained = new Promise<AsyncEvent>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no SQ_DRAINED within 10 s')), 10_000);
      const on = (ev: AsyncEvent) => {
        if (ev.qpNum !== a.qpNum) return;
        clearTimeout(timer);
        l.dev.off('SQ_DRAINED', on);
        resolve(ev);
      };
      l.dev.on('SQ_DRAINED', on);
    });
    a.modify({ qpState: 'SQD', enSqdAsyncNotify: true });
    expect(await drained).toMatchObject({ type: 'SQ_DRAINED', qpNum: a.qpNum });
    q = a.query();
    expect(q).toMatchObject({ qpState: 'SQD', sqDraining: false });
    expect(() => a.modify({ pathMigState: 'NOPE' as never })).toThrow(/pathMigState must be one of MIGRATED, REARM, ARMED/);
    expect(() => a.modify({ altPath: { ahAttr: path, pkeyIndex: 0, portNum: 1 } as never })).toThrow(/altPath\.timeout is required/);
    expect(() => a.modify({ enSqdAsyncNotify: 1 as never })).toThrow(/enSqdAsyncNotify must be a boolean/);
    expect(() => a.modify({ cap: { maxSendWr: 1 } as never })).toThrow(/cap\.maxRecvWr is required/);
  });

  test('posting on a closed QP throws ECLOSED; bad work requests throw TypeError/RangeError', () => {
    expect(() => l.a.postSend([{ opcode: 'NOPE' as 'SEND' }])).toThrow(TypeError);
    expect(() => l.a.postSend([{ opcode: 'RDMA_WRITE', sge: [], rkey: 1 }])).toThrow(/remoteAddr/);
    // native errors come from the main realm, not jest's sandbox: match by name
    expect(() => l.a.postSend([{ opcode: 'SEND', sge: [{ addr: -1, length: 1, lkey: 0 }] }]))
      .toThrow(expect.objectContaining({ name: 'RangeError', message: expect.stringMatching(/sge\.addr/) }));
    expect(() => l.a.postSend('x' as never)).toThrow(TypeError);
    l.a.close();
    expect(() => l.a.postSend([{ opcode: 'SEND' }])).toThrow(expect.objectContaining({ code: 'ECLOSED' }));
    expect(Access.REMOTE_WRITE).toBe(2);
  });
});
