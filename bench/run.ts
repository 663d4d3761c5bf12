/**
 * The benchmark run (npm run bench -> scripts/bench -> this, inside the
 * SoftRoCE guest, or directly on a host with RDMA devices): perftest and our
 * JS benchmarks on the same device in the same run, then the ratios.
 *   1. perftest: ib_write_lat (2 B and 4 KiB), ib_read_lat 4 KiB,
 *      ib_write_bw / ib_send_bw 4 KiB
 *   2. JS verbs: WRITE_WITH_IMM ping-pong, RDMA WRITE message rate
 *   3. the transport (bench/transport.ts): 4 KiB write/read latency at QD1,
 *      IOPS at queue depths 1..64, strict and relaxed; the failover
 *      timeline over two paths (--host2)
 *   4. the C floor (bench/native/floor.c, built by scripts/setup into
 *      build/floor): the same RDMA messages as 2 and 3 posted from C, to
 *      tell what the device costs for them from what node-rdma adds
 * Writes bench/results/<date>.json and bench/results/<date>.html (inline
 * SVG charts, bench/report.ts) and prints the ratios.
 *
 *   node dist/bench/run.js [--device rxe0] [--host 10.99.1.1] [--gid-index 1]
 *                          [--host2 10.99.2.1] [--cut server|link|none]
 *                          [--iters 1000] [--point-ms 1500] [--out bench/results]
 */
import { execFile, spawn } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { promisify } from 'util';
import { BenchResults, FloorIo, renderReport } from './report';

const exec = promisify(execFile);
const ROOT = path.resolve(__dirname, '..', '..');

interface Opts {
  device: string; host: string; gidIndex: string; iters: number; out: string; rounds: number;
  host2: string | undefined; cut: string; pointMs: number; failoverMs: number; environment: string | undefined;
  /** --cpus CLIENT,SERVER | none: the two ends of every two-ended benchmark on these CPUs */
  cpus: { client: number; server: number } | undefined;
  /** IOs per strace'd syscall count run of the transport (0: none; needs strace) */
  syscallIos: number;
}

function parse(argv: string[]): Opts {
  const o: Opts = {
    device: 'rxe0', host: '10.99.1.1', gidIndex: '1', iters: 1000, rounds: 3, out: path.join(ROOT, 'bench', 'results'),
    host2: undefined, cut: 'server', pointMs: 1500, failoverMs: 10_000, environment: undefined,
    // two CPUs or more: the ends on CPUs 0 and 1 (unpinned, the scheduler
    // sometimes put both on one CPU: one-way latency then varied 36-49 us in
    // the guest against 33-40 us pinned)
    cpus: os.cpus().length >= 2 ? { client: 0, server: 1 } : undefined,
    syscallIos: 300,
  };
  for (let i = 0; i < argv.length; i += 2) {
    const [k, v] = [argv[i], argv[i + 1]];
    if (k === '--device') o.device = v;
    else if (k === '--host') o.host = v;
    else if (k === '--gid-index') o.gidIndex = v;
    else if (k === '--iters') o.iters = Number(v);
    else if (k === '--rounds') o.rounds = Number(v);
    else if (k === '--out') o.out = v;
    else if (k === '--host2') o.host2 = v;
    else if (k === '--cut') o.cut = v;
    else if (k === '--point-ms') o.pointMs = Number(v);
    else if (k === '--failover-ms') o.failoverMs = Number(v);
    else if (k === '--environment') o.environment = v;
    else if (k === '--syscalls') o.syscallIos = Number(v);
    else if (k === '--cpus') {
      const m = /^(\d+),(\d+)$/.exec(v ?? '');
      if (!m && v !== 'none') throw new Error('--cpus is CLIENT_CPU,SERVER_CPU or none');
      o.cpus = m ? { client: Number(m[1]), server: Number(m[2]) } : undefined;
    }
    else throw new Error(`unknown argument ${k}`);
  }
  return o;
}

type End = 'client' | 'server';
let cpus: Opts['cpus'];

/** `cmd args` on the CPU of its end (taskset), when the ends are pinned. */
function onCpu(end: End | undefined, cmd: string, args: string[]): [string, string[]] {
  return cpus && end ? ['taskset', ['-c', String(cpus[end]), cmd, ...args]] : [cmd, args];
}

/** Runs a perftest server and client pair; returns the client's stdout. */
async function perftest(tool: string, args: string[], host: string): Promise<string> {
  const server = spawn(...onCpu('server', tool, args), { stdio: ['ignore', 'pipe', 'pipe'] });
  let serverOut = '';
  server.stdout.on('data', (d) => (serverOut += d));
  server.stderr.on('data', (d) => (serverOut += d));
  await new Promise((r) => setTimeout(r, 1500));
  try {
    // the server may not listen yet on a loaded (emulated) machine: a client
    // that cannot connect fails at once and the server keeps waiting, so retry
    for (let attempt = 1; ; attempt++) {
      try {
        const { stdout } = await exec(...onCpu('client', tool, [...args, host]), { timeout: 120_000 });
        return stdout;
      } catch (err) {
        if (attempt >= 4 || server.exitCode !== null) throw err;
        await new Promise((r) => setTimeout(r, 1500));
      }
    }
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

/**
 * floor cpu's loop in JS (an LCG filling 1 MiB, best of 20), in this
 * process: with the C figure, what this machine charges V8's code against
 * compiled C for the same plain work (1.27x on the x86 build host, not emulated; under
 * qemu TCG every guest instruction is translated, so V8's extra
 * instructions cost what an out-of-order core hides).
 */
function jsCpu(): { lcg_fill_1mib_usec: number; check: number } {
  const n = 1 << 20;
  const b = new Uint8Array(n);
  let h = 2166136261;
  let best = Infinity;
  for (let r = 0; r < 20; r++) {
    const t = performance.now();
    for (let i = 0; i < n; i++) {
      h = (Math.imul(h, 1103515245) + 12345) >>> 0;
      b[i] = h >>> 24;
    }
    best = Math.min(best, (performance.now() - t) * 1000);
  }
  return { lcg_fill_1mib_usec: best, check: b[n >> 1] };
}

/** Runs the C floor (bench/native/floor.c); returns its JSON line. */
async function floor(args: string[]): Promise<any> {
  const bin = path.join(ROOT, 'build', 'floor');
  if (!fs.existsSync(bin)) throw new Error(`${bin} is missing: scripts/setup builds it (cc bench/native/floor.c -libverbs)`);
  const { stdout } = await exec(bin, cpus && args[0] !== 'cpu' ? [...args, '-c', `${cpus.client},${cpus.server}`] : args, { timeout: 120_000 });
  return JSON.parse(stdout.trim().split('\n').pop()!);
}

async function js(args: string[], script = 'verbs.js', timeout = 180_000, end?: End): Promise<any> {
  const child = exec(...onCpu(end, process.execPath, [path.join(__dirname, script), ...args]), { timeout, maxBuffer: 64 << 20 });
  // progress lines of the child as they come
  child.child.stderr?.on('data', (d) => process.stderr.write(d));
  const { stdout } = await child;
  return JSON.parse(stdout.trim().split('\n').pop()!);
}

async function jsLatency(o: Opts, port: number, loop: 'event' | 'sync' = 'event'): Promise<any> {
  const common = ['latency', '--device', o.device, '--host', o.host, '--port', String(port), '--iters', String(o.iters), '--size', '2',
    '--loop', loop, '--warmup', String(Math.max(5000, o.iters)), '--recv-batch', '8'];
  const server = js([...common, '--server'], 'verbs.js', 180_000, 'server');
  await new Promise((r) => setTimeout(r, 1500));
  const [client] = await Promise.all([js([...common, '--client'], 'verbs.js', 180_000, 'client'), server]);
  return client;
}

/** The QD1 latency entry of `kind` with the lowest p50 (the runs differ in setup: busy polling or not). */
function best(latency: any[], kind: string): any {
  return latency.filter((x) => x.kind === kind).sort((x, y) => x.p50Us - y.p50Us)[0];
}

/** Runs one step; a failure is recorded (and printed) and the run goes on with the other steps. */
async function step<T>(failures: Array<{ step: string; error: string }>, name: string, fn: () => Promise<T>): Promise<T | undefined> {
  process.stderr.write(`bench: ${name}\n`);
  try {
    return await fn();
  } catch (err) {
    const msg = (err as Error).message.split('\n').slice(0, 6).join('\n');
    process.stderr.write(`bench: ${name} FAILED: ${msg}\n`);
    failures.push({ step: name, error: msg });
    return undefined;
  }
}

async function main(): Promise<number> {
  const o = parse(process.argv.slice(2));
  cpus = o.cpus;
  const dev = ['-d', o.device, '-x', o.gidIndex, '-F'];
  const floorDev = ['-d', o.device, '-x', o.gidIndex];
  const floorLatArgs = ['lat', ...floorDev, '-s', '2', '-n', String(o.iters), '-w', String(Math.max(5000, o.iters))];
  const failures: Array<{ step: string; error: string }> = [];
  const results: Record<string, unknown> = { date: new Date().toISOString(), device: o.device, iters: o.iters, environment: o.environment, cpus: o.cpus ?? 'not pinned' };
  const lat = (row: number[]) => ({ t_min_usec: row[2], t_max_usec: row[3], t_typical_usec: row[4], t_avg_usec: row[5], t_p99_usec: row[7] });
  // Latency: an emulated machine is noisy (a run's typical figure moves by
  // 30% and more), so perftest and the JS ping-pong alternate for `rounds`
  // rounds and the medians are compared; every round is kept
  type Lat = ReturnType<typeof lat>;
  // plain code, no RDMA: how much more this machine charges JS than C (the
  // lens for every JS/C ratio below)
  const cC = await step(failures, 'C byte loop (floor cpu)', () => floor(['cpu']));
  const cJs = await step(failures, 'JS byte loop (the same loop in V8)', async () => jsCpu());
  if (cC && cJs) {
    results.cpu = { c: cC, js: cJs, jsOverC: cJs.lcg_fill_1mib_usec / cC.lcg_fill_1mib_usec, note: 'an LCG filling 1 MiB, best of 20, in C (floor cpu) and in JS (this process); 1.27x on the x86 build host, not emulated' };
  }
  const rounds: Array<{ ib_write_lat?: Lat; ib_send_lat?: Lat; js?: any; js_sync?: any; floor?: any }> = [];
  for (let i = 0; i < o.rounds; i++) {
    const tag = `(round ${i + 1}/${o.rounds})`;
    rounds.push({
      ib_write_lat: await step(failures, `perftest ib_write_lat 2 B on ${o.device} ${tag}`, async () =>
        lat(resultRow(await perftest('ib_write_lat', [...dev, '-n', String(o.iters), '-s', '2'], o.host), '#bytes'))),
      js: await step(failures, `JS WRITE_WITH_IMM ping-pong 2 B, completions from the event loop ${tag}`, () => jsLatency(o, 18515 + 2 * i)),
      ib_send_lat: await step(failures, `perftest ib_send_lat 2 B on ${o.device} ${tag}`, async () =>
        lat(resultRow(await perftest('ib_send_lat', [...dev, '-n', String(o.iters), '-s', '2'], o.host), '#bytes'))),
      js_sync: await step(failures, `JS WRITE_WITH_IMM ping-pong 2 B, synchronous poll loop ${tag}`, () => jsLatency(o, 18516 + 2 * i, 'sync')),
      floor: await step(failures, `C floor WRITE_WITH_IMM ping-pong 2 B ${tag}`, () => floor(floorLatArgs)),
    });
  }
  // the round whose typical figure is the median of the rounds
  const medianOf = <T extends { t_typical_usec: number }>(xs: Array<T | undefined>): T | undefined => {
    const got = xs.filter((x): x is T => x !== undefined).sort((a, b) => a.t_typical_usec - b.t_typical_usec);
    return got.length ? got[Math.floor((got.length - 1) / 2)] : undefined;
  };
  const perfLat = medianOf(rounds.map((x) => x.ib_write_lat));
  const sendLat = medianOf(rounds.map((x) => x.ib_send_lat));
  const jsLat = medianOf(rounds.map((x) => x.js));
  const jsSync = medianOf(rounds.map((x) => x.js_sync));
  const floorLat = medianOf(rounds.map((x) => x.floor));
  // the same C ping-pong with W us of CPU work per hop at both ends: what a
  // binding's own per-hop cost (the JS around two Node-API calls) costs on
  // this device, which is not linear under SoftRoCE
  const floorWork: any[] = [];
  for (const us of [2, 4, 8]) {
    const got = await step(failures, `C floor WRITE_WITH_IMM ping-pong 2 B with ${us} us of work per hop`,
      () => floor([...floorLatArgs, '-W', String(us * 1000)]));
    if (got) floorWork.push(got);
  }
  // perftest's 4 KiB runs that are also the transport's references (run
  // again after the transport, see below). Message rates run 20x the latency
  // iterations (about 1-2 s under TCG; runs of 5x, 0.6 s, moved by a third
  // between runs of the same code)
  const rateIters = String(o.iters * 20);
  const writeBw = (note = '') => step(failures, `perftest ib_write_bw 4096 B${note}`, async () =>
    resultRow(await perftest('ib_write_bw', [...dev, '-n', rateIters, '-s', '4096'], o.host), '#bytes'));
  const lat4 = (tool: 'ib_write_lat' | 'ib_read_lat', note = '') => step(failures, `perftest ${tool} 4096 B${note}`, async () =>
    lat(resultRow(await perftest(tool, [...dev, '-n', String(o.iters), '-s', '4096'], o.host), '#bytes')));
  const wbw = await writeBw();
  const sbw = await step(failures, 'perftest ib_send_bw 4096 B', async () =>
    resultRow(await perftest('ib_send_bw', [...dev, '-n', rateIters, '-s', '4096'], o.host), '#bytes'));
  const rateArgs = ['rate', '--device', o.device, '--size', '4096', '--iters', rateIters, '--depth', '64', '--warmup', String(o.iters * 3)];
  const jsRate = await step(failures, 'JS RDMA WRITE message rate 4096 B', () => js(rateArgs));
  const jsSendRate = await step(failures, 'JS SEND message rate 4096 B', () => js([...rateArgs, '--op', 'send']));
  const wlat4 = await lat4('ib_write_lat');
  const rlat4 = await lat4('ib_read_lat');
  // the transport's IO from C: write and read at QD1, the 50/50 mix at QD 32 and 64
  const floorIo = async (depth: number, readPct: number, when: string) =>
    step(failures, `C floor transport IO 4096 B, QD${depth}, ${readPct}% reads (${when} the transport)`,
      () => floor(['io', ...floorDev, '-s', '4096', '-q', String(depth), '-r', String(readPct), '-t', '3']));
  const floorSet = async (when: string) =>
    ({ write1: await floorIo(1, 0, when), read1: await floorIo(1, 100, when), mix32: await floorIo(32, 50, when), mix64: await floorIo(64, 50, when) });
  const floorIos = await floorSet('before');
  const targs = ['--host0', o.host, '--iters', String(o.iters), '--point-ms', String(o.pointMs), '--cut', o.cut, '--failover-ms', String(o.failoverMs),
    '--syscalls', String(o.syscallIos)];
  if (o.host2) targs.push('--host1', o.host2);
  // the benchmark process is the client; its latency and IOPS servers run in a child on the server's CPU
  if (o.cpus) targs.push('--server-cpu', String(o.cpus.server));
  const transport = await step(failures, 'transport (bench/transport.js)', () => js(targs, 'transport.js', 900_000, 'client'));
  // what a Node user would pick instead: the same workload over net (TCP), same addresses and CPUs
  const tcpArgs = ['--host', o.host, '--iters', String(o.iters), '--point-ms', String(o.pointMs)];
  if (o.cpus) tcpArgs.push('--server-cpu', String(o.cpus.server));
  const tcp = await step(failures, "Node's net (TCP), 4 KiB request/response, QD1 and QD 32 (bench/tcp.js)", () => js(tcpArgs, 'tcp.js', 300_000, 'client'));
  // the transport step takes minutes, and an emulated host's speed drifts
  // meanwhile: its references run again after it, and its ratios use the
  // mean of the two runs
  const AFTER = ' (after the transport)';
  const after = {
    wbw: await writeBw(AFTER),
    wlat4: await lat4('ib_write_lat', AFTER),
    rlat4: await lat4('ib_read_lat', AFTER),
    floor: await floorSet('after'),
  };
  const mean = (...xs: Array<number | undefined>): number | undefined => {
    const v = xs.filter((x): x is number => typeof x === 'number' && Number.isFinite(x));
    return v.length ? v.reduce((a, b) => a + b, 0) / v.length : undefined;
  };
  const fa = after.floor;
  const ref = {
    writeBwMsgs: mean(wbw && wbw[4] * 1e6, after.wbw && after.wbw[4] * 1e6),
    writeLat4: mean(wlat4?.t_typical_usec, after.wlat4?.t_typical_usec),
    readLat4: mean(rlat4?.t_typical_usec, after.rlat4?.t_typical_usec),
    floorWrite1: mean(floorIos.write1?.p50_usec, fa.write1?.p50_usec),
    floorRead1: mean(floorIos.read1?.p50_usec, fa.read1?.p50_usec),
    floorMix32: mean(floorIos.mix32?.iops, fa.mix32?.iops),
    floorMix64: mean(floorIos.mix64?.iops, fa.mix64?.iops),
  };

  if (perfLat && jsLat) {
    results.latency = {
      perftest_ib_write_lat: perfLat, perftest_ib_send_lat: sendLat, js: jsLat, js_sync: jsSync,
      ratio_typical: jsLat.t_typical_usec / perfLat.t_typical_usec, rounds,
      note: 'median of the rounds (by typical); perftest and JS alternate in each round',
    };
  }
  if (wbw && sbw && jsRate) {
    results.rate = {
      perftest_ib_write_bw: { bw_avg_mb_sec: wbw[3], msg_rate_mpps: wbw[4] },
      perftest_ib_send_bw: { bw_avg_mb_sec: sbw[3], msg_rate_mpps: sbw[4] },
      js: jsRate,
      ratio_vs_write_bw: jsRate.msg_rate_mpps / wbw[4],
      js_send: jsSendRate,
      ratio_send_vs_send_bw: jsSendRate ? jsSendRate.msg_rate_mpps / sbw[4] : undefined,
    };
  }
  if (wlat4 && rlat4) results.perftest4k = { ib_write_lat: wlat4, ib_read_lat: rlat4 };
  results.floor = { lat: floorLat, work: floorWork, io: floorIos, note: 'bench/native/floor.c: the same RDMA messages posted from C (two busy-polling threads)' };
  results.afterTransport = after;
  results.transportReferences = { ...ref, note: 'means of the runs before and after the transport step; the transport ratios use these' };
  if (transport) results.transport = transport;
  if (tcp) results.tcp = tcp;
  // ratios against perftest: a transport IO is a round trip (request +
  // response), so its latency is compared with 2x ib_write_lat's one-way
  // figure; its IOPS with ib_write_bw's message rate
  const ratios: Record<string, number> = {};
  const K = {
    wlat: (m: string) => `transport ${m} 4 KiB write p50 (QD1) vs 2x ib_write_lat 4 KiB`,
    rlat: (m: string) => `transport ${m} 4 KiB read p50 (QD1) vs ib_read_lat 4 KiB`,
    rlat2: (m: string) => `transport ${m} 4 KiB read p50 (QD1) vs 2x ib_write_lat 4 KiB`,
    iops: (m: string) => `transport ${m} peak IOPS (4 KiB, 50% reads) vs ib_write_bw 4 KiB msg/s`,
    iops32: (m: string) => `transport ${m} IOPS at QD 32 (4 KiB, 50% reads) vs ib_write_bw 4 KiB msg/s`,
  };
  if (perfLat && jsLat) ratios['JS verbs ping-pong 2 B vs ib_write_lat 2 B (typical)'] = jsLat.t_typical_usec / perfLat.t_typical_usec;
  if (sendLat && jsLat) ratios['JS verbs ping-pong 2 B vs ib_send_lat 2 B (typical)'] = jsLat.t_typical_usec / sendLat.t_typical_usec;
  if (perfLat && jsSync) ratios['JS verbs ping-pong 2 B, synchronous poll loop, vs ib_write_lat 2 B (typical)'] = jsSync.t_typical_usec / perfLat.t_typical_usec;
  if (wbw && jsRate) ratios['JS verbs RDMA WRITE rate 4 KiB vs ib_write_bw 4 KiB'] = jsRate.msg_rate_mpps / wbw[4];
  if (sbw && jsSendRate) ratios['JS verbs SEND rate 4 KiB vs ib_send_bw 4 KiB'] = jsSendRate.msg_rate_mpps / sbw[4];
  // what the device costs for these messages (C floor against perftest), and
  // what node-rdma adds (JS against the C floor)
  const F = {
    lat: 'C floor ping-pong 2 B vs ib_write_lat 2 B (typical)',
    jsLat: 'JS verbs ping-pong 2 B vs C floor ping-pong 2 B (typical)',
    jsSync: 'JS verbs ping-pong 2 B, synchronous poll loop, vs C floor ping-pong 2 B (typical)',
    wlat: 'C floor transport 4 KiB write p50 (QD1) vs 2x ib_write_lat 4 KiB',
    iops32: 'C floor transport IOPS (4 KiB, 50% reads, QD 32) vs ib_write_bw 4 KiB msg/s',
    iopsPeak: 'C floor transport peak IOPS (QD 32/64) vs ib_write_bw 4 KiB msg/s',
    tWlat: (m: string) => `transport ${m} 4 KiB write p50 (QD1) vs C floor`,
    tRlat: (m: string) => `transport ${m} 4 KiB read p50 (QD1) vs C floor`,
    tIops: (m: string) => `transport ${m} peak IOPS vs C floor peak IOPS`,
    tIops32: (m: string) => `transport ${m} IOPS at QD 32 vs C floor at QD 32`,
  };
  const floorPeak = Math.max(ref.floorMix32 ?? 0, ref.floorMix64 ?? 0) || undefined;
  if (floorLat && perfLat) ratios[F.lat] = floorLat.t_typical_usec / perfLat.t_typical_usec;
  if (floorLat && jsLat) ratios[F.jsLat] = jsLat.t_typical_usec / floorLat.t_typical_usec;
  if (floorLat && jsSync) ratios[F.jsSync] = jsSync.t_typical_usec / floorLat.t_typical_usec;
  if (ref.floorWrite1 && ref.writeLat4) ratios[F.wlat] = ref.floorWrite1 / (2 * ref.writeLat4);
  if (ref.floorMix32 && ref.writeBwMsgs) ratios[F.iops32] = ref.floorMix32 / ref.writeBwMsgs;
  if (floorPeak && ref.writeBwMsgs) ratios[F.iopsPeak] = floorPeak / ref.writeBwMsgs;
  // TCP against the transport (relaxed, its best QD1 setup; IOPS at the same depth)
  const T = {
    wlat: "Node's net (TCP) 4 KiB write p50 (QD1) vs transport relaxed",
    rlat: "Node's net (TCP) 4 KiB read p50 (QD1) vs transport relaxed",
    iops: (d: number) => `Node's net (TCP) IOPS at QD ${d} (4 KiB, 50% reads) vs transport relaxed`,
  };
  const rel = transport?.relaxed;
  if (tcp && rel) {
    const w = best(rel.latency, 'write');
    const rd = best(rel.latency, 'read');
    if (w && tcp.write) ratios[T.wlat] = tcp.write.p50Us / w.p50Us;
    if (rd && tcp.read) ratios[T.rlat] = tcp.read.p50Us / rd.p50Us;
    for (const p of tcp.iops ?? []) {
      const q = rel.iops.find((x: any) => x.depth === p.depth);
      if (q) ratios[T.iops(p.depth)] = p.iops / q.iops;
    }
  }
  for (const m of ['strict', 'relaxed']) {
    const t = transport?.[m];
    if (!t) continue;
    const w = best(t.latency, 'write');
    const rd = best(t.latency, 'read');
    if (w && ref.writeLat4) ratios[K.wlat(m)] = w.p50Us / (2 * ref.writeLat4);
    if (rd && ref.readLat4) ratios[K.rlat(m)] = rd.p50Us / ref.readLat4;
    if (rd && ref.writeLat4) ratios[K.rlat2(m)] = rd.p50Us / (2 * ref.writeLat4);
    const peak = Math.max(...t.iops.map((x: any) => x.iops));
    if (ref.writeBwMsgs) ratios[K.iops(m)] = peak / ref.writeBwMsgs;
    // the issue's target is set at queue depth 32
    const at32 = t.iops.find((x: any) => x.depth === 32);
    if (ref.writeBwMsgs && at32) ratios[K.iops32(m)] = at32.iops / ref.writeBwMsgs;
    if (w && ref.floorWrite1) ratios[F.tWlat(m)] = w.p50Us / ref.floorWrite1;
    if (rd && ref.floorRead1) ratios[F.tRlat(m)] = rd.p50Us / ref.floorRead1;
    if (floorPeak) ratios[F.tIops(m)] = peak / floorPeak;
    if (at32 && ref.floorMix32) ratios[F.tIops32(m)] = at32.iops / ref.floorMix32;
  }
  results.ratios = ratios;
  if (failures.length) results.failures = failures;
  fs.mkdirSync(o.out, { recursive: true });
  const stamp = new Date().toISOString().replace(/[:]/g, '-').replace(/\..*/, '');
  const file = path.join(o.out, `${stamp}.json`);
  fs.writeFileSync(file, JSON.stringify(results, null, 2) + '\n');
  const html = path.join(o.out, `${stamp}.html`);
  fs.writeFileSync(html, renderReport(results as unknown as BenchResults));

  const r = (x: number | undefined) => (x === undefined ? '-' : x.toFixed(2));
  const us = (x: number | undefined) => (x === undefined ? '-' : `${x.toFixed(1)} us`);
  console.log(`node-rdma benchmark on ${o.device} (${o.iters} iterations; ${o.cpus ? `client end on CPU ${o.cpus.client}, server end on CPU ${o.cpus.server}` : 'ends not pinned'})`);
  if (cC && cJs) {
    console.log(`  plain code on this machine: the same byte loop takes ${(results.cpu as { jsOverC: number }).jsOverC.toFixed(1)}x as long in JS as in C ` +
      `(${cJs.lcg_fill_1mib_usec.toFixed(0)} vs ${cC.lcg_fill_1mib_usec.toFixed(0)} us; 1.27x on the x86 build host, not emulated): read the JS/C ratios below through it`);
  }
  if (perfLat && jsLat) {
    console.log(`  verbs latency, 2 B, one-way (RTT/2), typical: JS ${r(jsLat.t_typical_usec)} us  vs ib_write_lat ${r(perfLat.t_typical_usec)} us  -> ratio ${r(ratios['JS verbs ping-pong 2 B vs ib_write_lat 2 B (typical)'])}x (target <= 1.15x)`);
    // ib_write_lat polls memory; our ping-pong (and ib_send_lat) take a completion per message
    if (sendLat) console.log(`    (vs ib_send_lat ${r(sendLat.t_typical_usec)} us, which like the JS ping-pong waits for a receive completion: ${r(ratios['JS verbs ping-pong 2 B vs ib_send_lat 2 B (typical)'])}x)`);
    if (jsSync) console.log(`    (JS with a synchronous poll loop instead of the event loop: ${r(jsSync.t_typical_usec)} us -> ${r(ratios['JS verbs ping-pong 2 B, synchronous poll loop, vs ib_write_lat 2 B (typical)'])}x)`);
    console.log(`    medians of ${o.rounds} alternating rounds; typical per round: ib_write_lat ${rounds.map((x) => r(x.ib_write_lat?.t_typical_usec)).join('/')}, ` +
      `JS ${rounds.map((x) => r(x.js?.t_typical_usec)).join('/')}, JS sync ${rounds.map((x) => r(x.js_sync?.t_typical_usec)).join('/')}, ` +
      `C floor ${rounds.map((x) => r(x.floor?.t_typical_usec)).join('/')} us`);
  }
  if (floorLat) {
    console.log(`  C floor (the same WRITE_WITH_IMM ping-pong from C): ${r(floorLat.t_typical_usec)} us -> ${r(ratios[F.lat])}x ib_write_lat;` +
      ` JS is ${r(ratios[F.jsLat])}x the C floor (sync loop ${r(ratios[F.jsSync])}x)`);
    if (floorWork.length) {
      console.log(`    the C floor with CPU work per hop at both ends: ${floorWork.map((x) => `${x.work_ns / 1000} us -> ${r(x.t_typical_usec)} us`).join(', ')}`);
    }
  }
  if (wbw && sbw && jsRate) {
    console.log(`  verbs message rate, RDMA WRITE 4 KiB: JS ${jsRate.msg_rate_mpps.toFixed(4)} Mpps  vs ib_write_bw ${wbw[4]} Mpps  -> ratio ${r(ratios['JS verbs RDMA WRITE rate 4 KiB vs ib_write_bw 4 KiB'])}x`);
    if (jsSendRate) console.log(`  verbs message rate, SEND 4 KiB: JS ${jsSendRate.msg_rate_mpps.toFixed(4)} Mpps  vs ib_send_bw ${sbw[4]} Mpps  -> ratio ${r(ratios['JS verbs SEND rate 4 KiB vs ib_send_bw 4 KiB'])}x`);
  }
  for (const m of ['strict', 'relaxed']) {
    const t = transport?.[m];
    if (!t) continue;
    const w = best(t.latency, 'write');
    const rd = best(t.latency, 'read');
    const others = t.latency.filter((x: any) => x !== w && x !== rd);
    console.log(`  transport ${m}, 4 KiB, QD1: write p50 ${us(w?.p50Us)} p99 ${us(w?.p99Us)} (vs 2x ib_write_lat 4K ${us(ref.writeLat4 && 2 * ref.writeLat4)}: ${r(ratios[K.wlat(m)])}x);` +
      ` read p50 ${us(rd?.p50Us)} p99 ${us(rd?.p99Us)} (${r(ratios[K.rlat2(m)])}x; vs ib_read_lat 4K ${us(ref.readLat4)}: ${r(ratios[K.rlat(m)])}x)` +
      (w?.setup ? ` [write: ${w.setup}; read: ${rd?.setup}]` : ''));
    if (others.length) console.log(`    also: ${others.map((x: any) => `${x.kind} p50 ${us(x.p50Us)} [${x.setup}]`).join('; ')}`);
    console.log(`  transport ${m}, IOPS by queue depth: ${t.iops.map((x: any) => `${x.depth}:${Math.round(x.iops)}`).join('  ')}` +
      (ratios[K.iops(m)] !== undefined ? `  (peak ${r(ratios[K.iops(m)] * 100)}% of ib_write_bw's msg/s, QD 32 ${r((ratios[K.iops32(m)] ?? NaN) * 100)}%)` : ''));
  }
  if (ref.floorMix32 || ref.floorWrite1) {
    const ab = (x: FloorIo | undefined, y: FloorIo | undefined, k: 'p50_usec' | 'iops') => `${x ? Math.round(x[k]) : '-'}/${y ? Math.round(y[k]) : '-'}`;
    console.log(`  C floor (the transport's messages from C), 4 KiB: write p50 QD1 ${us(ref.floorWrite1)} (${r(ratios[F.wlat])}x 2x ib_write_lat), read p50 QD1 ${us(ref.floorRead1)};` +
      ` IOPS QD32 ${Math.round(ref.floorMix32 ?? NaN)} (${r(ratios[F.iops32])}x ib_write_bw's msg/s), QD64 ${Math.round(ref.floorMix64 ?? NaN)}`);
    console.log(`    (means of the runs before/after the transport: write p50 ${ab(floorIos.write1, fa.write1, 'p50_usec')} us, QD32 ${ab(floorIos.mix32, fa.mix32, 'iops')} IOPS;` +
      ` ib_write_bw ${wbw ? Math.round(wbw[4] * 1e6) : '-'}/${after.wbw ? Math.round(after.wbw[4] * 1e6) : '-'} msg/s, ib_write_lat 4K ${r(wlat4?.t_typical_usec)}/${r(after.wlat4?.t_typical_usec)} us)`);
    for (const m of ['strict', 'relaxed']) {
      if (ratios[F.tIops(m)] !== undefined) console.log(`    transport ${m} against the C floor: write p50 ${r(ratios[F.tWlat(m)])}x, read p50 ${r(ratios[F.tRlat(m)])}x, IOPS at QD 32 ${r(ratios[F.tIops32(m)])}x, peak IOPS ${r(ratios[F.tIops(m)])}x`);
    }
  }
  if (tcp) {
    console.log(`  Node's net (TCP), 4 KiB, same addresses: write p50 QD1 ${us(tcp.write?.p50Us)} (${r(ratios[T.wlat])}x transport relaxed), read p50 QD1 ${us(tcp.read?.p50Us)} (${r(ratios[T.rlat])}x);` +
      ` IOPS ${(tcp.iops ?? []).map((p: any) => `QD${p.depth} ${Math.round(p.iops)} (${r(ratios[T.iops(p.depth)])}x)`).join(', ')}`);
  }
  const sc = transport?.syscalls;
  if (Array.isArray(sc)) {
    for (const x of sc) console.log(`  syscalls per IO, relaxed write QD1 (${x.setup}): client ${r(x.clientPerIo)} [${Object.entries(x.client).slice(0, 4).map(([k, v]: any) => `${k} ${r(v)}`).join(', ')}], server ${r(x.serverPerIo)} [${Object.entries(x.server).slice(0, 4).map(([k, v]: any) => `${k} ${r(v)}`).join(', ')}]`);
  } else if (sc) console.log(`  syscall counts: ${sc.error}`);
  const mp = transport?.paths;
  for (const [m, pr] of [['relaxed', mp], ['strict', transport?.pathsStrict]] as const) {
    if (pr) console.log(`  transport ${m}, 4 KiB, QD 32: one path ${Math.round(pr.onePathIops)} IOPS, two paths ${Math.round(pr.twoPathIops)} IOPS -> ${r(pr.ratio)}x (IOs per path ${pr.perPath.join(', ')})`);
  }
  const f = transport?.failover;
  if (f) {
    const ms = (x: number | null | undefined) => (typeof x === 'number' ? `${Math.round(x)} ms` : '-');
    console.log(`  failover (${f.cut} cut of path1 at ${ms(f.cutAtMs)}): detected after ${ms(f.timeToDetectMs)}, ${f.failovers} IOs failed over, ` +
      `reconnected after ${ms(f.timeToRecoverMs)}; ${f.errors} IO errors, ${f.mismatches} mismatches` +
      (f.downsAfterRecovery?.length ? `; paths down again after recovery: ${f.downsAfterRecovery.length} (${[...new Set(f.downsAfterRecovery)].join('; ')})` : ''));
  }
  for (const x of failures) console.log(`  FAILED: ${x.step}: ${x.error.split('\n')[0]}`);
  console.log(`  written: ${path.relative(ROOT, file)} and ${path.relative(ROOT, html)}`);
  return failures.length ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`bench: ${err.stack ?? err}\n`);
    process.exit(1);
  },
);
