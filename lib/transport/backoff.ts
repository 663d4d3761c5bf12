/**
 * Reconnect delays: exponential growth from `initialDelayMs` by `factor`,
 * capped at `maxDelayMs`, with downward jitter (each delay lies in
 * [d * (1 - jitter), d], so it never exceeds the cap and peers that failed
 * together spread out), and at most `maxAttempts` attempts (-1 = forever, as
 * RTRS max_reconnect_attempts). The random source and the clock are
 * injectable so the schedule is testable.
 */

export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** Wall clock and real timers; timers are unref'd so a waiting reconnect does not keep the process alive. */
export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => {
    const t = setTimeout(fn, ms);
    t.unref?.();
    return t;
  },
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};

export interface BackoffOptions {
  /** delay before the first reconnect attempt (ms), default 1000 */
  initialDelayMs?: number;
  /** upper bound of any delay (ms), default 30000 */
  maxDelayMs?: number;
  /** growth per attempt, >= 1, default 2 */
  factor?: number;
  /** fraction 0..1 of the delay that is randomised away, default 0.2 */
  jitter?: number;
  /** attempts before giving up; -1 = forever (default) */
  maxAttempts?: number;
  /** uniform random in [0, 1), default Math.random */
  random?: () => number;
}

export class Backoff {
  readonly initialDelayMs: number;
  readonly maxDelayMs: number;
  readonly factor: number;
  readonly jitter: number;
  readonly maxAttempts: number;
  readonly #random: () => number;
  #attempts = 0;

  constructor(opts: BackoffOptions = {}) {
    this.initialDelayMs = checkNumber(opts.initialDelayMs ?? 1000, 'initialDelayMs', 0);
    this.maxDelayMs = checkNumber(opts.maxDelayMs ?? 30000, 'maxDelayMs', this.initialDelayMs);
    this.factor = checkNumber(opts.factor ?? 2, 'factor', 1);
    this.jitter = checkNumber(opts.jitter ?? 0.2, 'jitter', 0, 1);
    const maxAttempts = opts.maxAttempts ?? -1;
    if (!Number.isInteger(maxAttempts) || maxAttempts < -1) throw new RangeError(`maxAttempts must be an integer >= -1 (got ${maxAttempts})`);
    this.maxAttempts = maxAttempts;
    this.#random = opts.random ?? Math.random;
  }

  /** Attempts handed out since the last reset. */
  get attempts(): number {
    return this.#attempts;
  }

  get exhausted(): boolean {
    return this.maxAttempts !== -1 && this.#attempts >= this.maxAttempts;
  }

  /** The un-jittered delay of attempt `n` (0-based). */
  baseDelay(n: number): number {
    // factor^n overflows to Infinity for large n, and min() takes the cap
    return Math.min(this.maxDelayMs, this.initialDelayMs * this.factor ** n);
  }

  /** Delay (ms) before the next attempt, or undefined when attempts are exhausted. */
  next(): number | undefined {
    if (this.exhausted) return undefined;
    const d = this.baseDelay(this.#attempts);
    this.#attempts++;
    let r = this.#random();
    if (!(r >= 0 && r < 1)) r = 0; // a broken random source must not produce NaN delays
    return Math.round(d * (1 - this.jitter * r));
  }

  reset(): void {
    this.#attempts = 0;
  }
}

function checkNumber(v: number, name: string, min: number, max = Number.POSITIVE_INFINITY): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max) {
    throw new RangeError(`${name} must be a finite number in ${min}..${max} (got ${v})`);
  }
  return v;
}

export interface ReconnectTimerOptions extends BackoffOptions {
  /** a connection that lasted this long (ms) resets the backoff; default 10000 */
  stableAfterMs?: number;
  clock?: Clock;
}

/**
 * Schedules reconnect attempts of one path with a Backoff. connected() and
 * disconnected() tell it the path's fate: after a connection that stayed up
 * for stableAfterMs the next failure starts again from the initial delay.
 */
export class ReconnectTimer {
  readonly backoff: Backoff;
  readonly #clock: Clock;
  readonly #stableAfterMs: number;
  #handle: unknown;
  #connectedAt: number | undefined;

  constructor(opts: ReconnectTimerOptions = {}) {
    this.backoff = new Backoff(opts);
    this.#clock = opts.clock ?? systemClock;
    this.#stableAfterMs = checkNumber(opts.stableAfterMs ?? 10000, 'stableAfterMs', 0);
  }

  get pending(): boolean {
    return this.#handle !== undefined;
  }

  /**
   * Runs `attempt` after the next backoff delay. Returns the delay, or
   * undefined (and schedules nothing) when attempts are exhausted.
   * Replaces an attempt already scheduled.
   */
  schedule(attempt: () => void): number | undefined {
    this.cancel();
    const delay = this.backoff.next();
    if (delay === undefined) return undefined;
    this.#handle = this.#clock.setTimeout(() => {
      this.#handle = undefined;
      attempt();
    }, delay);
    return delay;
  }

  cancel(): void {
    if (this.#handle !== undefined) {
      this.#clock.clearTimeout(this.#handle);
      this.#handle = undefined;
    }
  }

  connected(): void {
    this.#connectedAt = this.#clock.now();
  }

  disconnected(): void {
    if (this.#connectedAt !== undefined && this.#clock.now() - this.#connectedAt >= this.#stableAfterMs) {
      this.backoff.reset();
    }
    this.#connectedAt = undefined;
  }
}
