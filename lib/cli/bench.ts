/**
 * `node-rdma bench`: a client workload against a transport server (e.g.
 * `node-rdma serve`): keeps --depth IOs of --size bytes outstanding for
 * --duration, a --read-ratio share of them reads (checked against what was
 * written), with a progress display and a summary.
 */
import { connect, isPolicyName, PolicyName, TransportClient } from '../transport';
import { Address, parseArgs, parseDuration, UsageError } from './args';
import { CliIo, defaultIo, fmtBytes, fmtCount, fmtUs, LiveDisplay, table } from './display';
import { runWorkload, WorkloadResult } from './workload';

export const BENCH_USAGE = `Usage: node-rdma bench --path HOST:PORT [--path HOST:PORT ...] [options]

Runs a read/write workload against a node-rdma transport server (for
example 'node-rdma serve'), one session over every --path, and shows IOPS,
latency percentiles and the traffic per path as it runs, then a summary.
Reads are checked against the data written under the same key.

Options:
  --path HOST:PORT    server address; repeat for a multipath session
  --source ADDR       local address for the paths (repeat: one per --path)
  --size SIZE         bytes per IO (default 4K)
  --depth N           IOs outstanding (default 16)
  --duration SECS     how long (default 10; also 500ms, 1m)
  --read-ratio R      share of reads, 0..1 (default 0.5)
  --keys N            distinct keys (default 256)
  --policy NAME       min-inflight (default), round-robin, min-latency
  --require-strict    refuse a server in relaxed mode
  --interval SECS     display interval (default 1)
  --json              print the result as JSON (no live display)
  -h, --help          this text

Exit status: 0 ok, 1 connection failed, IO errors or data mismatches,
2 usage error.
`;

export interface BenchJson extends Pick<WorkloadResult,
  'durationMs' | 'ios' | 'reads' | 'writes' | 'errors' | 'errorCodes' | 'verified' | 'mismatches' | 'iops' | 'mbps' | 'latency'> {
  paths: Array<{ host: string; port: number }>;
  size: number;
  depth: number;
  readRatio: number;
  strict: boolean | undefined;
  queueDepth: number;
  perPath: WorkloadResult['paths'];
  intervals: Array<{ tMs: number; iops: number; p50Us: number; p99Us: number; errors: number }>;
}

export function summaryText(r: WorkloadResult): string {
  const l = r.latency;
  let s = `  ${fmtCount(r.ios)} IOs in ${(r.durationMs / 1000).toFixed(1)} s: ${fmtCount(r.iops)} IOPS, ${r.mbps.toFixed(2)} MB/s ` +
    `(${r.reads} reads, ${r.writes} writes, ${r.errors} errors${r.errors ? ` ${JSON.stringify(r.errorCodes)}` : ''})\n`;
  s += `  latency: min ${fmtUs(l.minUs)}  p50 ${fmtUs(l.p50Us)}  p90 ${fmtUs(l.p90Us)}  p99 ${fmtUs(l.p99Us)}  p99.9 ${fmtUs(l.p999Us)}  max ${fmtUs(l.maxUs)}\n`;
  s += `  reads verified: ${r.verified}, mismatches: ${r.mismatches}\n`;
  const rows = [['path', 'device', 'address', 'state', 'writes', 'reads', 'bytes', 'failovers', 'reconnects']];
  for (const p of r.paths) {
    rows.push([`path${p.index}`, p.device ?? '?', `${p.host}:${p.port}`, p.state, String(p.writes), String(p.reads), fmtBytes(p.writeBytes + p.readBytes), String(p.failovers), `${p.reconnects.ok}/${p.reconnects.fail}`]);
  }
  return s + table(rows);
}

export async function benchCommand(argv: string[], io: CliIo = defaultIo, opts: { tty?: boolean; signals?: boolean } = {}): Promise<number> {
  let o;
  let durationMs = 10_000;
  let intervalMs = 1000;
  try {
    o = parseArgs(argv, {
      path: { type: 'address', multiple: true },
      source: { type: 'string', multiple: true },
      size: { type: 'size', min: 0 },
      depth: { type: 'int', min: 1, max: 4096 },
      duration: { type: 'string' },
      'read-ratio': { type: 'number', min: 0, max: 1 },
      keys: { type: 'int', min: 1, max: 1 << 20 },
      policy: { type: 'string' },
      'require-strict': { type: 'flag' },
      interval: { type: 'number', min: 0.05 },
      json: { type: 'flag' },
    });
    if (o.help) {
      io.stdout(BENCH_USAGE);
      return 0;
    }
    if (!o.path) throw new UsageError('--path HOST:PORT is required');
    if (o.policy !== undefined && !isPolicyName(o.policy)) throw new UsageError(`--policy must be min-inflight, round-robin or min-latency, got '${o.policy}'`);
    const src = o.source as string[] | undefined;
    if (src && src.length !== (o.path as Address[]).length) throw new UsageError('give one --source per --path');
    if (o.duration !== undefined) durationMs = parseDuration(o.duration as string);
    if (durationMs <= 0) throw new UsageError('--duration must be positive');
    if (o.interval !== undefined) intervalMs = Math.round((o.interval as number) * 1000);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    io.stderr(`node-rdma bench: ${err.message}\nRun 'node-rdma bench --help' for the options.\n`);
    return 2;
  }
  const paths = (o.path as Address[]).map((a, i) => ({ ...a, source: (o.source as string[] | undefined)?.[i] }));
  const size = (o.size as number | undefined) ?? 4096;
  const depth = (o.depth as number | undefined) ?? 16;
  const readRatio = (o['read-ratio'] as number | undefined) ?? 0.5;
  const json = !!o.json;
  const where = paths.map((p) => `${p.host}:${p.port}`).join(' + ');
  let client: TransportClient;
  try {
    client = await connect({
      paths, policy: o.policy as PolicyName | undefined, requireStrict: !!o['require-strict'], maxQueueDepth: Math.max(depth, 1), name: 'node-rdma bench',
      reconnect: { initialDelayMs: 500, maxDelayMs: 5000 },
    });
  } catch (err) {
    io.stderr(`node-rdma bench: cannot connect to ${where}: ${(err as Error).message}\n`);
    return 1;
  }
  const ac = new AbortController();
  const onSig = (): void => ac.abort();
  if (opts.signals !== false) {
    process.on('SIGINT', onSig);
    process.on('SIGTERM', onSig);
  }
  let result: WorkloadResult;
  try {
    if (size > client.maxIoSize) {
      io.stderr(`node-rdma bench: --size ${size} exceeds the server's largest IO (${client.maxIoSize} bytes: chunk size ${client.params!.chunkSize} - header - trailer)\n`);
      return 2;
    }
    const p = client.params!;
    const display = json ? undefined : new LiveDisplay({
      write: io.stdout, tty: opts.tty,
      title: `node-rdma bench: ${where}, ${fmtBytes(size)} IOs, depth ${depth}, ${Math.round(readRatio * 100)}% reads, ${(durationMs / 1000).toFixed(1)} s (${p.strict ? 'strict' : 'relaxed'}, server queue depth ${p.queueDepth})`,
    });
    if (display) {
      client.on('path', (i: number, what: string, err?: Error) => display.event(`path${i} ${what}${err ? `: ${err.message}` : ''}`));
    }
    const effDepth = Math.min(depth, client.queueDepth);
    if (effDepth < depth && !json) io.stderr(`node-rdma bench: the server grants ${client.queueDepth} permits; depth ${depth} beyond that waits in the client queue\n`);
    const t0 = Date.now();
    result = await runWorkload(client, {
      size, depth, durationMs, readRatio, keys: (o.keys as number | undefined) ?? 256, intervalMs, signal: ac.signal,
      onInterval: (s) => display?.update(s, undefined, durationMs - (Date.now() - t0)),
    });
    display?.done();
  } finally {
    if (opts.signals !== false) {
      process.off('SIGINT', onSig);
      process.off('SIGTERM', onSig);
    }
    await client.close({ drainTimeoutMs: 5000 });
  }
  const p = client.params;
  if (json) {
    const out: BenchJson = {
      paths: paths.map(({ host, port }) => ({ host, port })), size, depth, readRatio, durationMs: result.durationMs, strict: p?.strict, queueDepth: client.queueDepth,
      ios: result.ios, reads: result.reads, writes: result.writes, errors: result.errors, errorCodes: result.errorCodes,
      verified: result.verified, mismatches: result.mismatches, iops: result.iops, mbps: result.mbps, latency: result.latency, perPath: result.paths,
      intervals: result.intervals.map((s) => ({ tMs: s.tMs, iops: s.iops, p50Us: s.p50Us, p99Us: s.p99Us, errors: s.errors })),
    };
    io.stdout(JSON.stringify(out, (_k, v) => (typeof v === 'number' && !Number.isFinite(v) ? null : v), 2) + '\n');
  } else {
    io.stdout(`\nnode-rdma bench: done${ac.signal.aborted ? ' (interrupted)' : ''}\n${summaryText(result)}`);
  }
  if (result.ios === 0) {
    io.stderr('node-rdma bench: no IO completed\n');
    return 1;
  }
  return result.errors > 0 || result.mismatches > 0 ? 1 : 0;
}
