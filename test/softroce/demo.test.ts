/**
 * `node-rdma demo` (what `npm start` runs) on rxe0 + rxe1: a short run with
 * a server-side cut of path 1 is detected, fails over and recovers with no
 * data mismatch; SIGINT mid-run stops it cleanly (exit 130, summary
 * printed). No link cut here: on rxe it would leave rxe1's rdma_cm unusable
 * for the rest of the guest's tests (see docs/benchmarks.md).
 */
import { execFile, spawn } from 'child_process';
import * as path from 'path';

const MAIN = path.resolve(__dirname, '../../lib/cli/main.js');
const PORT = 19900 + (process.pid % 90);

test('a server cut of path1: detected, IOs failed over, path reconnected, reads verified', async () => {
  const { code, out, err } = await new Promise<{ code: number; out: string; err: string }>((resolve) => {
    execFile(process.execPath, [MAIN, 'demo', '--duration', '9', '--cut', 'server', '--cut-at', '3', '--depth', '8', '--interval', '0.5', '--port', String(PORT), '--json'],
      { timeout: 100_000, maxBuffer: 16 << 20 }, (e, stdout, stderr) => resolve({ code: e ? Number((e as { code?: number }).code ?? 1) : 0, out: stdout, err: stderr }));
  });
  expect(err).toBe('');
  const r = JSON.parse(out);
  // first, so a failure says why (e.g. 'N IOs failed (ECONNABORTED n)')
  expect(r.problems).toEqual([]);
  expect(code).toBe(0);
  expect(r.endpoints.map((e: { device: string }) => e.device)).toEqual(['rxe0', 'rxe1']);
  expect(r.cutPath).toBe(1);
  expect(r.cuts).toHaveLength(1);
  const k = r.cuts[0];
  expect(k.mode).toBe('server');
  expect(k.timeToDetectMs).toBeGreaterThanOrEqual(0);
  expect(k.timeToDetectMs).toBeLessThan(3000);
  expect(k.recoveredAtMs).toBeGreaterThan(k.detectedAtMs);
  expect(r.workload.ios).toBeGreaterThan(0);
  expect(r.workload.mismatches).toBe(0);
  expect(r.workload.verified).toBeGreaterThan(0);
  expect(r.phases.map((p: { phase: string }) => p.phase)).toEqual(expect.arrayContaining(['before cut', 'path down']));
  // both paths carried IOs before the cut
  expect(r.phases[0].perPath.every((n: number) => n > 0)).toBe(true);
  expect(r.workload.paths.map((p: { state: string }) => p.state)).toEqual(['connected', 'connected']);
  expect(r.events.map((e: { what: string }) => e.what)).toEqual(expect.arrayContaining([
    'cutting path1: the server disconnects it', expect.stringMatching(/^path1 \(rxe1\) down: /), 'path1 (rxe1) reconnected',
  ]));
});

test('SIGINT mid-run: the workload stops, the summary is printed, exit 130', async () => {
  const child = spawn(process.execPath, [MAIN, 'demo', '--duration', '60', '--cut', 'none', '--no-live', '--interval', '0.5', '--port', String(PORT + 1)], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stderr!.on('data', (d) => (err += d));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no interval line within 60 s: ${out} ${err}`)), 60_000);
    child.stdout!.on('data', (d) => {
      out += d;
      if (/^t= +\d+\.\ds +[\d.k]+ IOPS/m.test(out)) {
        clearTimeout(t);
        resolve();
      }
    });
  });
  const sentAt = Date.now();
  child.kill('SIGINT');
  let timer: NodeJS.Timeout | undefined;
  const code = await Promise.race([exited, new Promise<string>((r) => (timer = setTimeout(() => r('still running 30 s after SIGINT'), 30_000)))]);
  clearTimeout(timer);
  if (typeof code === 'string') child.kill('SIGKILL');
  expect(code).toBe(130);
  expect(Date.now() - sentAt).toBeLessThan(30_000);
  expect(out).toMatch(/>> interrupted: stopping the workload and closing/);
  expect(out).toMatch(/==== node-rdma demo: summary ====/);
  expect(out).toMatch(/RESULT: interrupted/);
  expect(err).toBe('');
});
