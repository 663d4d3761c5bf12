/**
 * Reconnect backoff: the delay schedule (growth, cap, jitter bounds, max
 * attempts) with an injected random source, and ReconnectTimer on a fake
 * clock (scheduling, cancel, reset after a stable connection).
 */
import fc from 'fast-check';
import { Backoff, Clock, ReconnectTimer, systemClock } from '../../lib/transport/backoff';

class FakeClock implements Clock {
  t = 0;
  timers = new Map<number, { at: number; fn: () => void }>();
  #next = 1;

  now(): number {
    return this.t;
  }
  setTimeout(fn: () => void, ms: number): unknown {
    const id = this.#next++;
    this.timers.set(id, { at: this.t + ms, fn });
    return id;
  }
  clearTimeout(h: unknown): void {
    this.timers.delete(h as number);
  }
  /** Advances time, firing due timers in order. */
  advance(ms: number): void {
    const end = this.t + ms;
    for (;;) {
      const due = [...this.timers.entries()].filter(([, v]) => v.at <= end).sort((a, b) => a[1].at - b[1].at)[0];
      if (!due) break;
      this.timers.delete(due[0]);
      this.t = due[1].at;
      due[1].fn();
    }
    this.t = end;
  }
}

describe('Backoff', () => {
  test('without jitter: initial, x factor, capped', () => {
    const b = new Backoff({ initialDelayMs: 100, factor: 2, maxDelayMs: 1000, jitter: 0 });
    expect(Array.from({ length: 7 }, () => b.next())).toEqual([100, 200, 400, 800, 1000, 1000, 1000]);
    expect(b.attempts).toBe(7);
    b.reset();
    expect(b.attempts).toBe(0);
    expect(b.next()).toBe(100);
  });

  test('jitter removes up to its fraction, never exceeding the capped delay', () => {
    const lo = new Backoff({ initialDelayMs: 1000, jitter: 0.5, random: () => 0.999999 });
    const hi = new Backoff({ initialDelayMs: 1000, jitter: 0.5, random: () => 0 });
    expect(lo.next()).toBe(500);
    expect(hi.next()).toBe(1000);
    const mid = new Backoff({ initialDelayMs: 1000, jitter: 0.2, random: () => 0.5 });
    expect(mid.next()).toBe(900);
  });

  test('max attempts: undefined once exhausted; -1 means forever', () => {
    const b = new Backoff({ initialDelayMs: 10, maxAttempts: 3, jitter: 0 });
    expect([b.next(), b.next(), b.next(), b.next()]).toEqual([10, 20, 40, undefined]);
    expect(b.exhausted).toBe(true);
    const f = new Backoff({ initialDelayMs: 10, maxDelayMs: 50, jitter: 0 });
    for (let i = 0; i < 10000; i++) expect(f.next()).toBeLessThanOrEqual(50);
    expect(f.exhausted).toBe(false);
    const none = new Backoff({ maxAttempts: 0 });
    expect(none.next()).toBeUndefined();
  });

  test('huge attempt counts do not overflow to Infinity or NaN', () => {
    const b = new Backoff({ initialDelayMs: 1000, maxDelayMs: 30000, factor: 10, jitter: 0 });
    expect(b.baseDelay(5000)).toBe(30000);
  });

  test('a broken random source cannot produce NaN or out-of-range delays', () => {
    for (const r of [Number.NaN, -1, 1, 7, Infinity]) {
      const b = new Backoff({ initialDelayMs: 100, jitter: 0.5, random: () => r });
      expect(b.next()).toBe(100);
    }
  });

  test('option validation', () => {
    expect(() => new Backoff({ initialDelayMs: -1 })).toThrow(RangeError);
    expect(() => new Backoff({ initialDelayMs: 100, maxDelayMs: 50 })).toThrow(RangeError);
    expect(() => new Backoff({ factor: 0.5 })).toThrow(RangeError);
    expect(() => new Backoff({ jitter: 1.5 })).toThrow(RangeError);
    expect(() => new Backoff({ maxAttempts: -2 })).toThrow(RangeError);
    expect(() => new Backoff({ maxAttempts: 1.5 })).toThrow(RangeError);
    expect(() => new Backoff({ initialDelayMs: Number.NaN })).toThrow(RangeError);
  });

  test('property: every delay lies in [base*(1-jitter), base] and base grows monotonically to the cap', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 10000 }),
        fc.integer({ min: 0, max: 100000 }),
        fc.double({ min: 1, max: 10, noNaN: true }),
        fc.double({ min: 0, max: 1, noNaN: true }),
        fc.array(fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), { minLength: 1, maxLength: 30 }),
        (initial, extra, factor, jitter, randoms) => {
          let i = 0;
          const b = new Backoff({ initialDelayMs: initial, maxDelayMs: initial + extra, factor, jitter, random: () => randoms[i++ % randoms.length] });
          let prevBase = -1;
          for (let n = 0; n < randoms.length; n++) {
            const base = b.baseDelay(n);
            const d = b.next()!;
            if (base < prevBase || base > initial + extra) return false;
            if (d > Math.round(base) || d < Math.round(base * (1 - jitter)) - 1) return false;
            prevBase = base;
          }
          return true;
        },
      ),
      { numRuns: 2000, seed: 7 },
    );
  });
});

describe('ReconnectTimer on a fake clock', () => {
  test('attempts fire after the backoff delays', () => {
    const clock = new FakeClock();
    const t = new ReconnectTimer({ clock, initialDelayMs: 1000, maxDelayMs: 4000, jitter: 0 });
    const fired: number[] = [];
    const attempt = (): void => {
      fired.push(clock.now());
      t.schedule(attempt); // the attempt failed: schedule the next one
    };
    expect(t.schedule(attempt)).toBe(1000);
    expect(t.pending).toBe(true);
    clock.advance(999);
    expect(fired).toEqual([]);
    clock.advance(20000);
    // 1000, +2000, +4000, +4000, +4000, +4000 (cap) ...
    expect(fired.slice(0, 6)).toEqual([1000, 3000, 7000, 11000, 15000, 19000]);
  });

  test('gives up after maxAttempts', () => {
    const clock = new FakeClock();
    const t = new ReconnectTimer({ clock, initialDelayMs: 10, jitter: 0, maxAttempts: 2 });
    let n = 0;
    const attempt = (): void => {
      n++;
      t.schedule(attempt);
    };
    t.schedule(attempt);
    clock.advance(1000);
    expect(n).toBe(2);
    expect(t.pending).toBe(false);
    expect(t.schedule(attempt)).toBeUndefined();
  });

  test('cancel stops a scheduled attempt; schedule replaces a pending one', () => {
    const clock = new FakeClock();
    const t = new ReconnectTimer({ clock, initialDelayMs: 100, jitter: 0 });
    let n = 0;
    t.schedule(() => n++);
    t.cancel();
    expect(t.pending).toBe(false);
    clock.advance(1000);
    expect(n).toBe(0);
    t.schedule(() => n++);
    t.schedule(() => (n += 10));
    expect(clock.timers.size).toBe(1);
    clock.advance(10000);
    expect(n).toBe(10);
  });

  test('a connection that stayed up for stableAfterMs resets the delays; a short one does not', () => {
    const clock = new FakeClock();
    const t = new ReconnectTimer({ clock, initialDelayMs: 100, maxDelayMs: 10000, jitter: 0, stableAfterMs: 5000 });
    expect(t.schedule(() => undefined)).toBe(100);
    clock.advance(100);
    expect(t.schedule(() => undefined)).toBe(200);
    clock.advance(200);
    t.connected();
    clock.advance(1000);
    t.disconnected(); // flapped after 1 s: keep growing
    expect(t.schedule(() => undefined)).toBe(400);
    clock.advance(400);
    t.connected();
    clock.advance(5000);
    t.disconnected(); // stable for 5 s: start over
    expect(t.schedule(() => undefined)).toBe(100);
  });

  test('the system clock unrefs its timers', () => {
    const h = systemClock.setTimeout(() => undefined, 100000) as NodeJS.Timeout;
    expect(h.hasRef()).toBe(false);
    systemClock.clearTimeout(h);
    expect(typeof systemClock.now()).toBe('number');
  });
});
