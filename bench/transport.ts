/**
 * Transport benchmarks (bench/run.ts runs this next to perftest):
 *
 *   latency   4 KiB write and read round trips at queue depth 1 (every IO
 *             is two RDMA messages: request + response), with histograms
 *   iops      mixed 50/50 4 KiB IOs at queue depths 1..64
 *   both in strict and in relaxed mode, over one path (host0)
 *   paths     throughput of one path against two (host0 + host1, or two
 *             QPs to host0 when there is no host1): relaxed, then strict,
 *             4 KiB, QD 32
 *   failover  a two-path session (host0 + host1) under load: IOPS per
 *             100 ms before, during and after one path is cut (default: the
 *             server disconnects it; --cut link takes its link down, which
 *             on rxe never recovers, see docs/benchmarks.md), time to
 *             detect and time to recover (lib/cli/demo.ts's scenario)
 *
 *   node dist/bench/transport.js --host0 10.99.1.1 [--host1 10.99.2.1] [--iters 1000]
 *        [--point-ms 1500] [--depths 1,2,4,8,16,32,64] [--cut link|server|none]
 *        [--failover-ms 10000] [--port 18700] [--busy-poll true|false]
 *        [--latency-setup separate|same] [--server-cpu N]
 * Latency and IOPS run, like perftest, against a server in its own process
 * (latency twice: both sides busy-polling, and on completion channels;
 * --latency-setup same: the server in this process, --busy-poll); the
 * path and failover runs control the server, so it runs in this process.
 * Prints one JSON line with every figure on stdout; progress on stderr.
 */
import { spawn } from 'child_process';
import { connect, TransportClient, TransportServer } from '../lib/transport';
import { failoverScenario, localEndpoints, PathEndpoint, CutMode } from '../lib/cli/demo';
import { Histogram, memoryStore, runWorkload } from '../lib/cli/workload';
import type { TransportIops as IopsPoint, TransportLatency as LatencyFigures } from './report';

interface Args {
  host0: string;
  host1: string | undefined;
  port: number;
  iters: number;
  pointMs: number;
  depths: number[];
  size: number;
  cut: CutMode;
  failoverMs: number;
  modes: Array<'strict' | 'relaxed'>;
  /** undefined: the transport's defaults (the client's CQs adaptive, see lib/transport/conn.ts) */
  busyPoll: boolean | undefined;
  latencySetup: 'separate' | 'same';
  /** internal: run only a server (the latency runs' peer process) */
  serve: 'strict' | 'relaxed' | undefined;
  /** the CPU of the peer server process (taskset), or none */
  serverCpu: number | undefined;
  /** IOs per strace'd syscall count run (0: none) */
  syscallIos: number;
}

function parse(argv: string[]): Args {
  const a: Args = {
    host0: '10.99.1.1', host1: undefined, port: 18700, iters: 1000, pointMs: 1500, depths: [1, 2, 4, 8, 16, 32, 64], size: 4096,
    cut: 'server', failoverMs: 10_000, modes: ['strict', 'relaxed'], busyPoll: undefined,
    latencySetup: 'separate', serve: undefined, serverCpu: undefined, syscallIos: 0,
  };
  for (let i = 0; i < argv.length; i += 2) {
    const [k, v] = [argv[i], argv[i + 1]];
    if (v === undefined) throw new Error(`${k} needs a value`);
    if (k === '--host0') a.host0 = v;
    else if (k === '--host1') a.host1 = v;
    else if (k === '--port') a.port = Number(v);
    else if (k === '--iters') a.iters = Number(v);
    else if (k === '--point-ms') a.pointMs = Number(v);
    else if (k === '--depths') a.depths = v.split(',').map(Number);
    else if (k === '--size') a.size = Number(v);
    else if (k === '--cut') a.cut = v as CutMode;
    else if (k === '--failover-ms') a.failoverMs = Number(v);
    else if (k === '--modes') a.modes = v.split(',') as Args['modes'];
    else if (k === '--busy-poll') a.busyPoll = v === 'default' ? undefined : v === 'true';
    else if (k === '--syscalls') a.syscallIos = Number(v);
    else if (k === '--latency-setup') a.latencySetup = v as Args['latencySetup'];
    else if (k === '--serve') a.serve = v as Args['serve'];
    else if (k === '--server-cpu') a.serverCpu = Number(v);
    else throw new Error(`unknown argument ${k}`);
  }
  if (!['link', 'server', 'none'].includes(a.cut)) throw new Error('--cut must be link, server or none');
  if (!['separate', 'same'].includes(a.latencySetup)) throw new Error('--latency-setup must be separate or same');
  if (a.serverCpu !== undefined && !(Number.isInteger(a.serverCpu) && a.serverCpu >= 0)) throw new Error('--server-cpu must be a CPU number');
  return a;
}

const say = (s: string): void => void process.stderr.write(`bench/transport: ${s}\n`);

/** The benchmarks' server: the in-memory store of `node-rdma serve`, 16 KiB chunks, listening on `addrs`. */
function benchServer(addrs: Array<{ host: string; port: number }>, o: { queueDepth: number; strict: boolean; busyPoll: boolean | undefined }): TransportServer {
  const server = new TransportServer({ handler: memoryStore().handler, chunkSize: 16384, maxHeaderSize: 512, ...o });
  server.listen(addrs);
  return server;
}

/** Warm-up before a measurement (JIT: under emulation V8 needs thousands of IOs before the hot paths run optimized code; first keys, window pools). */
async function warmUp(client: TransportClient, a: Args): Promise<void> {
  await runWorkload(client, { size: a.size, depth: 8, durationMs: 6000, maxIos: 3000, readRatio: 0.5, keys: 16 });
}

/** The latency and IOPS runs' server: in a child process (as perftest's), or in this one (--latency-setup same). */
async function peerServer(a: Args, strict: boolean, port: number, busy: boolean | undefined): Promise<{ close: () => Promise<void>; pid: number }> {
  const maxDepth = Math.max(...a.depths);
  if (a.latencySetup === 'same') {
    const server = benchServer([{ host: a.host0, port }], { queueDepth: maxDepth, strict, busyPoll: busy });
    return { close: () => server.close(), pid: process.pid };
  }
  const argv = [process.execPath, __filename, '--serve', strict ? 'strict' : 'relaxed', '--host0', a.host0, '--port', String(port),
    '--depths', String(maxDepth), '--busy-poll', busy === undefined ? 'default' : String(busy)];
  // taskset execs the command: the child's pid stays the server's
  if (a.serverCpu !== undefined) argv.unshift('taskset', '-c', String(a.serverCpu));
  const child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`latency server exited (${code})`)));
    child.stdout!.once('data', () => resolve());
  });
  return {
    pid: child.pid!,
    close: () => new Promise<void>((resolve) => {
      child.removeAllListeners('exit');
      if (child.exitCode !== null) return resolve();
      const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
      child.once('exit', () => { clearTimeout(t); resolve(); });
      child.kill('SIGTERM');
    }),
  };
}

/** --serve: a server until SIGTERM; prints one line when it listens. */
async function serve(a: Args): Promise<void> {
  const server = benchServer([{ host: a.host0, port: a.port }], { queueDepth: Math.max(...a.depths), strict: a.serve === 'strict', busyPoll: a.busyPoll });
  process.stdout.write('listening\n');
  await new Promise((r) => process.once('SIGTERM', r));
  await server.close();
}

/**
 * QD1 latency. With a separate server process it runs twice: both sides
 * busy-polling (perftest's way) and both sleeping on the completion channel;
 * on SoftRoCE either can win (busy polling competes with rxe's kernel
 * threads for the CPU: strict mode's window work suffers most).
 */
async function latencyRuns(a: Args, strict: boolean, port: number): Promise<LatencyFigures[]> {
  const separate = a.latencySetup === 'separate';
  const latency: LatencyFigures[] = [];
  for (const busy of separate ? [true, false, undefined] : [a.busyPoll]) {
    const setup = `server in ${separate ? 'its own' : 'this'} process, ${setupName(busy)}`;
    latency.push(...await latencyRun(a, strict, port++, busy, setup));
  }
  return latency;
}

function setupName(busy: boolean | undefined): string {
  return busy === undefined ? 'the defaults (adaptive busy polling)' : busy ? 'both busy-polling' : 'completion channels';
}

/** Connects to a peerServer(); the server process may still be setting up: a refused connect is retried. */
async function connectPeer(host: string, port: number, maxQueueDepth: number, name: string, busyPoll: boolean | undefined): Promise<TransportClient> {
  for (let i = 0; ; i++) {
    try {
      return await connect({ paths: [{ host, port }], maxQueueDepth, name, ...(busyPoll === undefined ? {} : { busyPoll }), reconnect: { maxAttempts: 0 } });
    } catch (err) {
      if (i >= 40) throw err;
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}

async function latencyRun(a: Args, strict: boolean, port: number, busy: boolean | undefined, setup: string): Promise<LatencyFigures[]> {
  const maxDepth = Math.max(...a.depths);
  const server = await peerServer(a, strict, port, busy);
  try {
    const client = await connectPeer(a.host0, port, maxDepth, 'bench-latency', busy);
    try {
      await warmUp(client, a);
      const latency: LatencyFigures[] = [];
      for (const kind of ['write', 'read'] as const) {
        say(`${strict ? 'strict' : 'relaxed'}: ${kind} latency, ${a.size} B, QD1, ${a.iters} IOs (${setup})`);
        const h = new Histogram();
        const r = await runWorkload(client, {
          size: a.size, depth: 1, durationMs: 120_000, maxIos: a.iters, readRatio: kind === 'read' ? 1 : 0, keys: 1,
          // the write run stored key k0: every read IO reads it
          assumeWritten: kind === 'read', histogram: h,
        });
        if (r.errors || r.mismatches) throw new Error(`${kind} latency run: ${r.errors} errors, ${r.mismatches} mismatches`);
        const s = h.summary();
        say(`${strict ? 'strict' : 'relaxed'}: ${kind} p50 ${s.p50Us.toFixed(0)} us`);
        latency.push({ kind, size: a.size, iters: s.count, minUs: s.minUs, p50Us: s.p50Us, meanUs: s.meanUs, p99Us: s.p99Us, maxUs: s.maxUs, histogram: h.buckets(), setup });
      }
      return latency;
    } finally {
      await client.close({ drainTimeoutMs: 5000 });
    }
  } finally {
    await server.close();
  }
}

async function mode(a: Args, strict: boolean, port: number): Promise<{ latency: LatencyFigures[]; iops: IopsPoint[] }> {
  const latency = await latencyRuns(a, strict, port + 100 + (strict ? 0 : 10));
  const maxDepth = Math.max(...a.depths);
  // client and server in two processes, like perftest's and the C floor's two ends
  const server = await peerServer(a, strict, port, a.busyPoll);
  const client = await connectPeer(a.host0, port, maxDepth, 'bench', a.busyPoll);
  try {
    await warmUp(client, a);
    const iops: IopsPoint[] = [];
    for (const depth of a.depths) {
      const r = await runWorkload(client, { size: a.size, depth, durationMs: a.pointMs, readRatio: 0.5, keys: 256 });
      say(`${strict ? 'strict' : 'relaxed'}: depth ${depth}: ${r.iops.toFixed(0)} IOPS, p50 ${r.latency.p50Us.toFixed(0)} us`);
      iops.push({ depth, iops: r.iops, mbps: r.mbps, p50Us: r.latency.p50Us, p99Us: r.latency.p99Us, errors: r.errors });
    }
    return { latency, iops };
  } finally {
    await client.close({ drainTimeoutMs: 5000 });
    await server.close();
  }
}

/** IOPS of a one-path session against a two-path session, same server and load. */
async function onePathVsTwo(a: Args, port: number, strict: boolean): Promise<{ onePathIops: number; twoPathIops: number; ratio: number; perPath: number[] }> {
  const hosts = [a.host0, a.host1 ?? a.host0];
  const server = benchServer([...new Set(hosts)].map((host) => ({ host, port })), { queueDepth: 64, strict, busyPoll: false });
  const mode = strict ? 'strict' : 'relaxed';
  const run = async (paths: string[]) => {
    const client = await connect({ paths: paths.map((host) => ({ host, port })), name: `bench-${paths.length}p` });
    try {
      await runWorkload(client, { size: a.size, depth: 8, durationMs: 3000, maxIos: 1500, readRatio: 0.5, keys: 16 });
      const r = await runWorkload(client, { size: a.size, depth: 32, durationMs: a.pointMs * 2, readRatio: 0.5, keys: 256 });
      if (r.errors || r.mismatches) throw new Error(`${paths.length}-path run: ${r.errors} errors, ${r.mismatches} mismatches`);
      const st = client.stats().paths.map((p) => p.reads + p.writes);
      say(`paths (${mode}): ${paths.length} path(s): ${r.iops.toFixed(0)} IOPS (IOs per path ${st.join(', ')})`);
      return { iops: r.iops, perPath: st };
    } finally {
      await client.close({ drainTimeoutMs: 5000 });
    }
  };
  try {
    const one = await run([hosts[0]]);
    const two = await run(hosts);
    return { onePathIops: one.iops, twoPathIops: two.iops, ratio: two.iops / one.iops, perPath: two.perPath };
  } finally {
    await server.close();
  }
}

/** strace -c of one process (all its threads) from now until stop(): calls per syscall. */
async function straceOf(pid: number, file: string): Promise<{ stop: () => Promise<Record<string, number>> }> {
  const st = spawn('strace', ['-f', '-c', '-p', String(pid), '-o', file], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  // strace says "Process N attached" (per thread) on stderr once tracing
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`strace -p ${pid} did not attach: ${err}`)), 20_000);
    st.stderr!.on('data', (d) => {
      err += String(d);
      if (/attached/.test(err)) {
        clearTimeout(t);
        setTimeout(resolve, 300); // the other threads' attach lines
      }
    });
    st.once('exit', (code) => reject(new Error(`strace exited (${code}): ${err}`)));
  });
  return {
    stop: async () => {
      st.removeAllListeners('exit');
      const exited = new Promise((r) => st.once('exit', r));
      st.kill('SIGINT');
      await exited;
      const calls: Record<string, number> = {};
      const fs = await import('fs');
      for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
        // % time, seconds, usecs/call, calls, [errors], syscall
        const t = line.trim().split(/\s+/);
        if (t.length < 5 || !/^[\d.]+$/.test(t[0]) || t[t.length - 1] === 'total') continue;
        calls[t[t.length - 1]] = Number(t[3]);
      }
      return calls;
    },
  };
}

/**
 * Syscalls per IO: `a.syscallIos` relaxed 4 KiB writes at QD1 with strace -c
 * attached to the client (this process) and to the server process, after a
 * warm-up, in each polling setup. strace slows every syscall, so only the
 * counts mean something here, not the time.
 */
async function syscallRuns(a: Args, port: number): Promise<unknown[]> {
  const out: unknown[] = [];
  for (const busy of [undefined, true, false]) {
    const server = await peerServer({ ...a, latencySetup: 'separate' }, false, port, busy);
    try {
      const client = await connectPeer(a.host0, port++, Math.max(...a.depths), 'bench-syscalls', busy);
      try {
        await warmUp(client, a);
        // the server's strace first: started after the client's, it would be
        // a child of a traced process, and its own ptrace/wait4 calls would be
        // counted as the client's (the 2026-12-07 12:45 run's client counts)
        const ts = await straceOf(server.pid, `/tmp/bench-strace-server-${process.pid}.txt`);
        const tc = await straceOf(process.pid, `/tmp/bench-strace-client-${process.pid}.txt`);
        const r = await runWorkload(client, { size: a.size, depth: 1, durationMs: 120_000, maxIos: a.syscallIos, readRatio: 0, keys: 1 });
        const [cc, sc] = [await tc.stop(), await ts.stop()];
        const ios = r.ios ?? a.syscallIos;
        const per = (c: Record<string, number>) => Object.fromEntries(Object.entries(c).sort((x, y) => y[1] - x[1]).map(([k, v]) => [k, v / ios]));
        const sum = (c: Record<string, number>) => Object.values(c).reduce((x, y) => x + y, 0) / ios;
        const row = { setup: setupName(busy), ios, clientPerIo: sum(cc), serverPerIo: sum(sc), client: per(cc), server: per(sc) };
        say(`syscalls per IO (${row.setup}): client ${row.clientPerIo.toFixed(2)}, server ${row.serverPerIo.toFixed(2)}`);
        out.push(row);
      } finally {
        await client.close({ drainTimeoutMs: 5000 });
      }
    } finally {
      await server.close();
    }
  }
  return out;
}

async function main(): Promise<void> {
  const a = parse(process.argv.slice(2));
  if (a.serve) return serve(a);
  const out: Record<string, unknown> = { size: a.size, iters: a.iters, pointMs: a.pointMs, host0: a.host0, host1: a.host1 ?? null };
  let port = a.port;
  for (const m of a.modes) out[m] = await mode(a, m === 'strict', port++);
  out.paths = await onePathVsTwo(a, port++, false);
  // strict re-keys a chunk once per IO whatever the path count (protocol.md §7.3)
  out.pathsStrict = await onePathVsTwo(a, port++, true);
  if (a.syscallIos > 0) {
    // a diagnostic: its failure (no strace, no ptrace) must not lose the figures above
    try {
      out.syscalls = await syscallRuns(a, (port += 10) - 10);
    } catch (err) {
      say(`syscall counts failed: ${(err as Error).message}`);
      out.syscalls = { error: (err as Error).message };
    }
  }
  if (a.failoverMs > 0) {
    // endpoints: the devices behind host0/host1 (two paths to host0 when there is no host1)
    const eps = localEndpoints();
    const find = (h: string): PathEndpoint => eps.find((e) => e.host === h) ?? { device: '?', host: h, netdev: null };
    const endpoints = [find(a.host0), find(a.host1 ?? a.host0)];
    const cut: CutMode = a.cut === 'link' && !endpoints[1].netdev ? 'server' : a.cut;
    const cutAtMs = Math.round(a.failoverMs * 0.3);
    const restoreAtMs = Math.round(a.failoverMs * 0.55);
    say(`failover: ${a.failoverMs} ms, cut path1 (${cut}) at ${cutAtMs} ms${cut === 'link' ? `, link up at ${restoreAtMs} ms` : ''}, IOPS per 100 ms`);
    const r = await failoverScenario({
      endpoints, port: port++, durationMs: a.failoverMs, size: a.size, depth: 16, readRatio: 0.5, strict: true, intervalMs: 100, reconnectDelayMs: 500,
      cuts: cut === 'none' ? [] : [cut === 'link' ? { mode: 'link', atMs: cutAtMs, restoreAtMs } : { mode: 'server', atMs: cutAtMs }],
      onEvent: (line, t) => say(`failover: t=${(t / 1000).toFixed(2)}s ${line}`),
    });
    const k = r.cuts[0];
    const iv = r.workload.intervals;
    let throughputBackAtMs: number | undefined;
    if (k) {
      const pre = iv.filter((s) => s.tMs <= k.atMs && s.tMs > 1000);
      const base = pre.length ? pre.reduce((n, s) => n + s.iops, 0) / pre.length : 0;
      const dip = iv.find((s) => s.tMs > k.atMs && s.iops < base * 0.5);
      if (dip) throughputBackAtMs = iv.find((s) => s.tMs > dip.tMs && s.iops >= base * 0.5)?.tMs;
    }
    out.failover = {
      cut, cutPath: r.cutPath, endpoints: r.endpoints, cutAtMs: k?.atMs, detectedAtMs: k?.detectedAtMs, restoredAtMs: k?.restoredAtMs,
      recoveredAtMs: k?.recoveredAtMs, throughputBackAtMs, timeToDetectMs: k?.timeToDetectMs, timeToRecoverMs: k?.timeToRecoverMs,
      failovers: k?.failovers ?? 0, downsAfterRecovery: [...r.downsBeforeCut, ...(k?.downsAfterRecovery ?? [])], errors: r.workload.errors, mismatches: r.workload.mismatches, events: r.events,
      timeline: iv.map((s) => ({ tMs: s.tMs, iops: s.iops, perPath: s.paths.map((p) => p.iops), p99Us: s.p99Us, errors: s.errors })),
      phases: r.phases.map((p) => ({ phase: p.phase, startMs: p.startMs, endMs: p.endMs, ios: p.ios, iops: p.iops, p50Us: p.latency.p50Us, p99Us: p.latency.p99Us })),
    };
  }
  process.stdout.write(JSON.stringify(out, (_k, v) => (typeof v === 'number' && !Number.isFinite(v) ? null : v)) + '\n');
}

main().then(
  () => process.exit(0),
  (err) => {
    process.stderr.write(`bench/transport: ${(err as Error).stack ?? err}\n`);
    process.exit(1);
  },
);
