/**
 * The client's chunk ledger (docs/protocol.md §7.3-7.5, §10): which of the
 * session's chunks (one chunk = one permit) is free, carries an IO, or is
 * kept out of the pool until an answer from the server settles it; each
 * chunk's seq; whether the IO's request may have reached the server; and
 * the key each path has for each chunk.
 *
 * Pure: no verbs, no timers, no I/O. The client drives it and does the
 * posting. A transition the protocol forbids throws: a ProtocolError when a
 * message from the server caused it (the client closes that path), a
 * LedgerError when the client itself broke a rule (a bug).
 *
 * A chunk is in exactly one state:
 *
 *   free ──start──▶ parked ──post(p)──▶ posted(p) ──answer──▶ (complete) free
 *                     ▲  ▲──pathFailed(p)──┘  │
 *                     │  └──pathFailed(p)── resuming(p) ◀──resume(p)── parked
 *                     │        not-arrived ───┘   └─ answer: ran ─▶ free, or post(p) (a read's data)
 *   parked/posted/resuming ──cutOff──▶ unsettled ──answer──▶ free
 *   free (used, no key where needed) ──withdraw──▶ unsettled
 *
 * `parked`: the IO has no path (its path failed and none is connected, or
 * it was just started). It waits for one; its fate on the server is known
 * (never sent, or told not-arrived by RESUME_RSP) or unknown (sent).
 */
import { ProtocolError } from './protocol';

export type ChunkState = 'free' | 'parked' | 'posted' | 'resuming' | 'unsettled';

/** The client broke a rule of the ledger: a bug, not a peer's doing. */
export class LedgerError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'LedgerError';
  }
}

/** An IO_RSP's meaning for its chunk. */
export type ResponseVerdict<T> =
  | { kind: 'ran'; io: T } // the IO in flight ran: complete() it, or post() a read again for its data
  | { kind: 'settled' } // an unsettled chunk: back in the pool
  | { kind: 'late' }; // a second answer to a RESUME_REQ for a settled IO: drop it, keys included

/** A RESUME_RSP's meaning for its chunk. */
export type ResumeVerdict<T> =
  | { kind: 'not-arrived'; io: T } // the IO never reached the server: it is parked, post() it or release() it
  | { kind: 'settled' }
  | { kind: 'late' };

/** asked seqs remembered per chunk (late answers to older asks are recognized) */
const ASKED_KEPT = 8;

const KEY_NONE = 0;
const KEY_INFO = 1;
const KEY_RSP = 2;

interface Entry<T> {
  state: ChunkState;
  /** the seq of the chunk's last IO; 0: never used in this session */
  seq: number;
  io: T | undefined;
  /** the path slot of posted/resuming; -1 otherwise */
  path: number;
  /** a copy of the request may have reached the server (posted since the last not-arrived) */
  sent: boolean;
  /**
   * the seqs RESUME_REQs were sent for, newest last (at most ASKED_KEPT):
   * an answer to an older ask may arrive after the chunk moved on to a
   * newer seq that was asked too
   */
  asked: number[];
}

/** One path's keys for every chunk: addresses, rkeys, and where each rkey came from. */
interface KeyTable {
  addr: bigint[];
  rkey: Uint32Array;
  /** KEY_NONE, KEY_INFO (the info exchange), KEY_RSP (an answer: newer than any info key) */
  source: Uint8Array;
}

export class ChunkLedger<T> {
  readonly queueDepth: number;
  readonly #chunks: Entry<T>[];
  /** free chunks, oldest first (FIFO, as the permits come back) */
  #free: number[];
  #seq = 0;
  #inflight = 0;
  #unsettled = 0;
  readonly #keys: Array<KeyTable | undefined>;

  constructor(queueDepth: number, pathSlots: number) {
    if (!Number.isInteger(queueDepth) || queueDepth < 1) throw new RangeError('queueDepth must be a positive integer');
    this.queueDepth = queueDepth;
    this.#chunks = Array.from({ length: queueDepth }, () => ({ state: 'free' as ChunkState, seq: 0, io: undefined, path: -1, sent: false, asked: [] as number[] }));
    this.#free = Array.from({ length: queueDepth }, (_, i) => i);
    this.#keys = new Array(pathSlots).fill(undefined);
  }

  // ------------------------------------------------------------ reading

  get freeCount(): number {
    return this.#free.length;
  }

  /** chunks with an IO: parked, posted or resuming */
  get inflightCount(): number {
    return this.#inflight;
  }

  get unsettledCount(): number {
    return this.#unsettled;
  }

  state(c: number): ChunkState {
    return this.#at(c).state;
  }

  seq(c: number): number {
    return this.#at(c).seq;
  }

  io(c: number): T | undefined {
    return this.#chunks[c]?.io;
  }

  /** the path slot a posted or resuming chunk is on; -1 otherwise */
  pathOf(c: number): number {
    return this.#at(c).path;
  }

  /** what the client can say of the IO on c if it must give up now (docs/api.md, `executed`) */
  executed(c: number): false | 'unknown' {
    return this.#at(c).sent ? 'unknown' : false;
  }

  /** the chunks in `state`, in index order */
  chunksIn(state: ChunkState): number[] {
    const out: number[] = [];
    for (let c = 0; c < this.queueDepth; c++) if (this.#chunks[c].state === state) out.push(c);
    return out;
  }

  /** the IOs in flight (parked, posted, resuming), in chunk order */
  ios(): T[] {
    const out: T[] = [];
    for (const e of this.#chunks) if (e.io !== undefined) out.push(e.io);
    return out;
  }

  /** Index in the free list of the first free chunk that `pick` accepts, or -1. */
  findFree(pick?: (c: number) => boolean): number {
    const free = this.#free;
    if (!pick) return free.length ? 0 : -1;
    for (let i = 0; i < free.length; i++) if (pick(free[i])) return i;
    return -1;
  }

  // -------------------------------------------------------- transitions

  /** Takes the free chunk at free-list index `at` for `io`, with the next seq: the chunk is parked. */
  start(io: T, at = 0): { chunk: number; seq: number } {
    if (at < 0 || at >= this.#free.length) throw new LedgerError(`no free chunk at index ${at} (${this.#free.length} free)`);
    const c = at === 0 ? this.#free.shift()! : this.#free.splice(at, 1)[0];
    const e = this.#chunks[c];
    e.state = 'parked';
    e.seq = ++this.#seq;
    e.io = io;
    e.path = -1;
    e.sent = false;
    this.#inflight++;
    return { chunk: c, seq: e.seq };
  }

  /** The request goes out on `path`: from parked, or from resuming on that path (a not-arrived or a read's replay). */
  post(c: number, path: number): void {
    const e = this.#at(c);
    if (e.state !== 'parked' && !(e.state === 'resuming' && e.path === path)) throw new LedgerError(`post chunk ${c} on path ${path}: it is ${this.#describe(e)}`);
    e.state = 'posted';
    e.path = path;
    e.sent = true;
  }

  /** A parked IO asks `path` with RESUME_REQ (its request may have arrived); returns the seq to ask for. */
  resume(c: number, path: number): number {
    const e = this.#at(c);
    if (e.state !== 'parked') throw new LedgerError(`resume chunk ${c} on path ${path}: it is ${this.#describe(e)}`);
    e.state = 'resuming';
    e.path = path;
    this.#noteAsked(e);
    return e.seq;
  }

  /** An unsettled chunk is asked (again) on some path; returns the seq to ask for. */
  ask(c: number): number {
    const e = this.#at(c);
    if (e.state !== 'unsettled') throw new LedgerError(`ask for chunk ${c}: it is ${this.#describe(e)}`);
    this.#noteAsked(e);
    return e.seq;
  }

  /** `path` failed: its posted and resuming IOs are parked; returns their chunks. Its keys are void. */
  pathFailed(path: number): number[] {
    const out: number[] = [];
    for (let c = 0; c < this.queueDepth; c++) {
      const e = this.#chunks[c];
      if ((e.state === 'posted' || e.state === 'resuming') && e.path === path) {
        e.state = 'parked';
        e.path = -1;
        out.push(c);
      }
    }
    return out;
  }

  /**
   * The client gives up on the IO (the caller is told now): a chunk whose
   * request may have reached the server stays out of the pool until an
   * answer settles it; one that never did goes back at once.
   */
  cutOff(c: number): T {
    const e = this.#at(c);
    if (e.io === undefined) throw new LedgerError(`cut off chunk ${c}: it is ${this.#describe(e)}`);
    const io = e.io;
    if (!e.sent && e.state === 'parked') {
      this.#toFree(c, e);
      return io;
    }
    e.state = 'unsettled';
    e.io = undefined;
    e.path = -1;
    this.#inflight--;
    this.#unsettled++;
    return io;
  }

  /** The IO on c completed (its answer came): the chunk is free. */
  complete(c: number): T {
    const e = this.#at(c);
    if (e.state !== 'posted' && e.state !== 'resuming') throw new LedgerError(`complete chunk ${c}: it is ${this.#describe(e)}`);
    const io = e.io!;
    this.#toFree(c, e);
    return io;
  }

  /** A parked IO that never reached the server leaves: the chunk is free. */
  release(c: number): T {
    const e = this.#at(c);
    if (e.state !== 'parked' || e.sent) throw new LedgerError(`release chunk ${c}: it is ${this.#describe(e)}${e.sent ? ', and its request may have arrived' : ''}`);
    const io = e.io!;
    this.#toFree(c, e);
    return io;
  }

  /**
   * An IO_RSP for c with `seq` (undefined: an immediate-only response, which
   * carries none) arrived on `path`. The state does not change for 'ran':
   * the client completes the IO or posts a read again.
   */
  onResponse(c: number, path: number, seq: number | undefined): ResponseVerdict<T> {
    const e = this.#checkChunk(c, 'IO_RSP');
    // an immediate-only answer (no seq) answers the request copy it follows,
    // never a RESUME_REQ: a replay always carries its seq (§7.4)
    if (seq === undefined && e.state !== 'posted') {
      throw new ProtocolError('unexpected-response', `an immediate-only response for chunk ${c}, which is ${e.state}: only a posted request is answered without a seq`);
    }
    if (e.state === 'posted' || e.state === 'resuming') {
      if (seq !== undefined && seq !== e.seq) {
        if (this.#isLate(e, seq)) return { kind: 'late' };
        throw new ProtocolError('unexpected-response', `response for chunk ${c} seq ${seq}, in flight: ${e.seq}`);
      }
      if (e.path !== path) throw new ProtocolError('unexpected-response', `response for chunk ${c} on path ${path}, it is on path ${e.path}`);
      return { kind: 'ran', io: e.io! };
    }
    if (e.state === 'unsettled' && seq === e.seq) {
      this.#settle(c, e);
      return { kind: 'settled' };
    }
    if (this.#isLate(e, seq!)) return { kind: 'late' };
    throw new ProtocolError('unexpected-response', `response for chunk ${c} seq ${seq}, which has no IO in flight`);
  }

  /** A RESUME_RSP for c with `seq` arrived on `path`: the request with that seq never reached the server. */
  onResumeRsp(c: number, path: number, seq: number): ResumeVerdict<T> {
    const e = this.#checkChunk(c, 'RESUME_RSP');
    if (e.state === 'resuming' && e.path === path && e.seq === seq) {
      e.state = 'parked';
      e.path = -1;
      e.sent = false;
      return { kind: 'not-arrived', io: e.io! };
    }
    if (e.state === 'unsettled' && e.seq === seq) {
      this.#settle(c, e);
      return { kind: 'settled' };
    }
    if (this.#isLate(e, seq)) return { kind: 'late' };
    throw new ProtocolError('unexpected-response', `RESUME_RSP for chunk ${c} seq ${seq} that was not asked`);
  }

  /**
   * Free chunks that carried an IO and that `keyless` picks (strict: no
   * key where the client could use them) leave the pool as unsettled under
   * their last seq, so a RESUME answer can bind a key; returns them.
   */
  withdraw(keyless: (c: number) => boolean): number[] {
    const out: number[] = [];
    for (let i = this.#free.length - 1; i >= 0; i--) {
      const c = this.#free[i];
      const e = this.#chunks[c];
      if (e.seq === 0 || !keyless(c)) continue;
      this.#free.splice(i, 1);
      e.state = 'unsettled';
      this.#unsettled++;
      out.push(c);
    }
    return out;
  }

  /**
   * A new session (the server lost the old one): every chunk is free and
   * unused, every key void; returns the IOs that were in flight. Seqs keep
   * counting up.
   */
  reset(): T[] {
    const ios = this.ios();
    for (const e of this.#chunks) Object.assign(e, { state: 'free', seq: 0, io: undefined, path: -1, sent: false, asked: [] });
    this.#free = Array.from({ length: this.queueDepth }, (_, i) => i);
    this.#inflight = 0;
    this.#unsettled = 0;
    this.#keys.fill(undefined);
    return ios;
  }

  // --------------------------------------------------------------- keys

  /** A connection on `slot` starts its info exchange: a fresh key table, no keys yet. */
  initKeys(slot: number): void {
    this.#keys[slot] = { addr: new Array(this.queueDepth).fill(0n), rkey: new Uint32Array(this.queueDepth), source: new Uint8Array(this.queueDepth) };
  }

  /** The path in `slot` left the session: no keys there. */
  dropKeys(slot: number): void {
    this.#keys[slot] = undefined;
  }

  /** The key of chunk c on `slot` (rkey 0: none). */
  key(slot: number, c: number): { addr: bigint; rkey: number } {
    const t = this.#keys[slot];
    return t ? { addr: t.addr[c], rkey: t.rkey[c] } : { addr: 0n, rkey: 0 };
  }

  addr(slot: number, c: number): bigint {
    return this.#keys[slot]?.addr[c] ?? 0n;
  }

  rkey(slot: number, c: number): number {
    return this.#keys[slot]?.rkey[c] ?? 0;
  }

  hasKey(slot: number, c: number): boolean {
    return (this.#keys[slot]?.rkey[c] ?? 0) !== 0;
  }

  /**
   * The info exchange's keys. An rkey an answer gave while the exchange ran
   * is newer than the info's (which may have been invalidated since) and is kept.
   */
  setInfoKeys(slot: number, keys: ReadonlyArray<{ addr: bigint; rkey: number }>): void {
    const t = this.#table(slot);
    for (let c = 0; c < keys.length && c < this.queueDepth; c++) {
      t.addr[c] = keys[c].addr;
      if (t.source[c] !== KEY_RSP) {
        t.rkey[c] = keys[c].rkey;
        t.source[c] = keys[c].rkey ? KEY_INFO : KEY_NONE;
      }
    }
  }

  /** RESUME_RSP bound c on `slot`. */
  setKey(slot: number, c: number, rkey: number): void {
    const t = this.#table(slot);
    t.rkey[c] = rkey;
    t.source[c] = KEY_RSP;
  }

  /**
   * The keys an IO_RSP lists for c (§7.4; the client dropped those of
   * another connection generation). Strict: the server invalidated c's keys
   * everywhere when the request arrived and bound new ones only where
   * listed, so a keyed path not listed has no key for c now.
   */
  takeKeys(c: number, keys: ReadonlyArray<{ slot: number; rkey: number }>, strict: boolean): void {
    for (let slot = 0; slot < this.#keys.length; slot++) {
      const t = this.#keys[slot];
      if (!t) continue;
      const k = keys.find((x) => x.slot === slot);
      if (k) t.rkey[c] = k.rkey;
      else if (strict) t.rkey[c] = 0;
      else continue;
      t.source[c] = KEY_RSP;
    }
  }

  // ------------------------------------------------------------ private

  #at(c: number): Entry<T> {
    const e = this.#chunks[c];
    if (!e) throw new LedgerError(`no chunk ${c} (queue depth ${this.queueDepth})`);
    return e;
  }

  #checkChunk(c: number, what: string): Entry<T> {
    const e = this.#chunks[c];
    if (!e) throw new ProtocolError('chunk', `${what} for chunk ${c} beyond this client's ${this.queueDepth} permits`);
    return e;
  }

  #table(slot: number): KeyTable {
    const t = this.#keys[slot];
    if (!t) throw new LedgerError(`path slot ${slot} has no key table`);
    return t;
  }

  /** a second answer for seq, asked with RESUME_REQ, whose IO is settled (the chunk is not carrying seq any more) */
  #isLate(e: Entry<T>, seq: number): boolean {
    return e.asked.includes(seq) && !((e.io !== undefined || e.state === 'unsettled') && e.seq === seq);
  }

  #noteAsked(e: Entry<T>): void {
    if (e.asked[e.asked.length - 1] === e.seq) return;
    e.asked.push(e.seq);
    if (e.asked.length > ASKED_KEPT) e.asked.shift();
  }

  #settle(c: number, e: Entry<T>): void {
    e.state = 'free';
    this.#unsettled--;
    this.#free.push(c);
  }

  #toFree(c: number, e: Entry<T>): void {
    e.state = 'free';
    e.io = undefined;
    e.path = -1;
    e.sent = false;
    this.#inflight--;
    this.#free.push(c);
  }

  #describe(e: Entry<T>): string {
    return e.path >= 0 ? `${e.state} on path ${e.path}` : e.state;
  }
}
