/**
 * One task at a time per chunk (the server's IOs, resumes and info binds on
 * a chunk run one after another, in arrival order), without promises when
 * the tasks are synchronous: a request whose handler answers at once takes
 * and frees its chunk's lock in the same call. No verbs, no timers.
 */
export type ChunkTask = () => void | Promise<void>;

export class ChunkLocks {
  /** 1 while a task holds chunk c */
  readonly #busy: Uint8Array;
  /** tasks waiting for chunk c */
  readonly #queued: Array<ChunkTask[] | undefined>;
  readonly #onError: (c: number, err: unknown) => void;

  constructor(chunks: number, onError: (c: number, err: unknown) => void) {
    this.#busy = new Uint8Array(chunks);
    this.#queued = new Array(chunks).fill(undefined);
    this.#onError = onError;
  }

  /**
   * Runs fn after every earlier task on chunk c (one IO per chunk at a
   * time). A free chunk runs it at once, and a task that finishes
   * synchronously (returns no promise) frees the chunk at once: a request
   * with a synchronous handler costs no promise and no microtask hop.
   */
  serialize(c: number, fn: ChunkTask): void {
    if (this.#busy[c] === 1) {
      (this.#queued[c] ??= []).push(fn);
      return;
    }
    this.#run(c, fn);
  }

  /**
   * serialize() without a closure, for the request path: takes chunk c if it
   * is free (then the caller runs its task and hands its result to
   * release()); false when it is busy (then serialize() the task).
   */
  acquire(c: number): boolean {
    if (this.#busy[c] === 1) return false;
    this.#busy[c] = 1;
    return true;
  }

  /** The task that acquire() allowed has returned r: chunk c is free now (r undefined) or once r settles. */
  release(c: number, r: void | Promise<void>): void {
    if (r) this.#after(c, r);
    else this.#next(c);
  }

  #run(c: number, fn: ChunkTask): void {
    this.#busy[c] = 1;
    let r: void | Promise<void> = undefined;
    try {
      r = fn();
    } catch (err) {
      this.failed(c, err);
    }
    this.release(c, r);
  }

  #after(c: number, r: Promise<void>): void {
    r.then(() => this.#next(c), (err: unknown) => {
      this.failed(c, err);
      this.#next(c);
    });
  }

  #next(c: number): void {
    // a queued task runs from here (an index loop, not recursion: a run of
    // synchronous tasks does not grow the stack)
    const q = this.#queued[c];
    while (q !== undefined && q.length > 0) {
      const fn = q.shift()!;
      let r: void | Promise<void> = undefined;
      try {
        r = fn();
      } catch (err) {
        this.failed(c, err);
      }
      if (r) return this.#after(c, r);
    }
    this.#busy[c] = 0;
  }

  /** a task on chunk c failed (it threw or rejected): reported, the chunk goes on */
  failed(c: number, err: unknown): void {
    this.#onError(c, err);
  }
}
