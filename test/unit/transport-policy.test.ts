/**
 * Multipath policies (round-robin, min-inflight, min-latency) and the per-IO
 * skip list, against plain path objects.
 */
import fc from 'fast-check';
import { PathLike, PathSelector, isPolicyName, POLICIES, DEFAULT_POLICY, PolicyName } from '../../lib/transport/policy';

interface FakePath extends PathLike {
  id: number;
  connected: boolean;
  inflight: number;
  latencyNs?: number;
}

function paths(n: number, init: Partial<FakePath> = {}): FakePath[] {
  return Array.from({ length: n }, (_, id) => ({ id, connected: true, inflight: 0, ...init }));
}

describe('policy names', () => {
  test('the three RTRS policies, min-inflight by default', () => {
    expect(POLICIES).toEqual(['round-robin', 'min-inflight', 'min-latency']);
    expect(DEFAULT_POLICY).toBe('min-inflight');
    expect(isPolicyName('min-latency')).toBe(true);
    expect(isPolicyName('fastest')).toBe(false);
    expect(() => new PathSelector('fastest' as PolicyName, () => [])).toThrow(RangeError);
    const s = new PathSelector<FakePath>('round-robin', () => []);
    expect(() => {
      s.policy = 'x' as PolicyName;
    }).toThrow(RangeError);
    s.policy = 'min-latency';
    expect(s.policy).toBe('min-latency');
  });
});

describe('round-robin', () => {
  test('cycles through connected paths evenly', () => {
    const ps = paths(3);
    const s = new PathSelector('round-robin', () => ps);
    const picks = Array.from({ length: 9 }, () => s.select()!.id);
    expect(picks).toEqual([0, 1, 2, 0, 1, 2, 0, 1, 2]);
  });

  test('skips disconnected paths and resumes after the last used one', () => {
    const ps = paths(4);
    ps[1].connected = false;
    const s = new PathSelector('round-robin', () => ps);
    expect([1, 2, 3, 4].map(() => s.select()!.id)).toEqual([0, 2, 3, 0]);
    ps[1].connected = true;
    expect([1, 2, 3].map(() => s.select()!.id)).toEqual([1, 2, 3]);
  });

  test('survives the last used path being removed', () => {
    let ps = paths(3);
    const s = new PathSelector('round-robin', () => ps);
    expect(s.select()!.id).toBe(0);
    expect(s.select()!.id).toBe(1);
    ps = ps.filter((p) => p.id !== 1);
    expect(s.select()!.id).toBe(0);
    expect(s.select()!.id).toBe(2);
  });

  test('distribution over 3000 picks is exactly even', () => {
    const ps = paths(3);
    const s = new PathSelector('round-robin', () => ps);
    const counts = [0, 0, 0];
    for (let i = 0; i < 3000; i++) counts[s.select()!.id]++;
    expect(counts).toEqual([1000, 1000, 1000]);
  });
});

describe('min-inflight', () => {
  test('picks the path with the fewest IOs in flight', () => {
    const ps = paths(3);
    ps[0].inflight = 5;
    ps[1].inflight = 2;
    ps[2].inflight = 9;
    const s = new PathSelector('min-inflight', () => ps);
    expect(s.select()!.id).toBe(1);
  });

  test('ties rotate, so idle paths share the load', () => {
    const ps = paths(2);
    const s = new PathSelector('min-inflight', () => ps);
    expect([1, 2, 3, 4].map(() => s.select()!.id)).toEqual([0, 1, 0, 1]);
  });

  test('keeps the paths balanced when IOs complete at different speeds', () => {
    // path 0 completes each IO after 1 tick, path 1 after 3 ticks: the
    // faster path must carry more of the load, and inflight never diverges
    const ps = paths(2);
    const s = new PathSelector('min-inflight', () => ps);
    const pending: Array<{ path: FakePath; at: number }> = [];
    const served = [0, 0];
    for (let tick = 0; tick < 3000; tick++) {
      for (let i = pending.length - 1; i >= 0; i--) {
        if (pending[i].at <= tick) {
          pending[i].path.inflight--;
          pending.splice(i, 1);
        }
      }
      while (ps[0].inflight + ps[1].inflight < 8) {
        const p = s.select()!;
        p.inflight++;
        served[p.id]++;
        pending.push({ path: p, at: tick + (p.id === 0 ? 1 : 3) });
      }
      expect(Math.abs(ps[0].inflight - ps[1].inflight)).toBeLessThanOrEqual(1);
    }
    expect(served[0]).toBeGreaterThan(served[1] * 2);
  });
});

describe('min-latency', () => {
  test('picks the smallest heartbeat RTT; paths without a sample come last', () => {
    const ps = paths(3);
    ps[0].latencyNs = 50_000;
    ps[1].latencyNs = undefined;
    ps[2].latencyNs = 20_000;
    const s = new PathSelector('min-latency', () => ps);
    expect(s.select()!.id).toBe(2);
    ps[2].connected = false;
    expect(s.select()!.id).toBe(0);
    ps[0].connected = false;
    expect(s.select()!.id).toBe(1);
  });

  test('equal latency falls back to inflight, then rotation', () => {
    const ps = paths(3, { latencyNs: 1000 });
    ps[0].inflight = 3;
    const s = new PathSelector('min-latency', () => ps);
    expect([1, 2, 3, 4].map(() => s.select()!.id)).toEqual([1, 2, 1, 2]);
  });

  test('garbage latencies (NaN, negative) count as unknown', () => {
    const ps = paths(2);
    ps[0].latencyNs = Number.NaN;
    ps[1].latencyNs = 10;
    const s = new PathSelector('min-latency', () => ps);
    expect(s.select()!.id).toBe(1);
    ps[1].latencyNs = -5;
    ps[0].latencyNs = 7;
    expect(s.select()!.id).toBe(0);
  });
});

describe('skip list (per-IO iterator)', () => {
  test.each(POLICIES)('%s: a retried IO tries every connected path once, then gives up', (policy) => {
    const ps = paths(4);
    ps[2].connected = false;
    const s = new PathSelector(policy, () => ps);
    const it = s.iterate();
    const seen = [it.next(), it.next(), it.next(), it.next()].map((p) => p?.id);
    expect(seen[3]).toBeUndefined();
    expect(new Set(seen.slice(0, 3))).toEqual(new Set([0, 1, 3]));
    expect(it.tried).toEqual(seen.slice(0, 3));
  });

  test('min-inflight retry takes the next best path, not the failed one again', () => {
    const ps = paths(3);
    ps[0].inflight = 0;
    ps[1].inflight = 1;
    ps[2].inflight = 4;
    const s = new PathSelector('min-inflight', () => ps);
    const it = s.iterate();
    expect(it.next()!.id).toBe(0);
    expect(it.next()!.id).toBe(1);
    expect(it.next()!.id).toBe(2);
    expect(it.next()).toBeUndefined();
  });

  test('an eligibility filter excludes paths (e.g. no key for the chunk yet)', () => {
    const ps = paths(3);
    const s = new PathSelector('round-robin', () => ps);
    const it = s.iterate((p) => p.id !== 1);
    expect([it.next()?.id, it.next()?.id, it.next()?.id]).toEqual([0, 2, undefined]);
    expect(s.select(undefined, (p) => p.id === 1)!.id).toBe(1);
  });

  test('no paths, or none connected: undefined', () => {
    expect(new PathSelector<FakePath>('min-inflight', () => []).select()).toBeUndefined();
    expect(new PathSelector('min-latency', () => paths(2, { connected: false })).select()).toBeUndefined();
  });

  test('property: for any path states, a selection is connected, not skipped, eligible and optimal for its policy', () => {
    const arbPath = fc.record({
      connected: fc.boolean(),
      inflight: fc.integer({ min: 0, max: 20 }),
      latencyNs: fc.option(fc.integer({ min: 0, max: 1e6 }), { nil: undefined }),
    });
    fc.assert(
      fc.property(
        fc.array(arbPath, { minLength: 0, maxLength: 8 }),
        fc.constantFrom(...POLICIES),
        fc.array(fc.integer({ min: 0, max: 7 }), { maxLength: 4 }),
        fc.integer({ min: 0, max: 5 }),
        (raw, policy, skipIds, warmup) => {
          const ps: FakePath[] = raw.map((r, id) => ({ id, ...r }));
          const s = new PathSelector(policy, () => ps);
          for (let i = 0; i < warmup; i++) s.select();
          const skip = new Set(skipIds);
          const ok = ps.filter((p) => p.connected && !skip.has(p.id));
          const got = s.select(skip);
          if (ok.length === 0) return got === undefined;
          if (got === undefined || !got.connected || skip.has(got.id)) return false;
          if (policy === 'min-inflight') return got.inflight === Math.min(...ok.map((p) => p.inflight));
          if (policy === 'min-latency') {
            const lat = (p: FakePath) => p.latencyNs ?? Infinity;
            const best = Math.min(...ok.map(lat));
            if (lat(got) !== best) return false;
            return got.inflight === Math.min(...ok.filter((p) => lat(p) === best).map((p) => p.inflight));
          }
          return true;
        },
      ),
      { numRuns: 3000, seed: 42 },
    );
  });
});
