/**
 * The transport client (docs/protocol.md): one session over one or more
 * paths. write(header, data) and read(header, into) each cost two RDMA
 * messages and resolve with the handler's status and response header.
 * Permits (= server chunks, kept by the chunk ledger) bound the queue depth;
 * further IOs wait in FIFO order. A path that fails hands its IOs to
 * another path (same chunk, same seq: the server runs each IO once); with
 * no path left, they wait for one to come back (reconnectWaitMs) and then
 * settle with their real outcome.
 */
import { EventEmitter } from 'events';
import { allocate, MemoryRegion, MemoryWindow, SendWorkRequest, WorkCompletion } from '../verbs';
import { Access } from '../verbs/constants';
import { ChunkLedger } from './chunk-ledger';
import { checkClientOptions, checkPathOptions, ClientOptions, ClientPathOptions, IoOptions, IoResult } from './client-options';
import { ClientPath, DevState, PathHost, portState } from './client-path';
import { Conn, DeviceCache, wrId, WrKind } from './conn';
import { abortError, Executed, isFatalForPath, TransportError } from './errors';
import type { TransportClientEvents } from './events';
import { PathIterator, PathSelector, PolicyName, DEFAULT_POLICY } from './policy';
import * as P from './protocol';
import { ProtocolError } from './protocol';
import { clientMetrics } from './stats';
import type { ClientSessionStats, PathUpReason, SessionUpReason } from './types';
import { windowTypeFor, WindowTypeOption } from './windows';

const EMPTY = Buffer.alloc(0);

/**
 * An IO fails over at most this often. Each failover needs a path failure,
 * so only a request that takes its path down every time reaches it; then it
 * fails (ECONNABORTED, executed 'unknown') instead of bouncing forever.
 */
const MAX_FAILOVERS = 32;

interface Io {
  kind: 'write' | 'read';
  header: Uint8Array;
  data: Uint8Array;
  /** read: requested length */
  len: number;
  /** the ledger's chunk and seq; -1 / 0 while queued */
  chunk: number;
  seq: number;
  signal?: AbortSignal;
  onAbort?: () => void;
  resolve: (r: IoResult) => void;
  reject: (e: Error) => void;
  settled: boolean;
  aborted: boolean;
  iter?: PathIterator<ClientPath>;
  failovers: number;
  /** the path the request was posted on (its counters), until answered or failed */
  path?: ClientPath;
  sendsPending: number;
  rsp?: { status: number; header: Buffer; length: number };
  mw?: MemoryWindow;
  mwDev?: DevState;
  /** read destination: zero-copy region or the staging slot */
  zeroCopy: boolean;
  /** while no path is connected: fails the IO after reconnectWaitMs */
  waitTimer?: NodeJS.Timeout;
}

/** Connects a session over `opts.paths`; resolves once at least one path is connected. */
export async function connect(opts: ClientOptions): Promise<TransportClient> {
  const c = new TransportClient(opts);
  await c.start();
  return c;
}

// typed listener methods over the event map in events.ts (declaration merging:
// they replace EventEmitter's untyped ones; emit stays EventEmitter's)
export interface TransportClient {
  on<K extends keyof TransportClientEvents>(event: K, listener: (...args: TransportClientEvents[K]) => void): this;
  once<K extends keyof TransportClientEvents>(event: K, listener: (...args: TransportClientEvents[K]) => void): this;
  off<K extends keyof TransportClientEvents>(event: K, listener: (...args: TransportClientEvents[K]) => void): this;
  addListener<K extends keyof TransportClientEvents>(event: K, listener: (...args: TransportClientEvents[K]) => void): this;
  removeListener<K extends keyof TransportClientEvents>(event: K, listener: (...args: TransportClientEvents[K]) => void): this;
  prependListener<K extends keyof TransportClientEvents>(event: K, listener: (...args: TransportClientEvents[K]) => void): this;
  prependOnceListener<K extends keyof TransportClientEvents>(event: K, listener: (...args: TransportClientEvents[K]) => void): this;
}
export class TransportClient extends EventEmitter {
  #sessionId: string;
  #params: P.SessionParams | undefined;
  #queueDepth = 0;
  #maxIo = 0;
  readonly #opts: ClientOptions;
  /** the live paths (removed ones leave the list) */
  #paths: ClientPath[];
  readonly #pathSlots: number;
  readonly #windowType: WindowTypeOption;
  /** slot -> the highest reconnect count a removed path used in it (the server refuses lower ones) */
  readonly #slotReconnect = new Map<number, number>();
  #sessionUp = false;
  #sessionCounters = { downs: 0, rejoins: 0 };
  /** the next session-up reason when a path connects while the session is down */
  #upReason: SessionUpReason = 'connected';
  readonly #selector: PathSelector<ClientPath>;
  readonly #devices = new DeviceCache();
  readonly #devs = new Map<string, DevState>();
  readonly #userBufs = new Map<ArrayBuffer, Map<string, MemoryRegion>>();
  #staging: ArrayBuffer | undefined;
  #stagingBuf: Buffer = EMPTY;
  /** the chunks (permits), their IOs and seqs, and every path's keys; after the first accept */
  #ledger: ChunkLedger<Io> | undefined;
  readonly #waiting: Io[] = [];
  #established = false;
  #closing = false;
  #closed = false;
  #fatal: Error | undefined;
  #drained: (() => void) | undefined;
  readonly #host: PathHost;

  constructor(opts: ClientOptions) {
    super();
    const checked = checkClientOptions(opts);
    this.#sessionId = checked.sessionId;
    this.#pathSlots = checked.pathSlots;
    this.#windowType = checked.windowType;
    this.#opts = opts;
    this.#paths = opts.paths.map((p, i) => new ClientPath(i, p, opts.reconnect));
    this.#selector = new PathSelector(opts.policy ?? DEFAULT_POLICY, () => this.#paths);
    this.#host = this.#pathHost();
  }

  /** The session id; a new one after a rejoin with a restarted server. */
  get sessionId(): string {
    return this.#sessionId;
  }

  /** true while at least one path is connected */
  get sessionUp(): boolean {
    return this.#sessionUp;
  }

  get params(): P.SessionParams | undefined {
    return this.#params;
  }

  /** The permits this client uses: min(server queue depth, maxQueueDepth). */
  get queueDepth(): number {
    return this.#queueDepth;
  }

  get maxIoSize(): number {
    return this.#maxIo;
  }

  get policy(): PolicyName {
    return this.#selector.policy;
  }

  set policy(p: PolicyName) {
    this.#selector.policy = p;
  }

  #log(line: string): void {
    this.#opts.log?.(line);
    this.emit('log', line);
  }

  /** @internal */
  async start(): Promise<void> {
    const results = await Promise.allSettled(this.#paths.map((p) => this.#connectPath(p)));
    const ok = results.filter((r) => r.status === 'fulfilled').length;
    if (ok === 0) {
      const err = (results[0] as PromiseRejectedResult).reason as Error;
      await this.close({ drain: false });
      throw err;
    }
    results.forEach((r, i) => {
      if (r.status === 'rejected') this.#pathFailed(this.#paths[i], r.reason as Error);
    });
  }

  stats(): ClientSessionStats {
    const l = this.#ledger;
    return {
      sessionId: this.#sessionId, state: this.#closed ? 'closed' : this.#sessionUp ? 'up' : 'down', queueDepth: this.#queueDepth,
      waiting: this.#waiting.length, unsettled: l?.unsettledCount ?? 0, inflight: l?.inflightCount ?? 0,
      downs: this.#sessionCounters.downs, rejoins: this.#sessionCounters.rejoins, paths: this.#paths.map((p) => p.stats()),
    };
  }

  /** stats() as Prometheus text exposition. */
  prometheus(): string {
    return clientMetrics(this.stats());
  }

  /**
   * Adds a path at run time in a free slot (see pathSlots); resolves with its
   * index once it is connected. A path that cannot connect is not added.
   */
  async addPath(opts: ClientPathOptions): Promise<number> {
    checkPathOptions(opts);
    if (this.#closing || this.#closed) throw new TransportError('ECLOSED', 'the client is closed');
    if (this.#fatal) throw this.#fatal;
    let slot = 0;
    while (slot < this.#pathSlots && this.#paths.some((p) => p.id === slot)) slot++;
    if (slot >= this.#pathSlots) throw new TransportError('ENOSPC', `every one of the session's ${this.#pathSlots} path slots is in use (see pathSlots)`);
    const path = new ClientPath(slot, opts, this.#opts.reconnect);
    const last = this.#slotReconnect.get(slot);
    if (last !== undefined) path.reconnectCount = path.firstReconnect = last + 1;
    this.#paths.push(path);
    try {
      await this.#connectPath(path);
    } catch (err) {
      path.removed = true;
      path.state = 'closed';
      path.timer.cancel();
      this.#forget(path);
      throw err;
    }
    return slot;
  }

  /**
   * Removes a path at run time: no new IOs go to it, its in-flight IOs get
   * up to drainTimeoutMs (default 5000) to complete, the rest fail over to
   * the other paths (RESUME: executed once), then the path is disconnected.
   * The last path of a session cannot be removed (close the client instead).
   */
  async removePath(index: number, opts: { drainTimeoutMs?: number } = {}): Promise<void> {
    const path = this.#paths.find((p) => p.id === index);
    if (!path || path.removed) throw new RangeError(`no path ${index}`);
    if (this.#paths.filter((p) => !p.removed).length <= 1) throw new TransportError('EBUSY', 'the last path of a session cannot be removed: close the client');
    path.removed = true;
    path.timer.cancel();
    path.abortConnect?.();
    if (path.state === 'connected') {
      path.state = 'draining';
      this.#log(`${path.name}: draining for removal`);
      const until = Date.now() + (opts.drainTimeoutMs ?? 5000);
      while (path.state === 'draining' && path.inflight > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 5));
    }
    this.#pathFailed(path, new TransportError('ECONNRESET', 'the path was removed'));
    path.state = 'closed';
    this.#forget(path);
    this.#log(`${path.name}: removed`);
    this.emit('path', path.id, 'removed');
  }

  #forget(path: ClientPath): void {
    const i = this.#paths.indexOf(path);
    if (i >= 0) this.#paths.splice(i, 1);
    this.#ledger?.dropKeys(path.id);
    this.#slotReconnect.set(path.id, Math.max(path.reconnectCount, this.#slotReconnect.get(path.id) ?? -1));
  }

  // ---------------------------------------------------------------- memory

  #devState(name: string): DevState {
    let d = this.#devs.get(name);
    if (d) return d;
    const device = this.#devices.get(name);
    const windowType = windowTypeFor(device, this.#windowType);
    d = { pd: device.allocPd(), staging: undefined, windowType, freeMws: [] };
    this.#devs.set(name, d);
    return d;
  }

  /** The device's registration of the staging slots (after the first accept). */
  #staged(d: DevState): MemoryRegion {
    d.staging ??= d.pd.registerMemory(this.#staging!, Access.LOCAL_WRITE | Access.MW_BIND);
    return d.staging;
  }

  /**
   * Registered memory for zero-copy IO: data written from it and reads into
   * it skip the staging copy. Registered lazily on each device used.
   */
  allocBuffer(size: number): Buffer {
    if (!Number.isInteger(size) || size < 1) throw new RangeError('size must be a positive integer');
    if (this.#closing || this.#closed) throw new TransportError('ECLOSED', 'the client is closed');
    const mem = allocate(size);
    this.#userBufs.set(mem, new Map());
    return Buffer.from(mem, 0, size);
  }

  /** The MR covering `view` on `dev`, when view lies in an allocBuffer() buffer. */
  #userMr(view: Uint8Array, devName: string, dev: DevState): MemoryRegion | undefined {
    const regs = this.#userBufs.get(view.buffer as ArrayBuffer);
    if (!regs) return undefined;
    let mr = regs.get(devName);
    if (!mr) {
      mr = dev.pd.registerMemory(view.buffer as ArrayBuffer, Access.LOCAL_WRITE | Access.MW_BIND);
      regs.set(devName, mr);
    }
    return mr;
  }

  // ------------------------------------------------------------ paths

  /** What client-path.ts needs of the session, over the private fields. */
  #pathHost(): PathHost {
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const self = this;
    return {
      get sessionId() { return self.#sessionId; },
      get established() { return self.#established; },
      get closing() { return self.#closing; },
      get ledger() { return self.#ledger as ChunkLedger<unknown> | undefined; },
      get params() { return self.#params; },
      get queueDepth() { return self.#queueDepth; },
      pathSlots: this.#pathSlots,
      opts: this.#opts,
      devices: this.#devices,
      devState: (name) => this.#devState(name),
      staged: (d) => this.#staged(d),
      accepted: (acc) => (this.#params ? this.#checkSame(acc) : this.#adopt(acc)),
      credentials: (path) => {
        const c = this.#opts.credentials;
        if (typeof c !== 'function') return c;
        return P.checkCredentials(c({ sessionId: this.#sessionId, pathIndex: path.id, reconnectCount: path.reconnectCount }));
      },
      onRecv: (path, conn, ctx, wc, slot) => this.#onRecv(path, conn, ctx, wc, slot),
      onSendDone: (path, c) => this.#onSendDone(path, c),
      pathFailed: (path, err) => this.#pathFailed(path, err),
    };
  }

  async #connectPath(path: ClientPath): Promise<void> {
    const acc = await path.connect(this.#host);
    this.#pathUp(path, acc);
  }

  #adopt(acc: P.AcceptData): void {
    if (this.#opts.requireStrict && !acc.strict) throw new TransportError('EPERM', 'the server runs relaxed mode and requireStrict is set');
    this.#params = { queueDepth: acc.queueDepth, chunkSize: acc.chunkSize, maxHeaderSize: acc.maxHeaderSize, strict: acc.strict };
    this.#queueDepth = Math.min(acc.queueDepth, this.#opts.maxQueueDepth ?? 512);
    this.#maxIo = acc.maxIoSize;
    this.#staging = allocate(this.#queueDepth * acc.chunkSize);
    this.#stagingBuf = Buffer.from(this.#staging);
    this.#ledger = new ChunkLedger<Io>(this.#queueDepth, this.#pathSlots);
  }

  #checkSame(acc: P.AcceptData): void {
    const p = this.#params!;
    if (acc.queueDepth !== p.queueDepth || acc.chunkSize !== p.chunkSize || acc.maxHeaderSize !== p.maxHeaderSize || acc.strict !== p.strict) {
      const err = new ProtocolError('pool-changed', `the session's pool changed: ${JSON.stringify(p)} -> ${JSON.stringify(acc)}`);
      this.#failSession(err);
      throw err;
    }
  }

  /** The info exchange finished: the path carries IOs; waiting and parked IOs and unsettled chunks go to it. */
  #pathUp(path: ClientPath, acc: P.AcceptData): void {
    const conn = path.conn;
    // failed between the end of its info exchange and now: already handled
    if (!conn || (path.state !== 'connecting' && path.state !== 'reconnecting')) return;
    const ledger = this.#ledger!;
    path.state = 'connected';
    if (path.reconnectCount > path.firstReconnect) path.counters.reconnectsOk++;
    path.timer.connected();
    this.#established = true;
    conn.startHeartbeat(acc.hbIntervalMs, acc.hbMissedMax, () => this.#pathFailed(path, new TransportError('ETIMEDOUT', 'heartbeats missed')));
    this.#log(`${path.name}: connected on ${path.device} (${this.#params!.strict ? 'strict' : 'relaxed'}, queue depth ${this.#queueDepth})`);
    this.emit('path', path.id, 'connected');
    const upReason: PathUpReason = path.everUp ? 'reconnect' : 'first-connect';
    path.everUp = true;
    this.emit('path-up', path.id, upReason);
    if (!this.#sessionUp) {
      this.#sessionUp = true;
      const reason = this.#upReason;
      this.#upReason = 'path-reconnected';
      for (const io of this.#waiting) this.#clearWait(io);
      this.#log(`session up: ${reason}`);
      this.emit('session-up', reason);
    }
    for (const c of ledger.chunksIn('unsettled')) this.#sendResume(path, c, ledger.ask(c));
    if (this.#params!.strict) this.#claimChunks(path);
    for (const c of ledger.chunksIn('parked')) this.#moveTo(ledger.io(c)!, path);
    this.#pump();
  }

  /**
   * Strict, a path (re)connected: a chunk that carried an IO on another path
   * while this path's info exchange ran has no usable key here (its key was
   * dropped, or may be stale: 7.3). Free chunks without a key on the path
   * are asked for on it with RESUME_REQ: the answer binds one there, and the
   * key the chunk has on its other path stays valid. Until then they are out
   * of the pool. Without this a path that reconnects under load would get
   * no chunks, and carry no IOs.
   */
  #claimChunks(path: ClientPath): void {
    const l = this.#ledger!;
    for (const c of l.withdraw((x) => !l.hasKey(path.id, x))) this.#sendResume(path, c, l.ask(c));
  }

  #pathFailed(path: ClientPath, err: Error): void {
    if (path.state === 'closed' || path.state === 'dead') return;
    const wasConnected = path.state === 'connected' || path.state === 'draining';
    path.state = this.#closing || path.removed ? 'closed' : 'reconnecting';
    // port events stay watched until the next connect: a PORT_ERR after the
    // flush errors still holds the reconnects back
    if (this.#closing || path.removed) path.unwatch?.();
    else if (path.device && path.portNum && !path.portDown && portState(this.#devices.get(path.device), path.portNum) === 'DOWN') {
      path.markPortDown(this.#host, path.device, path.portNum);
    }
    path.teardown(err);
    if (wasConnected) {
      path.counters.downs++;
      this.#log(`${path.name}: down: ${err.message}`);
      this.emit('path', path.id, 'down', err);
      this.emit('path-down', path.id, err);
      path.timer.disconnected();
    } else {
      path.counters.reconnectsFail += path.reconnectCount > path.firstReconnect ? 1 : 0;
      if (!this.#closing && !path.removed) this.#log(`${path.name}: connect failed: ${err.message}`);
    }
    // hand its IOs to other paths, or park them until one comes back
    const ledger = this.#ledger;
    if (ledger) {
      for (const c of ledger.pathFailed(path.id)) {
        const io = ledger.io(c)!;
        this.#detach(io);
        this.#failover(io);
      }
      if (!this.#closing) this.#reclaimChunks();
    }
    if (wasConnected) this.#checkSessionDown(err);
    if (this.#closing || path.removed) return;
    if (err instanceof TransportError && err.code === 'ESTALE') {
      if (this.#opts.rejoinOnServerRestart && !this.#fatal) {
        this.#rejoin(path);
        return;
      }
      this.#failSession(new TransportError('ESTALE', 'the server no longer knows this session'));
      return;
    }
    if (isFatalForPath(err)) {
      this.#pathDead(path, err, err.message);
      return;
    }
    const delay = path.timer.schedule(() => {
      if (path.portStillDown(this.#devices)) {
        // a connect over a port that is down cannot work: count the attempt, wait again
        this.#pathFailed(path, new TransportError('ENETDOWN', `${path.portDown!.dev} port ${path.portDown!.port} is not back yet`));
        return;
      }
      path.reconnectCount++;
      this.#connectPath(path).catch((e) => this.#pathFailed(path, e as Error));
    });
    if (delay === undefined) this.#pathDead(path, err, 'reconnect attempts exhausted');
  }

  #pathDead(path: ClientPath, err: Error, why: string): void {
    path.state = 'dead';
    this.#log(`${path.name}: dead: ${why}`);
    this.emit('path', path.id, 'dead', err);
    this.#failIfNoPaths();
  }

  /** The last connected path went down: session-down; waiting IOs wait at most reconnectWaitMs. */
  #checkSessionDown(err: Error): void {
    if (!this.#sessionUp || this.#paths.some((p) => p.connected)) return;
    this.#sessionUp = false;
    this.#sessionCounters.downs++;
    this.#upReason = 'path-reconnected';
    this.#log(`session down: ${err.message}`);
    this.emit('session-down', err);
    if (!this.#closing) for (const io of this.#waiting) this.#armWait(io);
  }

  /**
   * An IO with no connected path (queued, or parked in the ledger): fails
   * after reconnectWaitMs unless a path comes back. A parked IO whose
   * request may have run says so (executed 'unknown'); its chunk stays
   * unsettled until a RESUME answers.
   */
  #armWait(io: Io): void {
    const ms = this.#opts.reconnectWaitMs ?? 30000;
    if (io.waitTimer || ms === Infinity) return;
    io.waitTimer = setTimeout(() => {
      io.waitTimer = undefined;
      const err = new TransportError('ETIMEDOUT', `no path of the session came back within reconnectWaitMs (${ms} ms)`);
      const i = this.#waiting.indexOf(io);
      if (i >= 0) {
        this.#waiting.splice(i, 1);
        this.#reject(io, err.forIo(false));
      } else if (io.chunk >= 0 && this.#ledger?.io(io.chunk) === io && this.#ledger.state(io.chunk) === 'parked') {
        this.#giveUp(io, err);
      }
    }, ms);
  }

  #clearWait(io: Io): void {
    if (!io.waitTimer) return;
    clearTimeout(io.waitTimer);
    io.waitTimer = undefined;
  }

  /**
   * The server answered ESTALE: it restarted (or ended the session). An IO
   * of the old session whose request may have reached it cannot be proven
   * executed once: it fails with ESTALE (executed 'unknown'). IOs that never
   * reached it go back to the queue for the new session. Then every path
   * connects again under a new session id (newSession set), and the first
   * that succeeds emits session-up with reason 'new-server-session'.
   */
  #rejoin(from: ClientPath): void {
    const err = new TransportError('ESTALE', 'the server restarted and no longer knows the session: the IO may or may not have run');
    const ledger = this.#ledger!;
    const again: Io[] = [];
    for (const io of ledger.ios()) {
      this.#detach(io);
      if (ledger.executed(io.chunk) === false && !io.aborted && !io.settled) again.push(io);
      else this.#reject(io, err.forIo('unknown'));
    }
    ledger.reset();
    again.sort((a, b) => a.seq - b.seq);
    for (const io of again) {
      io.chunk = -1;
      io.seq = 0;
      io.iter = undefined;
      io.failovers = 0;
    }
    this.#waiting.unshift(...again);
    if (!this.#sessionUp) for (const io of again) this.#armWait(io);
    const old = this.#sessionId;
    this.#sessionId = P.randomSessionId();
    this.#sessionCounters.rejoins++;
    this.#established = false;
    this.#upReason = 'new-server-session';
    this.#slotReconnect.clear();
    this.#log(`session ${old}: the server does not know it: starting session ${this.#sessionId}`);
    // every other path belongs to the old session: cut it, it reconnects into the new one
    for (const p of this.#paths) {
      if (p === from || p.state === 'dead' || p.state === 'closed') continue;
      if (p.conn || p.state === 'connected') this.#pathFailed(p, new TransportError('ECONNRESET', 'the session is replaced by a new one'));
    }
    for (const p of this.#paths) {
      p.reconnectCount = 0;
      p.firstReconnect = 0;
      p.timer.cancel();
    }
    for (const p of this.#paths) {
      // a connect under way for the old id fails and retries on its own
      if (p.state !== 'reconnecting' || p.connecting) continue;
      this.#connectPath(p).catch((e) => this.#pathFailed(p, e as Error));
    }
  }

  /** When every path is dead, the session fails. */
  #failIfNoPaths(): void {
    if (this.#paths.some((p) => p.state !== 'dead' && p.state !== 'closed')) return;
    this.#failSession(new TransportError('ECONNABORTED', 'every path of the session is dead'));
  }

  /** The session cannot go on: every IO fails with err, saying whether it may have run. */
  #failSession(err: Error): void {
    if (this.#fatal) return;
    this.#fatal = err;
    const te = err instanceof TransportError ? err : undefined;
    for (const io of this.#waiting.splice(0)) this.#reject(io, te ? te.forIo(false) : err);
    const ledger = this.#ledger;
    if (ledger) {
      for (const io of ledger.ios()) {
        if (io.settled) continue;
        this.#reject(io, te ? te.forIo(ledger.executed(io.chunk)) : err);
      }
    }
    // 'error' without a listener would throw from inside an rdma_cm callback
    if (this.listenerCount('error') > 0) this.emit('error', err);
  }

  // ------------------------------------------------------------------ IO

  /** Writes `data` with `header` to the server; resolves with the handler's status and response header. */
  write(header: Uint8Array, data: Uint8Array, opts: IoOptions = {}): Promise<IoResult> {
    return this.#submit('write', header, data, data?.length, opts);
  }

  /** Reads into `into` (up to its length); resolves with status, response header and the length read. */
  read(header: Uint8Array, into: Uint8Array, opts: IoOptions = {}): Promise<IoResult> {
    return this.#submit('read', header, into, into?.length, opts);
  }

  #submit(kind: 'write' | 'read', header: Uint8Array, data: Uint8Array, len: number, opts: IoOptions): Promise<IoResult> {
    if (!(header instanceof Uint8Array)) return Promise.reject(new TypeError('header must be a Uint8Array'));
    if (!(data instanceof Uint8Array)) return Promise.reject(new TypeError(`${kind === 'write' ? 'data' : 'into'} must be a Uint8Array`));
    if (this.#closing || this.#closed) return Promise.reject(new TransportError('ECLOSED', 'the client is closing', false));
    if (this.#fatal) return Promise.reject(this.#fatal instanceof TransportError ? this.#fatal.forIo(false) : this.#fatal);
    const p = this.#params!;
    if (header.length > p.maxHeaderSize) return Promise.reject(new TransportError('EMSGSIZE', `header of ${header.length} bytes exceeds maxHeaderSize ${p.maxHeaderSize}`, false));
    if (len > this.#maxIo) return Promise.reject(new TransportError('EMSGSIZE', `${len} bytes exceed maxIoSize ${this.#maxIo}`, false));
    if (opts.signal?.aborted) return Promise.reject(abortError(opts.signal.reason, false));
    return new Promise<IoResult>((resolve, reject) => {
      const io: Io = {
        kind, header, data, len, chunk: -1, seq: 0, signal: opts.signal, resolve, reject,
        settled: false, aborted: false, failovers: 0, sendsPending: 0, zeroCopy: false,
      };
      if (io.signal) {
        io.onAbort = () => this.#abort(io);
        io.signal.addEventListener('abort', io.onAbort, { once: true });
      }
      this.#waiting.push(io);
      if (!this.#sessionUp) this.#armWait(io);
      this.#pump();
    });
  }

  /** The caller's signal fired: the IO rejects now; its chunk returns once it is known not to run any more. */
  #abort(io: Io): void {
    if (io.settled) return;
    const i = this.#waiting.indexOf(io);
    if (i >= 0) {
      this.#waiting.splice(i, 1);
      this.#reject(io, abortError(io.signal?.reason, false));
      return;
    }
    const ledger = this.#ledger!;
    io.aborted = true;
    this.#reject(io, abortError(io.signal?.reason, ledger.executed(io.chunk)));
    // posted or resuming: the answer settles the chunk; parked: cut off now
    if (ledger.state(io.chunk) === 'parked') this.#cutOff(io);
  }

  #reject(io: Io, err: Error): void {
    if (io.settled) return;
    io.settled = true;
    this.#clearWait(io);
    if (io.onAbort) io.signal?.removeEventListener('abort', io.onAbort);
    io.reject(err);
    this.#checkDrained();
  }

  #resolve(io: Io, r: IoResult): void {
    if (io.settled) return;
    io.settled = true;
    this.#clearWait(io);
    if (io.onAbort) io.signal?.removeEventListener('abort', io.onAbort);
    io.resolve(r);
  }

  /** Starts waiting IOs while permits and a connected path exist. */
  #pump(): void {
    const ledger = this.#ledger;
    if (!ledger) return;
    if (this.#params!.strict) return this.#pumpStrict(ledger);
    while (this.#waiting.length && ledger.freeCount && this.#paths.some((p) => p.connected)) {
      const io = this.#start(ledger, 0);
      io.iter = this.#selector.iterate((p) => ledger.hasKey(p.id, io.chunk));
      const path = io.iter.next();
      if (path) this.#post(io, path);
      else this.#armWait(io); // parked, never sent: the next path up takes it
    }
  }

  /**
   * Strict mode: a chunk has a key only on the path of its last response
   * (docs/protocol.md §7.3), so the policy picks the path first, then a free
   * chunk keyed on it. A failover asks another path with RESUME_REQ, which
   * needs no key there: the IO's iterator takes any connected path.
   */
  #pumpStrict(ledger: ChunkLedger<Io>): void {
    // where each candidate's free keyed chunk is (select() only returns a
    // path its test accepted, in this same call)
    const at: number[] = [];
    while (this.#waiting.length && ledger.freeCount) {
      const path = this.#selector.select(undefined, (p) => (at[p.id] = ledger.findFree((c) => ledger.hasKey(p.id, c))) >= 0);
      if (!path) return; // no key anywhere: a connect or a RESUME answer brings one
      const io = this.#start(ledger, at[path.id]);
      io.iter = this.#selector.iterate();
      io.iter.markTried(path);
      this.#post(io, path);
    }
  }

  /** Takes the next waiting IO and the free chunk at free-list index `at`. */
  #start(ledger: ChunkLedger<Io>, at: number): Io {
    const io = this.#waiting.shift()!;
    this.#clearWait(io);
    const { chunk, seq } = ledger.start(io, at);
    io.chunk = chunk;
    io.seq = seq;
    this.#stage(io);
    return io;
  }

  /** Puts the request into the chunk's staging slot (once: failover re-posts it as is). */
  #stage(io: Io): void {
    const p = this.#params!;
    const base = io.chunk * p.chunkSize;
    const st = this.#stagingBuf;
    io.zeroCopy = this.#userBufs.has(io.data.buffer as ArrayBuffer);
    if (io.kind === 'write') {
      // zero-copy: [header | trailer] at the slot start, sent after the user's data
      const hdrAt = io.zeroCopy ? base : base + io.data.length;
      if (!io.zeroCopy) st.set(io.data, base);
      st.set(io.header, hdrAt);
      P.writeWriteTrailer(st, hdrAt + io.header.length, { hdrLen: io.header.length, dataLen: io.data.length, seq: BigInt(io.seq) });
    } else {
      const reqAt = base + p.chunkSize - io.header.length - P.READ_TRAILER_SIZE;
      st.set(io.header, reqAt);
      // the trailer (with the window's rkey) is written when posted
    }
  }

  #post(io: Io, path: ClientPath): void {
    const p = this.#params!;
    const conn = path.conn!;
    const dev = path.dev!;
    const c = io.chunk;
    const ledger = this.#ledger!;
    const key = ledger.key(path.id, c);
    const base = c * p.chunkSize;
    let mw: MemoryWindow | undefined;
    if (io.kind === 'read' && io.len > 0) {
      try {
        // a pooled window may have been closed with a dead connection's QP
        let free = dev.freeMws.pop();
        while (free && free.closed) free = dev.freeMws.pop();
        mw = free ?? dev.pd.allocMemoryWindow(dev.windowType);
      } catch (err) {
        this.#giveUp(io, new TransportError('EIO', `no memory window for the read's destination: ${(err as Error).message}`));
        return;
      }
    }
    this.#clearWait(io);
    ledger.post(c, path.id);
    io.path = path;
    path.inflight++;
    if (path.inflight === 1) conn.ref();
    if (io.kind === 'write') {
      const dataLen = io.data.length;
      const hdrLen = io.header.length;
      let sge;
      if (io.zeroCopy) {
        const mr = this.#userMr(io.data, path.device!, dev)!;
        const off = io.data.byteOffset;
        sge = dataLen ? [mr.sge(off, dataLen), this.#staged(dev).sge(base, hdrLen + P.WRITE_TRAILER_SIZE)] : [this.#staged(dev).sge(base, hdrLen + P.WRITE_TRAILER_SIZE)];
      } else {
        sge = [this.#staged(dev).sge(base, dataLen + hdrLen + P.WRITE_TRAILER_SIZE)];
      }
      io.sendsPending = 1;
      conn.post([{
        opcode: 'RDMA_WRITE_WITH_IMM', wrId: wrId(WrKind.SEND, c), sge, remoteAddr: key.addr, rkey: key.rkey,
        imm: P.encodeRequestImm('write', c, dataLen + hdrLen, p),
      }]);
      return;
    }
    // read: a window over the destination, bound on this path's QP
    const hdrLen = io.header.length;
    const reqAt = p.chunkSize - hdrLen - P.READ_TRAILER_SIZE;
    const wrs: SendWorkRequest[] = [];
    let rkey = 0;
    let addr = 0n;
    if (mw) {
      io.mw = mw;
      io.mwDev = dev;
      const mr = io.zeroCopy ? this.#userMr(io.data, path.device!, dev)! : this.#staged(dev);
      const at = io.zeroCopy ? mr.addr + io.data.byteOffset : this.#staged(dev).addr + base;
      io.sendsPending++;
      if (dev.windowType === 1) {
        // type 1 (rxe): ibv_bind_mw posts the bind ahead of the request
        rkey = conn.bindWindow(mw, mr, at, io.len, Access.REMOTE_WRITE, wrId(WrKind.SEND, c));
        if (rkey === 0) return; // the connection failed: the path fails the IO over
      } else {
        // the bind's new key is chosen here (the next key byte), so the request
        // can carry it and both go out in one post (one doorbell)
        const keyByte = (mw.rkey + 1) & 0xff;
        wrs.push({ opcode: 'BIND_MW', wrId: wrId(WrKind.SEND, c), bind: { mw, mr, addr: at, length: io.len, access: Access.REMOTE_WRITE, keyByte } });
        rkey = ((mw.rkey & 0xffffff00) | keyByte) >>> 0;
      }
      addr = BigInt(at);
    }
    P.writeReadTrailer(this.#stagingBuf, base + reqAt + hdrLen, { hdrLen, len: io.len, seq: BigInt(io.seq), addr, rkey });
    io.sendsPending++;
    wrs.push({
      opcode: 'RDMA_WRITE_WITH_IMM', wrId: wrId(WrKind.SEND, c), sge: [this.#staged(dev).sge(base + reqAt, hdrLen + P.READ_TRAILER_SIZE)],
      remoteAddr: key.addr + BigInt(reqAt), rkey: key.rkey, imm: P.encodeRequestImm('read', c, reqAt + hdrLen, p),
    });
    conn.post(wrs);
  }

  /** The IO leaves its path: counters, the connection's ref, its window (bound on that QP: never reused). */
  #detach(io: Io): void {
    const path = io.path;
    if (path) {
      path.inflight--;
      if (path.inflight === 0) path.conn?.unref();
      io.path = undefined;
    }
    io.sendsPending = 0;
    if (io.mw) {
      io.mw.close();
      io.mw = undefined;
    }
  }

  /** The client gives up on the IO: it rejects with err, saying whether it may have run. */
  #giveUp(io: Io, err: TransportError): void {
    this.#reject(io, err.forIo(this.#ledger!.executed(io.chunk)));
    this.#cutOff(io);
  }

  /**
   * The IO leaves its chunk: one that never reached the server goes back to
   * the pool; one that may have stays unsettled, asked on every connected
   * path, until an answer settles it.
   */
  #cutOff(io: Io): void {
    const ledger = this.#ledger!;
    this.#detach(io);
    ledger.cutOff(io.chunk);
    if (ledger.state(io.chunk) === 'unsettled') {
      for (const path of this.#paths) if (path.connected) this.#sendResume(path, io.chunk, ledger.ask(io.chunk));
    } else {
      this.#checkDrained();
      this.#pump();
    }
  }

  /** The IO's path failed (it is parked): on to another connected path, or it waits for one. */
  #failover(io: Io): void {
    if (io.aborted || io.settled || this.#closing) {
      this.#cutOff(io);
      return;
    }
    if (++io.failovers > MAX_FAILOVERS) {
      this.#giveUp(io, new TransportError('ECONNABORTED', `the IO failed over ${MAX_FAILOVERS} times: each path it was sent on failed`));
      return;
    }
    const next = io.iter?.next() ?? this.#selector.select();
    if (!next) {
      // no path now: wait for one (exactly-once: its outcome is asked there)
      this.#armWait(io);
      return;
    }
    next.counters.failovers++;
    this.#log(`failover: chunk ${io.chunk} seq ${io.seq} -> ${next.name}`);
    this.#moveTo(io, next);
  }

  /**
   * A parked IO goes to `path`. In strict mode, or for a read, the request's
   * copy may have arrived (strict: and invalidated the chunk's key there),
   * and a read must be posted again to get its data: ask first (§7.5). A
   * relaxed write is posted again as is: the server's record replays it.
   */
  #moveTo(io: Io, path: ClientPath): void {
    if (io.aborted || io.settled) {
      this.#cutOff(io);
      return;
    }
    this.#clearWait(io);
    if (this.#params!.strict || io.kind === 'read') this.#sendResume(path, io.chunk, this.#ledger!.resume(io.chunk, path.id));
    else this.#post(io, path);
  }

  #sendResume(path: ClientPath, c: number, seq: number): void {
    if (!path.ctrl || !path.conn) return;
    const off = P.CTRL_MSG_SIZE + c * P.RESUME_SIZE;
    P.encodeResumeReq({ chunk: c, seq: BigInt(seq) }).copy(path.ctrl.buf, off);
    path.conn.post([{ opcode: 'SEND', wrId: wrId(WrKind.SEND, 0xfffffffd), sge: [path.ctrl.mr.sge(off, P.RESUME_SIZE)] }]);
  }

  #onSendDone(path: ClientPath, c: number): void {
    const io = this.#ledger?.io(c);
    if (!io || io.path !== path || io.sendsPending === 0) return;
    io.sendsPending--;
    this.#maybeComplete(io);
  }

  // ------------------------------------------------------------- receive

  #onRecv(path: ClientPath, conn: Conn, ctx: P.ClientMsgContext, wc: WorkCompletion, slot: number): void {
    if (path.conn !== conn) return;
    const p = this.#params!;
    const ledger = this.#ledger!;
    try {
      if (wc.opcodeName === 'RECV_RDMA_WITH_IMM') {
        const imm = P.decodeImm(wc.imm ?? 0, wc.byteLen, 'client', p);
        if (imm.type === 'hb') conn.answerHeartbeat(imm.id);
        else if (imm.type === 'hb-ack') conn.heartbeatAck(imm.id);
        else if (imm.type === 'io-rsp') {
          // a strict response carries the chunk's new key, which an immediate cannot (§5)
          if (p.strict) throw new ProtocolError('imm-rsp-strict', `an immediate-only IO_RSP for chunk ${imm.chunk} in strict mode`);
          this.#onResponse(path, imm.chunk, { status: imm.status, header: EMPTY, length: 0 }, undefined, 'write', undefined);
        }
        else throw new ProtocolError('imm-direction', `${imm.type} imm received by the client`);
        // replaced after the caller's continuation (queued by the resolve
        // above) had its turn to post the next IO; RECV_SLACK spare receives
        // cover the server's messages meanwhile
        queueMicrotask(() => conn.repost(slot));
        return;
      }
      if (wc.opcodeName !== 'RECV') throw new ProtocolError('opcode', `unexpected completion ${wc.opcodeName}`);
      const m = P.decodeClientMessage(conn.recvBytes(slot, wc.byteLen), ctx);
      if (m.type === 'io-rsp') {
        const header = Buffer.from(m.header); // copy: the caller keeps it, the buffer is reposted
        queueMicrotask(() => conn.repost(slot)); // after the caller's continuation, as above
        this.#onResponse(path, m.chunk, { status: m.status, header, length: m.dataLen }, m, m.read ? 'read' : 'write', wc);
        return;
      }
      conn.repost(slot);
      if (m.type === 'info-rsp') path.onInfoRsp(m, ledger as ChunkLedger<unknown>);
      else this.#onResumeRsp(path, m);
    } catch (err) {
      this.#violation(path, err);
    }
  }

  #violation(path: ClientPath, err: unknown): void {
    const reason = err instanceof ProtocolError ? err.reason : 'internal';
    const msg = err instanceof ProtocolError ? err.detail : (err as Error).message;
    this.#log(`${path.name}: protocol violation: ${reason}: ${msg}`);
    this.emit('violation', { pathIndex: path.id, reason, message: msg });
    this.#pathFailed(path, err as Error);
  }

  /** An IO_RSP (m: its message; undefined for an immediate-only one) on `path`. */
  #onResponse(path: ClientPath, c: number, r: { status: number; header: Buffer; length: number }, m: P.IoRsp | undefined, kind: 'write' | 'read', wc: WorkCompletion | undefined): void {
    const ledger = this.#ledger!;
    const v = ledger.onResponse(c, path.id, m ? Number(m.seq) : undefined);
    if (v.kind === 'late') return; // its keys too: a later IO on the chunk may have invalidated them
    if (m) this.#takeKeys(c, m.keys);
    if (v.kind === 'settled') {
      this.#settled();
      return;
    }
    const io = v.io;
    if (kind !== io.kind) throw new ProtocolError('unexpected-response', `${kind} response for a ${io.kind} on chunk ${c}`);
    if (ledger.state(c) === 'resuming') {
      // the answer to our RESUME_REQ: the IO ran. A read still needs its data: post it again here
      if (io.kind === 'read' && io.len > 0 && !io.aborted) {
        this.#post(io, path);
        return;
      }
    } else if (io.kind === 'read') {
      if (r.length > io.len) throw new ProtocolError('data-len', `read response of ${r.length} bytes for a ${io.len}-byte read`);
      const inv = wc?.invalidatedRkey;
      if (io.mw) {
        if (inv !== undefined && inv !== io.mw.rkey) throw new ProtocolError('invalidated-rkey', `the server invalidated rkey ${inv}, the IO's window is ${io.mw.rkey}`);
        if (inv === undefined || io.mw.type === 1) {
          // not invalidated by the server (a type 1 window never is: the
          // kernel refuses it; or rxe reported it under the kernel's flag
          // value): deallocate the window, which is safe in any state and
          // leaves no key behind that a late SEND_WITH_INV could meet
          io.mw.close();
          io.mw = undefined;
          path.wire.invalidations++;
        }
      }
    }
    io.rsp = r;
    this.#maybeComplete(io);
  }

  /**
   * The keys an IO_RSP gives for chunk c, those of another connection
   * generation dropped (§7.4): a response composed before a reconnect must
   * not overwrite the new connection's keys.
   */
  #takeKeys(c: number, keys: P.IoRspKey[]): void {
    const current = keys.filter((k) => this.#paths.some((q) => q.id === k.pathIndex && q.generation === k.generation));
    this.#ledger!.takeKeys(c, current.map((k) => ({ slot: k.pathIndex, rkey: k.rkey })), this.#params!.strict);
  }

  /**
   * Strict, after a path failed: free chunks whose only key was on it are
   * asked for on a connected path (RESUME_REQ for their last IO binds a key
   * there); until the answer they are out of the pool, like cut-off chunks.
   * Chunks already waiting for an answer are asked again in case the failed
   * path was the one asked. With no path connected, the next connect asks.
   */
  #reclaimChunks(): void {
    const ledger = this.#ledger!;
    const live = this.#paths.filter((p) => p.connected);
    if (live.length === 0) return;
    if (this.#params?.strict) ledger.withdraw((c) => !live.some((p) => ledger.hasKey(p.id, c)));
    for (const c of ledger.chunksIn('unsettled')) this.#sendResume(this.#selector.select() ?? live[0], c, ledger.ask(c));
  }

  #maybeComplete(io: Io): void {
    if (!io.rsp || io.sendsPending > 0) return;
    const path = io.path;
    if (path) {
      if (io.kind === 'write') {
        path.counters.writes++;
        path.counters.writeBytes += io.data.length;
      } else {
        path.counters.reads++;
        path.counters.readBytes += io.rsp.length;
      }
      path.inflight--;
      if (path.inflight === 0) path.conn?.unref();
      io.path = undefined;
    }
    if (io.mw) {
      if (io.mw.type === 1) io.mw.close(); // never reused: see #onResponse
      else io.mwDev!.freeMws.push(io.mw);
      io.mw = undefined;
    }
    const r = io.rsp;
    if (io.kind === 'read' && !io.zeroCopy && r.length > 0 && !io.aborted) {
      const base = io.chunk * this.#params!.chunkSize;
      io.data.set(this.#stagingBuf.subarray(base, base + r.length));
    }
    this.#ledger!.complete(io.chunk);
    this.#resolve(io, { status: r.status, header: r.header, length: io.kind === 'read' ? r.length : 0 });
    this.#checkDrained();
    this.#pump();
  }

  #onResumeRsp(path: ClientPath, m: P.ResumeRsp): void {
    const ledger = this.#ledger!;
    const c = m.chunk;
    const v = ledger.onResumeRsp(c, path.id, Number(m.seq));
    if (v.kind === 'late') return;
    ledger.setKey(path.id, c, m.rkey);
    if (v.kind === 'settled') {
      this.#settled();
      return;
    }
    // the IO never reached the server: post it here with the key just bound,
    // unless it was aborted meanwhile (then it never runs: its chunk goes
    // back to the pool)
    if (v.io.aborted || v.io.settled) {
      ledger.release(c);
      this.#settled();
    } else {
      this.#post(v.io, path);
    }
  }

  /** A chunk came back to the pool. */
  #settled(): void {
    this.#checkDrained();
    this.#pump();
  }

  // ---------------------------------------------------------------- close

  #checkDrained(): void {
    if (!this.#drained) return;
    const ledger = this.#ledger;
    if (this.#waiting.length || ledger?.unsettledCount) return;
    if (ledger?.ios().some((io) => !io.settled)) return;
    this.#drained();
  }

  /**
   * Closes the session. drain (default): new IOs are refused, queued and
   * in-flight ones finish first (at most drainTimeoutMs, default 30 s).
   * Otherwise they fail at once with ECLOSED, saying whether they may have run.
   */
  async close(opts: { drain?: boolean; drainTimeoutMs?: number } = {}): Promise<void> {
    if (this.#closed) return;
    const drain = (opts.drain ?? true) && !this.#fatal && this.#paths.some((p) => p.connected);
    this.#closing = true;
    if (drain) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, opts.drainTimeoutMs ?? 30000);
        this.#drained = () => {
          clearTimeout(timer);
          resolve();
        };
        this.#checkDrained();
      });
      this.#drained = undefined;
    }
    const err = new TransportError('ECLOSED', 'the client was closed before the IO completed');
    for (const io of this.#waiting.splice(0)) this.#reject(io, err.forIo(false));
    const ledger = this.#ledger;
    if (ledger) for (const io of ledger.ios()) this.#reject(io, err.forIo(ledger.executed(io.chunk)));
    // tell the server (best effort): it frees the session at once
    const path = this.#paths.find((p) => p.connected && p.conn && p.ctrl);
    if (path && !ledger?.unsettledCount) {
      const off = P.CTRL_MSG_SIZE + this.#queueDepth * P.RESUME_SIZE;
      P.encodeSessionClose().copy(path.ctrl!.buf, off);
      await Promise.race([
        path.conn!.postAndWait([{ opcode: 'SEND', sge: [path.ctrl!.mr.sge(off, P.SESSION_CLOSE_SIZE)] }]).catch(() => undefined),
        new Promise((r) => setTimeout(r, 2000).unref()),
      ]);
    }
    this.#closed = true;
    for (const p of this.#paths) {
      p.timer.cancel();
      p.unwatch?.();
      p.abortConnect?.();
      p.state = 'closed';
      p.teardown(err);
    }
    for (const regs of this.#userBufs.values()) for (const mr of regs.values()) mr.close();
    this.#userBufs.clear();
    for (const d of this.#devs.values()) d.pd.close();
    this.#devs.clear();
    this.#devices.close();
  }
}
