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
                      RoCE GIDs of the first two active ports; with only
                      one, both paths use it and cuts are server cuts)
  --port N            rdma_cm port (default 18600)
  --duration SECS     workload length (default 60)
  --cut MODES         none, or a comma list of cuts of the last path, spread
                      over the run: server (the server disconnects the
                      path; default) or link ('ip link set DEV down', up
                      again later; needs root: the SoftRoCE guest uses
                      'server,link')
  --cut-at SECS       with a single cut: when (default 1/3 of the duration)
  --restore-at SECS   with a single link cut: when the link comes back
  --size SIZE         bytes per IO (default 4K)
  --depth N           IOs outstanding (default 16)
  --read-ratio R      share of reads (default 0.5)
  --relaxed           relaxed server mode (default strict)
  --reconnect-delay S first reconnect attempt S seconds after a path goes
                      down (default 1)
  --interval SECS     display interval (default 1)
  --live / --no-live  redraw in place (default: when stdout is a terminal);
                      otherwise one line per interval
  --json              print the result as JSON at the end (no display)
  -h, --help          this text

On SoftRoCE (rxe, Linux 6.12 and 7.3.4 alike) a path whose link went down
does not come back: rxe moves its GSI QP to the error state when a CM
message is sent while the link is down, and no rdma_cm connect on that port
completes after that (until the rxe device is deleted and added again). The
demo reports it and does not count it as a failure.

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

export interface CutSpec {
  /** link: `ip link set NETDEV down` and later up (needs root); server: the server disconnects the path */
  mode: 'link' | 'server';
  atMs: number;
  /** link: when the link comes back up */
  restoreAtMs?: number;
}

export interface CutResult {
  mode: 'link' | 'server';
  path: number;
  atMs: number;
  detectedAtMs: number | undefined;
  restoredAtMs: number | undefined;
  recoveredAtMs: number | undefined;
  timeToDetectMs: number | undefined;
  /** link: from the link coming back; server: from the detection */
  timeToRecoverMs: number | undefined;
  /** IOs handed to another path because of this cut */
  failovers: number;
  /** the path went down again after it had reconnected (before the next cut): why, each time */
  downsAfterRecovery: string[];
}

export interface ScenarioOptions {
  endpoints: PathEndpoint[];
  port: number;
  durationMs: number;
  /** applied to the last path, in order */
  cuts: CutSpec[];
  size: number;
  depth: number;
  readRatio: number;
  strict: boolean;
  intervalMs: number;
  signal?: AbortSignal;
  onInterval?: (s: IntervalStats, phase: string) => void;
  onEvent?: (line: string, tMs: number) => void;
  /** server heartbeat interval (ms), default 250; missed max 4 */
  hbIntervalMs?: number;
  /** first reconnect attempt this long after a path goes down (ms), default 1000 */
  reconnectDelayMs?: number;
}

export interface PhaseStats {
  phase: string;
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
  cutPath: number | undefined;
  strict: boolean;
  size: number;
  depth: number;
  readRatio: number;
  cuts: CutResult[];
  /** paths that went down with no cut made yet */
  downsBeforeCut: string[];
  events: ScenarioEvent[];
  phases: PhaseStats[];
  workload: WorkloadResult;
}

async function ipLink(netdev: string, state: 'up' | 'down'): Promise<void> {
  await exec('ip', ['link', 'set', netdev, state], { timeout: 10_000 });
}

/** Runs the whole scenario: server, multipath client, workload, the cuts of the last path. */
export async function failoverScenario(o: ScenarioOptions): Promise<ScenarioResult> {
  const eps = o.endpoints;
  if (eps.length < 1) throw new Error('no RDMA endpoint to run on');
  const cutPath = eps.length >= 2 && o.cuts.length > 0 ? eps.length - 1 : undefined;
  const cutNetdev = cutPath !== undefined ? eps[cutPath].netdev : null;
  if (cutPath !== undefined && o.cuts.some((c) => c.mode === 'link') && !cutNetdev) throw new Error(`a link cut needs a netdev: ${eps[cutPath].device} has none`);
  const store = memoryStore({ maxKeys: 65536 });
  let t0 = performance.now();
  const now = (): number => performance.now() - t0;
  const server = new TransportServer({
    handler: store.handler, queueDepth: Math.max(32, o.depth * 2), chunkSize: Math.max(16384, 2 ** Math.ceil(Math.log2(o.size + 4096))),
    maxHeaderSize: 512, strict: o.strict, hbIntervalMs: o.hbIntervalMs ?? 250, hbMissedMax: 4,
    log: process.env.NODE_RDMA_DEBUG ? (line) => o.onEvent?.(`server: ${line}`, now()) : undefined,
  });
  const events: ScenarioEvent[] = [];
  const event = (what: string): void => {
    const t = now();
    events.push({ tMs: t, what });
    o.onEvent?.(what, t);
  };
  let client: TransportClient | undefined;
  let linkDown = false;
  const timers: NodeJS.Timeout[] = [];
  const cuts: CutResult[] = [];
  const downsBeforeCut: string[] = [];
  let failoversTotal = 0;
  let failoversAtCut = 0;
  const current = (): CutResult | undefined => cuts[cuts.length - 1];
  try {
    server.listen([...new Set(eps.map((e) => e.host))].map((host) => ({ host, port: o.port })));
    client = await connect({
      paths: eps.map((e) => ({ host: e.host, port: o.port })), policy: 'min-inflight', name: 'node-rdma demo',
      maxQueueDepth: Math.max(32, o.depth * 2), resolveTimeoutMs: 2000,
      reconnect: { initialDelayMs: o.reconnectDelayMs ?? 1000, maxDelayMs: Math.max(2000, o.reconnectDelayMs ?? 1000), factor: 1.5, jitter: 0.1 },
    });
    const c = client;
    const phaseOf = (t: number): string => {
      for (let i = cuts.length - 1; i >= 0; i--) {
        const k = cuts[i];
        if (t < k.atMs) continue;
        const n = cuts.length > 1 || o.cuts.length > 1 ? `cut ${i + 1} (${k.mode}): ` : '';
        if (k.recoveredAtMs !== undefined && t >= k.recoveredAtMs) return `${n}after recovery`;
        if (k.mode === 'link' && k.restoredAtMs !== undefined && t >= k.restoredAtMs) return `${n}link back, reconnecting`;
        return `${n}path down`;
      }
      return 'before cut';
    };
    c.on('path', (i: number, what: string, err?: Error) => {
      const t = now();
      const k = current();
      if (what === 'down' || what === 'dead') {
        if (i === cutPath && k && k.detectedAtMs === undefined) {
          k.detectedAtMs = t;
          k.timeToDetectMs = t - k.atMs;
        } else if (!k) {
          downsBeforeCut.push(`path${i}: ${err?.message ?? what}`);
        } else if (i !== cutPath || k.recoveredAtMs !== undefined) {
          k.downsAfterRecovery.push(`path${i}: ${err?.message ?? what}`);
        }
        event(`path${i} (${eps[i].device}) ${what}: ${err?.message ?? ''}`.trimEnd());
      } else if (what === 'connected') {
        if (i === cutPath && k && k.detectedAtMs !== undefined && k.recoveredAtMs === undefined) {
          k.recoveredAtMs = t;
          k.timeToRecoverMs = t - (k.mode === 'link' ? k.restoredAtMs ?? t : k.detectedAtMs);
        }
        event(`path${i} (${eps[i].device}) reconnected`);
      }
    });
    c.on('error', (err: Error) => event(`session error: ${err.message}`));
    if (process.env.NODE_RDMA_DEBUG) c.on('log', (line: string) => { if (!line.startsWith('failover:')) event(`client: ${line}`); });
    const phaseHist = new Map<string, Histogram>();
    const latencySink = (us: number): void => {
      const ph = phaseOf(now());
      let h = phaseHist.get(ph);
      if (!h) phaseHist.set(ph, (h = new Histogram()));
      h.record(us);
    };
    const intervalPhase: string[] = [];
    const onInterval = (s: IntervalStats): void => {
      const fo = s.paths.reduce((n, p) => n + p.failovers, 0);
      if (fo > failoversTotal) event(`${fo - failoversTotal} in-flight IO${fo - failoversTotal === 1 ? '' : 's'} failed over to another path`);
      failoversTotal = fo;
      const k = current();
      if (k) k.failovers = fo - failoversAtCut;
      const ph = phaseOf(s.tMs - s.intervalMs / 2);
      intervalPhase.push(ph);
      o.onInterval?.(s, phaseOf(s.tMs));
    };
    if (cutPath !== undefined) {
      const cp = cutPath;
      for (const spec of o.cuts) {
        timers.push(setTimeout(() => {
          const prev = current();
          if (prev) prev.failovers = failoversTotal - failoversAtCut;
          failoversAtCut = failoversTotal;
          cuts.push({
            mode: spec.mode, path: cp, atMs: now(), detectedAtMs: undefined, restoredAtMs: undefined, recoveredAtMs: undefined,
            timeToDetectMs: undefined, timeToRecoverMs: undefined, failovers: 0, downsAfterRecovery: [],
          });
          if (spec.mode === 'link') {
            event(`cutting path${cp}: ip link set ${cutNetdev} down`);
            linkDown = true;
            ipLink(cutNetdev!, 'down').catch((err) => event(`ip link set ${cutNetdev} down failed: ${(err as Error).message}`));
          } else {
            event(`cutting path${cp}: the server disconnects it`);
            if (!server.disconnectPath(c.sessionId, cp)) event(`path${cp} was not connected on the server`);
          }
        }, spec.atMs));
        if (spec.mode === 'link' && spec.restoreAtMs !== undefined) {
          timers.push(setTimeout(() => {
            const k = current();
            if (k) k.restoredAtMs = now();
            event(`restoring path${cp}: ip link set ${cutNetdev} up`);
            linkDown = false;
            ipLink(cutNetdev!, 'up').catch((err) => event(`ip link set ${cutNetdev} up failed: ${(err as Error).message}`));
          }, spec.restoreAtMs));
        }
      }
    }
    t0 = performance.now();
    const workload = await runWorkload(c, {
      size: o.size, depth: o.depth, durationMs: o.durationMs, readRatio: o.readRatio, intervalMs: o.intervalMs,
      signal: o.signal, onInterval, onLatency: latencySink,
      onStart: (t) => {
        // cuts already made (none, normally) keep their times on the new clock
        for (const k of cuts) k.atMs -= t - t0;
        t0 = t;
      },
    });
    for (const t of timers) clearTimeout(t);
    const last = current();
    if (last) last.failovers = workload.paths.reduce((n, p) => n + p.failovers, 0) - failoversAtCut;
    if (linkDown) {
      linkDown = false;
      if (last && last.restoredAtMs === undefined) last.restoredAtMs = now();
      event(`restoring path${cutPath}: ip link set ${cutNetdev} up`);
      await ipLink(cutNetdev!, 'up').catch(() => undefined);
    }
    // phases, in order of appearance
    const phases: PhaseStats[] = [];
    workload.intervals.forEach((s, i) => {
      const ph = intervalPhase[i] ?? phaseOf(s.tMs - s.intervalMs / 2);
      let p = phases[phases.length - 1];
      if (!p || p.phase !== ph) {
        p = { phase: ph, startMs: s.tMs - s.intervalMs, endMs: s.tMs, ios: 0, iops: 0, errors: 0, latency: (phaseHist.get(ph) ?? new Histogram()).summary(), perPath: eps.map(() => 0) };
        phases.push(p);
      }
      p.endMs = s.tMs;
      p.ios += s.ios;
      p.errors += s.errors;
      s.paths.forEach((x, j) => (p!.perPath[j] += x.ios));
    });
    for (const p of phases) p.iops = p.endMs > p.startMs ? (p.ios * 1000) / (p.endMs - p.startMs) : 0;
    return { endpoints: eps, cutPath, strict: o.strict, size: o.size, depth: o.depth, readRatio: o.readRatio, cuts, downsBeforeCut, events, phases, workload };
  } finally {
    for (const t of timers) clearTimeout(t);
    if (linkDown && cutNetdev) await ipLink(cutNetdev, 'up').catch(() => undefined);
    await client?.close({ drainTimeoutMs: 5000 }).catch(() => undefined);
    await server.close().catch(() => undefined);
  }
}

function sec(v: number | undefined): string {
  return v === undefined ? '-' : `${(v / 1000).toFixed(2)} s`;
}

/** Why a link cut may not recover on SoftRoCE (see docs/benchmarks.md). */
export const RXE_LINK_NOTE = 'rxe (Linux 6.12 and 7.3.4) moves its GSI QP to the error state when a CM message is sent while the link is down; ' +
  'after that no rdma_cm connect on that port completes, so the path cannot come back until the device is re-created ' +
  '(rdma link delete + add)';

export function scenarioSummary(r: ScenarioResult): string {
  const w = r.workload;
  let s = '\n==== node-rdma demo: summary ====\n';
  s += `  ${r.endpoints.length} path(s): ${r.endpoints.map((e, i) => `path${i} ${e.device} ${e.host}`).join(', ')}; ${r.strict ? 'strict' : 'relaxed'} mode; ${fmtBytes(r.size)} IOs, depth ${r.depth}, ${Math.round(r.readRatio * 100)}% reads\n`;
  s += `  ${fmtCount(w.ios)} IOs in ${(w.durationMs / 1000).toFixed(1)} s: ${fmtCount(w.iops)} IOPS, ${w.mbps.toFixed(2)} MB/s; p50 ${fmtUs(w.latency.p50Us)}, p99 ${fmtUs(w.latency.p99Us)}, max ${fmtUs(w.latency.maxUs)}\n`;
  s += `  reads verified ${w.verified}, mismatches ${w.mismatches}; IO errors ${w.errors}${w.errors ? ` ${JSON.stringify(w.errorCodes)}` : ''}\n\n`;
  const rows = [['phase', 'from', 'to', 'IOs', 'IOPS', 'p50', 'p99', 'errors', ...r.endpoints.map((e, i) => `path${i} IOs`)]];
  for (const p of r.phases) {
    rows.push([p.phase, sec(p.startMs), sec(p.endMs), String(p.ios), fmtCount(p.iops), fmtUs(p.latency.p50Us), fmtUs(p.latency.p99Us), String(p.errors), ...p.perPath.map(String)]);
  }
  s += table(rows);
  if (r.cuts.length) {
    const ep = r.endpoints[r.cutPath!];
    const rows2 = [['cut', 'how', 'at', 'detected after', 'IOs failed over', 'link back at', 'reconnected after', 'downs since']];
    r.cuts.forEach((k, i) => {
      rows2.push([
        String(i + 1), k.mode === 'link' ? `ip link set ${ep.netdev} down` : 'server disconnect', sec(k.atMs),
        k.timeToDetectMs === undefined ? 'not detected' : `${Math.round(k.timeToDetectMs)} ms`, String(k.failovers),
        k.mode === 'link' ? sec(k.restoredAtMs) : '-',
        k.timeToRecoverMs === undefined ? 'did not reconnect' : `${Math.round(k.timeToRecoverMs)} ms`,
        String(k.downsAfterRecovery.length),
      ]);
    });
    s += `\n  path${r.cutPath} (${ep.device} ${ep.host}) cuts\n` + table(rows2);
    const again = r.cuts.flatMap((k, i) => k.downsAfterRecovery.map((d) => `cut ${i + 1}: ${d}`));
    if (again.length) s += `  went down again after a recovery: ${[...new Set(again)].map((d) => `${d} (x${again.filter((x) => x === d).length})`).join('; ')}\n`;
    if (r.cuts.some((k) => k.mode === 'link' && k.recoveredAtMs === undefined) && ep.device.startsWith('rxe')) s += `  note: ${RXE_LINK_NOTE}\n`;
  }
  const rows3 = [['path', 'device', 'address', 'state', 'writes', 'reads', 'bytes', 'failovers', 'reconnects ok/fail']];
  for (const p of w.paths) rows3.push([`path${p.index}`, p.device ?? '?', p.host, p.state, String(p.writes), String(p.reads), fmtBytes(p.writeBytes + p.readBytes), String(p.failovers), `${p.reconnects.ok}/${p.reconnects.fail}`]);
  s += '\n' + table(rows3);
  return s;
}

/**
 * What makes a demo run a failure. A link cut on rxe that does not
 * reconnect is the kernel's bug (RXE_LINK_NOTE), reported but not failed.
 */
export function scenarioProblems(r: ScenarioResult): string[] {
  const out: string[] = [];
  if (r.workload.ios === 0) out.push('no IO completed');
  if (r.workload.mismatches > 0) out.push(`${r.workload.mismatches} reads returned wrong data`);
  // in-flight IOs of a cut path fail over: with another path up, none should fail
  if (r.workload.errors > 0) out.push(`${r.workload.errors} IOs failed (${Object.entries(r.workload.errorCodes).map(([c, n]) => `${c} ${n}`).join(', ')})`);
  if (r.downsBeforeCut.length) out.push(`paths went down with no cut: ${r.downsBeforeCut.join('; ')}`);
  r.cuts.forEach((k, i) => {
    if (k.detectedAtMs === undefined) out.push(`cut ${i + 1} was not detected`);
    else if (k.recoveredAtMs === undefined && !(k.mode === 'link' && r.endpoints[k.path].device.startsWith('rxe'))) out.push(`path${k.path} did not reconnect after cut ${i + 1}`);
    if (k.downsAfterRecovery.length) out.push(`after cut ${i + 1}, paths went down ${k.downsAfterRecovery.length} more time(s): ${[...new Set(k.downsAfterRecovery)].join('; ')}`);
  });
  return out;
}

/**
 * When the cuts happen: `modes` is 'none', or a comma list of link/server
 * cuts spread over the run (cut i at (i + 1) / (n + 2) of the duration; a
 * link comes back 3/4 of a slot later). --cut-at/--restore-at override the
 * times of a single cut.
 */
export function planCuts(durationMs: number, modes: string, cutAt?: string, restoreAt?: string): CutSpec[] {
  if (modes === 'none') return [];
  const list = modes.split(',');
  for (const m of list) if (m !== 'link' && m !== 'server') throw new UsageError(`--cut must be none or a comma list of link and server, got '${modes}'`);
  if ((cutAt !== undefined || restoreAt !== undefined) && list.length > 1) throw new UsageError('--cut-at and --restore-at apply to a single cut');
  const slot = durationMs / (list.length + 2);
  const specs = list.map((m, i): CutSpec => {
    const atMs = Math.round(slot * (i + 1));
    return m === 'link' ? { mode: 'link', atMs, restoreAtMs: Math.round(atMs + slot * 0.75) } : { mode: 'server', atMs };
  });
  if (cutAt !== undefined) specs[0].atMs = parseDuration(cutAt, 'cut-at');
  if (restoreAt !== undefined) {
    if (specs[0].mode !== 'link') throw new UsageError('--restore-at applies to a link cut');
    specs[0].restoreAtMs = parseDuration(restoreAt, 'restore-at');
  }
  for (const k of specs) {
    if (k.atMs <= 0 || k.atMs >= durationMs) throw new UsageError('a cut must happen within --duration');
    if (k.restoreAtMs !== undefined && (k.restoreAtMs <= k.atMs || k.restoreAtMs >= durationMs)) throw new UsageError('need --cut-at < --restore-at < --duration');
  }
  return specs;
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
    if (o.live && o['no-live']) throw new UsageError('--live and --no-live exclude each other');
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    io.stderr(`node-rdma demo: ${err.message}\nRun 'node-rdma demo --help' for the options.\n`);
    return 2;
  }
  let cutSpecs: CutSpec[];
  try {
    cutSpecs = planCuts(durationMs, (o.cut as string | undefined) ?? 'server', o['cut-at'] as string | undefined, o['restore-at'] as string | undefined);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    io.stderr(`node-rdma demo: ${err.message}\n`);
    return 2;
  }
  let endpoints: PathEndpoint[];
  try {
    endpoints = localEndpoints();
  } catch (err) {
    // ENOSYS: the kernel has no RDMA verbs interface at all
    io.stderr(`node-rdma demo: ${(err as Error).message}\n`);
    return 1;
  }
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
  let note: string | undefined;
  if (endpoints.length === 1 && !o.address) {
    // one port: both paths over it; only the server can cut one of them
    endpoints = [endpoints[0], endpoints[0]];
    note = `one active port (${endpoints[0].device} ${endpoints[0].host}): both paths use it`;
    if (cutSpecs.some((k) => k.mode === 'link')) {
      cutSpecs = cutSpecs.map((k) => ({ mode: 'server', atMs: k.atMs }));
      note += '; a link cut would take down both, so the server disconnects path 1 instead';
    }
  }
  if (endpoints.length < 2) cutSpecs = [];
  const json = !!o.json;
  const size = (o.size as number | undefined) ?? 4096;
  const depth = (o.depth as number | undefined) ?? 16;
  const tty = o.live ? true : o['no-live'] ? false : opts.tty;
  const display = json ? undefined : new LiveDisplay({
    write: io.stdout, tty,
    title: `node-rdma demo: ${endpoints.map((e, i) => `path${i} ${e.device} ${e.host}`).join(' + ')}, ${fmtBytes(size)} IOs, depth ${depth}, ${(durationMs / 1000).toFixed(0)} s` +
      (cutSpecs.length ? `; path${endpoints.length - 1} cut ${cutSpecs.map((k) => `at ${(k.atMs / 1000).toFixed(0)} s (${k.mode === 'link' ? `link down, up at ${((k.restoreAtMs ?? 0) / 1000).toFixed(0)} s` : 'server disconnect'})`).join(', ')}` : ''),
  });
  if (note && !json) io.stderr(`node-rdma demo: ${note}\n`);
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
      endpoints, port: (o.port as number | undefined) ?? 18600, durationMs, cuts: cutSpecs, size, depth,
      readRatio: (o['read-ratio'] as number | undefined) ?? 0.5, strict: !o.relaxed,
      reconnectDelayMs: o['reconnect-delay'] !== undefined ? Math.round((o['reconnect-delay'] as number) * 1000) : 1000,
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

