/**
 * Multipath path selection (RTRS `get_next_path_*`): round-robin,
 * min-inflight (the default) and min-latency, over any object that looks like
 * a path. A per-IO iterator keeps the skip list: a retried IO never tries a
 * path it already tried, and gives up after every path was tried once.
 */

/** What a policy needs to know about a path. */
export interface PathLike {
  readonly id: number;
  /** true when IOs may be posted on it (info exchange done, not failed) */
  readonly connected: boolean;
  /** IOs posted on it and not yet completed */
  readonly inflight: number;
  /** last heartbeat round trip in ns; undefined before the first sample */
  readonly latencyNs?: number;
}

export type PolicyName = 'round-robin' | 'min-inflight' | 'min-latency';
export const POLICIES: readonly PolicyName[] = ['round-robin', 'min-inflight', 'min-latency'];
export const DEFAULT_POLICY: PolicyName = 'min-inflight';

export function isPolicyName(v: unknown): v is PolicyName {
  return typeof v === 'string' && (POLICIES as readonly string[]).includes(v);
}

/**
 * Picks paths from a live list (the array may change between calls: paths
 * added, removed, reordered). Ties are broken in round-robin order after the
 * previously chosen path, so idle paths share the load instead of the first
 * one taking everything.
 */
export class PathSelector<P extends PathLike> {
  #policy: PolicyName;
  readonly #paths: () => readonly P[];
  #lastId: number | undefined;

  constructor(policy: PolicyName, paths: () => readonly P[]) {
    if (!isPolicyName(policy)) throw new RangeError(`unknown policy ${String(policy)}; one of ${POLICIES.join(', ')}`);
    this.#policy = policy;
    this.#paths = paths;
  }

  get policy(): PolicyName {
    return this.#policy;
  }

  set policy(p: PolicyName) {
    if (!isPolicyName(p)) throw new RangeError(`unknown policy ${String(p)}; one of ${POLICIES.join(', ')}`);
    this.#policy = p;
  }

  /**
   * The best connected path whose id is not in `skip` and that `eligible`
   * accepts, or undefined when there is none. Records it as the last used.
   */
  select(skip?: ReadonlySet<number>, eligible?: (p: P) => boolean): P | undefined {
    const all = this.#paths();
    const n = all.length;
    if (n === 0) return undefined;
    // rotate so the path after the last chosen one comes first
    let start = 0;
    if (this.#lastId !== undefined) {
      const i = all.findIndex((p) => p.id === this.#lastId);
      start = i < 0 ? 0 : (i + 1) % n;
    }
    let best: P | undefined;
    for (let k = 0; k < n; k++) {
      const p = all[(start + k) % n];
      if (!p.connected || skip?.has(p.id) || (eligible && !eligible(p))) continue;
      if (this.#policy === 'round-robin') {
        best = p;
        break;
      }
      if (best === undefined || this.#better(p, best)) best = p;
    }
    if (best !== undefined) this.#lastId = best.id;
    return best;
  }

  /** An iterator for one IO: each next() excludes the paths tried before. */
  iterate(eligible?: (p: P) => boolean): PathIterator<P> {
    return new PathIterator(this, eligible);
  }

  #better(a: P, b: P): boolean {
    if (this.#policy === 'min-inflight') return a.inflight < b.inflight;
    const la = latencyOf(a);
    const lb = latencyOf(b);
    if (la !== lb) return la < lb;
    return a.inflight < b.inflight;
  }
}

function latencyOf(p: PathLike): number {
  const l = p.latencyNs;
  return typeof l === 'number' && Number.isFinite(l) && l >= 0 ? l : Number.POSITIVE_INFINITY;
}

/** The skip list of one IO (RTRS `path_it`). */
export class PathIterator<P extends PathLike> {
  readonly #selector: PathSelector<P>;
  readonly #eligible: ((p: P) => boolean) | undefined;
  readonly #tried = new Set<number>();

  constructor(selector: PathSelector<P>, eligible?: (p: P) => boolean) {
    this.#selector = selector;
    this.#eligible = eligible;
  }

  /** Ids of the paths returned so far, in order. */
  get tried(): readonly number[] {
    return [...this.#tried];
  }

  /** Counts p as tried (an IO posted on a path chosen before the iterator existed). */
  markTried(p: P): void {
    this.#tried.add(p.id);
  }

  /** The next path to try, or undefined when every usable path was tried. */
  next(): P | undefined {
    const p = this.#selector.select(this.#tried, this.#eligible);
    if (p !== undefined) this.#tried.add(p.id);
    return p;
  }
}
