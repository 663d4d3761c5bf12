/**
 * Native boundaries (docs/hardening.md, L4-L6), each in a child node: what
 * failed here ended the process (std::terminate: exit 134, SIGABRT) or was
 * only visible at its exit.
 *
 * L4: no C++ exception leaves a libuv callback. Events that arrive after the
 *     last JS ran (node runs the loop once more at teardown, when every
 *     Node-API call that needs JS fails) are dropped quietly.
 * L5: list lengths from JS are bounded (RangeError) before anything is
 *     allocated for them; std::bad_alloc used to terminate the process.
 * L6: a partially posted send list is accounted exactly: the binds and the
 *     completions of the work requests that were posted.
 * L8: in madvise(DONTFORK) mode, pd.allocate(n) memory registers whatever n.
 * L9: closing an rdma_cm event channel with live ids lets their wrappers go.
 * L10: a dma-buf region's iova at or above 2^53 is refused (it would come
 *     back rounded as the region's addr).
 */
import { childSummary, runChild } from './native-child';

function expectClean(r: ReturnType<typeof runChild>): void {
  const bad = r.status !== 0 || /terminate called|Napi::Error|Aborted/.test(r.stderr);
  expect({ ok: !bad, summary: bad ? childSummary(r) : '' }).toEqual({ ok: true, summary: '' });
}

test('L4: id.disconnect() in the last timer of a script: the process exits 0 (3 runs)', () => {
  for (let run = 0; run < 3; run++) {
    const r = runChild(`
      (async () => {
        const port = 27000 + (process.pid % 2000);
        const listener = lib.CmId.create(), client = lib.CmId.create();
        listener.listen('10.99.1.1', port);
        await client.resolveAddr('10.99.1.1', port);
        await client.resolveRoute();
        const dev = openDevice(client.info().device);
        const pd = dev.allocPd();
        const cq = dev.createCompletionQueue({ cqe: 64 });
        client.createQueuePair(pd, { sendCq: cq, recvCq: cq });
        const accepted = new Promise((resolve, reject) => listener.once('connection', (id) => {
          id.createQueuePair(pd, { sendCq: cq, recvCq: cq });
          id.accept().then(() => resolve(id), reject);
        }));
        await client.connect();
        await accepted;
        listener.close();  // a listener keeps the process alive
        // the DISCONNECTED events arrive while the process ends
        setTimeout(() => { client.disconnect(); report({ disconnected: true }); }, 10);
      })().catch((e) => { console.error(e); process.exit(3); });
    `);
    expectClean(r);
    expect(r.result).toEqual({ disconnected: true });
  }
});

test('L4: a device listener whose last timer moves a QP to SQD (SQ_DRAINED pending at exit): the process exits 0 (3 runs)', () => {
  for (let run = 0; run < 3; run++) {
    const r = runChild(`
      const dev = openDevice('rxe0');
      dev.on('event', () => {});
      const pd = dev.allocPd();
      const cq = dev.createCompletionQueue({ cqe: 64 });
      const { a } = pair(pd, cq, cq);
      setTimeout(() => { a.modify({ qpState: 'SQD', enSqdAsyncNotify: true }); report({ sqd: a.query().qpState }); }, 10);
    `);
    expectClean(r);
    expect(r.result).toEqual({ sqd: 'SQD' });
  }
});

test('L5: huge lists from JS are RangeErrors before any allocation, on every post path', () => {
  const r = runChild(`
    const dev = openDevice('rxe0');
    const pd = dev.allocPd();
    const cqA = dev.createCompletionQueue({ cqe: 64 }), cqB = dev.createCompletionQueue({ cqe: 64 });
    const { a, b } = pair(pd, cqA, cqB);
    const srq = pd.createSharedReceiveQueue({ maxWr: 16 });
    const mr = pd.registerMemory(pd.allocate(4096), Access.LOCAL_WRITE | Access.REMOTE_WRITE);
    const out = {};
    function attempt(name, fn) {
      const t0 = Date.now();
      try { fn(); out[name] = { ok: true }; } catch (e) { out[name] = { name: e.name, message: String(e.message).slice(0, 200) }; }
      out[name].fast = Date.now() - t0 < 5000;
    }
    // an Array whose map() returns a huge list: the TS layer must not trust it
    class Sneaky extends Array { map() { return new Array(2 ** 30); } }
    attempt('postSend 2^28', () => a.postSend(new Array(2 ** 28)));
    attempt('postRecv 2^26', () => a.postRecv(new Array(2 ** 26)));
    attempt('srq.postRecv 2^26', () => srq.postRecv(new Array(2 ** 26)));
    attempt('native postSend 2^30', () => a.handle.postSend(new Array(2 ** 30)));
    attempt('native postRecv 2^30', () => a.handle.postRecv(new Array(2 ** 30)));
    attempt('native srq.postRecv 2^30', () => srq.handle.postRecv(new Array(2 ** 30)));
    attempt('native sge 2^30', () => a.handle.postSend([{ wrId: 0, opcode: 0, flags: 0, sge: new Array(2 ** 30), remoteAddr: 0, rkey: 0 }]));
    attempt('postSend Sneaky', () => a.postSend(Sneaky.of({ wrId: 1n, opcode: 'RDMA_WRITE', signaled: false, remoteAddr: mr.addr, rkey: mr.rkey })));
    attempt('postRecv Sneaky', () => b.postRecv(Sneaky.of({ wrId: 1n })));
    report(out);
    dev.close();
  `);
  expectClean(r);
  const tooLong = { name: 'RangeError', message: expect.stringMatching(/at most \d+/), fast: true };
  expect(r.result).toEqual({
    'postSend 2^28': tooLong,
    'postRecv 2^26': tooLong,
    'srq.postRecv 2^26': tooLong,
    'native postSend 2^30': tooLong,
    'native postRecv 2^30': tooLong,
    'native srq.postRecv 2^30': tooLong,
    'native sge 2^30': tooLong,
    // one work request each: posted as the list says, whatever map() returns
    'postSend Sneaky': { ok: true, fast: true },
    'postRecv Sneaky': { ok: true, fast: true },
  });
});

test('L5: ibv_advise_mr ranges are bounded before allocation (an on-demand region on rxe)', () => {
  const r = runChild(`
    const dev = openDevice('rxe0');
    const pd = dev.allocPd();
    const mr = pd.registerOnDemand(pd.allocate(8192), Access.LOCAL_WRITE);
    const out = {};
    try { mr.advise('PREFETCH', { ranges: new Array(2 ** 30) }); out.huge = 'ok'; } catch (e) { out.huge = e.name + ': ' + e.message; }
    try { mr.advise('PREFETCH', { ranges: new Array(4096).fill({ addr: mr.addr, length: 64 }) }); out.over = 'ok'; } catch (e) { out.over = e.name + ': ' + e.message; }
    report(out);
    dev.close();
  `);
  expectClean(r);
  expect(r.result).toEqual({
    huge: expect.stringMatching(/^RangeError: ranges has 1073741824 entries; at most 4095/),
    over: expect.stringMatching(/^RangeError: ranges has 4096 entries/),
  });
});

for (const path of ['packed', 'general'] as const) {
  test(`L6 (${path} path): a send list that fails part way is accounted for exactly the work requests posted`, () => {
    // the general path takes bigint wrIds; the packed path numbers
    const id = path === 'general' ? (n: number) => `${n}n` : (n: number) => `${n}`;
    const r = runChild(`
      const dev = openDevice('rxe0');
      const pd = dev.allocPd();
      const cqA = dev.createCompletionQueue({ cqe: 64 }), cqB = dev.createCompletionQueue({ cqe: 64 });
      const { a, b } = pair(pd, cqA, cqB, { maxSendWr: 8, maxRecvWr: 64 });
      const cap = a.query().cap.maxSendWr;
      const mr = pd.registerMemory(pd.allocate(4096), Access.LOCAL_WRITE | Access.REMOTE_WRITE | Access.MW_BIND);
      const src = pd.registerMemory(pd.allocate(4096), Access.LOCAL_WRITE);
      const rx = pd.registerMemory(pd.allocate(4096), Access.LOCAL_WRITE);
      const mw = pd.allocMemoryWindow(2);
      // cap - 2 SENDs wait (RNR, retried forever) for receives b has not posted: 2 slots stay free
      const waiting = cap - 2;
      a.postSend(Array.from({ length: waiting }, (_, i) => ({ wrId: 100 + i, opcode: 'SEND', sge: [src.sge(0, 8)] })));
      let err = null;
      try {
        a.postSend([
          { wrId: ${id(1)}, opcode: 'BIND_MW', bind: { mw, mr, access: Access.REMOTE_WRITE } },
          { wrId: ${id(2)}, opcode: 'SEND', sge: [src.sge(0, 8)] },
          { wrId: ${id(3)}, opcode: 'SEND', sge: [src.sge(0, 8)] },
          { wrId: ${id(4)}, opcode: 'SEND', sge: [src.sge(0, 8)] },
        ]);
      } catch (e) { err = { code: e.code, posted: e.posted, message: e.message }; }
      const rkeys = { ts: mw.rkey, native: mw.handle.rkey };
      let delivered = 0;
      cqA.on('completions', (wcs) => { delivered += wcs.length; });
      // now every waiting SEND (and the posted one) finds its receive; the
      // process ends on its own once nothing is outstanding
      b.postRecv(Array.from({ length: waiting + 1 }, (_, i) => ({ wrId: 500 + i, sge: [rx.sge(0, 64)] })));
      process.on('exit', () => {
        let mrClose = 'ok';
        try { mr.close(); } catch (e) { mrClose = e.code; }
        report({ err, rkeys, delivered, expected: waiting + 2, mrClose, mwClosed: mw.closed });
      });
    `);
    expectClean(r);
    const { err, rkeys, delivered, expected, mrClose, mwClosed } = r.result;
    expect(rkeys.ts).toBe(rkeys.native);
    // the CQ kept the process alive for every completion posted (the bind and the SEND)
    expect(delivered).toBe(expected);
    // the window is the region's child: closing the region closes it first
    expect({ mrClose, mwClosed }).toEqual({ mrClose: 'ok', mwClosed: true });
    expect(err).toEqual({ code: expect.stringMatching(/^E[A-Z]+$/), posted: 2, message: expect.stringMatching(/work request 2 of 4/) });
  });
}

test('L8: RDMAV_FORK_SAFE=1: pd.allocate(1000) (one page of its own) registers; JS memory sharing pages is still refused', () => {
  const r = runChild(`
    const dev = openDevice('rxe0');
    const pd = dev.allocPd();
    const out = {};
    for (const [name, mem] of [['allocate(1000)', pd.allocate(1000)], ['allocate(5000) view', new Uint8Array(pd.allocate(5000), 100, 3000)],
                               ['JS 1000', new Uint8Array(1000)]]) {
      try { pd.registerMemory(mem, Access.LOCAL_WRITE).close(); out[name] = 'ok'; } catch (e) { out[name] = e.name; }
    }
    report(out);
    dev.close();
  `, 60_000, { ...process.env, RDMAV_FORK_SAFE: '1' });
  expectClean(r);
  expect(r.result).toEqual({ 'allocate(1000)': 'ok', 'allocate(5000) view': 'ok', 'JS 1000': 'RangeError' });
});

test('L9: a CM event channel closed with live ids: the ids read as closed, close() works, and their wrappers are collected', () => {
  const r = runChild(`
    (async () => {
      const ch = new N.CmEventChannel();
      let ids = [new N.CmId(ch, 'TCP'), new N.CmId(ch, 'UDP')];
      const refs = ids.map((id) => new WeakRef(id));
      ch.close();
      const closed = ids.map((id) => id.closed);
      ids.forEach((id) => id.close());
      ids = null;
      await settleGc(6);
      report({ closed, collected: refs.map((w) => w.deref() === undefined) });
    })().catch((e) => { console.error(e); process.exit(3); });
  `);
  expectClean(r);
  expect(r.result).toEqual({ closed: [true, true], collected: [true, true] });
});

test('L10: a dma-buf iova of 2^53 or more is a RangeError before the verb (it would come back rounded)', () => {
  const r = runChild(`
    const dev = openDevice('rxe0');
    const pd = dev.allocPd();
    const out = {};
    for (const iova of [2n ** 60n, 2 ** 53, -1n]) {
      try { pd.registerDmabuf({ fd: 0, length: 4096, iova }); out[String(iova)] = 'ok'; } catch (e) { out[String(iova)] = e.name; }
    }
    report(out);
    dev.close();
  `);
  expectClean(r);
  expect(r.result).toEqual({ [String(2n ** 60n)]: 'RangeError', [String(2 ** 53)]: 'RangeError', '-1': 'RangeError' });
});
