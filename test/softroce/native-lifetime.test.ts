/**
 * Native lifetime (docs/hardening.md, L1-L3): what the kernel still holds,
 * the native objects hold too, so no GC order and no failed destroy frees
 * registered memory, strands a PD or leaves a CQ deaf.
 *
 * L1: a bound window holds its region (and, type 2, its QP) natively. rxe
 *     refuses to deregister a region with a bound window; a region
 *     finalized first used to free (and unpin) its memory anyway, and a peer
 *     writing through its rkey then landed in whatever reused the memory.
 * L2: a failed CQ close (EBUSY) used to stop watching the CQ first.
 * L3: Resource.close() released a parent although a child failed to close.
 */
import { childSummary, runChild } from './native-child';

const MR_ACCESS = 'Access.LOCAL_WRITE | Access.REMOTE_WRITE | Access.MW_BIND';

test('L1: a region dropped without close() while a window is bound to it (raw handles): writes through its rkey never land in reused memory', () => {
  // raw native objects, as a user's (or a transport's) bookkeeping may keep
  // them: only the window is kept, so nothing but the native layer keeps the
  // region from being finalized while the kernel still has it registered
  const r = runChild(`
    (async () => {
      const rounds = [];
      for (let round = 0; round < 3; round++) {
        const dev = openDevice('rxe0');
        const pd = dev.allocPd();
        const cqA = dev.createCompletionQueue({ cqe: 64 }), cqB = dev.createCompletionQueue({ cqe: 64 });
        const { a, b } = pair(pd, cqA, cqB);
        let buf = new Uint8Array(65536);
        let mr = new N.MemoryRegion(pd.handle, 'buffer', buf, ${MR_ACCESS});
        const mw = new N.MemoryWindow(pd.handle, 2);
        b.handle.postSend([{ wrId: 1, opcode: WrOpcode.BIND_MW, flags: SendFlags.SIGNALED, mw, bindMr: mr,
          bindAddr: mr.addr, bindLength: 65536, bindAccess: Access.REMOTE_WRITE }]);
        const [bound] = await polled(cqB, 1);
        if (!bound.ok) throw new Error('bind failed: ' + bound.statusName);
        const addr = mr.addr, rkey = mr.rkey;
        buf = mr = null;
        await settleGc();
        const fresh = [];
        for (let i = 0; i < 400; i++) fresh.push(new Uint8Array(65536));
        const src = pd.registerMemory(new Uint8Array(4096), Access.LOCAL_WRITE);
        const write = async (v) => {
          new Uint8Array(src.buffer).fill(v);
          a.postSend([{ wrId: v, opcode: 'RDMA_WRITE', sge: [src.sge()], remoteAddr: addr, rkey }]);
          const [w] = await polled(cqA, 1);
          return { status: w.statusName, landed: fresh.filter((f) => f.indexOf(v) >= 0).length };
        };
        const whileBound = await write(0xee);
        mw.close();  // the window's reference goes: the region may now be finalized (and deregistered)
        await settleGc();
        const afterClose = await write(0xdd);
        rounds.push({ whileBound, afterClose });
        // the region may still await its finalizer (then the PD cannot go yet)
        try { dev.close(); } catch {}
      }
      report({ rounds });
    })().catch((e) => { console.error(e); process.exit(3); });
  `);
  expect({ status: r.status, summary: r.status === 0 ? '' : childSummary(r) }).toEqual({ status: 0, summary: '' });
  const rounds = r.result.rounds as Array<Record<string, { status: string; landed: number }>>;
  expect(rounds).toHaveLength(3);
  // the region is still registered (its own pinned memory takes the write)
  // or it was deregistered (the write fails): never does a fresh buffer see it
  const never = { status: expect.stringMatching(/^(SUCCESS|REM_ACCESS_ERR|WR_FLUSH_ERR)$/), landed: 0 };
  for (const round of rounds) expect(round).toEqual({ whileBound: never, afterClose: never });
});

test('L1: bind a type 2 window, drop everything without close(), GC: every PD is reclaimed, no finalizer stalls', () => {
  const r = runChild(`
    (async () => {
      const before = pdCount();
      const t0 = Date.now();
      for (let round = 0; round < 3; round++) {
        let dev = openDevice('rxe0');
        let pd = dev.allocPd();
        let cqA = dev.createCompletionQueue({ cqe: 64 }), cqB = dev.createCompletionQueue({ cqe: 64 });
        let { a, b } = pair(pd, cqA, cqB);
        let mr = pd.registerMemory(pd.allocate(8192), ${MR_ACCESS});
        let mw = pd.allocMemoryWindow(2);
        b.postSend([{ wrId: 1, opcode: 'BIND_MW', bind: { mw, mr, access: Access.REMOTE_WRITE } }]);
        const [wc] = await polled(cqB, 1);
        if (!wc.ok) throw new Error('bind failed: ' + wc.statusName);
        dev = pd = cqA = cqB = a = b = mr = mw = null;
        await settleGc(12);
      }
      await settleGc(12);
      report({ before, after: pdCount(), ms: Date.now() - t0 });
    })().catch((e) => { console.error(e); process.exit(3); });
  `);
  expect({ status: r.status, summary: r.status === 0 ? '' : childSummary(r) }).toEqual({ status: 0, summary: '' });
  expect(r.result.after).toBe(r.result.before);
  // a QP finalized before its bound window stalled ~50 s in ibv_destroy_qp
  expect(r.result.ms).toBeLessThan(40_000);
});

test('L2: a CQ whose close fails (EBUSY: a QP still uses it) stays open and keeps delivering completions', () => {
  const r = runChild(`
    (async () => {
      const dev = openDevice('rxe0');
      const pd = dev.allocPd();
      const cq = dev.createCompletionQueue({ cqe: 64 });
      // a QP the TS CompletionQueue does not know of (so close() cannot close it first)
      const attrs = { type: 2, sendCq: cq.handle, recvCq: cq.handle, srq: null, maxSendWr: 8, maxRecvWr: 8,
        maxSendSge: 1, maxRecvSge: 1, maxInlineData: 0, sigAll: false };
      const raw = new N.QueuePair(pd.handle, attrs);
      const got = [];
      cq.on('completions', (wcs) => got.push(...wcs));
      let closeError = null;
      try { cq.close(); } catch (e) { closeError = e.code; }
      cq.ref();
      // INIT, one receive, then ERR: one flushed completion, delivered through the channel
      raw.modify({ qpState: 1, pkeyIndex: 0, portNum: 1, qpAccessFlags: 0 });
      const mr = pd.registerMemory(new Uint8Array(64), Access.LOCAL_WRITE);
      raw.postRecv([{ wrId: 42, sge: [mr.sge()] }]);
      raw.modify({ qpState: 6 });
      const end = Date.now() + 10000;
      while (got.length === 0 && Date.now() < end) await sleep(10);
      cq.unref();
      raw.close();
      cq.close();
      report({ closeError, delivered: got.map((w) => [w.wrId, w.statusName]), closed: cq.closed });
      dev.close();
    })().catch((e) => { console.error(e); process.exit(3); });
  `);
  expect({ status: r.status, summary: r.status === 0 ? '' : childSummary(r) }).toEqual({ status: 0, summary: '' });
  expect(r.result).toEqual({ closeError: 'EBUSY', delivered: [[42, 'WR_FLUSH_ERR']], closed: true });
});

test('L3: a parent stays open when a child fails to close, and closes once the child can', () => {
  const r = runChild(`
    (async () => {
      const dev = openDevice('rxe0');
      const pd = dev.allocPd();
      const cqA = dev.createCompletionQueue({ cqe: 64 }), cqB = dev.createCompletionQueue({ cqe: 64 });
      const { a, b } = pair(pd, cqA, cqB);
      const mr = pd.registerMemory(pd.allocate(4096), ${MR_ACCESS});
      // a (type 1) window bound to the region behind the TS layer's back:
      // the region cannot deregister while it is bound
      const mw = new N.MemoryWindow(pd.handle, 1);
      mw.bind(b.handle, mr.handle, mr.addr, 4096, Access.REMOTE_WRITE, 1, SendFlags.SIGNALED);
      const [bound] = await polled(cqB, 1);
      if (!bound.ok) throw new Error('bind failed: ' + bound.statusName);
      let code = null;
      try { dev.close(); } catch (e) { code = e.code; }
      const state = { code, dev: dev.closed, pd: pd.closed, mr: mr.closed, qp: a.closed };
      mw.close();
      dev.close();
      report({ state, after: { dev: dev.closed, pd: pd.closed, mr: mr.closed } });
    })().catch((e) => { console.error(e); process.exit(3); });
  `);
  expect({ status: r.status, summary: r.status === 0 ? '' : childSummary(r) }).toEqual({ status: 0, summary: '' });
  // the QPs closed (nothing held them), the region and everything above it stayed open
  expect(r.result).toEqual({
    state: { code: 'EINVAL', dev: false, pd: false, mr: false, qp: true },
    after: { dev: true, pd: true, mr: true },
  });
});
