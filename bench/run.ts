/**
 * The benchmark run (npm run bench -> scripts/bench -> this, inside the
 * SoftRoCE guest, or directly on a host with RDMA devices): perftest and our
 * JS benchmarks on the same device in the same run, then the ratios.
 * Writes bench/results/<date>.json and prints a table.
 *
 *   node dist/bench/run.js [--device rxe0] [--host 10.99.1.1] [--gid-index 1]
 *                          [--iters 1000] [--out bench/results]
 */
import { execFile, spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { promisify } from 'util';

const exec = promisify(execFile);
const ROOT = path.resolve(__dirname, '..', '..');

interface Opts { device: string; host: string; gidIndex: string; iters: number; out: string }

function parse(argv: string[]): Opts {
  const o: Opts = { device: 'rxe0', host: '10.99.1.1', gidIndex: '1', iters: 1000, out: path.join(ROOT, 'bench', 'results') };
  for (let i = 0; i < argv.length; i += 2) {
    const [k, v] = [argv[i], argv[i + 1]];
    if (k === '--device') o.device = v;
    else if (k === '--host') o.host = v;
    else if (k === '--gid-index') o.gidIndex = v;
    else if (k === '--iters') o.iters = Number(v);
    else if (k === '--out') o.out = v;
    else throw new Error(`unknown argument ${k}`);
  }
  return o;
}

/** Runs a perftest server and client pair; returns the client's stdout. */
async function perftest(tool: string, args: string[], host: string): Promise<string> {
  const server = spawn(tool, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let serverOut = '';
  server.stdout.on('data', (d) => (serverOut += d));
  server.stderr.on('data', (d) => (serverOut += d));
  await new Promise((r) => setTimeout(r, 1500));
  try {
    const { stdout } = await exec(tool, [...args, host], { timeout: 120_000 });
    return stdout;
  } catch (err) {
    throw new Error(`${tool} failed: ${(err as Error).message}\nserver said: ${serverOut}`);
  } finally {
    await new Promise<void>((resolve) => {
      if (server.exitCode !== null) return resolve();
      const t = setTimeout(() => server.kill('SIGKILL'), 10_000);
      server.on('exit', () => { clearTimeout(t); resolve(); });
    });
  }
}

/** The numbers of perftest's result line (the one after the header row). */
function resultRow(out: string, firstCol: string): number[] {
  const lines = out.split('\n');
  const header = lines.findIndex((l) => l.trim().startsWith(firstCol));
  const row = lines.slice(header + 1).find((l) => /^\s*\d/.test(l));
  if (header < 0 || !row) throw new Error(`no result row in:\n${out}`);
  return row.trim().split(/\s+/).map(Number);
}

async function js(args: string[]): Promise<any> {
  const { stdout } = await exec(process.execPath, [path.join(__dirname, 'verbs.js'), ...args], { timeout: 180_000 });
  return JSON.parse(stdout.trim().split('\n').pop()!);
}

async function jsLatency(o: Opts, port: number): Promise<any> {
  const common = ['latency', '--device', o.device, '--host', o.host, '--port', String(port), '--iters', String(o.iters), '--size', '2'];
  const server = js([...common, '--server']);
  await new Promise((r) => setTimeout(r, 1500));
  const [client] = await Promise.all([js([...common, '--client']), server]);
  return client;
}

async function main(): Promise<void> {
  const o = parse(process.argv.slice(2));
  const dev = ['-d', o.device, '-x', o.gidIndex, '-F'];
  const results: Record<string, unknown> = { date: new Date().toISOString(), device: o.device, iters: o.iters };
  process.stderr.write(`bench: perftest ib_write_lat on ${o.device}\n`);
  const lat = resultRow(await perftest('ib_write_lat', [...dev, '-n', String(o.iters), '-s', '2'], o.host), '#bytes');
  const perfLat = { t_min_usec: lat[2], t_max_usec: lat[3], t_typical_usec: lat[4], t_avg_usec: lat[5], t_p99_usec: lat[7] };
  process.stderr.write('bench: JS WRITE_WITH_IMM ping-pong\n');
  const jsLat = await jsLatency(o, 18515);
  process.stderr.write('bench: perftest ib_write_bw / ib_send_bw 4096 B\n');
  const wbw = resultRow(await perftest('ib_write_bw', [...dev, '-n', String(o.iters * 5), '-s', '4096'], o.host), '#bytes');
  const sbw = resultRow(await perftest('ib_send_bw', [...dev, '-n', String(o.iters * 5), '-s', '4096'], o.host), '#bytes');
  process.stderr.write('bench: JS RDMA WRITE message rate 4096 B\n');
  const jsRate = await js(['rate', '--device', o.device, '--size', '4096', '--iters', String(o.iters * 5), '--depth', '64']);
  results.latency = { perftest_ib_write_lat: perfLat, js: jsLat, ratio_typical: jsLat.t_typical_usec / perfLat.t_typical_usec };
  results.rate = {
    perftest_ib_write_bw: { bw_avg_mb_sec: wbw[3], msg_rate_mpps: wbw[4] },
    perftest_ib_send_bw: { bw_avg_mb_sec: sbw[3], msg_rate_mpps: sbw[4] },
    js: jsRate,
    ratio_vs_write_bw: jsRate.msg_rate_mpps / wbw[4],
  };
  fs.mkdirSync(o.out, { recursive: true });
  const file = path.join(o.out, `${new Date().toISOString().replace(/[:]/g, '-').replace(/\..*/, '')}-verbs.json`);
  fs.writeFileSync(file, JSON.stringify(results, null, 2) + '\n');
  const r = (x: number) => x.toFixed(2);
  const l = results.latency as any;
  const m = results.rate as any;
  console.log(`verbs benchmark on ${o.device} (${o.iters} iterations)`);
  console.log(`  latency, 2 B, one-way (RTT/2), typical: JS ${r(jsLat.t_typical_usec)} us  vs ib_write_lat ${r(perfLat.t_typical_usec)} us  -> ratio ${r(l.ratio_typical)}x (target <= 1.15x)`);
  console.log(`  message rate, RDMA WRITE 4 KiB: JS ${jsRate.msg_rate_mpps.toFixed(4)} Mpps  vs ib_write_bw ${wbw[4]} Mpps (ib_send_bw ${sbw[4]})  -> ratio ${r(m.ratio_vs_write_bw)}x`);
  console.log(`  written: ${path.relative(ROOT, file)}`);
}

main().catch((err) => {
  process.stderr.write(`bench: ${err.stack ?? err}\n`);
  process.exit(1);
});
