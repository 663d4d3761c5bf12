/**
 * Completion queues. Completions arrive in batches ('completions' event, one
 * JS call per batch); the completion channel is watched by libuv and keeps
 * the process alive only while work is outstanding (signaled sends posted
 * through a QueuePair, or an explicit ref()), so an idle CQ never does.
 */
import { EventEmitter } from 'events';
import { constants as osConstants } from 'os';
import { RdmaError, RdmaErrorCode } from '../errors';
import { native } from '../native';
import { WC_OPCODE, WC_STATUS, WcFlags, WcStatusName } from './constants';
import { checkOptions } from './args';
import { Resource } from './resource';
import type { Device } from './device';
import type { CompletionQueueEvents } from './events';

/** 'EIO' for 5: the POSIX name of an errno. */
function errnoName(errno: number): RdmaErrorCode {
  const e = Object.entries(osConstants.errno).find(([, v]) => v === errno);
  return (e ? e[0] : `ERRNO_${errno}`) as RdmaErrorCode;
}

export interface WorkCompletion {
  wrId: number;
  status: number;
  statusName: WcStatusName;
  /** status === SUCCESS */
  ok: boolean;
  opcode: number;
  opcodeName: string;
  vendorErr: number;
  byteLen: number;
  /** The immediate data (host order) when the completion carries one. */
  imm?: number;
  /** The rkey the peer invalidated (SEND_WITH_INV received). */
  invalidatedRkey?: number;
  qpNum: number;
  srcQp: number;
  wcFlags: number;
}

export interface CompletionQueueOptions {
  /** Minimum number of entries (ibv_create_cq cqe). Default 256. */
  cqe?: number;
  /** Completions delivered per JS call at most. Default 64. */
  batch?: number;
  /**
   * Poll from the event loop (setImmediate) instead of sleeping on the
   * completion channel. While the CQ polls, its channel is not watched and
   * the CQ is not re-armed, so a completion costs one ibv_poll_cq and no
   * channel read, re-arm or callback; before it sleeps again it arms the CQ
   * and polls once more (a completion that landed before the arm raises no
   * event).
   *
   * - `true`: poll for as long as work is outstanding (signaled sends, or a
   *   ref()), however long that is: lowest latency, one core busy meanwhile.
   * - `'adaptive'`: poll while work is outstanding and after each
   *   completion, but sleep on the channel once `spinBudgetUs` pass with no
   *   completion (a CQ kept ref'd while it waits for a peer does not burn a
   *   core), and start polling again at the next completion or post. A CQ
   *   with nothing outstanding (a server's, whose answers are unsignaled)
   *   so takes a stream of requests from polls, not channel wakeups, and
   *   costs nothing once the stream stops. Lingering keeps the process
   *   alive for at most `spinBudgetUs`.
   * - `false` (default): always sleep on the channel.
   */
  busyPoll?: boolean | 'adaptive';
  /**
   * Busy-poll only: how long one poll may spin on an empty CQ before giving
   * the event loop back, in microseconds. Default 0: under SoftRoCE the
   * kernel needs the CPU a spinning process takes (measured slower there).
   */
  spinUs?: number;
  /**
   * `busyPoll: 'adaptive'` only: how long the CQ keeps polling with no
   * completion, while work is outstanding, before it sleeps on the channel,
   * in microseconds, from 1 to 10000000. Default 1000.
   */
  spinBudgetUs?: number;
}

const STRIDE = 10;

/**
 * Completions read in place from a CQ's completion buffer (what
 * CompletionQueue.pollBatch() returns): `length` entries, read by index.
 * Valid until the CQ is polled again (pollBatch(), poll() or the event
 * loop's delivery), like the array ibv_poll_cq fills.
 */
export class CompletionBatch {
  /** The number of completions in this batch. */
  length = 0;
  readonly #w: Uint32Array;
  readonly #rxe: boolean;

  /** @internal */
  constructor(wcs: Uint32Array, rxe: boolean) {
    this.#w = wcs;
    this.#rxe = rxe;
  }

  #at(i: number): number {
    if (!(i >= 0 && i < this.length && Number.isInteger(i))) throw new RangeError(`index must be an integer from 0 to ${this.length - 1}, got ${i}`);
    return i * STRIDE;
  }

  wrId(i: number): number {
    const o = this.#at(i);
    return this.#w[o] + this.#w[o + 1] * 0x100000000;
  }

  status(i: number): number {
    return this.#w[this.#at(i) + 2];
  }

  /** status === SUCCESS */
  ok(i: number): boolean {
    return this.#w[this.#at(i) + 2] === 0;
  }

  /** enum ibv_wc_opcode (WC_OPCODE names them). */
  opcode(i: number): number {
    return this.#w[this.#at(i) + 3];
  }

  byteLen(i: number): number {
    return this.#w[this.#at(i) + 5];
  }

  /** The immediate data (host order), or undefined when the completion carries none. */
  imm(i: number): number | undefined {
    const o = this.#at(i);
    return this.#w[o + 9] & WcFlags.WITH_IMM ? this.#w[o + 6] : undefined;
  }

  /** The rkey the peer invalidated (SEND_WITH_INV received), or undefined. */
  invalidatedRkey(i: number): number | undefined {
    const o = this.#at(i);
    return this.#flags(o) & WcFlags.WITH_INV ? this.#w[o + 6] : undefined;
  }

  wcFlags(i: number): number {
    return this.#flags(this.#at(i));
  }

  qpNum(i: number): number {
    return this.#w[this.#at(i) + 7];
  }

  srcQp(i: number): number {
    return this.#w[this.#at(i) + 8];
  }

  vendorErr(i: number): number {
    return this.#w[this.#at(i) + 4];
  }

  /** Completion i as a WorkCompletion object. */
  get(i: number): WorkCompletion {
    const o = this.#at(i);
    const w = this.#w;
    const status = w[o + 2];
    const opcode = w[o + 3];
    const flags = this.#flags(o);
    const wc: WorkCompletion = {
      wrId: w[o] + w[o + 1] * 0x100000000,
      status,
      statusName: (WC_STATUS[status] ?? 'UNKNOWN') as WcStatusName,
      ok: status === 0,
      opcode,
      opcodeName: WC_OPCODE[opcode] ?? `OPCODE_${opcode}`,
      vendorErr: w[o + 4],
      byteLen: w[o + 5],
      qpNum: w[o + 7],
      srcQp: w[o + 8],
      wcFlags: flags,
    };
    if (flags & WcFlags.WITH_IMM) wc.imm = w[o + 6];
    if (flags & WcFlags.WITH_INV) wc.invalidatedRkey = w[o + 6];
    return wc;
  }

  /**
   * Completion i written into `wc` (every field; imm and invalidatedRkey
   * undefined when it carries none): one index check and direct reads, for
   * a caller that refills one object per completion instead of allocating.
   */
  fill(i: number, wc: WorkCompletion): WorkCompletion {
    const o = this.#at(i);
    const w = this.#w;
    const status = w[o + 2];
    const opcode = w[o + 3];
    const flags = this.#flags(o);
    wc.wrId = w[o] + w[o + 1] * 0x100000000;
    wc.status = status;
    wc.statusName = (WC_STATUS[status] ?? 'UNKNOWN') as WcStatusName;
    wc.ok = status === 0;
    wc.opcode = opcode;
    wc.opcodeName = WC_OPCODE[opcode] ?? `OPCODE_${opcode}`;
    wc.vendorErr = w[o + 4];
    wc.byteLen = w[o + 5];
    wc.imm = flags & WcFlags.WITH_IMM ? w[o + 6] : undefined;
    wc.invalidatedRkey = flags & WcFlags.WITH_INV ? w[o + 6] : undefined;
    wc.qpNum = w[o + 7];
    wc.srcQp = w[o + 8];
    wc.wcFlags = flags;
    return wc;
  }

  /** Every completion of the batch as WorkCompletion objects. */
  toArray(): WorkCompletion[] {
    const out: WorkCompletion[] = new Array(this.length);
    for (let i = 0; i < this.length; i++) out[i] = this.get(i);
    return out;
  }

  #flags(o: number): number {
    const w = this.#w;
    const flags = w[o + 9];
    if (this.#rxe && w[o + 3] === 128 && w[o + 2] === 0 && flags & WcFlags.IP_CSUM_OK && !(flags & WcFlags.WITH_INV)) {
      // rxe (6.12 to at least 7.3.4: rxe_resp.c) writes the kernel's IB_WC_WITH_INVALIDATE
      // (1 << 2) into user-space completions, where bit 2 reads as
      // IBV_WC_IP_CSUM_OK (no meaning on an RC receive): report it as the
      // invalidation it is
      return (flags & ~WcFlags.IP_CSUM_OK) | WcFlags.WITH_INV;
    }
    return flags;
  }
}

/** busyPoll: true polls on however long work is outstanding; it still arms the CQ this often to see a removed device (EIO). */
const ARM_CHECK_MS = 100;
/** a power of 2 */
const CLOCK_EVERY = 8;

export class CompletionQueue extends Resource {
  readonly device: Device;
  readonly busyPoll: boolean | 'adaptive';
  readonly #spinUs: number;
  /** 'adaptive': ms of polling with no completion before sleeping; Infinity for busyPoll true */
  readonly #budgetMs: number;
  /** @internal */
  readonly handle: any;
  readonly #wcs: Uint32Array;
  readonly #batch: CompletionBatch;
  readonly #events = new EventEmitter();
  #outstanding = 0;
  #userRefs = 0;
  #busyTimer: NodeJS.Immediate | undefined;
  /** polling from the event loop: the channel is not watched */
  #spinning = false;
  /** performance.now() of the first empty poll since the last completion (0: the last poll found some) */
  #emptySince = 0;
  /** empty polls since the last completion (the clock is read every CLOCK_EVERY of them) */
  #emptyPolls = 0;
  /** whether the native poll handle is ref'ed (mirrors its state) */
  #handleRef = false;
  readonly #rxe: boolean;

  /** @internal use Device.createCompletionQueue() */
  constructor(device: Device, options: CompletionQueueOptions = {}) {
    super();
    checkOptions(options);
    const bp = options.busyPoll;
    if (bp !== undefined && typeof bp !== 'boolean' && bp !== 'adaptive') throw new TypeError("busyPoll must be a boolean or 'adaptive'");
    const cqe = options.cqe ?? 256;
    const batch = options.batch ?? 64;
    if (!Number.isInteger(cqe) || cqe < 1 || cqe > 0x3fffffff) throw new RangeError(`cqe must be an integer >= 1, got ${cqe}`);
    if (!Number.isInteger(batch) || batch < 1 || batch > 4096) throw new RangeError(`batch must be an integer from 1 to 4096, got ${batch}`);
    this.device = device;
    this.#rxe = device.isSoftRoce;
    this.busyPoll = bp ?? false;
    const spin = options.spinUs ?? 0;
    if (!Number.isInteger(spin) || spin < 0 || spin > 1_000_000) throw new RangeError(`spinUs must be an integer from 0 to 1000000, got ${spin}`);
    this.#spinUs = spin;
    const budget = options.spinBudgetUs ?? 1000;
    if (!Number.isInteger(budget) || budget < 1 || budget > 10_000_000) throw new RangeError(`spinBudgetUs must be an integer from 1 to 10000000, got ${budget}`);
    if (options.spinBudgetUs !== undefined && bp !== 'adaptive') throw new TypeError("spinBudgetUs needs busyPoll: 'adaptive'");
    this.#budgetMs = bp === 'adaptive' ? budget / 1000 : Infinity;
    this.#wcs = new Uint32Array(batch * STRIDE);
    this.#batch = new CompletionBatch(this.#wcs, this.#rxe);
    this.handle = new (native().CompletionQueue)(device.handle, cqe, this.#wcs);
    // the native side keeps this callback for as long as the CQ exists, and
    // QPs keep the native CQ: a callback holding `this` strongly would make a
    // cycle through those native references that the GC can never collect
    const self = new WeakRef(this);
    this.handle.start((n: number) => {
      const cq = self.deref();
      if (cq) {
        if (n < 0) cq.#channelFailed(-n);
        else cq.#fromChannel(n);
      }
    });
    this.dependOn(device);
  }

  /** The CQ's size as the device rounded it. */
  get cqe(): number {
    return this.handle.cqe;
  }

  /**
   * Listen for batches: (wcs: WorkCompletion[]) => void; or for 'error'
   * (err: RdmaError): the CQ can no longer be armed, its device was
   * removed, and nothing more will complete here (see `failure`).
   */
  on<K extends keyof CompletionQueueEvents>(event: K, listener: (...args: CompletionQueueEvents[K]) => void): this {
    this.#events.on(event, listener);
    return this;
  }

  off<K extends keyof CompletionQueueEvents>(event: K, listener: (...args: CompletionQueueEvents[K]) => void): this {
    this.#events.off(event, listener);
    return this;
  }

  #failure: RdmaError | undefined;

  /**
   * Why this CQ delivers nothing any more (its device was removed: the
   * verb's EIO), or undefined. Work requests still posted on its QPs never
   * complete; the device's DEVICE_FATAL event and rdma_cm's DEVICE_REMOVAL
   * say the same to their listeners.
   */
  get failure(): RdmaError | undefined {
    return this.#failure;
  }

  #channelFailed(errno: number): void {
    const code = errnoName(errno);
    this.#failure = new RdmaError(
      `ibv_req_notify_cq failed: ${code}: the completions of ${this.device.name} can no longer be waited for ` +
        '(the device was removed); nothing more will complete on this CQ', code, errno, 'ibv_req_notify_cq');
    // nothing will settle the outstanding sends: they must not keep the process alive
    this.#outstanding = 0;
    this.#userRefs = 0;
    this.#updateRef();
    if (this.#events.listenerCount('error')) this.#events.emit('error', this.#failure);
  }

  /** Polls once (ibv_poll_cq), without waiting. Also emits the batch. */
  poll(): WorkCompletion[] {
    this.assertOpen();
    const n = this.handle.poll();
    if (!n) return [];
    this.#batch.length = n;
    const out = this.#batch.toArray();
    this.#settle(n);
    this.#emit(out);
    return out;
  }

  /** Keep the process alive while this CQ is waited on (counted). */
  ref(): this {
    this.assertOpen();
    this.#userRefs++;
    this.#updateRef();
    return this;
  }

  unref(): this {
    if (this.#userRefs > 0) this.#userRefs--;
    this.#updateRef();
    return this;
  }

  /** @internal a QueuePair posted `n` work requests that will complete here */
  expect(n: number): void {
    this.#outstanding += n;
    this.#updateRef();
  }

  /**
   * Polls once (ibv_poll_cq) without allocating: the completions are read
   * in place through the returned batch (the same object every time, valid
   * until this CQ is polled again). For latency-critical loops; emits the
   * 'completions' event only when something listens ('batch' listeners
   * are not called: the caller reads the batch itself).
   */
  pollBatch(): CompletionBatch {
    this.assertOpen();
    const n = this.handle.poll();
    this.#batch.length = n;
    if (n) {
      this.#settle(n);
      if (this.#events.listenerCount('completions')) this.#events.emit('completions', this.#batch.toArray());
    }
    return this.#batch;
  }

  /** n fresh completions in the buffer, from the channel or the busy-poll loop: settle, then tell the listeners. */
  #deliver(n: number): void {
    this.#batch.length = n;
    this.#settle(n);
    this.#emit(undefined);
  }

  /** 'batch' listeners read in place; 'completions' gets objects, built only when someone listens. */
  #emit(objects: WorkCompletion[] | undefined): void {
    if (this.#events.listenerCount('batch')) this.#events.emit('batch', this.#batch);
    if (this.#events.listenerCount('completions')) this.#events.emit('completions', objects ?? this.#batch.toArray());
  }

  #fromChannel(n: number): void {
    this.#deliver(n);
    // a completion means the peer is active: true polls again while work is
    // outstanding (it never sleeps while busy), 'adaptive' whether or not
    // (it lingers for spinBudgetUs, see #busyLoop)
    if (this.busyPoll && !this.#spinning && !this.closed && (this.#busy() || (this.busyPoll === 'adaptive' && n > 0))) this.#startSpin();
  }

  /** Counts the sends among n fresh completions as settled. */
  #settle(n: number): void {
    const w = this.#wcs;
    let sends = 0;
    for (let i = 0; i < n; i++) {
      // a flushed send-queue WR may come back without its send opcode; only
      // receives (opcode >= 128 on success) do not settle an outstanding send
      if (!(w[i * STRIDE + 2] === 0 && w[i * STRIDE + 3] >= 128)) sends++;
    }
    if (sends) {
      this.#outstanding = Math.max(0, this.#outstanding - sends);
      this.#updateRef();
    }
  }

  #busy(): boolean {
    return this.#outstanding > 0 || this.#userRefs > 0;
  }

  #updateRef(): void {
    if (this.closed) return;
    const busy = this.#busy();
    // a post while 'adaptive' sleeps with work outstanding polls again too:
    // new work is what the spin is for
    if (this.busyPoll && busy && !this.#spinning) this.#startSpin();
    // While spinning the channel is not watched (the poll handle is
    // stopped, so its ref keeps nothing alive) and the setImmediate loop
    // keeps the process alive: the ref matters only once the CQ sleeps
    // again, and #sleep() sets it then. A closed loop at QD1 (the
    // transport's client: ref on post, unref on the answer) would otherwise
    // make two Node-API calls per round trip for nothing (each 5-40 us
    // under emulation, measured 2026-12-08)
    if (!this.#spinning) this.#syncRef(busy);
  }

  /** The poll handle's ref to `busy`: native code only on a change (every post and every batch with sends gets to #updateRef). */
  #syncRef(busy: boolean): void {
    if (busy === this.#handleRef) return;
    this.#handleRef = busy;
    if (busy) this.handle.ref();
    else this.handle.unref();
  }

  /** Stops watching the channel and polls from the event loop. */
  #startSpin(): void {
    if (this.#failure) return;
    this.#spinning = true;
    this.#emptySince = 0;
    this.#emptyPolls = 0;
    this.handle.spin();
    this.#busyLoop();
  }

  #busyLoop(): void {
    this.#busyTimer = setImmediate(() => {
      this.#busyTimer = undefined;
      if (this.closed) return;
      const wasBusy = this.#busy();
      const n = this.handle.poll(this.#spinUs);
      if (n) {
        this.#emptySince = 0;
        this.#emptyPolls = 0;
        this.#deliver(n);
        if (this.closed) return;
      }
      if (!this.#busy()) {
        // the work ran out in this poll's completions: one more turn first.
        // A closed loop posts its next work in the microtasks of this
        // completion (the transport's client at QD1), and sleeping now would
        // cost an arm, a channel watch and its removal again per round
        // trip
        if (n && wasBusy) {
          this.#busyLoop();
          return;
        }
        // true: nothing outstanding, sleep. 'adaptive' lingers: it polls on
        // until spinBudgetUs pass without a completion (the clock below),
        // outstanding work or not, so a server between requests (nothing
        // of its own outstanding: its answers are unsignaled) takes the
        // next one from a poll instead of a channel wakeup (a read, a
        // re-arm and an epoll wakeup per request), and an idle one sleeps
        // within the budget
        if (this.busyPoll !== 'adaptive') {
          this.#sleep();
          return;
        }
      }
      // the clock only every CLOCK_EVERY empty polls: where the clocksource
      // has no vDSO (the TCG guest) each read is a syscall, and strace found
      // ~3 clock_gettime per turn of this loop (2026-12-07)
      if (!n && (++this.#emptyPolls & (CLOCK_EVERY - 1)) === 0) {
        const now = performance.now();
        if (this.#emptySince === 0) this.#emptySince = now;
        else if (now - this.#emptySince > this.#budgetMs) {
          this.#sleep();
          return;
        } else if (now - this.#emptySince > ARM_CHECK_MS) {
          // busyPoll true: arm once in a while, or a removed device would go unseen
          this.#emptySince = now;
          if (!this.#armCheck()) return;
        }
      }
      this.#busyLoop();
    });
  }

  /**
   * Back to the channel: arm, poll once more (native idle()), watch. What
   * that last poll found is delivered; if it leaves work outstanding the CQ
   * polls again.
   */
  #sleep(): void {
    this.#spinning = false;
    this.#syncRef(this.#busy());
    const n = this.handle.idle();
    if (n < 0) {
      this.#channelFailed(-n);
      return;
    }
    if (n) this.#fromChannel(n);
  }

  /** Arms (so a removed device shows as EIO) and keeps polling; false when the CQ failed. */
  #armCheck(): boolean {
    const n = this.handle.idle();
    this.handle.spin();
    if (n < 0) {
      this.#spinning = false;
      this.#channelFailed(-n);
      return false;
    }
    if (n) this.#deliver(n);
    return !this.closed;
  }

  protected release(): void {
    // the native close first: when it fails (EBUSY: a QP still uses this
    // CQ) the CQ stays open, and stays delivered to its listeners
    this.handle.close();
    if (this.#busyTimer) clearImmediate(this.#busyTimer);
    this.#busyTimer = undefined;
    this.#events.removeAllListeners();
  }
}
