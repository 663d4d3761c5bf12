/**
 * The transport's connection (lib/transport/conn.ts) on its own, over a
 * real rdma_cm connection on rxe0: completions handed to onRecv in one
 * reused object (read in place from the CQ, no object per completion), and
 * selective signaling (post(wrs, { unsignaled: true })): a long run of
 * unsignaled posts never overflows the send queue, its accounting returns
 * to zero, and a failing unsignaled WR still fails the connection.
 */
import { CmId, openDevice, QueuePair, SendWorkRequest, WorkCompletion } from '../../lib';
import { Conn } from '../../lib/transport/conn';
import { TransportError } from '../../lib/transport/errors';
import { region } from './helpers';

let port = 26000 + (process.pid % 500) * 8;

async function connPair(opts: { signalEvery?: number; reuseCompletion?: boolean } = {}) {
  const host = '10.99.1.1';
  const p = port++;
  const listener = CmId.create();
  const client = CmId.create();
  listener.listen(host, p);
  await client.resolveAddr(host, p);
  await client.resolveRoute();
  const dev = openDevice(client.info().device!);
  const pd = dev.allocPd();
  const cfg = { maxSendWr: 64, maxRecvWr: 64, busyPoll: 'adaptive' as const, ...opts };
  const a = new Conn(client, pd, cfg);
  a.setupReceives(64, 32);
  let b: Conn | undefined;
  const accepted = new Promise<Conn>((resolve, reject) => listener.on('connection', (id: CmId) => {
    try {
      b = new Conn(id, pd, cfg);
      b.setupReceives(64, 32);
      id.accept().then(() => resolve(b!), reject);
    } catch (err) {
      reject(err as Error);
    }
  }));
  await client.connect();
  await accepted;
  return {
    dev, pd, a, b: b!,
    close: () => {
      a.close();
      b?.close();
      listener.close();
      dev.close();
    },
  };
}

test.each([true, false])('reuseCompletion %s: onRecv gets each completion\'s fields, in one reused object (true) or a fresh one each (false)', async (reuse) => {
  const t = await connPair({ reuseCompletion: reuse });
  try {
    const seen: Array<{ obj: WorkCompletion; imm: number | undefined; opcodeName: string; byteLen: number; statusName: string }> = [];
    const got = new Promise<void>((resolve) => {
      t.b.onRecv = (wc, slot) => {
        seen.push({ obj: wc, imm: wc.imm, opcodeName: wc.opcodeName, byteLen: wc.byteLen, statusName: wc.statusName });
        t.b.repost(slot);
        if (seen.length === 3) resolve();
      };
    });
    t.b.ref();
    const dst = region(t.pd, 64);
    const src = region(t.pd, 64);
    t.a.post([{ opcode: 'RDMA_WRITE_WITH_IMM', imm: 0x1111, sge: [], remoteAddr: dst.addr, rkey: dst.rkey, wrId: 2 * 2 ** 32 + 1 }]);
    t.a.post([{ opcode: 'SEND', sge: [src.sge(0, 20)], wrId: 2 * 2 ** 32 + 2 }]);
    t.a.post([{ opcode: 'RDMA_WRITE_WITH_IMM', imm: 0x2222, sge: [src.sge(0, 4)], remoteAddr: dst.addr, rkey: dst.rkey, wrId: 2 * 2 ** 32 + 3 }]);
    await got;
    t.b.unref();
    expect(seen.map(({ obj, ...f }) => f)).toEqual([
      { imm: 0x1111, opcodeName: 'RECV_RDMA_WITH_IMM', byteLen: 0, statusName: 'SUCCESS' },
      { imm: undefined, opcodeName: 'RECV', byteLen: 20, statusName: 'SUCCESS' },
      { imm: 0x2222, opcodeName: 'RECV_RDMA_WITH_IMM', byteLen: 4, statusName: 'SUCCESS' },
    ]);
    if (reuse) {
      expect(seen[1].obj).toBe(seen[0].obj);
      expect(seen[2].obj).toBe(seen[0].obj);
    } else {
      expect(new Set(seen.map((x) => x.obj)).size).toBe(3);
      // a fresh object keeps its fields after the call (a deferred reader sees its own completion)
      expect(seen.map((x) => x.obj.imm)).toEqual([0x1111, undefined, 0x2222]);
    }
  } finally {
    t.close();
  }
});

/**
 * A send-queue accounting run on a fresh pair (signalEvery 8): `postAll`
 * puts N RDMA WRITEs (write(i) is the i-th) on conn a, calling track() after
 * each post so the highest use is seen; then one signaled WR completes after
 * every earlier one, and the queue must be empty, never have been over its
 * depth, and one WR in 8 must have completed. Returns postAll's result.
 */
async function accountingRun<T>(N: number, postAll: (a: Conn, write: (i: number) => SendWorkRequest, track: () => void) => Promise<T>): Promise<T> {
  const t = await connPair({ signalEvery: 8 });
  try {
    const dst = region(t.pd, 4096);
    const src = region(t.pd, 4096);
    let sendDone = 0;
    t.a.onSendDone = () => sendDone++;
    const errors: Error[] = [];
    t.a.onError = (e) => errors.push(e);
    t.a.ref();
    const depth = t.a.sendQueueDepth;
    expect(depth).toBeGreaterThanOrEqual(64 + 8);
    let maxUsed = 0;
    const write = (i: number): SendWorkRequest => ({ opcode: 'RDMA_WRITE', sge: [src.sge(0, 64)], remoteAddr: dst.addr + (i % 64) * 64, rkey: dst.rkey, wrId: 2 * 2 ** 32 + (i % 1000) });
    const r = await postAll(t.a, write, () => (maxUsed = Math.max(maxUsed, t.a.sendQueueUsed)));
    // a signaled WR completes after every earlier one: then nothing is held
    await t.a.postAndWait([{ opcode: 'RDMA_WRITE', sge: [src.sge(0, 8)], remoteAddr: dst.addr, rkey: dst.rkey }]);
    t.a.unref();
    expect(errors).toEqual([]);
    expect(maxUsed).toBeLessThanOrEqual(depth);
    expect(t.a.sendQueueUsed).toBe(0);
    // one in 8 signaled (a few more only if the queue ran nearly full)
    expect(sendDone).toBeGreaterThanOrEqual(Math.floor(N / 8) - 1);
    expect(sendDone).toBeLessThan(N / 4);
    return r;
  } finally {
    t.close();
  }
}

test('unsignaled posts: 5000 WRITEs never overflow the send queue, one in signalEvery completes, and the accounting returns to 0', async () => {
  const N = 5000;
  await accountingRun(N, async (a, write, track) => {
    for (let i = 0; i < N; i++) {
      // at most 16 posted ahead of what the queue gave back, as a transport
      // bounds its in-flight IOs; the rest waits a turn of the event loop
      while (a.sendQueueUsed >= 48) await new Promise((r) => setImmediate(r));
      expect(a.post([write(i)], { unsignaled: true })).toBe(true);
      track();
    }
  });
});

test('an unsignaled WR that fails still fails the connection (EIO), and later posts are refused', async () => {
  const t = await connPair();
  try {
    const src = region(t.pd, 64);
    const failed = new Promise<Error>((resolve) => {
      t.a.onError = resolve;
    });
    t.a.ref();
    // a wrong rkey: the peer answers with a remote access error, which
    // completes even an unsignaled WR
    expect(t.a.post([{ opcode: 'RDMA_WRITE', sge: [src.sge(0, 8)], remoteAddr: src.addr, rkey: (src.rkey ^ 0x5a5a00) >>> 0, wrId: 2 * 2 ** 32 + 7 }], { unsignaled: true })).toBe(true);
    const err = await failed;
    t.a.unref();
    expect(err).toBeInstanceOf(TransportError);
    expect(err).toMatchObject({ code: 'EIO' });
    expect(err.message).toMatch(/completed with REM_ACCESS_ERR/);
    expect(t.a.failed).toBe(true);
    expect(t.a.post([{ opcode: 'RDMA_WRITE', sge: [src.sge(0, 8)], remoteAddr: src.addr, rkey: src.rkey }], { unsignaled: true })).toBe(false);
  } finally {
    t.close();
  }
});

/** Counts QueuePair.postSend calls (the native post) and their WRs, per QP, while `fn` runs. */
async function countingPosts<T>(fn: (calls: Map<unknown, number[]>) => Promise<T>): Promise<T> {
  const proto = QueuePair.prototype as unknown as Record<string, (...a: unknown[]) => unknown>;
  const orig = proto.postSend;
  const calls = new Map<unknown, number[]>();
  proto.postSend = function (this: unknown, ...a: unknown[]) {
    let l = calls.get(this);
    if (!l) calls.set(this, (l = []));
    l.push((a[0] as unknown[]).length);
    return orig.apply(this, a);
  };
  try {
    return await fn(calls);
  } finally {
    proto.postSend = orig;
  }
}

/** The immediates b receives, in order, until `n` arrived (or `ms` passed). */
function immsAt(b: Conn, n: number, ms: number): Promise<number[]> {
  const got: number[] = [];
  b.ref();
  return new Promise<number[]>((resolve) => {
    const done = (): void => {
      clearTimeout(t);
      b.unref();
      resolve(got);
    };
    const t = setTimeout(done, ms);
    b.onRecv = (wc, slot) => {
      got.push(wc.imm!);
      b.repost(slot);
      if (got.length === n) done();
    };
  });
}

describe('postSoon', () => {
  const imm = (dst: { addr: number; rkey: number }, v: number) => ({ opcode: 'RDMA_WRITE_WITH_IMM' as const, imm: v, sge: [], remoteAddr: dst.addr, rkey: dst.rkey, wrId: 2 * 2 ** 32 + v });

  test('the WRs of one checkpoint go out in one native call, in order, and a post() in between takes them along first', async () => {
    const t = await connPair();
    try {
      const dst = region(t.pd, 64);
      const arrived = immsAt(t.b, 6, 20000);
      await countingPosts(async (calls) => {
        t.a.postSoon([imm(dst, 1)]);
        t.a.postSoon([imm(dst, 2), imm(dst, 3)]);
        expect(calls.get(t.a.qp)).toBeUndefined(); // nothing posted yet
        t.a.post([imm(dst, 4)]); // the three waiting WRs go first, in the same call
        expect(calls.get(t.a.qp)).toEqual([4]);
        t.a.postSoon([imm(dst, 5)]);
        t.a.postSoon([imm(dst, 6)]);
        await Promise.resolve(); // the flush was queued before this continuation
        expect(calls.get(t.a.qp)).toEqual([4, 2]);
        expect(await arrived).toEqual([1, 2, 3, 4, 5, 6]);
      });
      expect(t.a.failed).toBe(false);
    } finally {
      t.close();
    }
  });

  test('WRs waiting when the connection fails or closes are never posted', async () => {
    const t = await connPair();
    try {
      const dst = region(t.pd, 64);
      const arrived = immsAt(t.b, 1, 1500);
      await countingPosts(async (calls) => {
        t.a.onError = () => undefined;
        t.a.postSoon([imm(dst, 7)]);
        t.a.fail(new Error('test: failed'));
        t.a.postSoon([imm(dst, 8)]); // refused: failed
        await new Promise((r) => setImmediate(r));
        expect(calls.get(t.a.qp)).toBeUndefined();
      });
      expect(await arrived).toEqual([]);
    } finally {
      t.close();
    }
    const u = await connPair();
    try {
      const dst = region(u.pd, 64);
      await countingPosts(async (calls) => {
        u.a.postSoon([imm(dst, 9)]);
        u.a.close();
        await new Promise((r) => setImmediate(r));
        expect(calls.get(u.a.qp)).toBeUndefined();
      });
    } finally {
      u.close();
    }
  });

  test('5000 WRs in checkpoints of 1 to 16 never overflow the send queue, one in signalEvery completes, and the accounting returns to 0', async () => {
    const N = 5000;
    const calls = await accountingRun(N, (a, write, track) => countingPosts(async (c) => {
      for (let i = 0; i < N;) {
        while (a.sendQueueUsed >= 40) await new Promise((r) => setImmediate(r));
        const k = Math.min(N - i, 1 + (i % 16));
        for (let j = 0; j < k; j++, i++) a.postSoon([write(i)]);
        await Promise.resolve();
        track();
      }
      return c.get(a.qp)?.length ?? 0;
    }));
    // one native call per checkpoint: 5000 WRs in checkpoints of 1..16
    expect(calls).toBeLessThan(N / 6);
  });
});
