/**
 * One path's RDMA connection, shared by client and server: a CmId with its
 * QP and CQ, the receive buffers (posted before connect/accept and reposted
 * as they complete), send posting with completion tracking, and heartbeats.
 * Owners get receive completions through onRecv and every failure (a
 * failed work completion, a failed post) exactly once through onError.
 */
import { CmId, CompletionBatch, CompletionQueue, Device, MemoryRegion, MemoryWindow, openDevice, ProtectionDomain, QueuePair, RecvWorkRequest, SendWorkRequest, WorkCompletion } from '../verbs';
import { Access } from '../verbs/constants';
import { encodeHbImm, IMM_PAYLOAD_MASK } from './protocol';
import { TransportError } from './errors';
import { PortSettle } from './port-settle';

/** wrId = kind * 2^32 + index. */
export const WrKind = { RECV: 1, SEND: 2, WAIT: 3 } as const;
const KIND_MUL = 2 ** 32;

/** NODE_RDMA_TRANSPORT_TRACE=1: every post and completion of the transport on stderr. */
const TRACE = process.env.NODE_RDMA_TRANSPORT_TRACE === '1';
function trace(line: string): void {
  process.stderr.write(`[transport ${(performance.now() / 1000).toFixed(3)}] ${line}\n`);
}

export function wrId(kind: number, index: number): number {
  return kind * KIND_MUL + index;
}

/** Devices opened by the transport, by name: shared by its PDs, never tied to a CmId's lifetime. */
export class DeviceCache {
  readonly #devs = new Map<string, Device>();

  get(name: string): Device {
    let d = this.#devs.get(name);
    if (!d || d.closed) {
      d = openDevice(name);
      this.#devs.set(name, d);
    }
    return d;
  }

  close(): void {
    for (const d of this.#devs.values()) d.close();
    this.#devs.clear();
  }
}

export interface ConnOptions {
  maxRecvWr: number;
  maxSendWr: number;
  /**
   * The CQ's busyPoll (CompletionQueueOptions): true polls from the event
   * loop for as long as work is outstanding; 'adaptive' (the default) polls
   * while work is outstanding and sleeps on the completion channel after
   * `spinBudgetUs` without a completion, so an idle connection costs no CPU;
   * false always sleeps on the channel.
   */
  busyPoll?: boolean | 'adaptive';
  /** 'adaptive' only: the CQ's spinBudgetUs (default: the CQ's, 1000) */
  spinBudgetUs?: number;
  /**
   * post(wrs, { unsignaled: true }) signals one WR in this many (default
   * 16). The send queue gets this many extra entries, for the unsignaled
   * WRs that wait for a later signaled completion to free their slots.
   */
  signalEvery?: number;
  /**
   * Hand onRecv one reused object, refilled per completion (no allocation
   * per completion), instead of a fresh one each. Only for owners that read
   * `wc` during the call: a closure that reads it later sees a later
   * completion (server.ts's serialize() of a busy chunk read `wc.byteLen`
   * late: transport-failover's repeated cuts failed with it on). Default false.
   */
  reuseCompletion?: boolean;
  /** counted into (the owning path's, so they outlive the connection) */
  wire?: WireCounters;
}

/**
 * What a path put on the wire and did locally (docs/protocol.md §10.2): an
 * IO is one message each way, plus a read's data placed by an RDMA WRITE
 * ahead of its response, plus local window work.
 */
export interface WireStats {
  /** messages posted to the peer (SEND, SEND_WITH_INV, RDMA WRITE WITH IMM): IO requests and responses, info, resume and close messages; not heartbeats */
  messagesSent: number;
  /** messages received (receive completions), heartbeats not included */
  messagesReceived: number;
  /** one-sided RDMA WRITEs: a read's data, placed in the client's buffer ahead of the response */
  rdmaWrites: number;
  /** memory window binds (local work requests) */
  binds: number;
  /** keys invalidated locally: LOCAL_INV work requests or windows deallocated */
  invalidations: number;
  heartbeatsSent: number;
  heartbeatsReceived: number;
}

/** WireStats as a connection counts them (receives include heartbeats until stats() subtracts them). */
export interface WireCounters {
  messagesSent: number;
  receives: number;
  rdmaWrites: number;
  binds: number;
  invalidations: number;
  heartbeatsSent: number;
  heartbeatsReceived: number;
}

export function wireCounters(): WireCounters {
  return { messagesSent: 0, receives: 0, rdmaWrites: 0, binds: 0, invalidations: 0, heartbeatsSent: 0, heartbeatsReceived: 0 };
}

export function wireStats(c: WireCounters): WireStats {
  return {
    messagesSent: c.messagesSent, messagesReceived: c.receives - c.heartbeatsReceived, rdmaWrites: c.rdmaWrites, binds: c.binds,
    invalidations: c.invalidations, heartbeatsSent: c.heartbeatsSent, heartbeatsReceived: c.heartbeatsReceived,
  };
}

const HB_INDEX = 0xffffffff;

function count(c: WireCounters, wrs: SendWorkRequest[]): void {
  for (const wr of wrs) {
    switch (wr.opcode) {
      case 'SEND':
      case 'SEND_WITH_IMM':
      case 'SEND_WITH_INV':
      case 'RDMA_WRITE_WITH_IMM':
        if ((wr.wrId ?? 0) % KIND_MUL === HB_INDEX) c.heartbeatsSent++;
        else c.messagesSent++;
        break;
      case 'RDMA_WRITE':
        c.rdmaWrites++;
        break;
      case 'BIND_MW':
        c.binds++;
        break;
      case 'LOCAL_INV':
        c.invalidations++;
        break;
    }
  }
}

/** Registered memory that is both a Buffer and an MR. */
export interface Area {
  mr: MemoryRegion;
  buf: Buffer;
}

export function registerArea(pd: ProtectionDomain, size: number, access: number = Access.LOCAL_WRITE): Area {
  const mem = pd.allocate(Math.max(size, 1));
  const mr = pd.registerMemory(mem, access);
  return { mr, buf: Buffer.from(mem, 0, size) };
}

/** Conn.post options. */
export interface PostOptions {
  /**
   * Post the WRs unsignaled (no send completion each), except one in
   * `signalEvery` and any WR posted while the send queue is nearly full:
   * those stay signaled, and their completion frees the slots of every
   * earlier WR of this QP (a send queue completes in order). An unsignaled
   * WR never reaches onSendDone, so only WRs whose completion nobody waits
   * for may be posted this way. A WR that fails still completes (with an
   * error) and fails the connection.
   */
  unsignaled?: boolean;
}

const DEFAULT_SIGNAL_EVERY = 16;
const EMPTY_WRS: SendWorkRequest[] = [];

export class Conn {
  readonly id: CmId;
  readonly pd: ProtectionDomain;
  readonly cq: CompletionQueue;
  readonly qp: QueuePair;
  recv: Area | undefined;
  recvSize = 0;
  /**
   * receive completion: the data is recv.buf[slot * recvSize, + byteLen);
   * call repost(slot) when done with it. With `reuseCompletion`, `wc` is
   * one object per Conn, refilled for each completion: valid only during
   * the call, so copy the fields a deferred step needs.
   */
  onRecv: (wc: WorkCompletion, slot: number) => void = () => undefined;
  /** send completion of a SEND-kind work request (index from its wrId) */
  onSendDone: (index: number) => void = () => undefined;
  onError: (err: Error) => void = () => undefined;
  readonly wire: WireCounters;
  #failed = false;
  #closed = false;
  #waiters = new Map<number, { resolve: () => void; reject: (e: Error) => void }>();
  #waitSeq = 0;
  #refs = 0;
  // heartbeat
  #hbTimer: NodeJS.Timeout | undefined;
  #received = false;
  #missed = 0;
  #hbId = 0;
  #hbSentAt = 0n;
  #hbOutstanding = false;
  latencyNs: number | undefined;
  /** the completion being handed out (onRecv's `wc`): refilled in place */
  #wc: WorkCompletion = Conn.#blankWc();
  readonly #reuseWc: boolean;

  static #blankWc(): WorkCompletion {
    return {
      wrId: 0, status: 0, statusName: 'SUCCESS', ok: true, opcode: 0, opcodeName: 'SEND', vendorErr: 0, byteLen: 0,
      imm: undefined, invalidatedRkey: undefined, qpNum: 0, srcQp: 0, wcFlags: 0,
    };
  }
  // send queue accounting: WRs posted and WRs whose slots are free again, as
  // running counts (2^53 WRs is centuries of posting), and the post count at
  // each signaled WR not yet completed, oldest first (a ring): its completion
  // frees every slot up to it
  readonly #sqDepth: number;
  readonly #signalEvery: number;
  #sqPosted = 0;
  #sqRetired = 0;
  #sinceSignal = 0;
  readonly #sigRing: Float64Array;
  #sigHead = 0;
  #sigCount = 0;

  constructor(id: CmId, pd: ProtectionDomain, opts: ConnOptions) {
    this.id = id;
    this.pd = pd;
    this.wire = opts.wire ?? wireCounters();
    const dev = pd.device;
    // 'adaptive' by default: the fast path out of the box (no channel read,
    // re-arm or callback per completion while IOs are in flight) without a
    // core burnt by an idle connection
    const busyPoll = opts.busyPoll ?? 'adaptive';
    this.cq = dev.createCompletionQueue({
      cqe: opts.maxSendWr + opts.maxRecvWr + 16, batch: 64, busyPoll,
      ...(busyPoll === 'adaptive' && opts.spinBudgetUs !== undefined ? { spinBudgetUs: opts.spinBudgetUs } : {}),
    });
    const every = opts.signalEvery ?? DEFAULT_SIGNAL_EVERY;
    if (!Number.isInteger(every) || every < 1 || every > 4096) throw new RangeError(`signalEvery must be an integer from 1 to 4096, got ${every}`);
    this.#signalEvery = every;
    this.#reuseWc = opts.reuseCompletion === true;
    try {
      this.qp = id.createQueuePair(pd, {
        sendCq: this.cq, recvCq: this.cq, maxSendWr: opts.maxSendWr + every, maxRecvWr: opts.maxRecvWr, maxSendSge: 2, maxRecvSge: 1,
      });
    } catch (err) {
      this.cq.close();
      throw err;
    }
    this.#sqDepth = this.qp.maxSendWr;
    this.#sigRing = new Float64Array(this.#sqDepth);
    this.cq.on('batch', (b) => this.#onBatch(b));
    // registered before any owner's listener, so it runs first
    id.on('disconnected', () => this.#drain());
  }

  /** Send queue slots in use by this connection's WRs (posted, not yet freed by a signaled completion). */
  get sendQueueUsed(): number {
    return this.#sqPosted - this.#sqRetired;
  }

  /** The send queue's depth (as the provider granted it). */
  get sendQueueDepth(): number {
    return this.#sqDepth;
  }

  /** Registers `count` receive buffers of `size` bytes and posts them all. */
  setupReceives(size: number, count: number): void {
    if (this.recv) throw new Error('receives are already set up');
    this.recvSize = size;
    this.recv = registerArea(this.pd, size * count);
    const wrs = [];
    for (let i = 0; i < count; i++) wrs.push({ wrId: wrId(WrKind.RECV, i), sge: [this.recv.mr.sge(i * size, size)] });
    this.qp.postRecv(wrs);
  }

  get failed(): boolean {
    return this.#failed || this.#closed;
  }

  recvBytes(slot: number, len: number): Buffer {
    return this.recv!.buf.subarray(slot * this.recvSize, slot * this.recvSize + len);
  }

  repost(slot: number): void {
    if (this.failed) return;
    try {
      this.qp.postRecv([{ wrId: wrId(WrKind.RECV, slot), sge: [this.recv!.mr.sge(slot * this.recvSize, this.recvSize)] }]);
    } catch (err) {
      this.fail(err as Error);
    }
  }

  /**
   * Replaces receive `slot` with the next post (the same native call as its
   * sends: QueuePair.postSend's recvFirst), or at the latest in this turn's
   * check phase (setImmediate). For a slot whose buffer is no longer read:
   * an immediate-only message (its receive carries no data), or one whose
   * fields were copied out. A server answering a request at once, and a
   * client posting its next IO in the answer's microtasks, replace the
   * receive with no call of its own (each Node-API call costs 5-40 us
   * under emulation: measured 2026-12-08).
   */
  repostLater(slot: number): void {
    if (this.failed) return;
    const wr = (this.#recvPool[this.#recvs.length] ??= { wrId: 0, sge: [{ addr: 0, length: 0, lkey: 0 }] });
    wr.wrId = wrId(WrKind.RECV, slot);
    const sge = wr.sge![0];
    sge.addr = this.recv!.mr.addr + slot * this.recvSize;
    sge.length = this.recvSize;
    sge.lkey = this.recv!.mr.lkey;
    this.#recvs.push(wr);
    if (!this.#flushTimer) this.#flushTimer = setImmediate(this.#flushRecvs);
  }

  /** receive WRs waiting for the next post, and their reused objects */
  readonly #recvs: RecvWorkRequest[] = [];
  readonly #recvPool: RecvWorkRequest[] = [];
  #flushTimer: NodeJS.Immediate | undefined;
  readonly #flushRecvs = (): void => {
    this.#flushTimer = undefined;
    if (this.#recvs.length !== 0) this.post([]);
  };

  /**
   * Send WRs whose post waits for the end of this microtask checkpoint
   * (postSoon), in order; #sooner's first #soonLen entries are them (a
   * reused array: no allocation per post).
   */
  readonly #sooner: SendWorkRequest[] = [];
  #soonLen = 0;
  #soonQueued = false;
  readonly #flushSoonTask = (): void => {
    this.#soonQueued = false;
    this.flushSoon();
  };

  /**
   * Posts `wrs` unsignaled (as post(wrs, { unsignaled: true })), together
   * with every other WR given to postSoon in this microtask checkpoint and
   * the receives waiting for a post: one native call (one doorbell) for all
   * of them, after the current task's synchronous code and the microtasks
   * queued before the first of them. A client whose answers complete in a
   * batch starts the next IOs in the answers' promise reactions: at queue
   * depth 32 those requests go out in one call instead of one call each
   * (each 230-390 us under emulation with rxe's work inside it, measured
   * 2026-12-08). The caller's WR objects must stay unchanged until then. A
   * post() in between posts them first, so the send queue's order is the
   * order of the calls (binds aside: bindWindow posts at once). A failure
   * fails the connection then, as post() would; WRs given to a connection
   * that failed or closed before the flush are not posted (its owner fails
   * their IOs over). Returns the queue's soonEpoch, for an owner that
   * reuses the WR objects.
   */
  postSoon(wrs: SendWorkRequest[]): number {
    if (this.failed) return this.#soonEpoch;
    // (each WR's `signaled` is chosen at the flush: #chooseSignaled)
    for (let i = 0; i < wrs.length; i++) this.#sooner[this.#soonLen++] = wrs[i];
    if (!this.#soonQueued) {
      this.#soonQueued = true;
      queueMicrotask(this.#flushSoonTask);
    }
    return this.#soonEpoch;
  }

  /** The WRs of one native call: the postSoon ones first, then the caller's (reused). */
  readonly #batchWrs: SendWorkRequest[] = [];

  /**
   * Posts send WRs, signaled unless `{ unsignaled: true }` (PostOptions),
   * after any WRs waiting from postSoon (in the same native call); a
   * failure fails the connection. Returns false when it could not post.
   */
  post(wrs: SendWorkRequest[], opts?: PostOptions): boolean {
    if (this.failed) return false;
    const soon = this.#soonLen;
    let all = wrs;
    if (soon !== 0) {
      // the waiting WRs go first, in their order; then these
      all = this.#batchWrs;
      all.length = 0;
      for (let i = 0; i < soon; i++) all.push(this.#sooner[i]);
      for (let i = 0; i < wrs.length; i++) all.push(wrs[i]);
      this.#dropSoon();
      this.#chooseSignaled(all, 0, soon);
    }
    if (opts?.unsignaled === true) this.#chooseSignaled(all, soon, all.length);
    if (TRACE) trace(`qp ${this.qp.qpNum} post ${all.map((w) => `${w.opcode}${w.signaled === false ? '/unsig' : ''}${w.rkey !== undefined ? `/rkey=${w.rkey}` : ''}${w.invalidateRkey !== undefined ? `/inv=${w.invalidateRkey}` : ''}${w.imm !== undefined ? `/imm=${(w.imm >>> 0).toString(16)}` : ''}`).join(' ')}`);
    const recvs = this.#recvs.length !== 0 ? this.#recvs : undefined;
    try {
      this.qp.postSend(all, recvs);
      this.#account(all, all.length);
      count(this.wire, all);
      return true;
    } catch (err) {
      // the WRs the provider took before the failing one are on the queue
      // (none when a receive failed: then the connection fails anyway)
      this.#account(all, (err as { posted?: number }).posted ?? 0);
      this.fail(err as Error);
      return false;
    } finally {
      if (recvs) recvs.length = 0;
      if (all !== wrs) all.length = 0;
    }
  }

  /** Forgets the postSoon WRs not posted (references too: the array is reused). */
  #dropSoon(): void {
    if (this.#soonLen === 0) return;
    for (let i = 0; i < this.#soonLen; i++) this.#sooner[i] = undefined as unknown as SendWorkRequest;
    this.#soonLen = 0;
    this.#soonEpoch++;
  }

  #soonEpoch = 0;

  /**
   * Names the current contents of postSoon's queue: it changes each time
   * the queue is emptied (posted, or dropped by a failure or close). An
   * owner that reuses a WR object it gave postSoon compares the epoch that
   * call returned with this one: equal means the WR still waits
   * (flushSoon() before rewriting it).
   */
  get soonEpoch(): number {
    return this.#soonEpoch;
  }

  /** Posts the WRs waiting from postSoon now (with the waiting receives). */
  flushSoon(): void {
    if (this.#soonLen !== 0) this.post(EMPTY_WRS);
  }

  /**
   * Marks wrs[from, to) signaled or not: one in signalEvery is, and so is
   * every WR posted while fewer than signalEvery slots would stay free
   * (then a completion that frees slots is always on its way). The caller's
   * WR objects are written (`signaled`), as postAndWait writes `wrId`. The
   * WRs before `from` in the same post count as used.
   */
  #chooseSignaled(wrs: SendWorkRequest[], from: number, to: number): void {
    let used = this.#sqPosted - this.#sqRetired + from;
    const every = this.#signalEvery;
    const high = this.#sqDepth - every;
    for (let i = from; i < to; i++) {
      used++;
      if (++this.#sinceSignal >= every || used >= high) {
        wrs[i].signaled = true;
        this.#sinceSignal = 0;
      } else {
        wrs[i].signaled = false;
      }
    }
  }

  /** The first `n` of `wrs` are on the send queue: count them, and remember where each signaled one is. */
  #account(wrs: SendWorkRequest[], n: number): void {
    for (let i = 0; i < n; i++) {
      this.#sqPosted++;
      if (wrs[i].signaled !== false) this.#pushSignaled();
    }
  }

  #pushSignaled(): void {
    if (this.#sigCount === this.#sigRing.length) return; // cannot happen: a signaled WR holds a slot until it completes
    this.#sigRing[(this.#sigHead + this.#sigCount) % this.#sigRing.length] = this.#sqPosted;
    this.#sigCount++;
    this.#sinceSignal = 0;
  }

  /** A signaled send-queue WR completed: it and every WR before it have left the queue. */
  #retireSignaled(): void {
    if (this.#sigCount === 0) return;
    this.#sqRetired = this.#sigRing[this.#sigHead];
    this.#sigHead = (this.#sigHead + 1) % this.#sigRing.length;
    this.#sigCount--;
  }

  /**
   * Binds a type 1 window (ibv_bind_mw: a bind WR on this QP's send queue,
   * ahead of whatever is posted after it), its completion reported under
   * `id` (a wrId). Returns the new rkey, or 0 when it could not post (the
   * connection failed).
   */
  bindWindow(mw: MemoryWindow, mr: MemoryRegion, addr: number, length: number, access: number, id: number): number {
    if (this.failed) return 0;
    try {
      const rkey = mw.bind(this.qp, mr, { addr, length, access, wrId: id });
      // a bind is a signaled WR on the same send queue
      this.#sqPosted++;
      this.#pushSignaled();
      if (TRACE) trace(`qp ${this.qp.qpNum} bind type-1 ${length} B -> rkey=${rkey}`);
      this.wire.binds++;
      return rkey;
    } catch (err) {
      this.fail(err as Error);
      return 0;
    }
  }

  /** bindWindow, resolved when the bind has completed (the key is usable). */
  bindWindowAndWait(mw: MemoryWindow, mr: MemoryRegion, addr: number, length: number, access: number): Promise<number> {
    if (this.failed) return Promise.reject(new TransportError('ECONNRESET', 'the connection failed'));
    const n = this.#waitSeq = (this.#waitSeq + 1) % KIND_MUL;
    const done = new Promise<void>((resolve, reject) => this.#waiters.set(n, { resolve, reject }));
    // a bind that cannot post fails the connection, which rejects the waiter
    const rkey = this.bindWindow(mw, mr, addr, length, access, wrId(WrKind.WAIT, n));
    return done.then(() => rkey);
  }

  /** Posts WRs and resolves when all completed successfully. */
  postAndWait(wrs: SendWorkRequest[]): Promise<void> {
    if (this.failed) return Promise.reject(new TransportError('ECONNRESET', 'the connection failed'));
    const ps: Promise<void>[] = [];
    for (const wr of wrs) {
      const n = this.#waitSeq = (this.#waitSeq + 1) % KIND_MUL;
      wr.wrId = wrId(WrKind.WAIT, n);
      wr.signaled = true; // each one is waited for
      ps.push(new Promise<void>((resolve, reject) => this.#waiters.set(n, { resolve, reject })));
    }
    const all = Promise.all(ps).then(() => undefined);
    if (!this.post(wrs)) {
      all.catch(() => undefined); // the waiters were rejected by fail(): nobody else observes them
      return Promise.reject(new TransportError('ECONNRESET', 'the connection failed'));
    }
    return all;
  }

  /** Keeps the process alive while the owner waits for peer messages (counted). */
  ref(): void {
    if (this.#refs++ === 0 && !this.#closed) this.cq.ref();
  }

  unref(): void {
    if (this.#refs > 0 && --this.#refs === 0 && !this.#closed) this.cq.unref();
  }

  fail(err: Error): void {
    if (this.#failed || this.#closed) return;
    this.#failed = true;
    this.#dropSoon();
    this.#rejectWaiters(err);
    this.stopHeartbeat();
    this.onError(err);
  }

  #rejectWaiters(err: Error): void {
    const ws = [...this.#waiters.values()];
    this.#waiters.clear();
    for (const w of ws) w.reject(err);
  }

  /** One CQ batch, read in place: each completion fills #wc (reused, or one fresh object per completion). */
  #onBatch(b: CompletionBatch): void {
    for (let i = 0; i < b.length; i++) {
      if (this.#closed) return;
      this.#onCompletion(b.fill(i, this.#reuseWc ? this.#wc : (this.#wc = Conn.#blankWc())));
    }
  }

  /**
   * The peer disconnected: the completions already in the CQ (the last
   * messages it sent, such as the client's SESSION_CLOSE) are delivered
   * before the owner hears of it and closes the connection with its CQ. The
   * CM event can be dispatched first: it fires in the loop's poll phase,
   * while a spinning CQ polls in the check phase (and a sleeping one's
   * channel may be read after the CM channel). Found by a transport test's
   * server session that lingered after its client's close().
   */
  #drain(): void {
    // (bounded: a peer that is gone sends nothing more)
    for (let i = 0; i < 64 && !this.#closed && !this.cq.closed; i++) {
      try {
        if (this.cq.poll().length === 0) return;
      } catch {
        return; // the CQ failed (device removal): the owner's close handles it
      }
    }
  }

  #onCompletion(wc: WorkCompletion): void {
    if (TRACE) trace(`qp ${wc.qpNum} wc ${wc.opcodeName} ${wc.statusName} wrId=${wc.wrId} len=${wc.byteLen} imm=${wc.imm?.toString(16)} flags=${wc.wcFlags}`);
    const kind = Math.floor(wc.wrId / KIND_MUL);
    const index = wc.wrId % KIND_MUL;
    if (!wc.ok) {
      if (kind === WrKind.WAIT) {
        const w = this.#waiters.get(index);
        this.#waiters.delete(index);
        w?.reject(new TransportError('EIO', `work request failed: ${wc.statusName}`));
      }
      this.fail(new TransportError(wc.statusName === 'WR_FLUSH_ERR' ? 'ECONNRESET' : 'EIO', `${wc.opcodeName} completed with ${wc.statusName}`));
      return;
    }
    if (wc.opcode < 128) this.#retireSignaled(); // a send-queue WR (receives are 128 and up)
    if (kind === WrKind.RECV) {
      this.wire.receives++;
      this.#received = true;
      this.onRecv(wc, index);
    } else if (kind === WrKind.WAIT) {
      const w = this.#waiters.get(index);
      this.#waiters.delete(index);
      w?.resolve();
    } else if (kind === WrKind.SEND) {
      this.onSendDone(index);
    }
  }

  // --------------------------------------------------------- heartbeats (§9)

  /** Every interval: declare the path dead after `missedMax` silent intervals, else send HB. */
  startHeartbeat(intervalMs: number, missedMax: number, onDead: () => void): void {
    this.stopHeartbeat();
    this.#received = true;
    this.#hbTimer = setInterval(() => {
      if (this.failed) return;
      if (this.#received) {
        this.#received = false;
        this.#missed = 0;
      } else if (++this.#missed >= missedMax) {
        this.stopHeartbeat();
        onDead();
        return;
      }
      if (!this.#hbOutstanding || this.#missed > 0) this.sendHeartbeat();
    }, intervalMs);
    this.#hbTimer.unref();
  }

  stopHeartbeat(): void {
    if (this.#hbTimer) clearInterval(this.#hbTimer);
    this.#hbTimer = undefined;
  }

  sendHeartbeat(): void {
    this.#hbId = (this.#hbId + 1) & IMM_PAYLOAD_MASK;
    this.#hbSentAt = process.hrtime.bigint();
    this.#hbOutstanding = true;
    this.post([{ wrId: wrId(WrKind.SEND, HB_INDEX), opcode: 'RDMA_WRITE_WITH_IMM', imm: encodeHbImm(this.#hbId), sge: [], remoteAddr: 0, rkey: 0 }]);
  }

  /** The peer's HB: answer with an ACK carrying its id. */
  answerHeartbeat(id: number): void {
    this.wire.heartbeatsReceived++;
    this.post([{ wrId: wrId(WrKind.SEND, HB_INDEX), opcode: 'RDMA_WRITE_WITH_IMM', imm: encodeHbImm(id, true), sge: [], remoteAddr: 0, rkey: 0 }]);
  }

  /** An ACK: an RTT sample when it answers the last HB sent; others are ignored. */
  heartbeatAck(id: number): void {
    this.wire.heartbeatsReceived++;
    if (this.#hbOutstanding && id === this.#hbId) {
      this.latencyNs = Number(process.hrtime.bigint() - this.#hbSentAt);
      this.#hbOutstanding = false;
    }
  }

  /**
   * Disconnects (best effort) and frees the QP, CQ and receive buffers. When
   * the connection's port is down, the disconnect and the CM id's destruction
   * wait until the port has been active again for a moment (at most 2 min):
   * on rxe, a DREQ sent while the port is down leaves the device's CM
   * unusable, so every later connect over it would go unanswered.
   */
  close(): void {
    if (this.#closed) return;
    this.stopHeartbeat();
    this.#closed = true;
    this.#dropSoon();
    if (this.#flushTimer) clearImmediate(this.#flushTimer);
    this.#flushTimer = undefined;
    this.#rejectWaiters(new TransportError('ECLOSED', 'the connection was closed'));
    if (this.#refs > 0) {
      this.#refs = 0;
      this.cq.unref();
    }
    const finish = (): void => {
      try {
        this.id.disconnect();
      } catch {
        // not connected (yet), or already disconnected
      }
      this.id.close();
      this.cq.close();
      this.recv?.mr.close();
    };
    let port = 0;
    try {
      port = this.id.info().portNum;
    } catch {
      // the id is closed already
    }
    if (port > 0 && portState(this.pd.device, port) === 'DOWN') deferUntilActive(this.pd.device, port, finish);
    else finish();
  }
}

function portState(dev: Device, port: number): string {
  try {
    return dev.closed ? 'UNKNOWN' : dev.queryPort(port).state;
  } catch {
    return 'UNKNOWN';
  }
}

/** `${device}/${port}` -> disconnects held back on that port (closesPending) */
const heldBack = new Map<string, number>();

/**
 * True while a connection's disconnect over this port is held back: a
 * reconnect waits for it, so the old connection's DREQ goes out first.
 */
export function closesPending(device: string, port: number): boolean {
  return (heldBack.get(`${device}/${port}`) ?? 0) > 0;
}

/** Runs `fn` once `port` of `dev` has settled (port-settle.ts), or the device closed, or DEFER_MAX_MS passed. */
function deferUntilActive(dev: Device, port: number, fn: () => void): void {
  const start = Date.now();
  const settle = new PortSettle();
  const key = `${dev.name}/${port}`;
  heldBack.set(key, (heldBack.get(key) ?? 0) + 1);
  const timer = setInterval(() => {
    const st = portState(dev, port);
    if (settle.observe(st) || st === 'UNKNOWN' || Date.now() - start > DEFER_MAX_MS) {
      clearInterval(timer);
      const n = (heldBack.get(key) ?? 1) - 1;
      if (n > 0) heldBack.set(key, n);
      else heldBack.delete(key);
      fn();
    }
  }, 200);
  timer.unref();
}

const DEFER_MAX_MS = 120000;
