/**
 * Per-path transport statistics as Prometheus text exposition (format
 * 0.0.4): one HELP/TYPE block per metric, one sample per path, labels
 * escaped as the format requires.
 */
import type { WireStats } from './conn';
import type { ClientPathStats, ClientSessionStats, ServerPathStats } from './types';

type Labels = Record<string, string | number>;

interface Metric {
  name: string;
  help: string;
  type: 'counter' | 'gauge';
  samples: Array<{ labels: Labels; value: number }>;
}

/** Escapes a label value: backslash, double quote and newline. */
export function escapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

function formatLabels(labels: Labels): string {
  const parts = Object.entries(labels).map(([k, v]) => `${k}="${escapeLabel(String(v))}"`);
  return parts.length ? `{${parts.join(',')}}` : '';
}

function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

export function formatMetrics(metrics: Metric[]): string {
  let out = '';
  for (const m of metrics) {
    if (m.samples.length === 0) continue;
    out += `# HELP ${m.name} ${m.help.replace(/\\/g, '\\\\').replace(/\n/g, '\\n')}\n# TYPE ${m.name} ${m.type}\n`;
    for (const s of m.samples) out += `${m.name}${formatLabels(s.labels)} ${formatValue(s.value)}\n`;
  }
  return out;
}

const PREFIX = 'node_rdma_transport';

type PerPath<S> = (name: string, help: string, type: Metric['type'], value: (p: S) => number | undefined) => Metric;

/** The WireStats counters of each path (client and server alike). */
function wireMetrics<S extends { wire: WireStats }>(per: PerPath<S>): Metric[] {
  return [
    per('messages_sent_total', 'Messages posted to the peer (IO requests/responses and control messages; heartbeats apart).', 'counter', (p) => p.wire.messagesSent),
    per('messages_received_total', 'Messages received from the peer (heartbeats apart).', 'counter', (p) => p.wire.messagesReceived),
    per('rdma_writes_total', "One-sided RDMA WRITEs (read data placed ahead of the response).", 'counter', (p) => p.wire.rdmaWrites),
    per('binds_total', 'Memory window binds (local work requests).', 'counter', (p) => p.wire.binds),
    per('invalidations_total', 'Keys invalidated locally (LOCAL_INV or window deallocation).', 'counter', (p) => p.wire.invalidations),
    per('heartbeats_sent_total', 'Heartbeats and heartbeat acks sent.', 'counter', (p) => p.wire.heartbeatsSent),
    per('heartbeats_received_total', 'Heartbeats and heartbeat acks received.', 'counter', (p) => p.wire.heartbeatsReceived),
  ];
}

/** Client paths of one session as Prometheus text. */
export function clientMetrics(stats: ClientSessionStats): string {
  const base = (p: ClientPathStats): Labels => ({ role: 'client', session: stats.sessionId, path: p.index, peer: `${p.host}:${p.port}` });
  const per = (name: string, help: string, type: Metric['type'], value: (p: ClientPathStats) => number | undefined): Metric => ({
    name: `${PREFIX}_${name}`, help, type,
    samples: stats.paths.flatMap((p) => {
      const v = value(p);
      return v === undefined ? [] : [{ labels: base(p), value: v }];
    }),
  });
  const session: Labels = { role: 'client', session: stats.sessionId };
  return formatMetrics([
    { name: `${PREFIX}_path_up`, help: 'Path state: 1 when connected, 0 otherwise (state label).', type: 'gauge',
      samples: stats.paths.map((p) => ({ labels: { ...base(p), state: p.state }, value: p.state === 'connected' ? 1 : 0 })) },
    per('reads_total', 'Read IOs completed on the path.', 'counter', (p) => p.reads),
    per('read_bytes_total', 'Bytes read on the path.', 'counter', (p) => p.readBytes),
    per('writes_total', 'Write IOs completed on the path.', 'counter', (p) => p.writes),
    per('write_bytes_total', 'Bytes written on the path.', 'counter', (p) => p.writeBytes),
    per('inflight', 'IOs posted on the path and not completed.', 'gauge', (p) => p.inflight),
    per('failovers_total', 'IOs failed over to the path.', 'counter', (p) => p.failovers),
    per('path_downs_total', 'Times the path went down (path-down events).', 'counter', (p) => p.downs),
    { name: `${PREFIX}_reconnects_total`, help: 'Reconnect attempts of the path by result.', type: 'counter',
      samples: stats.paths.flatMap((p) => [
        { labels: { ...base(p), result: 'ok' }, value: p.reconnects.ok },
        { labels: { ...base(p), result: 'fail' }, value: p.reconnects.fail },
      ]) },
    per('heartbeat_rtt_seconds', 'Last heartbeat round trip of the path.', 'gauge', (p) => (p.latencyNs === undefined ? undefined : p.latencyNs / 1e9)),
    ...wireMetrics(per),
    { name: `${PREFIX}_session_up`, help: 'Session state: 1 while a path is connected, 0 otherwise (state label).', type: 'gauge',
      samples: [{ labels: { ...session, state: stats.state }, value: stats.state === 'up' ? 1 : 0 }] },
    { name: `${PREFIX}_session_inflight`, help: 'IOs of the session in flight.', type: 'gauge', samples: [{ labels: session, value: stats.inflight }] },
    { name: `${PREFIX}_session_failovers_total`, help: 'IOs failed over to another path, all paths.', type: 'counter',
      samples: [{ labels: session, value: stats.paths.reduce((n, p) => n + p.failovers, 0) }] },
    { name: `${PREFIX}_session_downs_total`, help: 'Times the session lost its last connected path (session-down events).', type: 'counter', samples: [{ labels: session, value: stats.downs }] },
    { name: `${PREFIX}_session_rejoins_total`, help: 'New sessions started with a restarted server (rejoinOnServerRestart).', type: 'counter', samples: [{ labels: session, value: stats.rejoins }] },
    { name: `${PREFIX}_permits`, help: 'Permits (server chunks) the session uses.', type: 'gauge', samples: [{ labels: session, value: stats.queueDepth }] },
    { name: `${PREFIX}_waiting`, help: 'IOs waiting for a permit.', type: 'gauge', samples: [{ labels: session, value: stats.waiting }] },
    { name: `${PREFIX}_unsettled`, help: 'Chunks held back until the server confirms a cut-off IO.', type: 'gauge', samples: [{ labels: session, value: stats.unsettled }] },
  ]);
}

/** Server sessions and their paths as Prometheus text. */
export function serverMetrics(stats: Record<string, { paths: ServerPathStats[] }>): string {
  const rows = Object.entries(stats).flatMap(([session, s]) => s.paths.map((p) => ({ session, p })));
  const base = (r: { session: string; p: ServerPathStats }): Labels => ({ role: 'server', session: r.session, path: r.p.index, device: r.p.device });
  const per = (name: string, help: string, type: Metric['type'], value: (p: ServerPathStats) => number | undefined): Metric => ({
    name: `${PREFIX}_${name}`, help, type,
    samples: rows.flatMap((r) => {
      const v = value(r.p);
      return v === undefined ? [] : [{ labels: base(r), value: v }];
    }),
  });
  return formatMetrics([
    { name: `${PREFIX}_path_up`, help: 'Path state: 1 when connected, 0 otherwise (state label).', type: 'gauge',
      samples: rows.map((r) => ({ labels: { ...base(r), state: r.p.state }, value: r.p.state === 'connected' ? 1 : 0 })) },
    per('reads_total', 'Read IOs completed on the path.', 'counter', (p) => p.reads),
    per('read_bytes_total', 'Bytes read on the path.', 'counter', (p) => p.readBytes),
    per('writes_total', 'Write IOs completed on the path.', 'counter', (p) => p.writes),
    per('write_bytes_total', 'Bytes written on the path.', 'counter', (p) => p.writeBytes),
    per('replays_total', 'Retried IOs answered from the record (handler not run again).', 'counter', (p) => p.replays),
    per('heartbeat_rtt_seconds', 'Last heartbeat round trip of the path.', 'gauge', (p) => (p.latencyNs === undefined ? undefined : p.latencyNs / 1e9)),
    ...wireMetrics(per),
    { name: `${PREFIX}_sessions`, help: 'Sessions the server holds.', type: 'gauge', samples: [{ labels: { role: 'server' }, value: Object.keys(stats).length }] },
  ]);
}
