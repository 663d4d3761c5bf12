/**
 * Prometheus text exposition of the transport's per-path statistics.
 */
import { clientMetrics, escapeLabel, serverMetrics } from '../../lib/transport/stats';
import type { ClientPathStats, ClientSessionStats } from '../../lib/transport/types';

const path = (i: number, over: Partial<ClientPathStats> = {}): ClientPathStats => ({
  index: i, host: `10.99.${i + 1}.1`, port: 7000, state: 'connected', device: `rxe${i}`,
  reads: 3, readBytes: 300, writes: 5, writeBytes: 5000, inflight: 2, failovers: 1,
  reconnects: { ok: 1, fail: 4 }, latencyNs: 25000, downs: 2,
  wire: { messagesSent: 8, messagesReceived: 9, rdmaWrites: 0, binds: 3, invalidations: 1, heartbeatsSent: 4, heartbeatsReceived: 5 }, ...over,
});

const session = (over: Partial<ClientSessionStats> = {}): ClientSessionStats => ({
  sessionId: 'abc', state: 'up', queueDepth: 64, waiting: 7, unsettled: 1, inflight: 3, downs: 0, rejoins: 0, paths: [path(0), path(1, { state: 'reconnecting', latencyNs: undefined })], ...over,
});

/** Parses exposition text into {name{labels}: value} and checks every sample has HELP/TYPE first. */
function parse(text: string): Map<string, number> {
  const out = new Map<string, number>();
  const typed = new Set<string>();
  for (const line of text.trimEnd().split('\n')) {
    const t = /^# TYPE (\S+) (counter|gauge)$/.exec(line);
    if (t) {
      typed.add(t[1]);
      continue;
    }
    if (line.startsWith('# HELP ')) continue;
    const m = /^([a-z_]+)(\{.*\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`bad line: ${line}`);
    if (!typed.has(m[1])) throw new Error(`sample before TYPE: ${line}`);
    out.set(`${m[1]}${m[2] ?? ''}`, Number(m[3]));
  }
  return out;
}

test('client metrics: one sample per path, counters and gauges, RTT in seconds, wire counters', () => {
  const text = clientMetrics(session());
  const m = parse(text);
  const l0 = 'role="client",session="abc",path="0",peer="10.99.1.1:7000"';
  expect(m.get(`node_rdma_transport_writes_total{${l0}}`)).toBe(5);
  expect(m.get(`node_rdma_transport_write_bytes_total{${l0}}`)).toBe(5000);
  expect(m.get(`node_rdma_transport_inflight{${l0}}`)).toBe(2);
  expect(m.get(`node_rdma_transport_reconnects_total{${l0},result="fail"}`)).toBe(4);
  expect(m.get(`node_rdma_transport_heartbeat_rtt_seconds{${l0}}`)).toBeCloseTo(25e-6);
  expect(m.get(`node_rdma_transport_path_up{${l0},state="connected"}`)).toBe(1);
  expect(m.get(`node_rdma_transport_messages_sent_total{${l0}}`)).toBe(8);
  expect(m.get(`node_rdma_transport_messages_received_total{${l0}}`)).toBe(9);
  expect(m.get(`node_rdma_transport_binds_total{${l0}}`)).toBe(3);
  expect(m.get(`node_rdma_transport_invalidations_total{${l0}}`)).toBe(1);
  expect(m.get(`node_rdma_transport_heartbeats_received_total{${l0}}`)).toBe(5);
  expect(m.get('node_rdma_transport_path_up{role="client",session="abc",path="1",peer="10.99.2.1:7000",state="reconnecting"}')).toBe(0);
  // no RTT sample yet for path 1: no sample rather than a fake 0
  expect([...m.keys()].filter((k) => k.startsWith('node_rdma_transport_heartbeat_rtt_seconds'))).toHaveLength(1);
  expect(m.get('node_rdma_transport_waiting{role="client",session="abc"}')).toBe(7);
  expect(m.get('node_rdma_transport_permits{role="client",session="abc"}')).toBe(64);
  expect(text).toMatch(/^# TYPE node_rdma_transport_writes_total counter$/m);
  expect(text).toMatch(/^# TYPE node_rdma_transport_inflight gauge$/m);
});

test('client metrics: session state, in-flight IOs, failovers, downs, rejoins; path downs and reconnects by result', () => {
  const up = parse(clientMetrics(session({ paths: [path(0, { failovers: 3 }), path(1, { failovers: 4, downs: 5, reconnects: { ok: 6, fail: 0 } })] })));
  const s = 'role="client",session="abc"';
  const l1 = 'role="client",session="abc",path="1",peer="10.99.2.1:7000"';
  expect(up.get(`node_rdma_transport_session_up{${s},state="up"}`)).toBe(1);
  expect(up.get(`node_rdma_transport_session_inflight{${s}}`)).toBe(3);
  expect(up.get(`node_rdma_transport_session_failovers_total{${s}}`)).toBe(7);
  expect(up.get(`node_rdma_transport_failovers_total{${l1}}`)).toBe(4);
  expect(up.get(`node_rdma_transport_path_downs_total{${l1}}`)).toBe(5);
  expect(up.get(`node_rdma_transport_reconnects_total{${l1},result="ok"}`)).toBe(6);
  expect(up.get(`node_rdma_transport_reconnects_total{${l1},result="fail"}`)).toBe(0);
  expect(up.get(`node_rdma_transport_unsettled{${s}}`)).toBe(1);
  const down = parse(clientMetrics(session({ state: 'down', downs: 2, rejoins: 1, paths: [path(0, { state: 'reconnecting' })] })));
  expect(down.get(`node_rdma_transport_session_up{${s},state="down"}`)).toBe(0);
  expect(down.get(`node_rdma_transport_session_downs_total{${s}}`)).toBe(2);
  expect(down.get(`node_rdma_transport_session_rejoins_total{${s}}`)).toBe(1);
  expect(down.get(`node_rdma_transport_path_up{role="client",session="abc",path="0",peer="10.99.1.1:7000",state="reconnecting"}`)).toBe(0);
  const text = clientMetrics(session());
  expect(text).toMatch(/^# TYPE node_rdma_transport_session_up gauge$/m);
  expect(text).toMatch(/^# TYPE node_rdma_transport_session_downs_total counter$/m);
  expect(text).toMatch(/^# TYPE node_rdma_transport_path_downs_total counter$/m);
  // every metric name appears in exactly one TYPE line
  const types = text.split('\n').filter((l) => l.startsWith('# TYPE ')).map((l) => l.split(' ')[2]);
  expect(new Set(types).size).toBe(types.length);
});

test('server metrics: sessions, paths, replays, wire counters', () => {
  const text = serverMetrics({
    s1: { paths: [{
      index: 0, state: 'connected', device: 'rxe0', reads: 1, readBytes: 10, writes: 2, writeBytes: 20, replays: 1, latencyNs: 1e6,
      wire: { messagesSent: 3, messagesReceived: 3, rdmaWrites: 1, binds: 11, invalidations: 3, heartbeatsSent: 0, heartbeatsReceived: 0 },
    }] },
    s2: { paths: [] },
  });
  const m = parse(text);
  expect(m.get('node_rdma_transport_replays_total{role="server",session="s1",path="0",device="rxe0"}')).toBe(1);
  expect(m.get('node_rdma_transport_sessions{role="server"}')).toBe(2);
  expect(m.get('node_rdma_transport_rdma_writes_total{role="server",session="s1",path="0",device="rxe0"}')).toBe(1);
  expect(m.get('node_rdma_transport_binds_total{role="server",session="s1",path="0",device="rxe0"}')).toBe(11);
  expect(m.get('node_rdma_transport_heartbeat_rtt_seconds{role="server",session="s1",path="0",device="rxe0"}')).toBe(0.001);
});

test('label values are escaped', () => {
  expect(escapeLabel('a"b\\c\nd')).toBe('a\\"b\\\\c\\nd');
  const text = clientMetrics(session({ sessionId: 'x"y', paths: [path(0, { host: 'h\\n' })] }));
  expect(text).toContain('session="x\\"y"');
  expect(text).toContain('peer="h\\\\n:7000"');
  expect(() => parse(text)).not.toThrow();
});
