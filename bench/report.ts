/**
 * The HTML report of a benchmark run (bench/results/<date>.html): tables
 * and inline SVG charts (latency histogram, IOPS vs queue depth, failover
 * timeline), no external JS or CSS. renderReport() is a pure function of
 * the results JSON (bench/run.ts writes both).
 */

export interface PerftestLat {
  t_min_usec: number;
  t_typical_usec: number;
  t_avg_usec: number;
  t_p99_usec: number;
  t_max_usec?: number;
}

export interface TransportLatency {
  kind: 'write' | 'read';
  size: number;
  iters: number;
  minUs: number;
  p50Us: number;
  meanUs: number;
  p99Us: number;
  maxUs: number;
  histogram: Array<[number, number, number]>;
  /** where the server ran */
  setup?: string;
}

export interface TransportIops {
  depth: number;
  iops: number;
  mbps: number;
  p50Us: number;
  p99Us: number;
  errors: number;
}

export interface FailoverResult {
  cut: string;
  cutPath?: number;
  endpoints: Array<{ device: string; host: string; netdev: string | null }>;
  cutAtMs?: number | null;
  detectedAtMs?: number | null;
  restoredAtMs?: number | null;
  recoveredAtMs?: number | null;
  throughputBackAtMs?: number | null;
  timeToDetectMs?: number | null;
  timeToRecoverMs?: number | null;
  failovers: number;
  /** paths that went down again after the recovery, with the reason */
  downsAfterRecovery?: string[];
  errors: number;
  mismatches: number;
  timeline: Array<{ tMs: number; iops: number; perPath: number[]; errors: number }>;
  phases?: Array<{ phase: string; startMs: number; endMs: number; ios: number; iops: number; p50Us: number | null; p99Us: number | null }>;
}

export interface BenchResults {
  date: string;
  device: string;
  iters?: number;
  environment?: string;
  /** the same plain byte loop in C and in JS on this machine (bench/run.ts jsCpu, floor cpu) */
  cpu?: { c: { lcg_fill_1mib_usec: number }; js: { lcg_fill_1mib_usec: number }; jsOverC: number };
  latency?: { perftest_ib_write_lat: PerftestLat; js: PerftestLat; js_sync?: PerftestLat; ratio_typical: number };
  rate?: {
    perftest_ib_write_bw: { bw_avg_mb_sec: number; msg_rate_mpps: number };
    perftest_ib_send_bw: { bw_avg_mb_sec: number; msg_rate_mpps: number };
    js: { msg_rate_mpps: number };
    ratio_vs_write_bw: number;
    js_send?: { msg_rate_mpps: number };
    ratio_send_vs_send_bw?: number;
  };
  perftest4k?: { ib_write_lat: PerftestLat; ib_read_lat: PerftestLat };
  /** bench/native/floor.c: the same RDMA messages as the JS benchmarks, from C */
  floor?: {
    lat?: { t_typical_usec: number; t_p99_usec: number };
    /** the same ping-pong with -W work_ns of CPU work per hop at both ends */
    work?: Array<{ work_ns: number; t_typical_usec: number; t_p99_usec: number }>;
    io: Partial<Record<'write1' | 'read1' | 'mix32' | 'mix64', FloorIo>>;
  };
  transport?: {
    size: number;
    strict?: { latency: TransportLatency[]; iops: TransportIops[] };
    relaxed?: { latency: TransportLatency[]; iops: TransportIops[] };
    /** one path against two at QD 32: relaxed (paths) and strict (pathsStrict) */
    paths?: PathsResult;
    pathsStrict?: PathsResult;
    failover?: FailoverResult;
    /** strace -c per IO, relaxed 4 KiB writes at QD1, per polling setup (or why it could not run) */
    syscalls?: SyscallRow[] | { error: string };
  };
  /** bench/tcp.ts: the same workload over Node's net */
  tcp?: TcpResult;
  ratios?: Record<string, number>;
  /** steps that failed (the run went on without them) */
  failures?: Array<{ step: string; error: string }>;
}

export interface SyscallRow {
  setup: string;
  ios: number;
  clientPerIo: number;
  serverPerIo: number;
  client: Record<string, number>;
  server: Record<string, number>;
}

export interface TcpLatency { iters: number; p50Us: number; p99Us: number; meanUs: number; minUs: number; maxUs: number; histogram?: Array<[number, number, number]> }

export interface TcpResult {
  size: number;
  write?: TcpLatency;
  read?: TcpLatency;
  iops?: Array<{ depth: number; iops: number; p50Us: number; p99Us: number }>;
}

export interface FloorIo {
  size: number;
  depth: number;
  read_pct: number;
  iops: number;
  p50_usec: number;
  p99_usec: number;
}

export interface PathsResult {
  onePathIops: number;
  twoPathIops: number;
  ratio: number;
  perPath: number[];
}

export function esc(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

function num(v: number | null | undefined, digits = 1): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return '-';
  return Math.abs(v) >= 1000 ? Math.round(v).toLocaleString('en-US') : v.toFixed(digits);
}

// ------------------------------------------------------------------ SVG

const W = 720;
const H = 300;
const M = { l: 64, r: 16, t: 16, b: 44 };
const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b'];

type Scale = (v: number) => number;

function linScale(d0: number, d1: number, r0: number, r1: number): Scale {
  const span = d1 - d0 || 1;
  return (v) => r0 + ((v - d0) / span) * (r1 - r0);
}

function logScale(d0: number, d1: number, r0: number, r1: number): Scale {
  const a = Math.log10(d0);
  const b = Math.log10(d1);
  const span = b - a || 1;
  return (v) => r0 + ((Math.log10(Math.max(v, d0)) - a) / span) * (r1 - r0);
}

/** 'nice' linear ticks */
function ticks(max: number, n = 5): number[] {
  if (!(max > 0)) return [0];
  const raw = max / n;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw)!;
  const out: number[] = [];
  for (let v = 0; v <= max * 1.0001; v += step) out.push(+v.toFixed(10));
  return out;
}

function logTicks(min: number, max: number): number[] {
  const out: number[] = [];
  for (let e = Math.floor(Math.log10(min)); e <= Math.ceil(Math.log10(max)); e++) {
    for (const m of [1, 2, 5]) {
      const v = m * 10 ** e;
      if (v >= min && v <= max) out.push(v);
    }
  }
  return out;
}

function fmtTick(v: number): string {
  if (v >= 1e6) return `${+(v / 1e6).toFixed(1)}M`;
  if (v >= 1e3) return `${+(v / 1e3).toFixed(1)}k`;
  return String(+v.toFixed(2));
}

interface Frame {
  x: Scale;
  y: Scale;
  body: string[];
}

function frame(xs: { scale: Scale; ticks: number[]; label: string; fmt?: (v: number) => string }, ys: { scale: Scale; ticks: number[]; label: string }): string[] {
  const out: string[] = [];
  const x0 = M.l;
  const x1 = W - M.r;
  const y0 = H - M.b;
  const y1 = M.t;
  out.push(`<rect x="${x0}" y="${y1}" width="${x1 - x0}" height="${y0 - y1}" fill="#fff" stroke="#999"/>`);
  for (const t of ys.ticks) {
    const y = ys.scale(t).toFixed(1);
    out.push(`<line x1="${x0}" x2="${x1}" y1="${y}" y2="${y}" stroke="#eee"/>`);
    out.push(`<text x="${x0 - 6}" y="${y}" text-anchor="end" dominant-baseline="middle" font-size="11">${fmtTick(t)}</text>`);
  }
  for (const t of xs.ticks) {
    const x = xs.scale(t).toFixed(1);
    out.push(`<line x1="${x}" x2="${x}" y1="${y0}" y2="${y0 + 4}" stroke="#666"/>`);
    out.push(`<text x="${x}" y="${y0 + 16}" text-anchor="middle" font-size="11">${(xs.fmt ?? fmtTick)(t)}</text>`);
  }
  out.push(`<text x="${(x0 + x1) / 2}" y="${H - 6}" text-anchor="middle" font-size="12">${esc(xs.label)}</text>`);
  out.push(`<text x="14" y="${(y0 + y1) / 2}" text-anchor="middle" font-size="12" transform="rotate(-90 14 ${(y0 + y1) / 2})">${esc(ys.label)}</text>`);
  return out;
}

function legend(items: Array<{ label: string; color: string; dash?: boolean }>): string {
  return items.map((it, i) => {
    const x = M.l + 10;
    const y = M.t + 14 + i * 16;
    return `<line x1="${x}" x2="${x + 22}" y1="${y}" y2="${y}" stroke="${it.color}" stroke-width="2.5"${it.dash ? ' stroke-dasharray="5 3"' : ''}/>` +
      `<text x="${x + 28}" y="${y}" dominant-baseline="middle" font-size="11">${esc(it.label)}</text>`;
  }).join('');
}

function svg(title: string, body: string[]): string {
  return `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img" aria-label="${esc(title)}" font-family="sans-serif">${body.join('')}</svg>`;
}

export interface HistSeries {
  label: string;
  /** [lowerUs, upperUs, count] */
  buckets: Array<[number, number, number]>;
}

const DASHES = ['4 3', '1 3', '8 3 2 3', '2 2'];

/**
 * Latency CDFs (share of IOs at or below a latency, log time axis), one
 * line per series, for one panel of the report (one mode and kind of IO).
 * The legend and the reference lines' names sit below the plot, never over
 * the lines; each reference line has its own dash pattern.
 */
export function latencyCdfSvg(title: string, series: HistSeries[], markers: Array<{ label: string; us: number }> = []): string {
  const all = series.flatMap((s) => s.buckets.filter((b) => b[2] > 0));
  if (all.length === 0) return '<p>(no latency data)</p>';
  const lo = Math.min(...all.map((b) => b[0]), ...markers.map((m) => m.us)) * 0.8;
  const hi = Math.max(...all.map((b) => b[1]), ...markers.map((m) => m.us)) * 1.25;
  const x = logScale(lo, hi, M.l, W - M.r);
  const y = linScale(0, 100, H - M.b, M.t);
  const body = frame({ scale: x, ticks: logTicks(lo, hi), label: `${title}: latency (us, log scale)` }, { scale: y, ticks: [0, 25, 50, 75, 100], label: '% of IOs at or below' });
  series.forEach((s, i) => {
    const n = s.buckets.reduce((a, b) => a + b[2], 0) || 1;
    const bs = s.buckets.filter((b) => b[2] > 0).sort((a, b) => a[0] - b[0]);
    let acc = 0;
    const pts: string[] = [];
    for (const [l, u, c] of bs) {
      // the bucket's IOs spread over it: a ramp from its lower to its upper bound
      pts.push(`${x(l).toFixed(1)},${y((acc * 100) / n).toFixed(1)}`);
      acc += c;
      pts.push(`${x(u).toFixed(1)},${y((acc * 100) / n).toFixed(1)}`);
    }
    body.push(`<polyline fill="none" stroke="${COLORS[i % COLORS.length]}" stroke-width="2" points="${pts.join(' ')}"><title>${esc(s.label)}</title></polyline>`);
  });
  markers.forEach((m, i) => {
    const xv = x(m.us).toFixed(1);
    body.push(`<line x1="${xv}" x2="${xv}" y1="${M.t}" y2="${H - M.b}" stroke="#444" stroke-dasharray="${DASHES[i % DASHES.length]}"><title>${esc(`${m.label}: ${num(m.us)} us`)}</title></line>`);
  });
  // the p50 line, to read medians off
  body.push(`<line x1="${M.l}" x2="${W - M.r}" y1="${y(50).toFixed(1)}" y2="${y(50).toFixed(1)}" stroke="#bbb" stroke-dasharray="2 2"/>`);
  const items = [
    ...series.map((s, i) => `<line x1="0" x2="22" y1="0" y2="0" stroke="${COLORS[i % COLORS.length]}" stroke-width="2.5"/><text x="28" y="0" dominant-baseline="middle" font-size="11">${esc(s.label)}</text>`),
    ...markers.map((m, i) => `<line x1="0" x2="22" y1="0" y2="0" stroke="#444" stroke-width="1.5" stroke-dasharray="${DASHES[i % DASHES.length]}"/><text x="28" y="0" dominant-baseline="middle" font-size="11">${esc(`${m.label} (${num(m.us)} us)`)}</text>`),
  ];
  const rowH = 16;
  items.forEach((it, i) => body.push(`<g transform="translate(${M.l + 10},${H + 6 + i * rowH})">${it}</g>`));
  const h = H + 10 + items.length * rowH;
  return `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${W} ${h}" width="${W}" height="${h}" role="img" aria-label="${esc(`latency CDF, ${title}`)}" font-family="sans-serif">${body.join('')}</svg>`;
}

/** IOPS vs queue depth (log2 x axis), one line per series. */
export function iopsVsDepthSvg(series: Array<{ label: string; points: Array<{ depth: number; iops: number }> }>): string {
  const pts = series.flatMap((s) => s.points);
  if (pts.length === 0) return '<p>(no IOPS data)</p>';
  const dmin = Math.min(...pts.map((p) => p.depth));
  const dmax = Math.max(...pts.map((p) => p.depth));
  const ymax = Math.max(...pts.map((p) => p.iops)) * 1.1 || 1;
  const x = dmin === dmax ? () => (M.l + W - M.r) / 2 : logScale(dmin, dmax, M.l + 20, W - M.r - 20);
  const y = linScale(0, ymax, H - M.b, M.t);
  const depths = [...new Set(pts.map((p) => p.depth))].sort((a, b) => a - b);
  const body = frame({ scale: x, ticks: depths, label: 'queue depth (IOs outstanding)', fmt: String }, { scale: y, ticks: ticks(ymax), label: 'IOPS' });
  series.forEach((s, i) => {
    const c = COLORS[i % COLORS.length];
    const ps = [...s.points].sort((a, b) => a.depth - b.depth);
    body.push(`<polyline fill="none" stroke="${c}" stroke-width="2" points="${ps.map((p) => `${x(p.depth).toFixed(1)},${y(p.iops).toFixed(1)}`).join(' ')}"/>`);
    for (const p of ps) body.push(`<circle cx="${x(p.depth).toFixed(1)}" cy="${y(p.iops).toFixed(1)}" r="3" fill="${c}"><title>${esc(`${s.label}: depth ${p.depth}: ${Math.round(p.iops)} IOPS`)}</title></circle>`);
  });
  body.push(legend(series.map((s, i) => ({ label: s.label, color: COLORS[i % COLORS.length] }))));
  return svg('IOPS vs queue depth', body);
}

/** IOPS per interval, stacked by path, with the cut/detect/restore/recover markers. */
export function failoverTimelineSvg(f: FailoverResult): string {
  const tl = f.timeline;
  if (tl.length === 0) return '<p>(no timeline)</p>';
  const tmax = Math.max(...tl.map((s) => s.tMs));
  const ymax = Math.max(...tl.map((s) => s.iops)) * 1.15 || 1;
  const x = linScale(0, tmax, M.l, W - M.r);
  const y = linScale(0, ymax, H - M.b, M.t);
  const body = frame({ scale: x, ticks: ticks(tmax / 1000, 8).map((s) => s * 1000), label: 'time (s)', fmt: (v) => String(+(v / 1000).toFixed(1)) }, { scale: y, ticks: ticks(ymax), label: 'IOPS' });
  let prevT = 0;
  for (const s of tl) {
    const x0 = x(prevT);
    const w = Math.max(0.5, x(s.tMs) - x0 - 0.5);
    let acc = 0;
    s.perPath.forEach((v, i) => {
      const top = y(acc + v);
      const h = y(acc) - top;
      if (h > 0) body.push(`<rect x="${x0.toFixed(1)}" y="${top.toFixed(1)}" width="${w.toFixed(1)}" height="${h.toFixed(1)}" fill="${COLORS[i % COLORS.length]}" fill-opacity="0.8"/>`);
      acc += v;
    });
    if (s.errors) body.push(`<rect x="${x0.toFixed(1)}" y="${(H - M.b - 4).toFixed(1)}" width="${w.toFixed(1)}" height="4" fill="#000"><title>${s.errors} errors</title></rect>`);
    prevT = s.tMs;
  }
  const marks: Array<[string, number | null | undefined]> = [
    ['cut', f.cutAtMs], ['detected', f.detectedAtMs], ['restored', f.cut === 'link' ? f.restoredAtMs : undefined], ['recovered', f.recoveredAtMs],
  ];
  marks.filter(([, t]) => typeof t === 'number').forEach(([label, t], i) => {
    const xv = x(t as number).toFixed(1);
    body.push(`<line x1="${xv}" x2="${xv}" y1="${M.t}" y2="${H - M.b}" stroke="#000" stroke-dasharray="4 3"/>`);
    body.push(`<text x="${xv}" y="${M.t + 12 + (i % 2) * 13}" font-size="10" dx="3">${esc(label)}</text>`);
  });
  body.push(legend(f.endpoints.map((e, i) => ({ label: `path${i} ${e.device} ${e.host}`, color: COLORS[i % COLORS.length] }))));
  return svg('failover timeline', body);
}

// ----------------------------------------------------------------- page

function tableHtml(rows: string[][]): string {
  const [head, ...rest] = rows;
  return `<table><thead><tr>${head.map((h) => `<th>${esc(h)}</th>`).join('')}</tr></thead><tbody>${rest.map((r) => `<tr>${r.map((c) => `<td>${esc(c)}</td>`).join('')}</tr>`).join('')}</tbody></table>`;
}

export function renderReport(r: BenchResults): string {
  const parts: string[] = [];
  parts.push(`<h1>node-rdma benchmark: ${esc(r.device)}, ${esc(r.date)}</h1>`);
  if (r.environment) parts.push(`<p class="note">${esc(r.environment)}</p>`);
  if (r.cpu) {
    parts.push(`<p class="note">Plain code on this machine: the same byte loop takes ${r.cpu.jsOverC.toFixed(1)}x as long in JS as in C ` +
      `(${r.cpu.js.lcg_fill_1mib_usec.toFixed(0)} vs ${r.cpu.c.lcg_fill_1mib_usec.toFixed(0)} us; 1.27x on the x86 build host, not emulated). ` +
      'Every JS/C ratio below is read through it.</p>');
  }
  if (r.failures?.length) {
    parts.push('<h2>Failed steps</h2>');
    parts.push(tableHtml([['step', 'error'], ...r.failures.map((f) => [f.step, f.error])]));
  }
  if (r.ratios && Object.keys(r.ratios).length) {
    parts.push('<h2>Ratios against perftest and the C floor</h2>');
    parts.push(tableHtml([['comparison', 'ratio'], ...Object.entries(r.ratios).map(([k, v]) => [k, `${num(v, 2)}x`])]));
  }
  if (r.latency || r.rate || r.perftest4k) {
    parts.push('<h2>perftest and the JS verbs benchmarks</h2>');
    const rows = [['benchmark', 'typical / rate', 'p99', 'note']];
    if (r.latency) {
      rows.push(['ib_write_lat 2 B (one-way)', `${num(r.latency.perftest_ib_write_lat.t_typical_usec, 2)} us`, `${num(r.latency.perftest_ib_write_lat.t_p99_usec, 2)} us`, '']);
      rows.push(['JS WRITE_WITH_IMM ping-pong 2 B (one-way)', `${num(r.latency.js.t_typical_usec, 2)} us`, `${num(r.latency.js.t_p99_usec, 2)} us`, `${num(r.latency.ratio_typical, 2)}x ib_write_lat`]);
      const sync = r.latency.js_sync;
      if (sync) {
        rows.push(['JS ping-pong, synchronous poll loop (one-way)', `${num(sync.t_typical_usec, 2)} us`, `${num(sync.t_p99_usec, 2)} us`,
          `${num(sync.t_typical_usec / r.latency.perftest_ib_write_lat.t_typical_usec, 2)}x ib_write_lat`]);
      }
    }
    if (r.perftest4k) {
      rows.push(['ib_write_lat 4 KiB (one-way)', `${num(r.perftest4k.ib_write_lat.t_typical_usec, 2)} us`, `${num(r.perftest4k.ib_write_lat.t_p99_usec, 2)} us`, '']);
      rows.push(['ib_read_lat 4 KiB (round trip)', `${num(r.perftest4k.ib_read_lat.t_typical_usec, 2)} us`, `${num(r.perftest4k.ib_read_lat.t_p99_usec, 2)} us`, '']);
    }
    if (r.rate) {
      rows.push(['ib_write_bw 4 KiB', `${num(r.rate.perftest_ib_write_bw.msg_rate_mpps * 1e6, 0)} msg/s`, '-', `${num(r.rate.perftest_ib_write_bw.bw_avg_mb_sec, 1)} MB/s`]);
      rows.push(['ib_send_bw 4 KiB', `${num(r.rate.perftest_ib_send_bw.msg_rate_mpps * 1e6, 0)} msg/s`, '-', `${num(r.rate.perftest_ib_send_bw.bw_avg_mb_sec, 1)} MB/s`]);
      rows.push(['JS RDMA WRITE rate 4 KiB', `${num(r.rate.js.msg_rate_mpps * 1e6, 0)} msg/s`, '-', `${num(r.rate.ratio_vs_write_bw, 2)}x ib_write_bw`]);
      if (r.rate.js_send) rows.push(['JS SEND rate 4 KiB', `${num(r.rate.js_send.msg_rate_mpps * 1e6, 0)} msg/s`, '-', `${num(r.rate.ratio_send_vs_send_bw ?? NaN, 2)}x ib_send_bw`]);
    }
    parts.push(tableHtml(rows));
  }
  if (r.floor) {
    // what the device costs for node-rdma's messages, without node-rdma
    parts.push('<h2>C floor: the same RDMA messages posted from C (bench/native/floor.c)</h2>');
    const rows = [['benchmark', 'typical / rate', 'p99', 'note']];
    const l = r.floor.lat;
    if (l) rows.push(['WRITE_WITH_IMM ping-pong 2 B (one-way)', `${num(l.t_typical_usec, 2)} us`, `${num(l.t_p99_usec, 2)} us`, 'as the JS ping-pong']);
    for (const w of r.floor.work ?? []) {
      rows.push([`the same with ${num(w.work_ns / 1000, 0)} us of work per hop`, `${num(w.t_typical_usec, 2)} us`, `${num(w.t_p99_usec, 2)} us`, 'CPU work between a message and its reply, both ends']);
    }
    const io = r.floor.io;
    if (io.write1) rows.push(['transport write 4 KiB, QD1', `${num(io.write1.p50_usec, 1)} us`, `${num(io.write1.p99_usec, 1)} us`, 'request + response']);
    if (io.read1) rows.push(['transport read 4 KiB, QD1', `${num(io.read1.p50_usec, 1)} us`, `${num(io.read1.p99_usec, 1)} us`, 'request, data + response']);
    for (const x of [io.mix32, io.mix64]) {
      if (x) rows.push([`transport IOPS 4 KiB, ${x.read_pct}% reads, QD ${x.depth}`, `${num(x.iops, 0)} IOPS`, `${num(x.p99_usec, 0)} us`, `p50 ${num(x.p50_usec, 0)} us`]);
    }
    parts.push(tableHtml(rows));
  }
  const t = r.transport;
  if (t) {
    const modes = (['strict', 'relaxed'] as const).filter((m) => t[m]);
    parts.push(`<h2>Transport: ${t.size} B IOs at queue depth 1</h2>`);
    const rows = [['mode', 'IO', 'IOs', 'min', 'p50', 'mean', 'p99', 'max']];
    for (const m of modes) {
      for (const l of t[m]!.latency) {
        const what = l.setup ? `${l.kind} (${l.setup})` : l.kind;
        rows.push([m, what, String(l.iters), `${num(l.minUs)} us`, `${num(l.p50Us)} us`, `${num(l.meanUs)} us`, `${num(l.p99Us)} us`, `${num(l.maxUs)} us`]);
      }
    }
    parts.push(tableHtml(rows));
    // one CDF panel per mode and kind of IO: the setups, TCP, and the references
    const tcp = r.tcp;
    const floorIo = r.floor?.io;
    parts.push('<h3>Latency CDFs (QD1), one panel per mode and IO</h3>');
    for (const m of modes) {
      for (const kind of ['write', 'read'] as const) {
        const ls = t[m]!.latency.filter((l) => l.kind === kind);
        const series: HistSeries[] = ls.map((l) => ({ label: l.setup ?? kind, buckets: l.histogram }));
        const tl = tcp?.[kind];
        if (tl?.histogram) series.push({ label: "Node's net (TCP), same workload", buckets: tl.histogram });
        const markers: Array<{ label: string; us: number }> = [];
        if (kind === 'write' && r.perftest4k) markers.push({ label: 'ib_write_lat 4K x2 (RTT)', us: r.perftest4k.ib_write_lat.t_typical_usec * 2 });
        if (kind === 'read' && r.perftest4k) markers.push({ label: 'ib_read_lat 4K', us: r.perftest4k.ib_read_lat.t_typical_usec });
        const fl = kind === 'write' ? floorIo?.write1 : floorIo?.read1;
        if (fl) markers.push({ label: `C floor ${kind} p50`, us: fl.p50_usec });
        parts.push(latencyCdfSvg(`${m} ${kind}`, series, markers));
      }
    }
    if (tcp) {
      parts.push(`<h2>Node's net (TCP) with the same workload (${tcp.size} B request/response)</h2>`);
      const best = (kind: 'write' | 'read'): TransportLatency | undefined =>
        t.relaxed?.latency.filter((l) => l.kind === kind).sort((a, b) => a.p50Us - b.p50Us)[0];
      const trows = [['figure', 'TCP', 'transport relaxed (best setup)', 'TCP / transport']];
      for (const kind of ['write', 'read'] as const) {
        const a = tcp[kind];
        const b = best(kind);
        if (a) trows.push([`${kind} p50, QD1`, `${num(a.p50Us)} us`, b ? `${num(b.p50Us)} us` : '-', b ? `${num(a.p50Us / b.p50Us, 2)}x` : '-']);
      }
      for (const p of tcp.iops ?? []) {
        const q = t.relaxed?.iops.find((x) => x.depth === p.depth);
        trows.push([`IOPS, 50% reads, QD ${p.depth}`, num(p.iops, 0), q ? num(q.iops, 0) : '-', q ? `${num(p.iops / q.iops, 2)}x` : '-']);
      }
      parts.push(tableHtml(trows));
    }
    const sc = t.syscalls;
    if (sc && Array.isArray(sc)) {
      parts.push('<h2>Syscalls per IO (strace -c, relaxed 4 KiB writes, QD1)</h2>');
      const top = (c: Record<string, number>) => Object.entries(c).slice(0, 5).map(([k, v]) => `${k} ${num(v, 2)}`).join(', ');
      parts.push(tableHtml([['setup', 'IOs', 'client', 'server', 'client: most', 'server: most'],
        ...sc.map((x) => [x.setup, String(x.ios), num(x.clientPerIo, 2), num(x.serverPerIo, 2), top(x.client), top(x.server)])]));
    } else if (sc) parts.push(`<p class="note">syscall counts: ${esc(sc.error)}</p>`);
    parts.push(`<h2>Transport: IOPS vs queue depth (${t.size} B, 50% reads)</h2>`);
    parts.push(iopsVsDepthSvg(modes.map((m) => ({ label: m, points: t[m]!.iops }))));
    const depths = [...new Set(modes.flatMap((m) => t[m]!.iops.map((p) => p.depth)))].sort((a, b) => a - b);
    const irows = [['depth', ...modes.flatMap((m) => [`${m} IOPS`, `${m} p50`, `${m} p99`])]];
    for (const d of depths) {
      irows.push([String(d), ...modes.flatMap((m) => {
        const p = t[m]!.iops.find((x) => x.depth === d);
        return p ? [num(p.iops, 0), `${num(p.p50Us)} us`, `${num(p.p99Us)} us`] : ['-', '-', '-'];
      })]);
    }
    parts.push(tableHtml(irows));
    const pathRows = ([['relaxed', t.paths], ['strict', t.pathsStrict]] as const).filter(([, x]) => x);
    if (pathRows.length) {
      parts.push(`<h2>One path against two (${t.size} B, 50% reads, QD 32)</h2>`);
      parts.push(tableHtml([['mode', 'one path IOPS', 'two paths IOPS', 'ratio', 'IOs per path (two paths)'],
        ...pathRows.map(([m, x]) => [m, num(x!.onePathIops, 0), num(x!.twoPathIops, 0), `${num(x!.ratio, 2)}x`, x!.perPath.join(' / ')])]));
    }
    const f = t.failover;
    if (f) {
      parts.push('<h2>Failover timeline (IOPS per 100 ms, stacked by path)</h2>');
      parts.push(failoverTimelineSvg(f));
      const ms = (v: number | null | undefined): string => (typeof v === 'number' ? `${Math.round(v)} ms` : '-');
      parts.push(tableHtml([
        ['event', 'value'],
        ['path cut', `path${f.cutPath ?? '?'} (${f.cut === 'link' ? 'link down' : f.cut === 'server' ? 'server disconnect' : 'none'}) at ${ms(f.cutAtMs)}`],
        ['time to detect', ms(f.timeToDetectMs)],
        ['IOs failed over', String(f.failovers)],
        ['link restored', f.cut === 'link' ? ms(f.restoredAtMs) : '-'],
        ['time to recover', ms(f.timeToRecoverMs)],
        ['throughput back (>= 50% of before)', ms(f.throughputBackAtMs)],
        ['IO errors / data mismatches', `${f.errors} / ${f.mismatches}`],
        ['paths down again after recovery', f.downsAfterRecovery?.length ? `${f.downsAfterRecovery.length}: ${[...new Set(f.downsAfterRecovery)].join('; ')}` : '0'],
      ]));
      if (f.phases?.length) {
        parts.push(tableHtml([['phase', 'from', 'to', 'IOs', 'IOPS', 'p50', 'p99'],
          ...f.phases.map((p) => [p.phase, ms(p.startMs), ms(p.endMs), String(p.ios), num(p.iops, 0), `${num(p.p50Us)} us`, `${num(p.p99Us)} us`])]));
      }
    }
  }
  const css = 'body{font-family:sans-serif;max-width:780px;margin:2em auto;color:#222}table{border-collapse:collapse;margin:.5em 0 1.5em}' +
    'th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}th:first-child,td:first-child{text-align:left}th{background:#f3f3f3}.note{color:#555}';
  return `<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>node-rdma benchmark ${esc(r.date)}</title><style>${css}</style></head>\n<body>\n${parts.join('\n')}\n</body></html>\n`;
}
