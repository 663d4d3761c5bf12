/**
 * The pieces of the CLI and the benchmark that need no RDMA: the HTML/SVG
 * benchmark report on fixed input, the latency histogram, the in-memory
 * store handler of `serve`, and the live display in both of its forms.
 */
import { BenchResults, esc, failoverTimelineSvg, iopsVsDepthSvg, latencyCdfSvg, renderReport } from '../../bench/report';
import { scenarioProblems, scenarioSummary } from '../../lib/cli/demo';
import { fmtCount, fmtUs, intervalLine, LiveDisplay, table } from '../../lib/cli/display';
import { fillPattern, Histogram, IntervalStats, memoryStore } from '../../lib/cli/workload';
import type { TransportRequest } from '../../lib/transport';

const FIXED: BenchResults = {
  date: '2026-11-22T03:00:00.000Z',
  device: 'rxe0',
  iters: 1000,
  environment: 'SoftRoCE <test> & friends',
  latency: {
    perftest_ib_write_lat: { t_min_usec: 100, t_typical_usec: 120, t_avg_usec: 125, t_p99_usec: 200 },
    js: { t_min_usec: 110, t_typical_usec: 132, t_avg_usec: 140, t_p99_usec: 260 },
    ratio_typical: 1.1,
  },
  rate: {
    perftest_ib_write_bw: { bw_avg_mb_sec: 400, msg_rate_mpps: 0.1 },
    perftest_ib_send_bw: { bw_avg_mb_sec: 380, msg_rate_mpps: 0.095 },
    js: { msg_rate_mpps: 0.08 },
    ratio_vs_write_bw: 0.8,
  },
  perftest4k: {
    ib_write_lat: { t_min_usec: 150, t_typical_usec: 170, t_avg_usec: 175, t_p99_usec: 300 },
    ib_read_lat: { t_min_usec: 300, t_typical_usec: 340, t_avg_usec: 350, t_p99_usec: 500 },
  },
  floor: {
    lat: { t_typical_usec: 21.5, t_p99_usec: 40 },
    work: [{ work_ns: 4000, t_typical_usec: 33.25, t_p99_usec: 60 }],
    io: {
      write1: { size: 4096, depth: 1, read_pct: 0, iops: 9000, p50_usec: 96, p99_usec: 300 },
      mix32: { size: 4096, depth: 32, read_pct: 50, iops: 7035.4, p50_usec: 4400, p99_usec: 9000 },
    },
  },
  tcp: {
    size: 4096,
    write: { iters: 1000, p50Us: 300, p99Us: 900, meanUs: 350, minUs: 200, maxUs: 2000, histogram: [[200, 218, 500], [300, 327, 500]] },
    read: { iters: 1000, p50Us: 320, p99Us: 950, meanUs: 360, minUs: 210, maxUs: 2100, histogram: [[210, 229, 500], [320, 349, 500]] },
    iops: [{ depth: 1, iops: 3000, p50Us: 310, p99Us: 900 }, { depth: 32, iops: 9000, p50Us: 3500, p99Us: 9000 }],
  },
  transport: {
    size: 4096,
    strict: {
      latency: [
        { kind: 'write', size: 4096, iters: 1000, minUs: 500, p50Us: 800, meanUs: 850, p99Us: 1500, maxUs: 3000, histogram: [[500, 545, 100], [780, 850, 800], [1400, 1530, 100]] },
        { kind: 'read', size: 4096, iters: 1000, minUs: 600, p50Us: 900, meanUs: 950, p99Us: 1700, maxUs: 3500, histogram: [[600, 654, 200], [850, 927, 700], [1600, 1745, 100]] },
      ],
      iops: [1, 2, 4, 8, 16, 32, 64].map((depth) => ({ depth, iops: 1000 * Math.min(depth, 8), mbps: 4 * Math.min(depth, 8), p50Us: 800 * depth, p99Us: 1500 * depth, errors: 0 })),
    },
    relaxed: {
      latency: [
        { kind: 'write', size: 4096, iters: 1000, minUs: 400, p50Us: 600, meanUs: 650, p99Us: 1200, maxUs: 2000, histogram: [[400, 436, 500], [600, 654, 500]] },
        { kind: 'read', size: 4096, iters: 1000, minUs: 450, p50Us: 700, meanUs: 720, p99Us: 1300, maxUs: 2100, histogram: [[450, 490, 500], [700, 763, 500]] },
      ],
      iops: [1, 2, 4, 8, 16, 32, 64].map((depth) => ({ depth, iops: 1400 * Math.min(depth, 8), mbps: 5.6 * Math.min(depth, 8), p50Us: 600 * depth, p99Us: 1200 * depth, errors: 0 })),
    },
    paths: { onePathIops: 5000, twoPathIops: 6500, ratio: 1.3, perPath: [3200, 3300] },
    syscalls: [{ setup: 'the defaults (adaptive busy polling)', ios: 500, clientPerIo: 3.5, serverPerIo: 9, client: { write: 2, ioctl: 1.5 }, server: { read: 4, write: 5 } }],
    pathsStrict: { onePathIops: 2000, twoPathIops: 2050, ratio: 1.025, perPath: [1010, 1040] },
    failover: {
      cut: 'server', cutPath: 1,
      endpoints: [{ device: 'rxe0', host: '10.99.1.1', netdev: 'eth0' }, { device: 'rxe1', host: '10.99.2.1', netdev: 'eth1' }],
      cutAtMs: 1000, detectedAtMs: 1050, restoredAtMs: 1050, recoveredAtMs: 1800, throughputBackAtMs: 1200, timeToDetectMs: 50, timeToRecoverMs: 750,
      failovers: 7, errors: 0, mismatches: 0,
      timeline: Array.from({ length: 30 }, (_, i) => ({ tMs: (i + 1) * 100, iops: i >= 10 && i < 18 ? 600 : 1000, perPath: i >= 10 && i < 18 ? [600, 0] : [500, 500], errors: 0 })),
      phases: [{ phase: 'before cut', startMs: 0, endMs: 1000, ios: 100, iops: 1000, p50Us: 800, p99Us: 1500 }],
    },
  },
  ratios: { 'transport strict 4 KiB write p50 (QD1) vs 2x ib_write_lat 4 KiB': 800 / 340 },
};

describe('benchmark report', () => {
  const html = renderReport(FIXED);

  test('a self-contained HTML page: no scripts, no external resources', () => {
    expect(html.startsWith('<!DOCTYPE html>')).toBe(true);
    expect(html).not.toMatch(/<script/i);
    expect(html).not.toMatch(/<link\b/i);
    expect(html).not.toMatch(/\bsrc=/i);
    // the only URL is the SVG namespace
    expect(html.match(/https?:\/\/[^"]+/g)?.every((u) => u === 'http://www.w3.org/2000/svg')).toBe(true);
    expect(html).toMatch(/<style>[^<]+<\/style>/);
  });

  test('inline SVG charts with their titles (a latency CDF per mode and IO), and the figures in tables', () => {
    const svgs = html.match(/<svg\b[^>]*aria-label="([^"]+)"/g) ?? [];
    expect(svgs.map((s) => /aria-label="([^"]+)"/.exec(s)![1])).toEqual([
      'latency CDF, strict write', 'latency CDF, strict read', 'latency CDF, relaxed write', 'latency CDF, relaxed read', 'IOPS vs queue depth', 'failover timeline']);
    // TCP beside the transport: its own line in the CDFs, and the ratios
    expect(html).toContain("<td>write p50, QD1</td><td>300.0 us</td><td>600.0 us</td><td>0.50x</td>");
    expect(html).toContain('<td>IOPS, 50% reads, QD 32</td><td>9,000</td><td>11,200</td><td>0.80x</td>');
    expect(html).toContain('<td>the defaults (adaptive busy polling)</td><td>500</td><td>3.50</td><td>9.00</td><td>write 2.00, ioctl 1.50</td>');
    expect(html.match(/>Node&#39;s net \(TCP\), same workload<\/text>/g)).toHaveLength(4); // in each panel
    expect(html).toContain('<td>transport strict 4 KiB write p50 (QD1) vs 2x ib_write_lat 4 KiB</td><td>2.35x</td>');
    expect(html).toContain('<td>strict</td><td>write</td><td>1000</td><td>500.0 us</td><td>800.0 us</td>');
    expect(html).toContain('<td>time to detect</td><td>50 ms</td>');
    expect(html).toContain('<td>time to recover</td><td>750 ms</td>');
    expect(html).toContain('<td>IOs failed over</td><td>7</td>');
    expect(html).toContain('<td>relaxed</td><td>5,000</td><td>6,500</td><td>1.30x</td><td>3200 / 3300</td>');
    expect(html).toContain('<td>strict</td><td>2,000</td><td>2,050</td><td>1.02x</td><td>1010 / 1040</td>');
    // the C floor's figures, the ones that ran (no read at QD1, no QD 64 here)
    expect(html).toContain('<td>WRITE_WITH_IMM ping-pong 2 B (one-way)</td><td>21.50 us</td><td>40.00 us</td>');
    expect(html).toContain('<td>the same with 4 us of work per hop</td><td>33.25 us</td><td>60.00 us</td>');
    expect(html).toContain('<td>transport write 4 KiB, QD1</td><td>96.0 us</td>');
    expect(html).toContain('<td>transport IOPS 4 KiB, 50% reads, QD 32</td><td>7,035 IOPS</td>');
    expect(html).not.toContain('transport read 4 KiB, QD1');
    // escaped environment text
    expect(html).toContain('SoftRoCE &lt;test&gt; &amp; friends');
  });

  test('IOPS chart: one polyline and one point per depth for each mode', () => {
    const svg = iopsVsDepthSvg([{ label: 'strict', points: FIXED.transport!.strict!.iops }, { label: 'relaxed', points: FIXED.transport!.relaxed!.iops }]);
    expect(svg.match(/<polyline/g)).toHaveLength(2);
    expect(svg.match(/<circle/g)).toHaveLength(14);
    expect(svg).toContain('<title>relaxed: depth 64: 11200 IOPS</title>');
    // depth ticks 1..64 on the x axis
    for (const d of [1, 2, 4, 8, 16, 32, 64]) expect(svg).toMatch(new RegExp(`>${d}</text>`));
    // the highest point sits at the top region, depth 1 of strict at the bottom region
    const ys = [...svg.matchAll(/<circle cx="[\d.]+" cy="([\d.]+)"/g)].map((m) => Number(m[1]));
    expect(Math.min(...ys)).toBeLessThan(60);
    expect(Math.max(...ys)).toBeGreaterThan(200);
  });

  test('latency CDF: one line per series rising to 100%, the references dashed, every label below the plot', () => {
    const svg = latencyCdfSvg('relaxed write', [
      { label: 'a', buckets: [[100, 110, 1], [200, 220, 3]] },
      { label: 'b', buckets: [[150, 160, 2], [300, 330, 0]] },
    ], [{ label: 'ib_write_lat', us: 150 }, { label: 'C floor', us: 120 }]);
    expect(svg.match(/<polyline/g)).toHaveLength(2);
    // series a: 25% after its first bucket, 100% at its last
    const pts = /<polyline [^>]*points="([^"]+)"/.exec(svg)![1].split(' ').map((p) => Number(p.split(',')[1]));
    expect(pts[0]).toBeCloseTo(300 - 44, 0); // y of 0% (the plot's bottom)
    expect(pts[pts.length - 1]).toBeCloseTo(16, 0); // y of 100% (its top)
    expect(svg).toContain('>ib_write_lat (150.0 us)</text>');
    expect(svg).toContain('>a</text>');
    // two reference lines with different dash patterns
    const dashes = [...svg.matchAll(/<line [^>]*stroke="#444" stroke-dasharray="([^"]+)"><title>/g)].map((m) => m[1]);
    expect(new Set(dashes).size).toBe(2);
    // legend rows (2 series + 2 references) below the plot area (y >= 300), none over it
    const legendYs = [...svg.matchAll(/<g transform="translate\([\d.]+,([\d.]+)\)">/g)].map((m) => Number(m[1]));
    expect(legendYs).toHaveLength(4);
    for (const yv of legendYs) expect(yv).toBeGreaterThan(300);
    expect(latencyCdfSvg('x', [])).toBe('<p>(no latency data)</p>');
  });

  test('failover timeline: stacked bars per interval and the event markers', () => {
    const svg = failoverTimelineSvg(FIXED.transport!.failover!);
    // 30 intervals: 22 with two paths, 8 with one
    expect(svg.match(/<rect [^>]*fill-opacity="0.8"/g)).toHaveLength(22 * 2 + 8);
    for (const m of ['cut', 'detected', 'recovered']) expect(svg).toContain(`>${m}</text>`);
    expect(svg).not.toContain('>restored</text>'); // a server cut has no link restore
    expect(svg).toContain('>path1 rxe1 10.99.2.1</text>');
  });

  test('renders what exists: a verbs-only result has no transport section; failed steps are listed', () => {
    const only = renderReport({ date: 'd', device: 'mlx5_0', latency: FIXED.latency, failures: [{ step: 'perftest ib_read_lat 4096 B', error: 'exit <1>' }] });
    expect(only).toContain('<h2>Failed steps</h2>');
    expect(only).toContain('<td>perftest ib_read_lat 4096 B</td><td>exit &lt;1&gt;</td>');
    expect(only).not.toMatch(/<svg/);
    expect(only).toContain('JS WRITE_WITH_IMM ping-pong 2 B (one-way)');
    expect(esc(`<a href="x">'&'</a>`)).toBe('&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;');
  });
});

describe('latency histogram', () => {
  test('percentiles within one bucket (~9%), min/max/mean exact', () => {
    const h = new Histogram();
    for (let i = 1; i <= 1000; i++) h.record(i);
    expect(h.count).toBe(1000);
    expect(h.min).toBe(1);
    expect(h.max).toBe(1000);
    expect(h.mean).toBeCloseTo(500.5);
    for (const [p, want] of [[50, 500], [90, 900], [99, 990]] as const) {
      expect(Math.abs(h.percentile(p) - want) / want).toBeLessThan(0.09);
    }
    expect(h.percentile(100)).toBeLessThanOrEqual(1000);
    expect(new Histogram().percentile(50)).toBeNaN();
    const b = h.buckets();
    expect(b.reduce((n, x) => n + x[2], 0)).toBe(1000);
    for (const [lo, hi] of b) expect(hi / lo).toBeCloseTo(2 ** (1 / 8));
  });

  test('merge adds counts; extreme values land in the end buckets', () => {
    const a = new Histogram();
    const b = new Histogram();
    a.record(0);
    b.record(1e12);
    a.merge(b);
    expect(a.count).toBe(2);
    expect(a.counts[0]).toBe(1);
    expect(a.counts[Histogram.BUCKETS - 1]).toBe(1);
    expect(a.summary()).toMatchObject({ count: 2, minUs: 0, maxUs: 1e12 });
  });
});

describe('serve handler (memoryStore)', () => {
  const req = (kind: 'write' | 'read', key: string, data: Buffer): TransportRequest => ({ kind, sessionId: 's', pathIndex: 0, header: Buffer.from(key), data });

  test('writes are stored under the header; reads copy them back; unknown keys are ENOENT', async () => {
    const s = memoryStore();
    expect(await s.handler(req('write', 'a', Buffer.from('hello')))).toEqual({ status: 0 });
    const into = Buffer.alloc(16);
    expect(await s.handler(req('read', 'a', into))).toEqual({ status: 0, length: 5 });
    expect(into.subarray(0, 5).toString()).toBe('hello');
    expect(await s.handler(req('read', 'b', into))).toEqual({ status: 2, length: 0 });
    expect(await s.handler(req('read', 'a', Buffer.alloc(2)))).toEqual({ status: 90, length: 0 });
    // the stored value is a copy: the chunk may be reused after the handler
    const chunk = Buffer.from('xyz');
    await s.handler(req('write', 'c', chunk));
    chunk.fill(0);
    await s.handler(req('read', 'c', into));
    expect(into.subarray(0, 3).toString()).toBe('xyz');
    expect(s.size).toBe(2);
    expect(s.bytes).toBe(8);
    expect(s.counters).toEqual({ writes: 2, reads: 4, misses: 1, writeBytes: 8, readBytes: 8 });
  });

  test('limits: ENOSPC beyond maxKeys or maxBytes; overwriting a key is allowed', async () => {
    const s = memoryStore({ maxKeys: 1, maxBytes: 10 });
    expect(await s.handler(req('write', 'a', Buffer.alloc(10)))).toEqual({ status: 0 });
    expect(await s.handler(req('write', 'b', Buffer.alloc(1)))).toEqual({ status: 28 });
    expect(await s.handler(req('write', 'a', Buffer.alloc(4)))).toEqual({ status: 0 });
    expect(s.bytes).toBe(4);
  });

  test('fillPattern: the same key gives the same bytes, another key others', () => {
    const a = Buffer.alloc(64);
    const b = Buffer.alloc(64);
    fillPattern(a, 'k1');
    fillPattern(b, 'k1');
    expect(a.equals(b)).toBe(true);
    fillPattern(b, 'k2');
    expect(a.equals(b)).toBe(false);
  });
});

describe('display', () => {
  const iv: IntervalStats = {
    tMs: 12_345, intervalMs: 1000, ios: 1234, iops: 1234, reads: 600, writes: 634, errors: 2, mbps: 5.05, p50Us: 812, p99Us: 2400,
    paths: [
      { index: 0, host: '10.99.1.1', port: 1, device: 'rxe0', state: 'connected', ios: 1234, iops: 1234, bytes: 0, mbps: 5, inflight: 3, failovers: 4, reconnects: { ok: 0, fail: 0 } },
      { index: 1, host: '10.99.2.1', port: 1, device: 'rxe1', state: 'reconnecting', ios: 0, iops: 0, bytes: 0, mbps: 0, inflight: 0, failovers: 0, reconnects: { ok: 1, fail: 2 } },
    ],
  };

  test('formatting', () => {
    expect(fmtUs(812)).toBe('812 us');
    expect(fmtUs(12.34)).toBe('12.3 us');
    expect(fmtUs(2400)).toBe('2.40 ms');
    expect(fmtUs(2.5e6)).toBe('2.50 s');
    expect(fmtUs(NaN)).toBe('-');
    expect(fmtCount(1234)).toBe('1234');
    expect(fmtCount(12345)).toBe('12.3k');
    expect(fmtCount(2.5e6)).toBe('2.50M');
    expect(table([['a', 'n'], ['xx', '5'], ['y', '10']])).toBe('  a    n\n  xx   5\n  y   10\n');
  });

  test('one line per interval when stdout is not a terminal, events as their own lines', () => {
    let out = '';
    const d = new LiveDisplay({ write: (s) => (out += s), tty: false, title: 'T' });
    d.update(iv, 'before cut');
    d.event('path1 down', 12_400);
    d.update({ ...iv, tMs: 13_345 });
    const lines = out.trimEnd().split('\n');
    expect(lines).toHaveLength(4);
    expect(lines[0]).toBe('T');
    expect(lines[1]).toBe(intervalLine(iv, 'before cut'));
    expect(lines[1]).toMatch(/^t= 12\.3s +1234 IOPS +5\.0 MB\/s +p50 +812 us +p99 +2\.40 ms +\| p0\(rxe0\) up 1234\/s +p1\(rxe1\) DOWN\/reconnecting 0\/s +errors 2 +\[before cut\]$/);
    expect(lines[2]).toBe('t= 12.4s  >> path1 down');
    expect(out).not.toContain('\x1b[');
  });

  test('on a terminal: a block redrawn in place (cursor up + clear), events above it', () => {
    let out = '';
    const d = new LiveDisplay({ write: (s) => (out += s), tty: true, title: 'T' });
    d.update(iv);
    const first = out;
    expect(first).not.toContain('\x1b[');
    expect(first.trimEnd().split('\n')).toHaveLength(4); // header, total, 2 paths
    expect(first).toMatch(/path1 .*DOWN\/reconnecting .*reconnects 1\/2/);
    out = '';
    d.update({ ...iv, tMs: 13_345 });
    expect(out.startsWith('\x1b[4F\x1b[J')).toBe(true);
    out = '';
    d.event('path1 down');
    expect(out.startsWith('\x1b[4F\x1b[J>> path1 down\n')).toBe(true);
  });
});

describe('demo summary and verdict', () => {
  type R = Parameters<typeof scenarioSummary>[0];
  const h = new Histogram();
  [100, 200, 300].forEach((us) => h.record(us));
  const base = (): R => ({
    endpoints: [{ device: 'rxe0', host: '10.99.1.1', netdev: 'eth0' }, { device: 'rxe1', host: '10.99.2.1', netdev: 'eth1' }],
    cutPath: 1, strict: true, size: 4096, depth: 16, readRatio: 0.5, downsBeforeCut: [], events: [],
    cuts: [
      { mode: 'server', path: 1, atMs: 15_000, detectedAtMs: 15_100, restoredAtMs: undefined, recoveredAtMs: 16_500, timeToDetectMs: 100, timeToRecoverMs: 1400, failovers: 8, downsAfterRecovery: [] },
      { mode: 'link', path: 1, atMs: 30_000, detectedAtMs: 30_250, restoredAtMs: 41_000, recoveredAtMs: undefined, timeToDetectMs: 250, timeToRecoverMs: undefined, failovers: 8, downsAfterRecovery: [] },
    ],
    phases: [{ phase: 'before cut', startMs: 0, endMs: 15_000, ios: 3, iops: 0.2, errors: 0, latency: h.summary(), perPath: [2, 1] }],
    workload: {
      durationMs: 60_000, ios: 3, reads: 1, writes: 2, errors: 0, errorCodes: {}, verified: 1, mismatches: 0, badStatus: 0, iops: 0.05, mbps: 0,
      latency: h.summary(), histogram: h, intervals: [],
      paths: [0, 1].map((index) => ({
        index, host: `10.99.${index + 1}.1`, port: 1, state: index ? 'reconnecting' : 'connected', device: `rxe${index}`, reads: 1, readBytes: 4096, writes: 1, writeBytes: 4096,
        inflight: 0, failovers: 0, reconnects: { ok: 1, fail: 0 }, latencyNs: undefined,
      })) as R['workload']['paths'],
    },
  });

  test('the summary: phases, one row per cut with detection/recovery, the rxe note for a link cut that did not reconnect', () => {
    const s = scenarioSummary(base());
    expect(s).toMatch(/^ {2}phase +from +to +IOs +IOPS +p50 +p99 +errors +path0 IOs +path1 IOs$/m);
    expect(s).toMatch(/^ {4}1 +server disconnect +15\.00 s +100 ms +8 +- +1400 ms +0$/m);
    expect(s).toMatch(/^ {4}2 +ip link set eth1 down +30\.00 s +250 ms +8 +41\.00 s +did not reconnect +0$/m);
    expect(s).toContain('note: rxe (Linux 6.12 and 7.3.4) moves its GSI QP to the error state');
  });

  test('verdict: an rxe link cut that does not reconnect is not a failure; errors, mismatches, flapping and missed detection are', () => {
    expect(scenarioProblems(base())).toEqual([]);
    const r = base();
    r.workload.errors = 3;
    r.workload.errorCodes = { ECONNABORTED: 3 };
    r.workload.mismatches = 1;
    r.cuts[0].downsAfterRecovery = ['path1: MemoryWindow is closed', 'path1: MemoryWindow is closed'];
    r.cuts[1].detectedAtMs = undefined;
    expect(scenarioProblems(r)).toEqual([
      '1 reads returned wrong data',
      '3 IOs failed (ECONNABORTED 3)',
      'after cut 1, paths went down 2 more time(s): path1: MemoryWindow is closed',
      'cut 2 was not detected',
    ]);
    expect(scenarioSummary(r)).toContain('went down again after a recovery: cut 1: path1: MemoryWindow is closed (x2)');
    // on another device (mlx5) a link cut must reconnect
    const m = base();
    m.endpoints = m.endpoints.map((e, i) => ({ ...e, device: `mlx5_${i}` }));
    expect(scenarioProblems(m)).toEqual(['path1 did not reconnect after cut 2']);
  });
});
