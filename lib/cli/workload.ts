/**
 * The client workload shared by `node-rdma bench`, `node-rdma demo` and the
 * transport benchmarks: keeps `depth` IOs outstanding on a TransportClient
 * (a mix of writes and reads by `readRatio`), verifies read data, and
 * reports per interval (IOPS, latency percentiles, per-path traffic and
 * state) and in total. Also the server side: a handler that stores writes
 * in memory and serves reads from it, keyed by the user header.
 */
import type { TransportClient, ClientPathStats, TransportHandler } from '../transport';

// ------------------------------------------------------------ histogram

/**
 * Latency histogram with logarithmic buckets (8 per power of two: each
 * bucket is ~9% wide) from 1/8 us to ~70 s: constant memory whatever the
 * run length, percentiles within one bucket.
 */
export class Histogram {
  static readonly PER_OCTAVE = 8;
  static readonly BUCKETS = 8 * 30;
  readonly counts = new Float64Array(Histogram.BUCKETS);
  count = 0;
  sum = 0;
  min = Infinity;
  max = 0;

  static bucketOf(us: number): number {
    if (!(us > 0.125)) return 0;
    const b = Math.floor(Math.log2(us * 8) * Histogram.PER_OCTAVE);
    return Math.min(Histogram.BUCKETS - 1, b);
  }

  /** Upper edge of bucket b in us. */
  static upper(b: number): number {
    return 2 ** ((b + 1) / Histogram.PER_OCTAVE) / 8;
  }

  static lower(b: number): number {
    return 2 ** (b / Histogram.PER_OCTAVE) / 8;
  }

  record(us: number): void {
    this.counts[Histogram.bucketOf(us)]++;
    this.count++;
    this.sum += us;
    if (us < this.min) this.min = us;
    if (us > this.max) this.max = us;
  }

  merge(h: Histogram): void {
    for (let i = 0; i < h.counts.length; i++) this.counts[i] += h.counts[i];
    this.count += h.count;
    this.sum += h.sum;
    this.min = Math.min(this.min, h.min);
    this.max = Math.max(this.max, h.max);
  }

  /** The p-th percentile (0..100) in us: the bucket's midpoint, clamped to [min, max]; NaN when empty. */
  percentile(p: number): number {
    if (this.count === 0) return NaN;
    const rank = Math.max(1, Math.ceil((p / 100) * this.count));
    let seen = 0;
    for (let b = 0; b < this.counts.length; b++) {
      seen += this.counts[b];
      if (seen >= rank) {
        const mid = Math.sqrt(Histogram.lower(b) * Histogram.upper(b));
        return Math.min(this.max, Math.max(this.min, mid));
      }
    }
    return this.max;
  }

  get mean(): number {
    return this.count ? this.sum / this.count : NaN;
  }

  /** Non-empty buckets as [lowerUs, upperUs, count]. */
  buckets(): Array<[number, number, number]> {
    const out: Array<[number, number, number]> = [];
    for (let b = 0; b < this.counts.length; b++) if (this.counts[b]) out.push([Histogram.lower(b), Histogram.upper(b), this.counts[b]]);
    return out;
  }

  summary(): LatencySummary {
    return {
      count: this.count, minUs: this.count ? this.min : NaN, meanUs: this.mean, p50Us: this.percentile(50),
      p90Us: this.percentile(90), p99Us: this.percentile(99), p999Us: this.percentile(99.9), maxUs: this.count ? this.max : NaN,
    };
  }
}

export interface LatencySummary {
  count: number;
  minUs: number;
  meanUs: number;
  p50Us: number;
  p90Us: number;
  p99Us: number;
  p999Us: number;
  maxUs: number;
}

// --------------------------------------------------------------- server

/** Deterministic content of key `k` (so any read can be checked whoever wrote it last). */
export function fillPattern(buf: Uint8Array, key: string): void {
  let h = 2166136261;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 16777619) >>> 0;
  for (let i = 0; i < buf.length; i++) {
    h = (Math.imul(h, 1103515245) + 12345) >>> 0;
    buf[i] = h >>> 24;
  }
}

export interface MemoryStore {
  handler: TransportHandler;
  /** keys stored */
  readonly size: number;
  readonly bytes: number;
  readonly counters: { writes: number; reads: number; misses: number; writeBytes: number; readBytes: number };
}

/**
 * The handler of `node-rdma serve`: a write stores its data under its user
 * header (the key); a read copies the stored value into the request's
 * buffer (status 0, length = stored length), or answers ENOENT (2) when the
 * key is unknown, and EMSGSIZE (90) when the value does not fit.
 */
export function memoryStore(opts: { maxKeys?: number; maxBytes?: number } = {}): MemoryStore {
  const map = new Map<string, Buffer>();
  const maxKeys = opts.maxKeys ?? 1 << 20;
  const maxBytes = opts.maxBytes ?? 1 << 30;
  let bytes = 0;
  const counters = { writes: 0, reads: 0, misses: 0, writeBytes: 0, readBytes: 0 };
  const handler: TransportHandler = (req) => {
    const key = req.header.toString('latin1');
    if (req.kind === 'write') {
      const old = map.get(key);
      const grow = req.data.length - (old?.length ?? 0);
      if ((!old && map.size >= maxKeys) || bytes + grow > maxBytes) return { status: 28 }; // ENOSPC
      map.set(key, Buffer.from(req.data));
      bytes += grow;
      counters.writes++;
      counters.writeBytes += req.data.length;
      return { status: 0 };
    }
    counters.reads++;
    const v = map.get(key);
    if (!v) {
      counters.misses++;
      return { status: 2, length: 0 };
    }
    if (v.length > req.data.length) return { status: 90, length: 0 };
    v.copy(req.data);
    counters.readBytes += v.length;
    return { status: 0, length: v.length };
  };
  return {
    handler,
    get size() { return map.size; },
    get bytes() { return bytes; },
    counters,
  };
}

// --------------------------------------------------------------- client

export interface WorkloadOptions {
  /** bytes per IO */
  size: number;
  /** IOs kept outstanding */
  depth: number;
  /** stop after this long (ms) */
  durationMs: number;
  /** or after this many IOs (whichever comes first) */
  maxIos?: number;
  /** 0..1, share of reads */
  readRatio: number;
  /** distinct keys written and read (default 256) */
  keys?: number;
  /** report interval (ms), default 1000 */
  intervalMs?: number;
  onInterval?: (s: IntervalStats) => void;
  /** stop early */
  signal?: AbortSignal;
  /** check the data of every read against the key's pattern (default true) */
  verify?: boolean;
  /** every IO's latency is also kept here (e.g. for the QD1 histogram) */
  histogram?: Histogram;
  /** called for every completed IO with its latency (us) */
  onLatency?: (us: number) => void;
  /** every key already holds its pattern on the server (an earlier run wrote them): reads may start at once */
  assumeWritten?: boolean;
  /** called once with the performance.now() that interval times count from */
  onStart?: (t0: number) => void;
}

export interface PathSnapshot {
  index: number;
  host: string;
  port: number;
  device: string | undefined;
  state: ClientPathStats['state'];
  /** IOs completed on the path in the interval, and per second */
  ios: number;
  iops: number;
  bytes: number;
  mbps: number;
  inflight: number;
  failovers: number;
  reconnects: { ok: number; fail: number };
}

export interface IntervalStats {
  /** ms since the workload started, at the end of the interval */
  tMs: number;
  intervalMs: number;
  ios: number;
  iops: number;
  reads: number;
  writes: number;
  errors: number;
  mbps: number;
  p50Us: number;
  p99Us: number;
  paths: PathSnapshot[];
}

export interface WorkloadResult {
  durationMs: number;
  ios: number;
  reads: number;
  writes: number;
  errors: number;
  /** errors by code, e.g. { ECONNABORTED: 3 } */
  errorCodes: Record<string, number>;
  /** read data checked and mismatches found */
  verified: number;
  mismatches: number;
  /** status != 0 answers (e.g. ENOENT) */
  badStatus: number;
  iops: number;
  mbps: number;
  latency: LatencySummary;
  histogram: Histogram;
  intervals: IntervalStats[];
  paths: ClientPathStats[];
}

function pathTotals(c: TransportClient): ClientPathStats[] {
  return c.stats().paths;
}

/** Runs the workload; resolves when the duration is over and every IO has settled. */
export async function runWorkload(client: TransportClient, o: WorkloadOptions): Promise<WorkloadResult> {
  const size = o.size;
  const keys = Math.max(1, o.keys ?? 256);
  const verify = o.verify ?? true;
  const intervalMs = o.intervalMs ?? 1000;
  const keyNames = Array.from({ length: keys }, (_, i) => `k${i}`);
  const headers = keyNames.map((k) => Buffer.from(k, 'latin1'));
  // registered (zero-copy) memory, one buffer for all keys and one for all
  // reads: one registration per device instead of one per key
  const slot = Math.max(1, size);
  const patternMem = client.allocBuffer(slot * keys);
  const patterns = keyNames.map((k, i) => {
    const b = patternMem.subarray(i * slot, i * slot + size);
    fillPattern(b, k);
    return b;
  });
  const written = new Uint8Array(keys).fill(o.assumeWritten ? 1 : 0);
  let writtenCount = o.assumeWritten ? keys : 0;
  const total = new Histogram();
  let ivHist = new Histogram();
  let ios = 0;
  let reads = 0;
  let writes = 0;
  let errors = 0;
  let verified = 0;
  let mismatches = 0;
  let badStatus = 0;
  let bytes = 0;
  const errorCodes: Record<string, number> = {};
  let iv = { ios: 0, reads: 0, writes: 0, errors: 0, bytes: 0 };
  const intervals: IntervalStats[] = [];
  let t0 = performance.now();
  let lastT = t0;
  let lastPaths = pathTotals(client);
  let stopping = false;
  let nextKey = 0;
  const readMem = client.allocBuffer(slot * o.depth);
  const readBufs = Array.from({ length: o.depth }, (_, i) => readMem.subarray(i * slot, i * slot + size));

  const flush = (): void => {
    const now = performance.now();
    const dt = now - lastT;
    const cur = pathTotals(client);
    const paths: PathSnapshot[] = cur.map((p, i) => {
      const prev = lastPaths[i];
      const n = p.reads + p.writes - (prev.reads + prev.writes);
      const b = p.readBytes + p.writeBytes - (prev.readBytes + prev.writeBytes);
      return {
        index: p.index, host: p.host, port: p.port, device: p.device, state: p.state, ios: n, iops: dt > 0 ? (n * 1000) / dt : 0,
        bytes: b, mbps: dt > 0 ? b / dt / 1000 : 0, inflight: p.inflight, failovers: p.failovers, reconnects: p.reconnects,
      };
    });
    const s: IntervalStats = {
      tMs: now - t0, intervalMs: dt, ios: iv.ios, iops: dt > 0 ? (iv.ios * 1000) / dt : 0, reads: iv.reads, writes: iv.writes,
      errors: iv.errors, mbps: dt > 0 ? iv.bytes / dt / 1000 : 0, p50Us: ivHist.percentile(50), p99Us: ivHist.percentile(99), paths,
    };
    intervals.push(s);
    lastT = now;
    lastPaths = cur;
    iv = { ios: 0, reads: 0, writes: 0, errors: 0, bytes: 0 };
    ivHist = new Histogram();
    o.onInterval?.(s);
  };

  // buffers are ready: the clock starts now
  t0 = performance.now();
  lastT = t0;
  o.onStart?.(t0);
  const timer = setInterval(flush, intervalMs);
  const endAt = t0 + o.durationMs;
  let started = 0;

  const worker = async (slot: number): Promise<void> => {
    const into = readBufs[slot];
    while (!stopping && !o.signal?.aborted && performance.now() < endAt && (o.maxIos === undefined || started < o.maxIos)) {
      started++;
      const isRead = writtenCount > 0 && Math.random() < o.readRatio;
      let k: number;
      if (isRead) {
        // a key known to be written
        do k = Math.floor(Math.random() * keys); while (!written[k]);
      } else {
        k = nextKey;
        nextKey = (nextKey + 1) % keys;
      }
      const ts = performance.now();
      try {
        const r = isRead ? await client.read(headers[k], into) : await client.write(headers[k], patterns[k]);
        const us = (performance.now() - ts) * 1000;
        total.record(us);
        ivHist.record(us);
        o.histogram?.record(us);
        o.onLatency?.(us);
        ios++;
        iv.ios++;
        if (r.status !== 0) badStatus++;
        if (isRead) {
          reads++;
          iv.reads++;
          bytes += r.length;
          iv.bytes += r.length;
          if (verify && r.status === 0) {
            verified++;
            if (r.length !== size || !into.equals(patterns[k])) mismatches++;
          }
        } else {
          writes++;
          iv.writes++;
          bytes += size;
          iv.bytes += size;
          if (r.status === 0 && !written[k]) {
            written[k] = 1;
            writtenCount++;
          }
        }
      } catch (err) {
        errors++;
        iv.errors++;
        const code = (err as { code?: string }).code ?? (err as Error).name;
        errorCodes[code] = (errorCodes[code] ?? 0) + 1;
        if (code === 'ECLOSED' || /every path of the session is dead/.test((err as Error).message)) {
          stopping = true;
          return;
        }
        // no connected path: wait a little instead of spinning on failures
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  };

  try {
    await Promise.all(Array.from({ length: o.depth }, (_, i) => worker(i)));
  } finally {
    clearInterval(timer);
  }
  flush();
  const durationMs = performance.now() - t0;
  return {
    durationMs, ios, reads, writes, errors, errorCodes, verified, mismatches, badStatus,
    iops: (ios * 1000) / durationMs, mbps: bytes / durationMs / 1000, latency: total.summary(), histogram: total,
    intervals: intervals.filter((s) => s.intervalMs > 1 || s.ios > 0), paths: client.stats().paths,
  };
}
