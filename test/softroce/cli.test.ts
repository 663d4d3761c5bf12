/**
 * The node-rdma CLI as a program in the SoftRoCE guest: `devices --json`
 * sees rxe0/rxe1 with their capabilities, and a `serve` + `bench` pair
 * over two paths moves data and both exit 0. Three node processes in all
 * (each start costs 1-3 s under TCG), run in parallel where possible.
 */
import { ChildProcess, execFile, spawn } from 'child_process';
import * as path from 'path';

const MAIN = path.resolve(__dirname, '../../lib/cli/main.js');
const PORT = 19600 + (process.pid % 300);

function runCli(args: string[], timeoutMs = 90_000): Promise<{ code: number; out: string; err: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [MAIN, ...args], { timeout: timeoutMs, maxBuffer: 16 << 20 }, (error, stdout, stderr) => {
      const code = error ? ((error as { code?: number }).code ?? 1) : 0;
      resolve({ code: typeof code === 'number' ? code : 1, out: stdout, err: stderr });
    });
  });
}

/** Resolves with the first stdout line matching `re`, or rejects when the process exits first. */
function waitForLine(child: ChildProcess, re: RegExp, ms: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => reject(new Error(`no line matching ${re} within ${ms} ms; got: ${buf}`)), ms);
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      const line = buf.split('\n').find((l) => re.test(l));
      if (line) {
        clearTimeout(timer);
        resolve(line);
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`exited with ${code} before printing ${re}; stdout: ${buf}`));
    });
  });
}

test('devices --json: rxe0 and rxe1 with ports, RoCE v2 GIDs and capabilities', async () => {
  const r = await runCli(['devices', '--json']);
  expect(r.err).toBe('');
  expect(r.code).toBe(0);
  const { devices } = JSON.parse(r.out);
  expect(devices.map((d: { name: string }) => d.name).sort()).toEqual(['rxe0', 'rxe1']);
  for (const [i, d] of devices.sort((a: { name: string }, b: { name: string }) => a.name.localeCompare(b.name)).entries()) {
    expect(d.ports).toHaveLength(1);
    expect(d.ports[0]).toMatchObject({ port: 1, state: 'ACTIVE', linkLayer: 'Ethernet' });
    expect(d.ports[0].gids).toContainEqual(expect.objectContaining({ gid: `::ffff:10.99.${i + 1}.1`, type: 'RoCEv2', netdev: `eth${i}` }));
    // rxe: memory windows yes, explicit ODP (7.x; not implicit), dma-buf
    // registration refused (probed with a udmabuf)
    expect(d.capabilities.memoryWindows).toMatchObject({ type1: true, type2: true });
    expect(d.capabilities.odp).toMatchObject({ supported: true, implicit: false });
    expect(d.capabilities.odp.rc).toEqual(expect.arrayContaining(['SEND', 'RECV', 'WRITE', 'READ', 'ATOMIC']));
    expect(d.capabilities.dmabuf).toEqual({ supported: false, detail: expect.stringMatching(/^no \(EOPNOTSUPP/) });
    expect(typeof d.capabilities.atomics.atomicCap).toBe('string');
    expect(d.limits.maxQp).toBeGreaterThan(0);
  }
});

test('serve + bench over two paths: data moves, reads verify, both exit 0', async () => {
  const server = spawn(process.execPath, [MAIN, 'serve', '--listen', `10.99.1.1:${PORT}`, '--listen', `10.99.2.1:${PORT}`, '--queue-depth', '16', '--chunk-size', '16K', '--json'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let serverErr = '';
  server.stderr!.on('data', (d) => (serverErr += d));
  const exited = new Promise<number | null>((resolve) => server.on('exit', (code) => resolve(code)));
  let serverOut = '';
  server.stdout!.on('data', (d) => (serverOut += d));
  try {
    const listening = JSON.parse(await waitForLine(server, /"event":"listening"/, 60_000));
    expect(listening).toMatchObject({ queueDepth: 16, chunkSize: 16384, strict: true });
    const b = await runCli(['bench', '--path', `10.99.1.1:${PORT}`, '--path', `10.99.2.1:${PORT}`, '--size', '4K', '--depth', '4', '--duration', '3', '--read-ratio', '0.5', '--json']);
    expect(b.err).toBe('');
    expect(b.code).toBe(0);
    const j = JSON.parse(b.out);
    expect(j.ios).toBeGreaterThan(10);
    expect(j.errors).toBe(0);
    expect(j.mismatches).toBe(0);
    expect(j.verified).toBe(j.reads);
    expect(j.reads).toBeGreaterThan(0);
    expect(j.strict).toBe(true);
    // both paths carried IOs
    expect(j.perPath.map((p: { device: string }) => p.device)).toEqual(['rxe0', 'rxe1']);
    for (const p of j.perPath) expect(p.writes + p.reads).toBeGreaterThan(0);
    expect(j.latency.p50Us).toBeGreaterThan(0);
  } finally {
    server.kill('SIGTERM');
  }
  expect(await exited).toBe(0);
  // the server's final line: what it stored and served
  const closed = JSON.parse(serverOut.trim().split('\n').pop()!);
  expect(closed.event).toBe('closed');
  expect(closed.writes).toBeGreaterThan(0);
  expect(closed.reads).toBeGreaterThan(0);
  expect(closed.misses).toBe(0);
  expect(serverErr).toBe('');
});
