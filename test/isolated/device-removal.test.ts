/**
 * Device removal on rxe (Linux 7.x has rxe's disassociate_ucontext, 6.12 had
 * not): `rdma link delete rxe1` under a listener, a connected pair and a
 * connect in progress raises DEVICE_FATAL on the device and DEVICE_REMOVAL
 * on every CM id, fails what is pending with ENODEV, returns at once, and
 * everything closes cleanly; a transport session with a path on rxe1 fails
 * over to rxe0 without losing or repeating an IO. In the isolated tier (a
 * guest of its own, docs/testing.md): a removal that went wrong could leave
 * the kernel unfit for other tests; each test puts rxe1 back (rdma link
 * add) before the next.
 */
import { execFile, execFileSync } from 'child_process';
import { CmId, CompletionQueue, Device, openDevice, RdmaError, transport } from '../../lib';

const HOST1 = '10.99.2.1';
const GID1 = '::ffff:10.99.2.1';
let port = 23000 + (process.pid % 500) * 8;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function until(what: string, cond: () => boolean, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** `rdma link delete rxe1`, asynchronously (the event loop must keep delivering events meanwhile); resolves with its duration. */
function deleteRxe1(): Promise<number> {
  const t = Date.now();
  return new Promise((resolve, reject) => execFile('rdma', ['link', 'delete', 'rxe1'], { timeout: 30_000 }, (err, _out, stderr) => {
    if (err) reject(new Error(`rdma link delete rxe1 failed: ${err.message} ${stderr}`));
    else resolve(Date.now() - t);
  }));
}

function links(): string {
  return execFileSync('rdma', ['link', 'show'], { encoding: 'utf8' });
}

/** rxe1 back on eth1, its port active with its IPv4 GID (as the guest's init leaves it). */
async function restoreRxe1(): Promise<void> {
  if (!/link rxe1\//.test(links())) execFileSync('rdma', ['link', 'add', 'rxe1', 'type', 'rxe', 'netdev', 'eth1']);
  await until('rxe1 active with its IPv4 GID', () => {
    let dev: Device | undefined;
    try {
      dev = openDevice('rxe1');
      return dev.queryPort(1).state === 'ACTIVE' && dev.gids().some((g) => g.gid === GID1);
    } catch {
      return false;
    } finally {
      dev?.close();
    }
  }, 30_000);
}

afterEach(restoreRxe1, 60_000);

test('rdma link delete rxe1: DEVICE_FATAL, DEVICE_REMOVAL on the listener and both ends, a pending connect fails ENODEV, the CQs report it, the delete returns at once, everything closes', async () => {
  const p = port++;
  const dev = openDevice('rxe1');
  const fatal: string[] = [];
  dev.on('DEVICE_FATAL', (ev) => fatal.push(ev.type));
  const pd = dev.allocPd();
  const cqA = dev.createCompletionQueue({ cqe: 16 });
  const cqB = dev.createCompletionQueue({ cqe: 16 });
  const cqErrors: RdmaError[] = [];
  for (const cq of [cqA, cqB]) cq.on('error', (err) => cqErrors.push(err));
  const removed: string[] = [];
  const watch = (name: string, id: CmId) => id.on('device-removal', () => removed.push(name));

  const listener = CmId.create();
  watch('listener', listener);
  listener.listen(HOST1, p);
  let server: CmId | undefined;
  const accepted = new Promise<CmId>((resolve, reject) => listener.once('connection', (id: CmId) => {
    server = id;
    watch('server', id);
    id.createQueuePair(pd, { sendCq: cqB, recvCq: cqB, maxSendWr: 8, maxRecvWr: 8 });
    id.accept().then(() => resolve(id), reject);
  }));
  const client = CmId.create();
  watch('client', client);
  await client.resolveAddr(HOST1, p);
  await client.resolveRoute();
  const a = client.createQueuePair(pd, { sendCq: cqA, recvCq: cqA, maxSendWr: 8, maxRecvWr: 8 });
  await client.connect();
  await accepted;
  const mr = pd.registerMemory(pd.allocate(4096));
  a.postRecv([{ wrId: 1, sge: [mr.sge(0, 64)] }]);

  // a connect in progress: its listener never accepts
  const silent = CmId.create();
  watch('silent listener', silent);
  silent.listen(HOST1, p + 1);
  const requested = new Promise<void>((r) => silent.once('connection', () => r()));
  const pending = CmId.create();
  watch('pending', pending);
  await pending.resolveAddr(HOST1, p + 1);
  await pending.resolveRoute();
  const pd2 = pending.device.allocPd();
  const cq2 = pending.device.createCompletionQueue({ cqe: 4 });
  pending.createQueuePair(pd2, { sendCq: cq2, recvCq: cq2 });
  const connecting = pending.connect().then(() => undefined, (err: RdmaError) => err);
  await requested;
  cqA.ref(); // something waits on a CQ: the removal must release it too

  const took = await deleteRxe1();
  expect(took).toBeLessThan(10_000); // 6.12 never returned while a context was open
  await until('every id hears of the removal', () => removed.length === 5, 10_000);
  expect(removed.sort()).toEqual(['client', 'listener', 'pending', 'server', 'silent listener']);
  expect(await connecting).toMatchObject({ code: 'ENODEV', message: expect.stringMatching(/device removed/) });
  await until('DEVICE_FATAL', () => fatal.length > 0, 10_000);
  expect(fatal).toEqual(['DEVICE_FATAL']);
  // the CQ that was armed learns it can no longer be waited for (before the
  // fix, this EIO came out of a libuv callback and ended the process)
  await until('the armed CQ fails', () => cqA.failure !== undefined || cqB.failure !== undefined, 10_000);
  for (const err of cqErrors) expect(err).toMatchObject({ code: 'EIO', syscall: 'ibv_req_notify_cq', message: expect.stringMatching(/rxe1 can no longer be waited for/) });
  expect(cqErrors.length).toBeGreaterThan(0);
  // the posted receive never completes; new work and registrations fail with the kernel's EIO
  expect(() => a.postSend([{ wrId: 2, opcode: 'SEND', sge: [mr.sge(0, 8)] }])).toThrow(expect.objectContaining({ code: 'EIO', syscall: 'ibv_post_send' }));
  expect(() => pd.registerMemory(pd.allocate(4096))).toThrow(expect.objectContaining({ code: 'EIO', syscall: 'ibv_reg_mr' }));
  expect(links()).not.toMatch(/rxe1/);

  // everything closes without an error
  for (const o of [pending, client, server!, listener, silent, dev, cq2.device]) o.close();
  expect(() => openDevice('rxe1')).toThrow(expect.objectContaining({ code: 'ENODEV' }));
  // rxe0 is untouched
  const cq0: CompletionQueue = openDevice('rxe0').createCompletionQueue({ cqe: 4 });
  expect(cq0.poll()).toEqual([]);
  cq0.device.close();
});

test('the transport: a session with a path on rxe1 fails over to rxe0 when rxe1 is deleted under load; no IO fails or runs twice, and both ends close', async () => {
  const p = port++;
  const calls = new Map<string, number>();
  const server = new transport.TransportServer({
    queueDepth: 32, chunkSize: 8192, maxHeaderSize: 64,
    handler: (req) => {
      const id = req.header.toString();
      calls.set(id, (calls.get(id) ?? 0) + 1);
      return { header: Buffer.from(`ok ${id}`) };
    },
  });
  server.listen([{ host: '10.99.1.1', port: p }, { host: HOST1, port: p }]);
  const client = await transport.connect({
    paths: [{ host: '10.99.1.1', port: p }, { host: HOST1, port: p }], policy: 'round-robin',
    reconnect: { initialDelayMs: 300, maxDelayMs: 1000, jitter: 0 },
  });
  const downs: Array<[number, string]> = [];
  client.on('path-down', (i: number, err: Error & { code?: string }) => downs.push([i, err.code ?? err.message]));
  let stop = false;
  const results: Array<{ id: string; ok: boolean; header?: string; code?: string }> = [];
  const worker = async (w: number): Promise<void> => {
    for (let i = 0; !stop; i++) {
      const id = `${w}:${i}`;
      try {
        const r = await client.write(Buffer.from(id), Buffer.alloc(4096, w));
        results.push({ id, ok: r.status === 0, header: r.header.toString() });
      } catch (err) {
        results.push({ id, ok: false, code: (err as RdmaError).code });
      }
    }
  };
  try {
    const workers = Array.from({ length: 8 }, (_, w) => worker(w));
    await until('IO on both paths', () => client.stats().paths.every((x) => x.writes > 10), 30_000);
    const took = await deleteRxe1();
    expect(took).toBeLessThan(10_000);
    await until('path 1 down', () => downs.length > 0, 10_000);
    const before = results.length;
    await until('IO goes on over rxe0', () => results.length > before + 200, 30_000);
    stop = true;
    await Promise.all(workers);
    expect(downs[0][0]).toBe(1);
    expect(results.filter((r) => !r.ok)).toEqual([]);
    expect(results.every((r) => r.header === `ok ${r.id}`)).toBe(true);
    expect([...calls.values()].every((n) => n === 1)).toBe(true);
    expect(calls.size).toBe(results.length);
    const paths = client.stats().paths;
    expect(paths.find((x) => x.index === 0)).toMatchObject({ state: 'connected', device: 'rxe0' });
    expect(paths.find((x) => x.index === 1)!.state).not.toBe('connected');
  } finally {
    stop = true;
    await client.close();
    await server.close();
  }
}, 90_000);
