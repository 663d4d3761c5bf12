/**
 * `node-rdma demo` (what `npm start` runs): a transport server and a
 * two-path client in one process, a mixed read/write workload with a live
 * display, one path cut mid-run (its link taken down, or the server
 * dropping it) and restored later, showing detection, failover and
 * recovery, and a summary table at the end.
 *
 * failoverScenario() is the engine; the benchmark's failover timeline
 * (bench/transport.ts) runs it with 100 ms intervals.
 */
import { execFile } from 'child_process';
import { promisify } from 'util';
import { listDevices, openDevice } from '../verbs';
import { connect, TransportClient, TransportServer } from '../transport';
import { parseArgs, parseDuration, UsageError } from './args';
import { CliIo, defaultIo, fmtBytes, fmtCount, fmtUs, LiveDisplay, table } from './display';
import { Histogram, IntervalStats, LatencySummary, memoryStore, runWorkload, WorkloadResult } from './workload';

const exec = promisify(execFile);

export const DEMO_USAGE = `Usage: node-rdma demo [options]

A transport server and a two-path client in one process: a mixed
read/write workload with a live display (IOPS, p50/p99 latency, traffic and
state per path); one path is cut mid-run and restored later, to show
detection, failover of its IOs to the other path, reconnect and recovery;
then a summary. 'npm start' runs this (in the SoftRoCE guest when the host
has no RDMA devices).

Options:
  --address IP        a local address for a path (repeat; default: the IPv4
                      RoCE GIDs of the first two active devices)
  --port N            rdma_cm port (default 18600)
  --duration SECS     workload length (default 60)
  --cut-at SECS       when to cut path 1 (default 1/3 of the duration)
  --restore-at SECS   when to restore it (default 7/12 of the duration)
  --cut MODE          link: 'ip link set DEV down' on the path's netdev
                      (needs root; what the SoftRoCE guest uses);
                      server: the server disconnects the path (default);
                      none: no cut
  --size SIZE         bytes per IO (default 4K)
  --depth N           IOs outstanding (default 16)
  --read-ratio R      share of reads (default 0.5)
  --relaxed           relaxed server mode (default strict)
  --reconnect-delay S first reconnect attempt S seconds after a path goes
                      down (default 1; with --cut link: the outage + 1, see
                      below)
  --interval SECS     display interval (default 1)
  --live / --no-live  redraw in place (default: when stdout is a terminal);
                      otherwise one line per interval
  --json              print the result as JSON at the end (no display)
  -h, --help          this text

With --cut link, a reconnect attempt made while the link is down never
completes (rdma_cm's connect request is lost and the transport has no
connect timeout yet), so the first attempt waits until the link is back.

Exit status: 0 ok, 1 failed (no devices, no IO, data mismatch, no
recovery), 2 usage error, 130 interrupted.
`;

export interface PathEndpoint {
  device: string;
  host: string;
  netdev: string | null;
}

/** Local endpoints for paths: the IPv4 RoCE v2 GID of each active device's port 1. */
export function localEndpoints(): PathEndpoint[] {
  const out: PathEndpoint[] = [];
  for (const d of listDevices()) {
    let dev;
    try {
      dev = openDevice(d.name);
    } catch {
      continue;
    }
    try {
      if (dev.queryPort(1).state !== 'ACTIVE') continue;
      const g = dev.gids().find((x) => x.port === 1 && x.type === 'RoCEv2' && x.gid.startsWith('::ffff:'));
      if (g) out.push({ device: d.name, host: g.gid.slice(7), netdev: g.netdev });
    } catch {
      // a device we cannot query is not a path candidate
    } finally {
      dev.close();
    }
  }
  return out;
}

export type CutMode = 'link' | 'server' | 'none';

export interface ScenarioOptions {
  endpoints: PathEndpoint[];
  port: number;
  durationMs: number;
  cutAtMs: number;
  restoreAtMs: number;
  cut: CutMode;
  size: number;
  depth: number;
  readRatio: number;
  strict: boolean;
  intervalMs: number;
  signal?: AbortSignal;
  onInterval?: (s: IntervalStats, phase: Phase) => void;
  onEvent?: (line: string, tMs: number) => void;
  /** server heartbeat interval (ms), default 250; missed max 4 */
  hbIntervalMs?: number;
  /** first reconnect attempt this long after a path goes down (ms), default 1000 */
  reconnectDelayMs?: number;
}

export type Phase = 'before cut' | 'path down' | 'recovering' | 'after recovery';

export interface PhaseStats {
  phase: Phase;
  startMs: number;
  endMs: number;
  ios: number;
  iops: number;
  errors: number;
  latency: LatencySummary;
  /** IOs per path in this phase */
  perPath: number[];
}

export interface ScenarioEvent {
  tMs: number;
  what: string;
}

export interface ScenarioResult {
  endpoints: PathEndpoint[];
  cut: CutMode;
  cutPath: number | undefined;
  strict: boolean;
  size: number;
  depth: number;
  readRatio: number;
  /** ms since the workload start */
  cutAtMs: number | undefined;
  detectedAtMs: number | undefined;
  restoredAtMs: number | undefined;
  recoveredAtMs: number | undefined;
  /** first interval after the cut whose IOPS is back to >= 50% of the pre-cut mean */
  throughputBackAtMs: number | undefined;
  timeToDetectMs: number | undefined;
  timeToRecoverMs: number | undefined;
  failovers: number;
  events: ScenarioEvent[];
  phases: PhaseStats[];
  workload: WorkloadResult;
}

async function ipLink(netdev: string, state: 'up' | 'down'): Promise<void> {
  await exec('ip', ['link', 'set', netdev, state], { timeout: 10_000 });
}

/** Runs the whole scenario: server, two-path client, workload, cut, restore. */
export async function failoverScenario(o: ScenarioOptions): Promise<ScenarioResult> {
  const eps = o.endpoints;
  if (eps.length < 1) throw new Error('no RDMA endpoint to run on');
  const cutPath = eps.length >= 2 && o.cut !== 'none' ? eps.length - 1 : undefined;
  const cutNetdev = cutPath !== undefined ? eps[cutPath].netdev : null;
  if (o.cut === 'link' && cutPath !== undefined && !cutNetdev) throw new Error(`--cut link: ${eps[cutPath].device} has no netdev to take down`);
  const store = memoryStore({ maxKeys: 65536 });
  const server = new TransportServer({
    handler: store.handler, queueDepth: Math.max(32, o.depth * 2), chunkSize: Math.max(16384, 2 ** Math.ceil(Math.log2(o.size + 4096))),
    maxHeaderSize: 512, strict: o.strict, hbIntervalMs: o.hbIntervalMs ?? 250, hbMissedMax: 4,
  });
  const events: ScenarioEvent[] = [];
  let t0 = performance.now();
  const now = (): number => performance.now() - t0;
  const event = (what: string): void => {
    const t = now();
    events.push({ tMs: t, what });
    o.onEvent?.(what, t);
  };
  let client: TransportClient | undefined;
  let linkDown = false;
  const timers: NodeJS.Timeout[] = [];
  let cutAtMs: number | undefined;
  let detectedAtMs: number | undefined;
  let restoredAtMs: number | undefined;
  let recoveredAtMs: number | undefined;
  try {
    server.listen(eps.map((e) => ({ host: e.host, port: o.port })));
    client = await connect({
      paths: eps.map((e) => ({ host: e.host, port: o.port })), policy: 'min-inflight', name: 'node-rdma demo',
      maxQueueDepth: Math.max(32, o.depth * 2), resolveTimeoutMs: 2000,
      reconnect: { initialDelayMs: o.reconnectDelayMs ?? 1000, maxDelayMs: Math.max(2000, o.reconnectDelayMs ?? 1000), factor: 1.5, jitter: 0.1 },
    });
    const c = client;
    const phaseOf = (t: number): Phase => {
      if (cutAtMs === undefined || t < cutAtMs) return 'before cut';
      if (recoveredAtMs !== undefined && t >= recoveredAtMs) return 'after recovery';
      if (restoredAtMs !== undefined && t >= restoredAtMs) return 'recovering';
      return 'path down';
    };
    c.on('path', (i: number, what: string, err?: Error) => {
      const t = now();
      if (what === 'down' || what === 'dead') {
        if (i === cutPath && cutAtMs !== undefined && detectedAtMs === undefined) detectedAtMs = t;
        event(`path${i} (${eps[i].device}) ${what}: ${err?.message ?? ''}`.trimEnd());
      } else if (what === 'connected') {
        if (i === cutPath && restoredAtMs !== undefined && recoveredAtMs === undefined) recoveredAtMs = t;
        else if (i === cutPath && cutAtMs !== undefined && o.cut === 'server' && detectedAtMs !== undefined && recoveredAtMs === undefined) {
          // server-side cut: the link stays up, the path comes back by itself
          recoveredAtMs = t;
          restoredAtMs = restoredAtMs ?? detectedAtMs;
        }
        event(`path${i} (${eps[i].device}) reconnected`);
      }
    });
    c.on('error', (err: Error) => event(`session error: ${err.message}`));
    if (process.env.NODE_RDMA_DEBUG) c.on('log', (line: string) => { if (!line.startsWith('failover:')) event(`client: ${line}`); });
    const phaseHist = new Map<Phase, Histogram>();
    const latencySink = (us: number): void => {
      const ph = phaseOf(now());
      let h = phaseHist.get(ph);
      if (!h) phaseHist.set(ph, (h = new Histogram()));
      h.record(us);
    };
    let lastFailovers = 0;
    const onInterval = (s: IntervalStats): void => {
      const fo = s.paths.reduce((n, p) => n + p.failovers, 0);
      if (fo > lastFailovers) event(`${fo - lastFailovers} in-flight IO${fo - lastFailovers === 1 ? '' : 's'} failed over to another path`);
      lastFailovers = fo;
      o.onInterval?.(s, phaseOf(s.tMs));
    };
    if (cutPath !== undefined) {
      const cp = cutPath;
      timers.push(setTimeout(() => {
        cutAtMs = now();
        if (o.cut === 'link') {
          event(`cutting path${cp}: ip link set ${cutNetdev} down`);
          linkDown = true;
          ipLink(cutNetdev!, 'down').catch((err) => event(`ip link set ${cutNetdev} down failed: ${(err as Error).message}`));
        } else {
          event(`cutting path${cp}: the server disconnects it`);
          const done = server.disconnectPath(c.sessionId, cp);
          if (!done) event(`path${cp} was not connected on the server`);
        }
      }, o.cutAtMs));
      if (o.cut === 'link') {
        timers.push(setTimeout(() => {
          restoredAtMs = now();
          event(`restoring path${cp}: ip link set ${cutNetdev} up`);
          linkDown = false;
          ipLink(cutNetdev!, 'up').catch((err) => event(`ip link set ${cutNetdev} up failed: ${(err as Error).message}`));
        }, o.restoreAtMs));
      }
    }
    t0 = performance.now();
    const workload = await runWorkload(c, {
      size: o.size, depth: o.depth, durationMs: o.durationMs, readRatio: o.readRatio, intervalMs: o.intervalMs,
      signal: o.signal, onInterval, onLatency: latencySink,
    });
    for (const t of timers) clearTimeout(t);
    if (linkDown) {
      linkDown = false;
      restoredAtMs ??= now();
      event(`restoring path${cutPath}: ip link set ${cutNetdev} up`);
      await ipLink(cutNetdev!, 'up').catch(() => undefined);
    }
    // phases
    const bounds: Array<[Phase, number, number]> = [];
    const end = workload.durationMs;
    if (cutAtMs === undefined) bounds.push(['before cut', 0, end]);
    else {
      bounds.push(['before cut', 0, cutAtMs]);
      const rec = recoveredAtMs ?? end;
      if (restoredAtMs !== undefined && restoredAtMs < rec) {
        bounds.push(['path down', cutAtMs, restoredAtMs]);
        bounds.push(['recovering', restoredAtMs, rec]);
      } else bounds.push(['path down', cutAtMs, rec]);
      if (recoveredAtMs !== undefined) bounds.push(['after recovery', recoveredAtMs, end]);
    }
    const phases: PhaseStats[] = bounds.filter(([, a, b]) => b > a).map(([phase, a, b]) => {
      const ivs = workload.intervals.filter((s) => s.tMs - s.intervalMs / 2 >= a && s.tMs - s.intervalMs / 2 < b);
      const h = phaseHist.get(phase) ?? new Histogram();
      const ios = h.count;
      return {
        phase, startMs: a, endMs: b, ios, iops: (ios * 1000) / (b - a), errors: ivs.reduce((n, s) => n + s.errors, 0), latency: h.summary(),
        perPath: eps.map((_, i) => ivs.reduce((n, s) => n + (s.paths[i]?.ios ?? 0), 0)),
      };
    });
    // when throughput came back after the cut
    let throughputBackAtMs: number | undefined;
    if (cutAtMs !== undefined) {
      const pre = workload.intervals.filter((s) => s.tMs <= cutAtMs!);
      const base = pre.length ? pre.reduce((n, s) => n + s.iops, 0) / pre.length : 0;
      const dip = workload.intervals.find((s) => s.tMs > cutAtMs! && s.iops < base * 0.5);
      if (dip) throughputBackAtMs = workload.intervals.find((s) => s.tMs > dip.tMs && s.iops >= base * 0.5)?.tMs;
    }
    return {
      endpoints: eps, cut: o.cut, cutPath, strict: o.strict, size: o.size, depth: o.depth, readRatio: o.readRatio,
      cutAtMs, detectedAtMs, restoredAtMs, recoveredAtMs, throughputBackAtMs,
      timeToDetectMs: detectedAtMs !== undefined && cutAtMs !== undefined ? detectedAtMs - cutAtMs : undefined,
      timeToRecoverMs: recoveredAtMs !== undefined && restoredAtMs !== undefined ? recoveredAtMs - restoredAtMs : undefined,
      failovers: workload.paths.reduce((n, p) => n + p.failovers, 0), events, phases, workload,
    };
  } finally {
    for (const t of timers) clearTimeout(t);
    if (linkDown && cutNetdev) await ipLink(cutNetdev, 'up').catch(() => undefined);
    await client?.close({ drainTimeoutMs: 5000 }).catch(() => undefined);
    await server.close().catch(() => undefined);
  }
}

function ms(v: number | undefined): string {
  return v === undefined ? '-' : `${(v / 1000).toFixed(2)} s`;
}

export function scenarioSummary(r: ScenarioResult): string {
  const w = r.workload;
  let s = '\n==== node-rdma demo: summary ====\n';
  s += `  ${r.endpoints.length} path(s): ${r.endpoints.map((e, i) => `path${i} ${e.device} ${e.host}`).join(', ')}; ${r.strict ? 'strict' : 'relaxed'} mode; ${fmtBytes(r.size)} IOs, depth ${r.depth}, ${Math.round(r.readRatio * 100)}% reads\n`;
  s += `  ${fmtCount(w.ios)} IOs in ${(w.durationMs / 1000).toFixed(1)} s: ${fmtCount(w.iops)} IOPS, ${w.mbps.toFixed(2)} MB/s; p50 ${fmtUs(w.latency.p50Us)}, p99 ${fmtUs(w.latency.p99Us)}, max ${fmtUs(w.latency.maxUs)}\n`;
  s += `  reads verified ${w.verified}, mismatches ${w.mismatches}; IO errors ${w.errors}${w.errors ? ` ${JSON.stringify(w.errorCodes)}` : ''}\n\n`;
  const rows = [['phase', 'from', 'to', 'IOs', 'IOPS', 'p50', 'p99', 'errors', ...r.endpoints.map((e, i) => `path${i} IOs`)]];
  for (const p of r.phases) {
    rows.push([p.phase, ms(p.startMs), ms(p.endMs), String(p.ios), fmtCount(p.iops), fmtUs(p.latency.p50Us), fmtUs(p.latency.p99Us), String(p.errors), ...p.perPath.map(String)]);
  }
  s += table(rows);
  if (r.cutPath !== undefined) {
    s += '\n';
    const rows2 = [['failover', '']];
    rows2.push(['path cut', `path${r.cutPath} (${r.endpoints[r.cutPath].device}) by ${r.cut === 'link' ? `ip link set ${r.endpoints[r.cutPath].netdev} down` : 'the server'} at ${ms(r.cutAtMs)}`]);
    rows2.push(['time to detect', r.timeToDetectMs === undefined ? 'not detected' : `${Math.round(r.timeToDetectMs)} ms`]);
    rows2.push(['IOs failed over', String(r.failovers)]);
    if (r.cut === 'link') rows2.push(['link restored', ms(r.restoredAtMs)]);
    rows2.push(['time to recover', r.timeToRecoverMs === undefined ? 'did not reconnect' : `${Math.round(r.timeToRecoverMs)} ms${r.cut === 'link' ? ' after the link came back' : ' after detection'}`]);
    rows2.push(['throughput back', r.throughputBackAtMs === undefined ? '- (no dip below 50%)' : `at ${ms(r.throughputBackAtMs)}`]);
    s += table(rows2);
  }
  const rows3 = [['path', 'device', 'address', 'state', 'writes', 'reads', 'bytes', 'failovers', 'reconnects ok/fail']];
  for (const p of w.paths) rows3.push([`path${p.index}`, p.device ?? '?', p.host, p.state, String(p.writes), String(p.reads), fmtBytes(p.writeBytes + p.readBytes), String(p.failovers), `${p.reconnects.ok}/${p.reconnects.fail}`]);
  s += '\n' + table(rows3);
  return s;
}

/** What makes a demo run a failure. */
export function scenarioProblems(r: ScenarioResult): string[] {
  const out: string[] = [];
  if (r.workload.ios === 0) out.push('no IO completed');
  if (r.workload.mismatches > 0) out.push(`${r.workload.mismatches} reads returned wrong data`);
  if (r.cutPath !== undefined && r.cutAtMs !== undefined) {
    if (r.detectedAtMs === undefined) out.push('the cut was not detected');
    if (r.recoveredAtMs === undefined) out.push(`path${r.cutPath} did not reconnect`);
  }
  return out;
}

export async function demoCommand(argv: string[], io: CliIo = defaultIo, opts: { tty?: boolean } = {}): Promise<number> {
  let o;
  let durationMs = 60_000;
  try {
    o = parseArgs(argv, {
      address: { type: 'string', multiple: true },
      port: { type: 'int', min: 1, max: 65535 },
      duration: { type: 'string' },
      'cut-at': { type: 'string' },
      'restore-at': { type: 'string' },
      cut: { type: 'string' },
      size: { type: 'size', min: 0 },
      depth: { type: 'int', min: 1, max: 1024 },
      'read-ratio': { type: 'number', min: 0, max: 1 },
      relaxed: { type: 'flag' },
      interval: { type: 'number', min: 0.05 },
      'reconnect-delay': { type: 'number', min: 0 },
      live: { type: 'flag' },
      'no-live': { type: 'flag' },
      json: { type: 'flag' },
    });
    if (o.help) {
      io.stdout(DEMO_USAGE);
      return 0;
    }
    if (o.duration !== undefined) durationMs = parseDuration(o.duration as string);
    if (o.cut !== undefined && !['link', 'server', 'none'].includes(o.cut as string)) throw new UsageError(`--cut must be link, server or none, got '${o.cut}'`);
    if (o.live && o['no-live']) throw new UsageError('--live and --no-live exclude each other');
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    io.stderr(`node-rdma demo: ${err.message}\nRun 'node-rdma demo --help' for the options.\n`);
    return 2;
  }
  const cutAtMs = o['cut-at'] !== undefined ? parseDuration(o['cut-at'] as string, 'cut-at') : Math.round(durationMs / 3);
  const restoreAtMs = o['restore-at'] !== undefined ? parseDuration(o['restore-at'] as string, 'restore-at') : Math.round((durationMs * 7) / 12);
  if (restoreAtMs <= cutAtMs || restoreAtMs >= durationMs) {
    io.stderr('node-rdma demo: need --cut-at < --restore-at < --duration\n');
    return 2;
  }
  let endpoints = localEndpoints();
  if (o.address) {
    const want = o.address as string[];
    const byHost = new Map(endpoints.map((e) => [e.host, e]));
    const missing = want.filter((h) => !byHost.has(h));
    if (missing.length) {
      io.stderr(`node-rdma demo: ${missing.join(', ')} is not the IPv4 GID of an active RDMA port here (have: ${endpoints.map((e) => `${e.device} ${e.host}`).join(', ') || 'none'})\n`);
      return 1;
    }
    endpoints = want.map((h) => byHost.get(h)!);
  } else endpoints = endpoints.slice(0, 2);
  if (endpoints.length === 0) {
    io.stderr('node-rdma demo: no active RDMA port with an IPv4 RoCE v2 GID on this host (see `node-rdma devices`)\n');
    return 1;
  }
  const cut = (o.cut as CutMode | undefined) ?? 'server';
  const json = !!o.json;
  const size = (o.size as number | undefined) ?? 4096;
  const depth = (o.depth as number | undefined) ?? 16;
  const tty = o.live ? true : o['no-live'] ? false : opts.tty;
  const display = json ? undefined : new LiveDisplay({
    write: io.stdout, tty,
    title: `node-rdma demo: ${endpoints.map((e, i) => `path${i} ${e.device} ${e.host}`).join(' + ')}, ${fmtBytes(size)} IOs, depth ${depth}, ${(durationMs / 1000).toFixed(0)} s` +
      (endpoints.length >= 2 && cut !== 'none' ? `; path${endpoints.length - 1} cut at ${(cutAtMs / 1000).toFixed(0)} s${cut === 'link' ? `, restored at ${(restoreAtMs / 1000).toFixed(0)} s` : ''}` : ''),
  });
  if (endpoints.length < 2 && !json) io.stderr(`node-rdma demo: only one path (${endpoints[0].device}): running without the path cut\n`);
  const ac = new AbortController();
  let interrupted = false;
  const onSig = (): void => {
    if (interrupted) return;
    interrupted = true;
    display?.event('interrupted: stopping the workload and closing');
    ac.abort();
  };
  process.on('SIGINT', onSig);
  process.on('SIGTERM', onSig);
  // a hard bound on the whole run, whatever hangs
  const watchdog = setTimeout(() => {
    io.stderr(`node-rdma demo: still running ${(durationMs + 60_000) / 1000} s after the start: giving up\n`);
    process.exit(1);
  }, durationMs + 60_000);
  watchdog.unref();
  let r: ScenarioResult;
  try {
    const t0 = Date.now();
    r = await failoverScenario({
      endpoints, port: (o.port as number | undefined) ?? 18600, durationMs, cutAtMs, restoreAtMs, cut, size, depth,
      readRatio: (o['read-ratio'] as number | undefined) ?? 0.5, strict: !o.relaxed,
      reconnectDelayMs: o['reconnect-delay'] !== undefined ? Math.round((o['reconnect-delay'] as number) * 1000)
        : cut === 'link' ? restoreAtMs - cutAtMs + 1000 : 1000,
      intervalMs: Math.round(((o.interval as number | undefined) ?? 1) * 1000), signal: ac.signal,
      onInterval: (s, phase) => display?.update(s, phase, durationMs - (Date.now() - t0)),
      onEvent: (line, t) => display?.event(line, t),
    });
    display?.done();
  } catch (err) {
    io.stderr(`node-rdma demo: ${(err as Error).message}\n`);
    return 1;
  } finally {
    clearTimeout(watchdog);
    process.off('SIGINT', onSig);
    process.off('SIGTERM', onSig);
  }
  const problems = interrupted ? [] : scenarioProblems(r);
  if (json) {
    const { workload, ...rest } = r;
    const { histogram, ...w } = workload;
    io.stdout(JSON.stringify({ ...rest, workload: { ...w, histogram: histogram.buckets() }, problems },
      (_k, v) => (typeof v === 'number' && !Number.isFinite(v) ? null : v), 2) + '\n');
  } else {
    io.stdout(scenarioSummary(r));
    io.stdout(problems.length ? `\nRESULT: FAILED: ${problems.join('; ')}\n` : interrupted ? '\nRESULT: interrupted\n' : '\nRESULT: OK\n');
  }
  if (interrupted) return 130;
  return problems.length ? 1 : 0;
}

