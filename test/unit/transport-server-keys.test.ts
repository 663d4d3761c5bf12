/**
 * The server's type 1 chunk keys (lib/transport/server-keys.ts DeviceWindows),
 * with fake windows and connections: what the kernel may have bound is taken
 * away, whatever the server learnt about the bind's completion.
 */
import { DeviceWindows } from '../../lib/transport/server-keys';

class FakeWindow {
  static next = 1;
  readonly index = FakeWindow.next++;
  rkey = (this.index << 8) | 7;
  /** the key the kernel holds: moved only by a bind that ran (rxe checks a bind's named key against it) */
  kernelKey = this.rkey;
  closed = false;
  bound = false;
  close(): void {
    this.closed = true;
  }
}

function fixture(opts: { strict?: boolean; allocFails?: () => boolean } = {}) {
  const windows: FakeWindow[] = [];
  const pd = {
    closed: false,
    allocMemoryWindow: (type: number) => {
      if (type !== 1) throw new Error(`type ${type} window on rxe`);
      if (opts.allocFails?.()) throw new Error('ENOMEM: ibv_alloc_mw');
      const w = new FakeWindow();
      windows.push(w);
      return w;
    },
  };
  const pool = { addr: 0x10000, length: 4 * 4096 };
  // a connection whose binds the test completes or fails by hand
  const binds: Array<{ mw: FakeWindow; resolve: () => void; reject: (e: Error) => void }> = [];
  const conn = {
    failed: false,
    bindWindowAndWait: (mw: FakeWindow) => {
      mw.rkey = (mw.rkey & ~0xff) | ((mw.rkey + 1) & 0xff);
      mw.bound = true; // the kernel runs the bind when it is posted, whatever JS learns later
      return new Promise<number>((resolve, reject) => binds.push({ mw, resolve: () => resolve(mw.rkey), reject }));
    },
  };
  const dw = new DeviceWindows(pd as never, pool as never, { queueDepth: 4, chunkSize: 4096, strict: opts.strict ?? true });
  return { dw, conn: conn as never, binds, windows };
}

const tick = () => new Promise((r) => setImmediate(r));

test('a re-key whose completion never came (its path closed first) is taken away: the window is deallocated', async () => {
  const { dw, conn, binds } = fixture();
  const ready = dw.ready(0, conn);
  binds[0].resolve();
  const k0 = await ready;
  dw.invalidate(0);
  expect(dw.key(0)).toBe(0);
  // the response's re-key on path A; path A closes before its completion is polled
  dw.rekey(0, conn);
  const bound = binds[1].mw;
  binds[1].reject(new Error('ECLOSED: the connection was closed'));
  await tick();
  // the server no longer hands the key out, and what the kernel may have bound is gone
  expect(dw.key(0)).toBe(0);
  expect(bound.closed).toBe(true);
  expect(dw.exposed(0)).toBe(false);
  expect(dw.invalidate(0)).toBeUndefined(); // nothing left to take away
  expect(k0).not.toBe(0);
});

/**
 * A connection that binds like rxe: ibv_bind_mw names the window's
 * user-space key and advances it at post; the kernel runs the bind only if
 * the named key is the one it holds. `flush`: the QP is in error, so the
 * bind is flushed without running.
 */
function rxeConn(flush: boolean) {
  return {
    failed: false,
    bindWindowAndWait: (mw: FakeWindow) => {
      const named = mw.rkey;
      mw.rkey = (mw.rkey & ~0xff) | ((mw.rkey + 1) & 0xff);
      if (flush) return Promise.reject(new Error('ECONNRESET: SEND completed with WR_FLUSH_ERR'));
      if (named !== mw.kernelKey) return Promise.reject(new Error('EIO: work request failed: MW_BIND_ERR'));
      mw.kernelKey = mw.rkey;
      return Promise.resolve(mw.rkey);
    },
  } as never;
}

test('a re-key flushed on a dead path does not leave a window every later bind fails on (rxe: user-space key ahead of the kernel\'s)', async () => {
  const { dw } = fixture();
  const first = await dw.ready(1, rxeConn(false));
  dw.invalidate(1);
  // the handler's response re-keys on a path whose link just went down
  dw.rekey(1, rxeConn(true));
  await tick();
  expect(dw.key(1)).toBe(0);
  // the reconnected path's info exchange binds chunk 1 again: it must succeed
  // (on rxe a failed bind puts that path's QP in error: the path never came back)
  const again = await dw.ready(1, rxeConn(false));
  expect(again).not.toBe(0);
  expect(again).not.toBe(first);
  expect(dw.key(1)).toBe(again);
  expect(await dw.ready(1, rxeConn(false))).toBe(again);
});

test('an arrival while a re-key is still queued waits for it before deallocating the window', async () => {
  const { dw, conn, binds } = fixture();
  const r = dw.ready(0, conn);
  binds[0].resolve();
  await r;
  dw.invalidate(0);
  dw.rekey(0, conn);
  const queued = binds[1].mw;
  const inv = dw.invalidate(0);
  expect(inv).toBeInstanceOf(Promise);
  await tick();
  expect(queued.closed).toBe(false); // not while the bind may still run
  binds[1].resolve();
  await inv;
  expect(queued.closed).toBe(true);
  expect(dw.key(0)).toBe(0);
});

test('no fresh window (device removed, windows used up): the old key still goes; the set binds no more, so its paths fail over', async () => {
  let fail = false;
  const { dw, conn, binds, windows } = fixture({ allocFails: () => fail });
  const r = dw.ready(1, conn);
  binds[0].resolve();
  const k = await r;
  expect(k).not.toBe(0);
  const old = binds[0].mw;
  fail = true;
  // the spares are drained by later invalidations; at once here: none was refilled yet
  for (let i = 0; i < 20 && !windows.every((w) => w.closed || w !== old); i++) dw.invalidate(1);
  dw.invalidate(1);
  expect(old.closed).toBe(true);
  expect(dw.exposed(1)).toBe(false);
  // keep invalidating other chunks until no spare is left: then binding fails with the allocation's error
  let err: unknown;
  for (let c = 0; c < 4 && !err; c++) {
    for (let round = 0; round < 12 && !err; round++) {
      const rr = dw.ready(c, conn);
      const last = binds[binds.length - 1];
      last?.resolve();
      await rr.catch((e) => (err = e));
      dw.invalidate(c);
    }
  }
  expect(String(err)).toMatch(/ENOMEM/);
});

test('ready() hands out a key only once its bind completed; a failed bind is bound again through the caller', async () => {
  const { dw, conn, binds } = fixture();
  dw.rekey(2, conn); // posted on path A
  let got = 0;
  const onB = dw.ready(2, conn).then((k) => (got = k));
  await tick();
  expect(got).toBe(0);
  binds[0].reject(new Error('path A died'));
  await tick();
  expect(binds).toHaveLength(2); // bound again for path B
  binds[1].resolve();
  await onB;
  expect(got).toBe(binds[1].mw.rkey);
});
