/**
 * The keys through which a session's peer reaches its chunk pool
 * (docs/protocol.md §1.1, §7.1, §7.3): either one type 1 window per chunk
 * for the whole session on a device (rxe, where type 2 windows are a kernel
 * crash away, see windows.ts), or one type 2 window per chunk and path
 * (hardware that enforces the IBTA rules). Relaxed mode: one window over the
 * whole pool, never taken away.
 */
import { randomFillSync } from 'crypto';
import { MemoryRegion, MemoryWindow, ProtectionDomain, SendWorkRequest } from '../verbs';
import { Access } from '../verbs/constants';
import { Conn, wrId, WrKind } from './conn';

export interface PoolLayout {
  queueDepth: number;
  chunkSize: number;
  strict: boolean;
}

/** What window i covers: chunk i (strict) or the whole pool (relaxed, i = 0). */
function windowRange(pool: MemoryRegion, layout: PoolLayout, i: number): [addr: number, length: number] {
  return layout.strict ? [pool.addr + i * layout.chunkSize, layout.chunkSize] : [pool.addr, layout.queueDepth * layout.chunkSize];
}

/** The keys of one device's share of a session (type 1) or of one path (type 2). */
export interface ChunkKeys {
  readonly type: 1 | 2;
  /** chunk c's current key, 0 = none (relaxed: the pool's key for every chunk) */
  key(c: number): number;
  /** strict, on arrival: no peer can use chunk c's key once this settles */
  invalidate(c: number): void | Promise<void>;
  /**
   * Strict, before a response: binds a new key for chunk c through conn,
   * ahead of what conn posts next. Returns the BIND_MW work request to put
   * first in that post (type 2), or undefined (type 1: already posted).
   */
  rekey(c: number, conn: Conn, index: number): SendWorkRequest | undefined;
  /** stop handing out chunk c's key (its bind's post failed) */
  forget(c: number): void;
  /** whether a peer might hold a usable key for chunk c (strict invalidation has work to do) */
  exposed(c: number): boolean;
  /** chunk c's key (strict) or the pool's (relaxed), bound through conn if there is none; resolves once it is valid */
  ready(c: number, conn: Conn): Promise<number>;
  close(): void;
}

/**
 * The key byte of a type 2 window's next bind, at random: the next key of a
 * chunk cannot be worked out from the last one. (Type 1 binds take the next
 * key byte, ibv_inc_rkey: their PD scope makes them useless to other sessions.)
 */
const keyBytes = new Uint8Array(4096);
let keyByteAt = keyBytes.length;
function randomKeyByte(avoid: number): number {
  for (;;) {
    if (keyByteAt === keyBytes.length) {
      randomFillSync(keyBytes);
      keyByteAt = 0;
    }
    const b = keyBytes[keyByteAt++];
    if (b !== avoid) return b;
  }
}

/** Spare windows kept ahead for invalidation by deallocation: one per chunk up to this many. */
const MAX_SPARE_MWS = 32;
const MIN_SPARE_MWS = 8;

/**
 * Invalidation by deallocation needs a fresh window at once: ibv_alloc_mw is
 * a syscall (~100 us on rxe under emulation), so windows are allocated
 * ahead: a full set when the key set is made, and afterwards refilled in a
 * setImmediate, after the event-loop turn's requests were answered (a burst
 * of arrivals in one completion batch takes spares, never allocates, while
 * any remain). Only an empty set allocates on a request's own path.
 */
class Spares {
  readonly #pd: ProtectionDomain;
  readonly #type: 1 | 2;
  readonly #mws: MemoryWindow[] = [];
  readonly #size: number;
  #refill: NodeJS.Immediate | undefined;

  constructor(pd: ProtectionDomain, type: 1 | 2, layout: PoolLayout) {
    this.#pd = pd;
    this.#type = type;
    this.#size = Math.min(Math.max(layout.queueDepth, MIN_SPARE_MWS), MAX_SPARE_MWS);
    // relaxed mode never invalidates: no spares
    if (!layout.strict) return;
    try {
      this.#fill();
    } catch {
      // fewer spares (the device's windows are scarce): take() allocates
      // inline and reports an error there
    }
  }

  take(): MemoryWindow {
    const mw = this.#mws.pop() ?? this.#pd.allocMemoryWindow(this.#type);
    this.#refill ??= setImmediate(() => {
      this.#refill = undefined;
      try {
        this.#fill();
      } catch {
        // the next take() allocates inline and reports the error there
      }
    });
    return mw;
  }

  #fill(): void {
    while (this.#mws.length < this.#size && !this.#pd.closed) this.#mws.push(this.#pd.allocMemoryWindow(this.#type));
  }

  close(): void {
    if (this.#refill) clearImmediate(this.#refill);
    this.#refill = undefined;
    for (const mw of this.#mws) mw.close();
    this.#mws.length = 0;
  }
}

/**
 * Type 1: one window per chunk (strict) or one over the pool (relaxed), in
 * the session's PD on one device, shared by every path of the session on it.
 * SEND_WITH_INV cannot touch them (the kernel refuses type 1 before it looks
 * at anything else), invalidation is deallocation (synchronous, safe in any
 * state), and a bind is ibv_bind_mw through any of the session's QPs there.
 */
export class DeviceWindows implements ChunkKeys {
  readonly type = 1 as const;
  readonly #pool: MemoryRegion;
  readonly #layout: PoolLayout;
  readonly #mws: MemoryWindow[] = [];
  readonly #keys: Uint32Array;
  /**
   * 1 once a bind was posted on the chunk's current window: the kernel may
   * have run it whatever became of its completion (a path that closed before
   * the completion was polled leaves a live key the server no longer knows),
   * so only deallocating the window clears it
   */
  readonly #live: Uint8Array;
  /** each chunk's latest bind: its key is valid once it completed */
  readonly #bound: Array<{ done: Promise<void>; settled: boolean } | undefined>;
  readonly #spares: Spares;

  constructor(pd: ProtectionDomain, pool: MemoryRegion, layout: PoolLayout) {
    this.#pool = pool;
    this.#layout = layout;
    const n = layout.strict ? layout.queueDepth : 1;
    this.#keys = new Uint32Array(n);
    this.#live = new Uint8Array(n);
    this.#bound = new Array(n).fill(undefined);
    this.#spares = new Spares(pd, 1, layout);
    for (let i = 0; i < n; i++) this.#mws.push(pd.allocMemoryWindow(1));
  }

  key(c: number): number {
    return this.#keys[this.#layout.strict ? c : 0];
  }

  exposed(c: number): boolean {
    return this.#live[this.#layout.strict ? c : 0] === 1;
  }

  invalidate(c: number): void | Promise<void> {
    if (!this.#layout.strict || !this.#live[c]) return;
    const b = this.#bound[c];
    // a bind still queued on some QP names the window by index and key: let
    // it finish (or its QP go) first, else it would fail that path or, once
    // the index is reused, bind whatever window holds it then
    if (b && !b.settled) return b.done.catch(() => undefined).then(() => this.invalidate(c));
    this.#dealloc(c);
  }

  /**
   * Why no new window can be had on this device (its removal: ibv_alloc_mw
   * fails with EIO once the kernel disassociated the context; or the
   * device's windows are used up), or undefined. Such a set keys nothing
   * more (binds fail, so its paths fail over); its old windows still go on
   * arrival.
   */
  #lost: Error | undefined;

  #dealloc(c: number): void {
    // the old key goes first, whatever happens next (a close that fails
    // throws: the key may still be valid, so the caller fails the IO's path)
    this.#mws[c].close();
    this.#keys[c] = 0;
    this.#live[c] = 0;
    this.#bound[c] = undefined;
    if (this.#lost) return;
    try {
      this.#mws[c] = this.#spares.take();
    } catch (err) {
      // only the replacement is missing: the IO goes on (on the session's
      // other devices), and this set binds no more
      this.#lost = err as Error;
    }
  }

  rekey(c: number, conn: Conn): undefined {
    // (its rejection is handled where it is made: #bind)
    void this.#bind(c, conn);
    return undefined;
  }

  forget(c: number): void {
    // the key is not handed out again; the window stays live until deallocated
    this.#keys[this.#layout.strict ? c : 0] = 0;
  }

  async ready(c: number, conn: Conn): Promise<number> {
    const i = this.#layout.strict ? c : 0;
    for (;;) {
      const b = this.#bound[i];
      if (b) {
        // a bind posted on another path: its key is valid only once it
        // completed (a dead path's never does, and is bound again here)
        await b.done.catch(() => undefined);
        if (this.#bound[i] !== b) continue;
        if (this.#keys[i] !== 0) return this.#keys[i];
      }
      await this.#bind(i, conn);
    }
  }

  #bind(i: number, conn: Conn): Promise<void> {
    if (this.#lost) {
      const failed = Promise.reject(this.#lost);
      failed.catch(() => undefined);
      return failed;
    }
    const [addr, len] = windowRange(this.#pool, this.#layout, i);
    const mw = this.#mws[i];
    this.#live[i] = 1;
    const waited = conn.bindWindowAndWait(mw, this.#pool, addr, len, Access.REMOTE_WRITE);
    // the new key is known at once (ibv_bind_mw took the next key byte)
    this.#keys[i] = mw.rkey;
    // (done is set at once below: no placeholder promise per bind)
    const b = { settled: false } as { done: Promise<void>; settled: boolean };
    b.done = waited.then(() => {
      b.settled = true;
    }, (err: Error) => {
      b.settled = true;
      // never completed (its path failed): the key is not handed out, and
      // the window is replaced. Its key is unknown now: rxe's ibv_bind_mw
      // advanced it in user space when the bind was posted, the kernel only
      // if it ran the bind (a flushed one did not), and the next bind names
      // the user-space key: one the kernel does not hold fails (MW_BIND_ERR,
      // reported as a flush) and puts the QP of the path binding it in
      // error, every reconnect's #info again. Deallocating also takes away
      // what the kernel may have bound.
      if (this.#bound[i] === b) {
        this.#keys[i] = 0;
        this.#bound[i] = undefined;
        try {
          this.#dealloc(i);
        } catch {
          // the old window could not be freed: it stays live, and the next
          // arrival on the chunk tries again (and fails its path if it cannot)
        }
      }
      throw err;
    });
    b.done.catch(() => undefined);
    this.#bound[i] = b;
    return b.done;
  }

  close(): void {
    this.#spares.close();
    for (const mw of this.#mws) mw.close();
  }
}

/**
 * Type 2: one window per chunk (strict) or one over the pool (relaxed) for
 * one path, bound on that path's QP, so a key works only on the connection it
 * was issued for. Strict re-keys with a random key byte; invalidation is a
 * LOCAL_INV or (invalidation: 'dealloc') deallocation.
 */
export class PathWindows implements ChunkKeys {
  readonly type = 2 as const;
  readonly #pool: MemoryRegion;
  readonly #layout: PoolLayout;
  readonly #conn: Conn;
  readonly #mws: MemoryWindow[] = [];
  readonly #keys: Uint32Array;
  readonly #spares: Spares | undefined;
  /** invalidations (LOCAL_INV or deallocation), for the path's wire statistics */
  onInvalidate: () => void = () => undefined;

  constructor(pd: ProtectionDomain, pool: MemoryRegion, layout: PoolLayout, conn: Conn, deallocInvalidate: boolean) {
    this.#pool = pool;
    this.#layout = layout;
    this.#conn = conn;
    const n = layout.strict ? layout.queueDepth : 1;
    this.#keys = new Uint32Array(n);
    this.#spares = deallocInvalidate ? new Spares(pd, 2, layout) : undefined;
    for (let i = 0; i < n; i++) this.#mws.push(pd.allocMemoryWindow(2));
  }

  key(c: number): number {
    return this.#keys[this.#layout.strict ? c : 0];
  }

  async invalidate(c: number): Promise<void> {
    const rkey = this.#keys[c];
    if (!this.#layout.strict || rkey === 0 || this.#conn.failed) return;
    this.#keys[c] = 0;
    if (this.#spares) {
      const fresh = this.#spares.take();
      this.#mws[c].close();
      this.onInvalidate();
      this.#mws[c] = fresh;
      return;
    }
    // a LOCAL_INV that fails fails its connection, which closes the path
    await this.#conn.postAndWait([{ opcode: 'LOCAL_INV', invalidateRkey: rkey }]);
  }

  #bindWr(i: number, id?: number): SendWorkRequest {
    const mw = this.#mws[i];
    const [addr, length] = windowRange(this.#pool, this.#layout, i);
    return { opcode: 'BIND_MW', wrId: id, bind: { mw, mr: this.#pool, addr, length, access: Access.REMOTE_WRITE, keyByte: randomKeyByte(mw.rkey & 0xff) } };
  }

  rekey(c: number, _conn: Conn, index: number): SendWorkRequest {
    // the new key is chosen here (a random key byte), so the response can
    // carry it and both go out in one post; the send queue runs the bind first
    const wr = this.#bindWr(c, wrId(WrKind.SEND, index));
    this.#keys[c] = ((this.#mws[c].rkey & 0xffffff00) | wr.bind!.keyByte!) >>> 0;
    return wr;
  }

  forget(c: number): void {
    this.#keys[this.#layout.strict ? c : 0] = 0;
  }

  exposed(c: number): boolean {
    return this.key(c) !== 0;
  }

  async ready(c: number): Promise<number> {
    const i = this.#layout.strict ? c : 0;
    if (this.#keys[i] !== 0) return this.#keys[i];
    await this.#conn.postAndWait([this.#bindWr(i)]);
    this.#keys[i] = this.#mws[i].rkey;
    return this.#keys[i];
  }

  close(): void {
    this.#spares?.close();
    for (const mw of this.#mws) mw.close();
  }
}
