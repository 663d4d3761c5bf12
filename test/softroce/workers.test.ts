/**
 * node-rdma in worker threads. The addon is loaded once per environment (the
 * main thread and each worker), so anything that holds JS values must be kept
 * per environment, and what the process shares (librdmacm's device contexts
 * and their async event fd) must be used by one environment at a time.
 *
 * Each scenario runs in a child node process: before the fix the first one
 * killed its process (SIGSEGV), which must not take jest down with it.
 */
import { spawnSync } from 'child_process';
import * as path from 'path';

const LIB = JSON.stringify(path.resolve(__dirname, '..', '..', 'lib'));

/**
 * Script text that defines connectPair(port, pd, cq): a listener on
 * 10.99.1.1:port and a client connected to it, QPs on pd/cq; resolves with
 * { listener, cli, req } once both sides are established.
 */
const CONNECT_PAIR = `
  const connectPair = async (port, pd, cq) => {
    const listener = lib.CmId.create();
    listener.listen('10.99.1.1', port);
    const accepted = new Promise((resolve) => listener.once('connection', (req) => {
      req.createQueuePair(pd, { sendCq: cq, recvCq: cq });
      resolve(req.accept().then(() => req));
    }));
    const cli = lib.CmId.create();
    await cli.resolveAddr('10.99.1.1', port);
    await cli.resolveRoute();
    cli.createQueuePair(pd, { sendCq: cq, recvCq: cq });
    await cli.connect();
    return { listener, cli, req: await accepted };
  };`;
/** What a worker's code starts with: lib, parentPort and connectPair in scope. */
const WORKER_PRELUDE = `const lib = require(${LIB}); const { parentPort } = require('worker_threads'); ${CONNECT_PAIR}`;

/** Runs `body` (an async function body; lib, Worker, connectPair and inWorker in scope) in a child node; returns its status and output. */
function child(body: string): { status: number | null; signal: string | null; out: string } {
  const script = `
    const lib = require(${LIB});
    const { Worker } = require('worker_threads');
    ${CONNECT_PAIR}
    const inWorker = (code) => new Promise((resolve, reject) => {
      const w = new Worker(${JSON.stringify(WORKER_PRELUDE)} + code, { eval: true });
      const got = [];
      w.on('message', (m) => got.push(m));
      w.once('error', reject);
      w.once('exit', (code) => resolve({ code, got }));
    });
    (async () => { ${body} })().then(() => process.exit(0), (e) => { console.log('FAILED ' + (e && e.stack || e)); process.exit(1); });`;
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 90_000 });
  return { status: r.status, signal: r.signal, out: `${r.stdout}${r.stderr}` };
}

test('a worker that loaded the addon and exited leaves rdma_cm working in the main thread (its incoming connections used to crash the process)', () => {
  const r = child(`
    lib.listDevices(); // the main thread loads the addon first
    const w = await inWorker('const d = lib.openDevice("rxe0"); d.allocPd(); d.close(); parentPort.postMessage("worker done");');
    console.log('worker', w.code, w.got.join());
    const dev = lib.openDevice('rxe0');
    const pd = dev.allocPd();
    const cq = dev.createCompletionQueue();
    const { listener, cli, req } = await connectPair(20711, pd, cq);
    console.log('accepted', req instanceof lib.CmId);
    cli.close(); req.close(); listener.close(); dev.close();
  `);
  expect(r).toEqual({ status: 0, signal: null, out: 'worker 0 worker done\naccepted true\n' });
});

test('rdma_cm and verbs work inside a worker, and errors of the addon there are RdmaErrors of that thread', () => {
  const r = child(`
    lib.listDevices(); // loaded here first: the worker's errors must still be its own class
    const w = await inWorker(\`
      (async () => {
        const dev = lib.openDevice('rxe0');
        const pd = dev.allocPd();
        const cq = dev.createCompletionQueue();
        const { listener, cli, req } = await connectPair(20712, pd, cq);
        parentPort.postMessage('connected ' + (req instanceof lib.CmId));
        try { lib.openDevice('nosuch'); } catch (e) { parentPort.postMessage(e.constructor === lib.RdmaError ? 'RdmaError ' + e.code + ' ' + e.syscall : 'other ' + e.name); }
        cli.close(); req.close(); listener.close(); dev.close();
      })();
    \`);
    console.log('worker', w.code, w.got.join(' | '));
  `);
  expect(r).toEqual({ status: 0, signal: null, out: 'worker 0 connected true | RdmaError ENODEV rdma_get_devices\n' });
});

test('a worker terminated with everything open (connected ids, QPs, CQs waiting, a watched device) takes nothing down with it', () => {
  const r = child(`
    const w = new Worker(${JSON.stringify(WORKER_PRELUDE)} + \`
      const dev = lib.openDevice('rxe0');
      dev.on('event', () => {});
      const pd = dev.allocPd();
      const cq = dev.createCompletionQueue();
      cq.ref();
      connectPair(20713, pd, cq).then(({ cli }) => {
        cli.queuePair.postRecv([{ wrId: 1 }]);
        parentPort.postMessage('connected');
      });
    \`, { eval: true });
    await new Promise((resolve, reject) => { w.once('message', resolve); w.once('error', reject); });
    console.log('terminated', await w.terminate());
    // the main thread goes on: a device, its events and rdma_cm
    const dev = lib.openDevice('rxe0');
    dev.on('event', () => {});
    const id = lib.CmId.create();
    await id.resolveAddr('10.99.1.1', 20714);
    console.log('main ok', dev.name);
    id.close(); dev.close();
  `);
  expect(r).toEqual({ status: 0, signal: null, out: 'terminated 1\nmain ok rxe0\n' });
});

test('a worker that ends with a window bound to a region through a QP: its kernel objects are all freed, in an order the kernel accepts', () => {
  const helpers = JSON.stringify(path.join(__dirname, 'helpers.js'));
  const r = child(`
    // librdmacm's own device context (ctx) stays open for the process once used: not counted
    const res = () => /pd \\d+ cq \\d+ qp \\d+ cm_id \\d+ mr \\d+/.exec(require('child_process').execSync('rdma resource show rxe0').toString())[0];
    const before = res();
    const w = await inWorker(\`
      const h = require(\${JSON.stringify(${helpers})});
      const l = h.loopback('rxe0');
      const mw = l.pd.allocMemoryWindow(2);
      const mr = l.pd.registerMemory(l.pd.allocate(4096), lib.Access.LOCAL_WRITE | lib.Access.REMOTE_WRITE | lib.Access.MW_BIND);
      l.a.postSend([{ wrId: 1, opcode: 'BIND_MW', bind: { mw, mr, access: lib.Access.REMOTE_WRITE } }]);
      h.completions(l.cqA, 1).then((wc) => parentPort.postMessage(wc[0].statusName + ' ' + require('child_process').execSync('rdma resource show rxe0').toString().trim()));
    \`);
    console.log('worker', w.code, w.got.join());
    await new Promise((r) => setTimeout(r, 300));
    console.log(before === res() ? 'back to ' + before : 'before: ' + before + ', after: ' + res());
  `);
  expect(r.status).toBe(0);
  const lines = r.out.split('\n');
  // while it ran: its PD, two CQs, two QPs and the region besides the baseline
  expect(lines[0]).toMatch(/^worker 0 SUCCESS .*mr 1 /);
  expect(lines[1]).toMatch(/^back to pd \d+ cq \d+ qp \d+ cm_id 0 mr 0$/);
});

test('async events: one thread watches a device at a time (EBUSY for another, whose refused listener is not kept), and events reach a worker that watches', () => {
  const r = child(`
    const dev = lib.openDevice('rxe1');
    const onMain = () => {};
    dev.on('event', onMain); // the main thread watches rxe1's events
    const w = new Worker(${JSON.stringify(WORKER_PRELUDE)} + \`
      const d = lib.openDevice('rxe1');
      try {
        d.on('GID_CHANGE', () => parentPort.postMessage('the refused listener was called'));
        parentPort.postMessage('watching while the main thread does');
      } catch (e) {
        parentPort.postMessage(e.code + ': ' + e.message);
      }
      parentPort.once('message', () => { // the main thread stopped watching
        const timer = setTimeout(() => { parentPort.postMessage('no event'); d.close(); }, 30000);
        d.on('GID_CHANGE', (ev) => { clearTimeout(timer); parentPort.postMessage(ev.type + ' port ' + ev.port); setTimeout(() => d.close(), 200); });
        require('child_process').execFileSync('ip', ['addr', 'add', '10.99.2.78/24', 'dev', 'eth1']);
      });
    \`, { eval: true });
    const got = [];
    w.on('message', (m) => {
      got.push(m);
      if (got.length === 1) {
        dev.off('event', onMain); // now nobody watches
        w.postMessage('go');
      }
    });
    const code = await new Promise((resolve, reject) => { w.once('error', reject); w.once('exit', resolve); });
    require('child_process').spawnSync('ip', ['addr', 'del', '10.99.2.78/24', 'dev', 'eth1']);
    for (const m of got) console.log(m);
    console.log('worker exit', code);
    dev.close();
  `);
  expect(r.status).toBe(0);
  const lines = r.out.split('\n');
  expect(lines[0]).toMatch(/^EBUSY: ibv_get_async_event failed: EBUSY .*another thread \(worker\) watches the async events of rxe1$/);
  // only the listener added after the main thread stopped: the refused one was not kept
  expect(lines.slice(1)).toEqual(['GID_CHANGE port 1', 'worker exit 0', '']);
});
