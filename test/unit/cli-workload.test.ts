/**
 * The workload engine of `node-rdma bench`/`demo` and the transport
 * benchmark, against an in-memory stand-in for TransportClient: depth is
 * respected, reads are checked against the data written, errors are
 * counted by code, intervals carry per-path traffic.
 */
import { runWorkload } from '../../lib/cli/workload';
import type { ClientPathStats, IoResult, TransportClient } from '../../lib/transport';

class FakeClient {
  readonly store = new Map<string, Buffer>();
  inflight = 0;
  maxInflight = 0;
  n = 0;
  /** IO numbers (1-based) that fail with ECONNABORTED */
  failAt = new Set<number>();
  /** corrupt the data of reads */
  corrupt = false;
  paths: ClientPathStats[] = [0, 1].map((index) => ({
    index, host: `10.0.0.${index + 1}`, port: 1, state: 'connected', device: `dev${index}`, reads: 0, readBytes: 0, writes: 0, writeBytes: 0,
    inflight: 0, failovers: 0, reconnects: { ok: 0, fail: 0 }, latencyNs: undefined,
  }) as ClientPathStats);

  allocBuffer(size: number): Buffer {
    return Buffer.alloc(size);
  }

  stats(): { paths: ClientPathStats[] } {
    return { paths: this.paths.map((p) => ({ ...p })) };
  }

  #io<T>(fn: (p: ClientPathStats) => T): Promise<T> {
    const id = ++this.n;
    this.inflight++;
    this.maxInflight = Math.max(this.maxInflight, this.inflight);
    return new Promise((resolve, reject) => {
      setTimeout(() => {
        this.inflight--;
        if (this.failAt.has(id)) {
          reject(Object.assign(new Error('the path failed and no other path could take the IO'), { code: 'ECONNABORTED' }));
          return;
        }
        resolve(fn(this.paths[id % 2]));
      }, 1);
    });
  }

  write(header: Uint8Array, data: Uint8Array): Promise<IoResult> {
    return this.#io((p) => {
      this.store.set(Buffer.from(header).toString(), Buffer.from(data));
      p.writes++;
      p.writeBytes += data.length;
      return { status: 0, header: Buffer.alloc(0), length: 0 };
    });
  }

  read(header: Uint8Array, into: Uint8Array): Promise<IoResult> {
    return this.#io((p) => {
      const v = this.store.get(Buffer.from(header).toString());
      if (!v) return { status: 2, header: Buffer.alloc(0), length: 0 };
      into.set(v);
      if (this.corrupt) into[0] ^= 0xff;
      p.reads++;
      p.readBytes += v.length;
      return { status: 0, header: Buffer.alloc(0), length: v.length };
    });
  }
}

const asClient = (f: FakeClient): TransportClient => f as unknown as TransportClient;

test('keeps depth IOs outstanding, mixes reads and writes, verifies every read', async () => {
  const f = new FakeClient();
  const r = await runWorkload(asClient(f), { size: 512, depth: 6, durationMs: 10_000, maxIos: 400, readRatio: 0.5, keys: 16, intervalMs: 50 });
  expect(r.ios).toBe(400);
  expect(f.maxInflight).toBe(6);
  expect(r.reads + r.writes).toBe(400);
  expect(r.reads).toBeGreaterThan(100);
  expect(r.writes).toBeGreaterThan(100);
  expect(r.verified).toBe(r.reads);
  expect(r.mismatches).toBe(0);
  expect(r.errors).toBe(0);
  expect(r.badStatus).toBe(0); // reads only go to keys already written
  expect(r.latency.count).toBe(400);
  expect(r.latency.p50Us).toBeGreaterThan(0);
  // the intervals add up, with both paths' traffic in them
  expect(r.intervals.reduce((n, s) => n + s.ios, 0)).toBe(400);
  expect(r.intervals.reduce((n, s) => n + s.paths[0].ios + s.paths[1].ios, 0)).toBe(400);
  expect(r.paths.map((p) => p.reads + p.writes)).toEqual([200, 200]);
});

test('corrupted reads are counted as mismatches', async () => {
  const f = new FakeClient();
  f.corrupt = true;
  const r = await runWorkload(asClient(f), { size: 64, depth: 2, durationMs: 10_000, maxIos: 100, readRatio: 0.5, keys: 4 });
  expect(r.reads).toBeGreaterThan(0);
  expect(r.mismatches).toBe(r.reads);
});

test('failed IOs are counted by code and the workload goes on', async () => {
  const f = new FakeClient();
  f.failAt = new Set([3, 10, 11]);
  const r = await runWorkload(asClient(f), { size: 64, depth: 1, durationMs: 10_000, maxIos: 50, readRatio: 0, keys: 4 });
  expect(r.errors).toBe(3);
  expect(r.errorCodes).toEqual({ ECONNABORTED: 3 });
  expect(r.ios).toBe(47);
});

test('assumeWritten: a read-only run reads from the first IO on; the abort signal stops it', async () => {
  const f = new FakeClient();
  await runWorkload(asClient(f), { size: 32, depth: 1, durationMs: 10_000, maxIos: 1, readRatio: 0, keys: 1 });
  const r = await runWorkload(asClient(f), { size: 32, depth: 1, durationMs: 10_000, maxIos: 20, readRatio: 1, keys: 1, assumeWritten: true });
  expect(r.reads).toBe(20);
  expect(r.writes).toBe(0);
  expect(r.mismatches).toBe(0);
  const ac = new AbortController();
  setTimeout(() => ac.abort(), 30);
  const t0 = Date.now();
  const s = await runWorkload(asClient(f), { size: 32, depth: 2, durationMs: 10_000, readRatio: 0.5, keys: 1, signal: ac.signal });
  expect(Date.now() - t0).toBeLessThan(2000);
  expect(s.ios).toBeGreaterThan(0);
});
