/**
 * The transport client (docs/protocol.md): one session over one or more
 * paths. write(header, data) and read(header, into) each cost two RDMA
 * messages and resolve with the handler's status and response header.
 * Permits (= server chunks) bound the queue depth; further IOs wait in FIFO
 * order. A path that fails hands its IOs to another path (same chunk, same
 * seq: the server runs each IO once) and reconnects with backoff.
 */
import { EventEmitter } from 'events';
import { allocate, CmId, MemoryRegion, MemoryWindow, ProtectionDomain, SendWorkRequest, WorkCompletion } from '../verbs';
import { Access } from '../verbs/constants';
import { RdmaError } from '../errors';
import { BackoffOptions, ReconnectTimer } from './backoff';
import { checkUint, optBool, optFunction, optString, optUint } from '../verbs/args';
import { abortError, Area, Conn, DeviceCache, registerArea, TransportError, wireCounters, WireStats, wireStats, wrId, WrKind } from './conn';
import { PathIterator, PathLike, PathSelector, PolicyName, DEFAULT_POLICY } from './policy';
import * as P from './protocol';
import { ProtocolError } from './protocol';
import { clientMetrics } from './stats';
import type { TransportClientEvents } from './events';
import { checkWindowType, windowTypeFor, WindowTypeOption } from './windows';

export interface ClientPathOptions {
  host: string;
  port: number;
  /** local address to connect from (selects the device/port) */
  source?: string;
}

export interface ClientOptions {
  paths: ClientPathOptions[];
  policy?: PolicyName;
  /** default: a random UUID */
  sessionId?: string;
  /** refuse a server that does not run strict mode */
  requireStrict?: boolean;
  /** cap on the permits (and receive buffers per path) this client uses; default 512 */
  maxQueueDepth?: number;
  /** address/route resolution timeout (ms), default 5000 */
  resolveTimeoutMs?: number;
  reconnect?: BackoffOptions & { stableAfterMs?: number };
  /** a name for the server's logs */
  name?: string;
  log?: (line: string) => void;
  /** busy-poll completion queues while IOs are in flight (see CompletionQueueOptions.busyPoll) */
  busyPoll?: boolean;
  /**
   * Path slots of the session (the pathCount sent to the server), >= paths.length;
   * default paths.length. addPath() can use a free slot at run time.
   */
  pathSlots?: number;
  /**
   * While no path is connected, a queued IO waits at most this long (ms) for a
   * path to come back, then fails with ETIMEDOUT. Default 30000; Infinity waits
   * until every path is dead.
   */
  reconnectWaitMs?: number;
  /**
   * A server that answers ESTALE (it restarted and does not know the session):
   * false (default) fails the session with ESTALE; true starts a new session
   * with it (a new session id) and emits session-up with reason
   * 'new-server-session'. IOs in flight at that time fail with ESTALE either way.
   */
  rejoinOnServerRestart?: boolean;
  /**
   * A connect that gets no answer within this time (ms) fails with ETIMEDOUT
   * and is retried with backoff; default 15000. The same limit applies to
   * the info exchange that follows. (A connect request sent over a link that
   * is down would otherwise wait for the CM's own retries, and a server that
   * accepts and stays silent would hold the path forever.)
   */
  connectTimeoutMs?: number;
  /** after PORT_ERR, reconnect only once the port has been active this long (ms); default 2000 */
  portSettleMs?: number;
  /** declare a path down at once when its device reports PORT_ERR for its port (default true) */
  watchPortEvents?: boolean;
  /**
   * Which memory windows expose read destinations to the server
   * (docs/protocol.md §1.1): 'auto' (default) = type 1 on rxe, where a peer's
   * SEND_WITH_INV of a type 2 window can crash the kernel (the client then
   * takes each window away itself), type 2 elsewhere; 2 on rxe is refused.
   */
  windowType?: WindowTypeOption;
  /**
   * Bytes for the server's authorize hook (at most 23: they travel in the CM
   * connect request, sent in the clear), e.g. a token derived from a shared
   * secret and the session id (docs/api.md, "Admission"); or a function that
   * makes them for each connect, so that a reconnect much later sends a
   * fresh token.
   */
  credentials?: Uint8Array | ((connect: { sessionId: string; pathIndex: number; reconnectCount: number }) => Uint8Array);
}

/** Why a path came up: its first connect or a reconnect. */
export type PathUpReason = 'first-connect' | 'reconnect';
/** Why the session came up. */
export type SessionUpReason = 'connected' | 'path-reconnected' | 'new-server-session';

export interface IoOptions {
  signal?: AbortSignal;
}

export interface IoResult {
  /** the handler's status: 0 = success */
  status: number;
  /** the handler's response header (a copy) */
  header: Buffer;
  /** read: bytes written into `into` */
  length: number;
}

export type ClientPathState = 'connecting' | 'connected' | 'reconnecting' | 'draining' | 'dead' | 'closed';

export interface ClientPathStats {
  index: number;
  host: string;
  port: number;
  state: ClientPathState;
  device: string | undefined;
  reads: number;
  readBytes: number;
  writes: number;
  writeBytes: number;
  inflight: number;
  failovers: number;
  reconnects: { ok: number; fail: number };
  latencyNs: number | undefined;
  /** times the path went down (path-down events) */
  downs: number;
  /** messages and local work of all its connections */
  wire: WireStats;
}

export interface ClientSessionStats {
  sessionId: string;
  /** 'up' while at least one path is connected */
  state: 'up' | 'down' | 'closed';
  queueDepth: number;
  waiting: number;
  unsettled: number;
  /** IOs in flight: posted and not yet answered (aborted ones too, until their answer frees the chunk) */
  inflight: number;
  /** session-down events */
  downs: number;
  /** new sessions started with a restarted server (rejoinOnServerRestart) */
  rejoins: number;
  paths: ClientPathStats[];
}

const KEY_NONE = 0;
const KEY_INFO = 1;
const KEY_RSP = 2;
const EMPTY = Buffer.alloc(0);

interface DevState {
  pd: ProtectionDomain;
  /** the staging slots, registered once the pool parameters are known */
  staging: MemoryRegion | undefined;
  /** the type of the windows over read destinations on this device */
  windowType: 1 | 2;
  /** type 2 windows known to be unbound (type 1 ones are never reused) */
  freeMws: MemoryWindow[];
}

interface Io {
  kind: 'write' | 'read';
  header: Uint8Array;
  data: Uint8Array;
  /** read: requested length */
  len: number;
  chunk: number;
  seq: bigint;
  signal?: AbortSignal;
  onAbort?: () => void;
  resolve: (r: IoResult) => void;
  reject: (e: Error) => void;
  settled: boolean;
  aborted: boolean;
  iter?: PathIterator<ClientPath>;
  path?: ClientPath;
  /** strict failover: waiting for RESUME on this path */
  resuming?: ClientPath;
  sendsPending: number;
  rsp?: { status: number; header: Buffer; length: number };
  mw?: MemoryWindow;
  mwDev?: DevState;
  /** read destination: zero-copy region or the staging slot */
  zeroCopy: boolean;
  /** while queued with no path connected: fails the IO after reconnectWaitMs */
  waitTimer?: NodeJS.Timeout;
}

class ClientPath implements PathLike {
  readonly client: TransportClient;
  readonly id: number;
  readonly opts: ClientPathOptions;
  state: ClientPathState = 'connecting';
  conn: Conn | undefined;
  dev: DevState | undefined;
  device: string | undefined;
  reconnectCount = 0;
  keys: P.ChunkKey[] = [];
  keySource = new Uint8Array(0);
  inflight = 0;
  timer: ReconnectTimer;
  ctrl: Area | undefined;
  counters = { reads: 0, readBytes: 0, writes: 0, writeBytes: 0, failovers: 0, reconnectsOk: 0, reconnectsFail: 0, downs: 0 };
  readonly wire = wireCounters();
  /** has been connected once (path-up reason) */
  everUp = false;
  /** the reconnect count of its first connect (a reused slot starts above the last one's) */
  firstReconnect = 0;
  /** the device port of the last connection */
  portNum = 0;
  /** the device port whose PORT_ERR took the path down, until it is active again */
  portDown: { dev: string; port: number; activeSince?: number } | undefined;
  /** closes the CM id of a connect under way */
  abortConnect: (() => void) | undefined;
  /** a connect attempt is under way */
  connecting = false;
  /** removePath() was called: never reconnects */
  removed = false;
  /** stops watching the device's port events */
  unwatch: (() => void) | undefined;
  infoAsm: P.InfoAssembler | undefined;
  infoDone: (() => void) | undefined;
  infoFail: ((e: Error) => void) | undefined;

  constructor(client: TransportClient, index: number, opts: ClientPathOptions, reconnect: ClientOptions['reconnect']) {
    this.client = client;
    this.id = index;
    this.opts = opts;
    this.timer = new ReconnectTimer(reconnect ?? {});
  }

  get connected(): boolean {
    return this.state === 'connected';
  }

  get latencyNs(): number | undefined {
    return this.conn?.latencyNs;
  }

  get generation(): number {
    return this.reconnectCount & 0xffff;
  }

  get name(): string {
    return `path ${this.id} (${this.opts.host}:${this.opts.port})`;
  }

  stats(): ClientPathStats {
    const c = this.counters;
    return {
      index: this.id, host: this.opts.host, port: this.opts.port, state: this.state, device: this.device,
      reads: c.reads, readBytes: c.readBytes, writes: c.writes, writeBytes: c.writeBytes, inflight: this.inflight,
      failovers: c.failovers, reconnects: { ok: c.reconnectsOk, fail: c.reconnectsFail }, latencyNs: this.latencyNs, downs: c.downs,
      wire: wireStats(this.wire),
    };
  }
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
  #free: number[] = [];
  readonly #waiting: Io[] = [];
  #inflight: Array<Io | undefined> = [];
  /** chunks whose IO was cut off: kept out of the pool until a RESUME settles them */
  readonly #unsettled = new Map<number, bigint>();
  /** per chunk: the seq of its last IO, and of the last RESUME_REQ sent for it (0n: none) */
  #chunkSeq: bigint[] = [];
  #resumeSeq: bigint[] = [];
  #seq = 0n;
  #established = false;
  #closing = false;
  #closed = false;
  #fatal: Error | undefined;
  #drained: (() => void) | undefined;

  constructor(opts: ClientOptions) {
    super();
    if (typeof opts !== 'object' || opts === null) throw new TypeError('options must be an object');
    if (!Array.isArray(opts.paths) || opts.paths.length < 1 || opts.paths.length > P.MAX_PATHS) {
      throw new RangeError(`paths must list 1..${P.MAX_PATHS} addresses`);
    }
    for (const p of opts.paths) {
      if (typeof p?.host !== 'string') throw new TypeError('every path needs a host string');
      checkUint(p.port, 'port', 65535);
      optString(p.source, 'source');
    }
    optUint(opts.maxQueueDepth, 'maxQueueDepth', P.MAX_QUEUE_DEPTH, 1);
    optUint(opts.connectTimeoutMs, 'connectTimeoutMs', 0x7fffffff, 1);
    optUint(opts.resolveTimeoutMs, 'resolveTimeoutMs', 0x7fffffff, 1);
    optUint(opts.portSettleMs, 'portSettleMs', 0x7fffffff);
    for (const k of ['requireStrict', 'busyPoll', 'watchPortEvents', 'rejoinOnServerRestart'] as const) optBool(opts[k], k);
    optFunction(opts.log, 'log');
    optString(opts.name, 'name');
    this.#windowType = checkWindowType(opts.windowType);
    if (opts.credentials !== undefined && typeof opts.credentials !== 'function') P.checkCredentials(opts.credentials);
    this.#sessionId = opts.sessionId ?? P.randomSessionId();
    if (!P.isSessionId(this.#sessionId)) throw new TypeError('sessionId must be a lowercase non-nil UUID');
    const slots = opts.pathSlots ?? opts.paths.length;
    if (!Number.isInteger(slots) || slots < opts.paths.length || slots > P.MAX_PATHS) {
      throw new RangeError(`pathSlots must be an integer in ${opts.paths.length}..${P.MAX_PATHS}`);
    }
    const wait = opts.reconnectWaitMs ?? 30000;
    if (typeof wait !== 'number' || Number.isNaN(wait) || wait < 0) throw new RangeError('reconnectWaitMs must be a number >= 0');
    this.#pathSlots = slots;
    this.#opts = opts;
    this.#paths = opts.paths.map((p, i) => new ClientPath(this, i, p, opts.reconnect));
    this.#selector = new PathSelector(opts.policy ?? DEFAULT_POLICY, () => this.#paths);
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
    return {
      sessionId: this.#sessionId, state: this.#closed ? 'closed' : this.#sessionUp ? 'up' : 'down', queueDepth: this.#queueDepth,
      waiting: this.#waiting.length, unsettled: this.#unsettled.size, inflight: this.#inflight.reduce((n, io) => n + (io ? 1 : 0), 0),
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
    if (!opts || typeof opts.host !== 'string' || !Number.isInteger(opts.port)) throw new TypeError('addPath needs { host, port }');
    if (this.#closing || this.#closed) throw new TransportError('ECLOSED', 'the client is closed');
    if (this.#fatal) throw this.#fatal;
    let slot = 0;
    while (slot < this.#pathSlots && this.#paths.some((p) => p.id === slot)) slot++;
    if (slot >= this.#pathSlots) throw new TransportError('ENOSPC', `every one of the session's ${this.#pathSlots} path slots is in use (see pathSlots)`);
    const path = new ClientPath(this, slot, opts, this.#opts.reconnect);
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

  // ----------------------------------------------------------- connection

  #credentials(path: ClientPath): Uint8Array | undefined {
    const c = this.#opts.credentials;
    if (typeof c !== 'function') return c;
    return P.checkCredentials(c({ sessionId: this.#sessionId, pathIndex: path.id, reconnectCount: path.reconnectCount }));
  }

  async #connectPath(path: ClientPath): Promise<void> {
    const sid = this.#sessionId;
    path.connecting = true;
    try {
      await this.#connectPathOnce(path);
    } catch (err) {
      if (sid !== this.#sessionId && (err as TransportError).code === 'ESTALE') {
        throw new TransportError('EAGAIN', 'the connect raced a session rejoin');
      }
      throw err;
    } finally {
      path.connecting = false;
    }
  }

  async #connectPathOnce(path: ClientPath): Promise<void> {
    if (this.#closing) throw new TransportError('ECLOSED', 'the client is closed');
    if (path.removed) throw new TransportError('ECLOSED', 'the path was removed');
    path.state = path.reconnectCount === 0 && !this.#established ? 'connecting' : 'reconnecting';
    const id = CmId.create();
    let conn: Conn | undefined;
    path.abortConnect = () => (conn ? conn.close() : id.close());
    try {
      const tmo = this.#opts.resolveTimeoutMs ?? 5000;
      await id.resolveAddr(path.opts.host, path.opts.port, { source: path.opts.source, timeoutMs: tmo });
      await id.resolveRoute(tmo);
      const devName = id.info().device!;
      const dev = this.#devState(devName);
      // the pool parameters (queue depth) come with the first accept: size
      // the QP for the most this client will use
      const maxQd = this.#opts.maxQueueDepth ?? 512;
      conn = new Conn(id, dev.pd, { maxRecvWr: maxQd + P.RECV_SLACK, maxSendWr: maxQd * 3 + 32, busyPoll: this.#opts.busyPoll, wire: path.wire });
      const req = P.encodeConnectRequest({
        newSession: !this.#established, pathIndex: path.id, pathCount: this.#pathSlots, reconnectCount: path.reconnectCount, sessionId: this.#sessionId,
        localReadInvalidate: dev.windowType === 1, credentials: this.#credentials(path),
      });
      let acc: P.AcceptData;
      const cto = this.#opts.connectTimeoutMs ?? 15000;
      let timer: NodeJS.Timeout | undefined;
      try {
        const pending = id.connect({ privateData: req, retryCount: 7, rnrRetryCount: 7 });
        pending.catch(() => undefined); // settles after a timeout too, when the id is closed
        const { privateData } = await Promise.race([pending, new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new TransportError('ETIMEDOUT', `no answer to the connect within ${cto} ms`)), cto);
        })]);
        acc = P.decodeAccept(privateData);
      } catch (err) {
        throw this.#connectError(err);
      } finally {
        clearTimeout(timer);
      }
      if (!this.#params) this.#adopt(acc);
      else this.#checkSame(acc);
      if (this.#closing) throw new TransportError('ECLOSED', 'the client is closed');
      if (path.removed) throw new TransportError('ECLOSED', 'the path was removed');
      this.#staged(dev);
      path.conn = conn;
      path.device = devName;
      path.dev = dev;
      path.portNum = id.info().portNum;
      this.#watchPort(path, conn, devName, path.portNum);
      await this.#info(path, conn, acc);
    } catch (err) {
      if (path.conn === conn) path.conn = undefined;
      if (conn) conn.close();
      else id.close();
      throw err;
    } finally {
      path.abortConnect = undefined;
    }
  }

  /**
   * PORT_ERR on the path's device port declares the path down at once: on a
   * link that went away the peer may send nothing at all, and heartbeats
   * would take hbIntervalMs * hbMissedMax to notice.
   */
  #watchPort(path: ClientPath, conn: Conn, devName: string, portNum: number): void {
    path.unwatch?.();
    if (this.#opts.watchPortEvents === false) return;
    const dev = this.#devices.get(devName);
    const onErr = (ev: { port?: number }): void => {
      if (ev.port !== undefined && ev.port !== portNum) return;
      if (path.conn !== conn) {
        // the path already went down (flush errors came first): hold its
        // reconnects until the port is back, and drop a connect under way
        if (path.state === 'reconnecting' && !path.portDown && this.#portState(dev, portNum) !== 'ACTIVE') {
          path.portDown = { dev: devName, port: portNum };
          path.abortConnect?.();
        }
        return;
      }
      // async events queue on the device until someone listens: a PORT_ERR
      // from before this connection is stale when the port is active now
      if (this.#portState(dev, portNum) === 'ACTIVE') return;
      path.portDown = { dev: devName, port: portNum };
      this.#pathFailed(path, new TransportError('ENETDOWN', `${devName} port ${portNum} reported PORT_ERR`));
    };
    dev.on('PORT_ERR', onErr);
    path.unwatch = () => {
      path.unwatch = undefined;
      if (!dev.closed) dev.off('PORT_ERR', onErr);
    };
  }

  #portState(dev: { queryPort(p: number): { state: string } }, port: number): string {
    try {
      return dev.queryPort(port).state;
    } catch {
      return 'UNKNOWN'; // the device went away
    }
  }

  /** After PORT_ERR took the path down: true while that port is not active again. */
  #portStillDown(path: ClientPath): boolean {
    const pd = path.portDown;
    if (!pd) return false;
    try {
      if (this.#devices.get(pd.dev).queryPort(pd.port).state !== 'ACTIVE') {
        pd.activeSince = undefined;
        return true;
      }
    } catch {
      return false; // cannot tell: try to connect
    }
    // a connect in the first moments after the port came back (addresses and
    // GIDs still being restored) can leave the route unusable for many seconds
    pd.activeSince ??= Date.now();
    if (Date.now() - pd.activeSince < (this.#opts.portSettleMs ?? 2000)) return true;
    path.portDown = undefined;
    return false;
  }

  /** Maps a failed connect to a TransportError with the server's reject reason. */
  #connectError(err: unknown): Error {
    if (err instanceof ProtocolError) return err;
    const e = err as RdmaError & { privateData?: Buffer };
    if (e instanceof RdmaError && e.code === 'ECONNREFUSED' && e.privateData) {
      try {
        const r = P.decodeReject(e.privateData);
        const te = new TransportError(r.code, `the server rejected the path: ${r.code}${r.detail ? ` (detail ${r.detail})` : ''}`) as TransportError & { retry: boolean };
        te.retry = r.retry;
        return te;
      } catch {
        // not our private data: no listener, or a CM-level reject
      }
    }
    return err as Error;
  }

  #adopt(acc: P.AcceptData): void {
    if (this.#opts.requireStrict && !acc.strict) throw new TransportError('EPERM', 'the server runs relaxed mode and requireStrict is set');
    this.#params = { queueDepth: acc.queueDepth, chunkSize: acc.chunkSize, maxHeaderSize: acc.maxHeaderSize, strict: acc.strict };
    this.#queueDepth = Math.min(acc.queueDepth, this.#opts.maxQueueDepth ?? 512);
    this.#maxIo = acc.maxIoSize;
    const qd = this.#queueDepth;
    this.#staging = allocate(qd * acc.chunkSize);
    this.#stagingBuf = Buffer.from(this.#staging);
    this.#free = Array.from({ length: qd }, (_, i) => i);
    this.#inflight = new Array(qd).fill(undefined);
    this.#chunkSeq = new Array(qd).fill(0n);
    this.#resumeSeq = new Array(qd).fill(0n);
  }


  #checkSame(acc: P.AcceptData): void {
    const p = this.#params!;
    if (acc.queueDepth !== p.queueDepth || acc.chunkSize !== p.chunkSize || acc.maxHeaderSize !== p.maxHeaderSize || acc.strict !== p.strict) {
      const err = new ProtocolError('pool-changed', `the session's pool changed: ${JSON.stringify(p)} -> ${JSON.stringify(acc)}`);
      this.#failSession(err);
      throw err;
    }
  }

  async #info(path: ClientPath, conn: Conn, acc: P.AcceptData): Promise<void> {
    const p = this.#params!;
    const qd = this.#queueDepth;
    path.keys = Array.from({ length: p.queueDepth }, () => ({ addr: 0n, rkey: 0 }));
    path.keySource = new Uint8Array(p.queueDepth);
    const recvSize = P.clientRecvSize(p, this.#pathSlots);
    conn.setupReceives(recvSize, qd + P.RECV_SLACK);
    path.ctrl = registerArea(path.dev!.pd, P.CTRL_MSG_SIZE + P.RESUME_SIZE * qd + P.SESSION_CLOSE_SIZE);
    // the decoder's context, built once per connection (the params cannot
    // change within a session: #checkSame)
    const ctx: P.ClientMsgContext = { ...p, pathCount: this.#pathSlots, pathIndex: path.id };
    conn.onRecv = (wc, slot) => this.#onRecv(path, conn, ctx, wc, slot);
    conn.onSendDone = (c) => {
      if (path.conn === conn) this.#onSendDone(path, c);
    };
    conn.onError = (err) => {
      if (path.conn === conn) this.#pathFailed(path, err);
    };
    conn.id.on('disconnected', () => {
      if (path.conn === conn) this.#pathFailed(path, new TransportError('ECONNRESET', 'the server disconnected the path'));
    });
    const done = new Promise<void>((resolve, reject) => {
      path.infoAsm = new P.InfoAssembler(p);
      path.infoDone = resolve;
      path.infoFail = reject;
    });
    const name = (this.#opts.name ?? '').slice(0, P.MAX_NAME_LEN);
    const m = P.encodeInfoReq({ recvSize, name });
    m.copy(path.ctrl.buf, 0);
    conn.ref();
    // a server that accepts and then stays silent: the attempt fails and is retried
    const cto = this.#opts.connectTimeoutMs ?? 15000;
    let timer: NodeJS.Timeout | undefined;
    try {
      conn.post([{ opcode: 'SEND', sge: [path.ctrl.mr.sge(0, m.length)], wrId: wrId(WrKind.SEND, 0xfffffffe) }]);
      await Promise.race([done, new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new TransportError('ETIMEDOUT', `no INFO_RSP within ${cto} ms`)), cto);
      })]);
    } finally {
      clearTimeout(timer);
      conn.unref();
    }
    if (path.removed) throw new TransportError('ECLOSED', 'the path was removed');
    path.state = 'connected';
    if (path.reconnectCount > path.firstReconnect) path.counters.reconnectsOk++;
    path.timer.connected();
    this.#established = true;
    conn.startHeartbeat(acc.hbIntervalMs, acc.hbMissedMax, () => this.#pathFailed(path, new TransportError('ETIMEDOUT', 'heartbeats missed')));
    this.#log(`${path.name}: connected on ${path.device} (${p.strict ? 'strict' : 'relaxed'}, queue depth ${qd})`);
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
    for (const [c, seq] of this.#unsettled) this.#sendResume(path, c, seq);
    if (p.strict) this.#claimChunks(path);
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
    for (const c of this.#withdraw((x) => !path.keys[x]?.rkey)) this.#sendResume(path, c, this.#chunkSeq[c]);
  }

  /**
   * Moves the used free chunks that `keyless` picks out of the pool into
   * #unsettled (under their last IO's seq), where a RESUME answer settles
   * them; returns them.
   */
  #withdraw(keyless: (c: number) => boolean): number[] {
    const out: number[] = [];
    for (let i = this.#free.length - 1; i >= 0; i--) {
      const c = this.#free[i];
      if (this.#chunkSeq[c] === 0n || !keyless(c)) continue;
      this.#free.splice(i, 1);
      this.#unsettled.set(c, this.#chunkSeq[c]);
      out.push(c);
    }
    return out;
  }

  #pathFailed(path: ClientPath, err: Error): void {
    if (path.state === 'closed' || path.state === 'dead') return;
    const wasConnected = path.state === 'connected' || path.state === 'draining';
    path.state = this.#closing || path.removed ? 'closed' : 'reconnecting';
    // port events stay watched until the next connect: a PORT_ERR after the
    // flush errors still holds the reconnects back
    if (this.#closing || path.removed) path.unwatch?.();
    else if (path.device && path.portNum && !path.portDown && this.#portState(this.#devices.get(path.device), path.portNum) === 'DOWN') {
      path.portDown = { dev: path.device, port: path.portNum };
    }
    if (path.infoFail) {
      path.infoFail(err);
      path.infoFail = path.infoDone = undefined;
    }
    const conn = path.conn;
    path.conn = undefined;
    conn?.close();
    path.ctrl?.mr.close();
    path.ctrl = undefined;
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
    // hand its IOs to other paths
    for (const io of this.#inflight) {
      if (!io) continue;
      if (io.path !== path && io.resuming !== path) continue;
      if (io.path === path) path.inflight--;
      io.path = undefined;
      io.resuming = undefined;
      io.sendsPending = 0;
      if (io.mw) {
        io.mw.close(); // bound on a dead QP: never reused
        io.mw = undefined;
      }
      this.#failover(io);
    }
    if (!this.#closing) this.#reclaimChunks();
    if (wasConnected) this.#checkSessionDown(err);
    if (this.#closing || path.removed) return;
    const te = err as TransportError & { retry?: boolean };
    const fatalReject = te instanceof TransportError && ['EPROTO', 'EPROTONOSUPPORT', 'EINVAL', 'ESHUTDOWN', 'EPERM', 'EACCES', 'EOPNOTSUPP'].includes(te.code) && !te.retry;
    if (te instanceof TransportError && te.code === 'ESTALE') {
      if (this.#opts.rejoinOnServerRestart && !this.#fatal) {
        this.#rejoin(path);
        return;
      }
      this.#failSession(new TransportError('ESTALE', 'the server no longer knows this session'));
      return;
    }
    if (fatalReject || err instanceof ProtocolError && err.reason === 'pool-changed') {
      path.state = 'dead';
      this.#log(`${path.name}: dead: ${err.message}`);
      this.emit('path', path.id, 'dead', err);
      this.#failIfNoPaths();
      return;
    }
    const delay = path.timer.schedule(() => {
      if (this.#portStillDown(path)) {
        // a connect over a port that is down cannot work: count the attempt, wait again
        this.#pathFailed(path, new TransportError('ENETDOWN', `${path.portDown!.dev} port ${path.portDown!.port} is still down`));
        return;
      }
      path.reconnectCount++;
      this.#connectPath(path).catch((e) => this.#pathFailed(path, e as Error));
    });
    if (delay === undefined) {
      path.state = 'dead';
      this.#log(`${path.name}: dead: reconnect attempts exhausted`);
      this.emit('path', path.id, 'dead', err);
      this.#failIfNoPaths();
    }
  }

  /** The last connected path went down: session-down; queued IOs wait at most reconnectWaitMs. */
  #checkSessionDown(err: Error): void {
    if (!this.#sessionUp || this.#paths.some((p) => p.connected)) return;
    this.#sessionUp = false;
    this.#sessionCounters.downs++;
    this.#upReason = 'path-reconnected';
    this.#log(`session down: ${err.message}`);
    this.emit('session-down', err);
    if (!this.#closing) for (const io of this.#waiting) this.#armWait(io);
  }

  /** A queued IO with no connected path: fails after reconnectWaitMs unless a path comes back. */
  #armWait(io: Io): void {
    const ms = this.#opts.reconnectWaitMs ?? 30000;
    if (io.waitTimer || ms === Infinity) return;
    io.waitTimer = setTimeout(() => {
      io.waitTimer = undefined;
      const i = this.#waiting.indexOf(io);
      if (i < 0) return;
      this.#waiting.splice(i, 1);
      this.#reject(io, new TransportError('ETIMEDOUT', `no path of the session came back within reconnectWaitMs (${ms} ms)`));
    }, ms);
  }

  #clearWait(io: Io): void {
    if (!io.waitTimer) return;
    clearTimeout(io.waitTimer);
    io.waitTimer = undefined;
  }

  /**
   * The server answered ESTALE: it restarted (or ended the session). IOs of
   * the old session that were in flight cannot be proven executed once: they
   * fail with ESTALE. Then every path connects again under a new session id
   * (newSession set), and the first that succeeds emits session-up with
   * reason 'new-server-session'.
   */
  #rejoin(from: ClientPath): void {
    const err = new TransportError('ESTALE', 'the server restarted and no longer knows the session: the IO may or may not have run');
    for (const io of this.#inflight) {
      if (!io) continue;
      if (io.path) {
        io.path.inflight--;
        if (io.path.inflight === 0) io.path.conn?.unref();
      }
      if (io.mw) {
        io.mw.close();
        io.mw = undefined;
      }
      this.#reject(io, err);
    }
    const old = this.#sessionId;
    this.#sessionId = P.randomSessionId();
    this.#sessionCounters.rejoins++;
    this.#established = false;
    this.#upReason = 'new-server-session';
    this.#unsettled.clear();
    this.#slotReconnect.clear();
    this.#inflight.fill(undefined);
    this.#free = Array.from({ length: this.#queueDepth }, (_, i) => i);
    this.#chunkSeq.fill(0n);
    this.#resumeSeq.fill(0n);
    this.#log(`session ${old}: the server does not know it: starting session ${this.#sessionId}`);
    // every other path belongs to the old session: cut it, it reconnects into the new one
    for (const p of this.#paths) {
      if (p === from || p.state === 'dead' || p.state === 'closed') continue;
      if (p.conn || p.state === 'connected') this.#pathFailed(p, new TransportError('ECONNRESET', 'the session is replaced by a new one'));
    }
    for (const p of this.#paths) {
      p.keys = [];
      p.keySource = new Uint8Array(0);
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

  /** When every path is dead, queued IOs fail (in-flight ones already did). */
  #failIfNoPaths(): void {
    if (this.#paths.some((p) => p.state !== 'dead' && p.state !== 'closed')) return;
    this.#failSession(new TransportError('ECONNABORTED', 'every path of the session is dead'));
  }

  #failSession(err: Error): void {
    if (this.#fatal) return;
    this.#fatal = err;
    for (const io of this.#waiting.splice(0)) this.#reject(io, err);
    for (const io of this.#inflight) if (io && !io.settled) this.#reject(io, err);
    // 'error' without a listener would throw from inside an rdma_cm callback
    if (this.listenerCount('error') > 0) this.emit('error', err);
  }

  // ------------------------------------------------------------------ IO

  /** Writes `data` with `header` to the server; resolves with the handler's status and response header. */
  write(header: Uint8Array, data: Uint8Array, opts: IoOptions = {}): Promise<IoResult> {
    return this.#submit('write', header, data, data.length, opts);
  }

  /** Reads into `into` (up to its length); resolves with status, response header and the length read. */
  read(header: Uint8Array, into: Uint8Array, opts: IoOptions = {}): Promise<IoResult> {
    return this.#submit('read', header, into, into.length, opts);
  }

  #submit(kind: 'write' | 'read', header: Uint8Array, data: Uint8Array, len: number, opts: IoOptions): Promise<IoResult> {
    if (!(header instanceof Uint8Array)) return Promise.reject(new TypeError('header must be a Uint8Array'));
    if (!(data instanceof Uint8Array)) return Promise.reject(new TypeError(`${kind === 'write' ? 'data' : 'into'} must be a Uint8Array`));
    if (this.#closing || this.#closed) return Promise.reject(new TransportError('ECLOSED', 'the client is closing'));
    if (this.#fatal) return Promise.reject(this.#fatal);
    const p = this.#params!;
    if (header.length > p.maxHeaderSize) return Promise.reject(new TransportError('EMSGSIZE', `header of ${header.length} bytes exceeds maxHeaderSize ${p.maxHeaderSize}`));
    if (len > this.#maxIo) return Promise.reject(new TransportError('EMSGSIZE', `${len} bytes exceed maxIoSize ${this.#maxIo}`));
    if (opts.signal?.aborted) return Promise.reject(abortError(opts.signal.reason));
    return new Promise<IoResult>((resolve, reject) => {
      const io: Io = {
        kind, header, data, len, chunk: -1, seq: 0n, signal: opts.signal, resolve, reject,
        settled: false, aborted: false, sendsPending: 0, zeroCopy: false,
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

  #abort(io: Io): void {
    if (io.settled) return;
    const i = this.#waiting.indexOf(io);
    if (i >= 0) this.#waiting.splice(i, 1);
    else io.aborted = true; // posted: its chunk comes back when the response (or RESUME) settles it
    this.#reject(io, abortError(io.signal?.reason));
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
    if (io.onAbort) io.signal?.removeEventListener('abort', io.onAbort);
    io.resolve(r);
  }

  /** Starts waiting IOs while permits and a connected path exist. */
  #pump(): void {
    if (this.#params?.strict) return this.#pumpStrict();
    while (this.#waiting.length && this.#free.length && this.#paths.some((p) => p.connected)) {
      const io = this.#start(0);
      io.iter = this.#selector.iterate((p) => p.keys[io.chunk]?.rkey !== 0);
      this.#dispatch(io);
    }
  }

  /**
   * Strict mode: a chunk has a key only on the path of its last response
   * (docs/protocol.md §7.3), so the policy picks the path first, then a free
   * chunk keyed on it. A failover asks another path with RESUME_REQ, which
   * needs no key there: the IO's iterator takes any connected path.
   */
  #pumpStrict(): void {
    // where each candidate's free keyed chunk is (select() only returns a
    // path its test accepted, in this same call)
    const at: number[] = [];
    while (this.#waiting.length && this.#free.length) {
      const path = this.#selector.select(undefined, (p) => (at[p.id] = this.#freeKeyedOn(p)) >= 0);
      if (!path) return; // no key anywhere: a connect or a RESUME answer brings one
      const io = this.#start(at[path.id]);
      io.iter = this.#selector.iterate();
      io.iter.markTried(path);
      this.#post(io, path);
    }
  }

  /** Index in #free of a chunk that has a key on path p, or -1. */
  #freeKeyedOn(p: ClientPath): number {
    const free = this.#free;
    for (let i = 0; i < free.length; i++) if (p.keys[free[i]]?.rkey) return i;
    return -1;
  }

  /** Takes the next waiting IO and the free chunk at index `at`. */
  #start(at: number): Io {
    const io = this.#waiting.shift()!;
    this.#clearWait(io);
    io.chunk = at === 0 ? this.#free.shift()! : this.#free.splice(at, 1)[0];
    io.seq = ++this.#seq;
    this.#chunkSeq[io.chunk] = io.seq;
    this.#inflight[io.chunk] = io;
    this.#stage(io);
    return io;
  }

  /** Puts the request into the chunk's staging slot (once: failover re-posts it as is). */
  #stage(io: Io): void {
    const p = this.#params!;
    const base = io.chunk * p.chunkSize;
    const st = this.#stagingBuf;
    if (io.kind === 'write') {
      const registered = this.#userBufs.has(io.data.buffer as ArrayBuffer);
      io.zeroCopy = registered;
      // zero-copy: [header | trailer] at the slot start, sent after the user's data
      const hdrAt = registered ? base : base + io.data.length;
      if (!registered) st.set(io.data, base);
      st.set(io.header, hdrAt);
      P.writeWriteTrailer(st, hdrAt + io.header.length, { hdrLen: io.header.length, dataLen: io.data.length, seq: io.seq });
    } else {
      io.zeroCopy = this.#userBufs.has(io.data.buffer as ArrayBuffer);
      const reqAt = base + p.chunkSize - io.header.length - P.READ_TRAILER_SIZE;
      st.set(io.header, reqAt);
      // the trailer (with the window's rkey) is written when posted
    }
  }

  #dispatch(io: Io): void {
    const path = io.iter!.next();
    if (!path) {
      this.#cutOff(io, new TransportError('ECONNABORTED', 'no connected path could take the IO'));
      return;
    }
    this.#post(io, path);
  }

  #post(io: Io, path: ClientPath): void {
    const p = this.#params!;
    const conn = path.conn!;
    const dev = path.dev!;
    const c = io.chunk;
    const key = path.keys[c];
    const base = c * p.chunkSize;
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
    if (io.len > 0) {
      let mw: MemoryWindow;
      try {
        // a pooled window may have been closed with a dead connection's QP
        let free = dev.freeMws.pop();
        while (free && free.closed) free = dev.freeMws.pop();
        mw = free ?? dev.pd.allocMemoryWindow(dev.windowType);
      } catch (err) {
        this.#fail(io, err as Error);
        return;
      }
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
    P.writeReadTrailer(this.#stagingBuf, base + reqAt + hdrLen, { hdrLen, len: io.len, seq: io.seq, addr, rkey });
    io.sendsPending++;
    wrs.push({
      opcode: 'RDMA_WRITE_WITH_IMM', wrId: wrId(WrKind.SEND, c), sge: [this.#staged(dev).sge(base + reqAt, hdrLen + P.READ_TRAILER_SIZE)],
      remoteAddr: key.addr + BigInt(reqAt), rkey: key.rkey, imm: P.encodeRequestImm('read', c, reqAt + hdrLen, p),
    });
    conn.post(wrs);
  }

  #fail(io: Io, err: Error): void {
    this.#reject(io, err);
    this.#release(io);
  }

  /** The IO could not be completed: fail it; its chunk stays unsettled until a RESUME answers. */
  #cutOff(io: Io, err: Error): void {
    this.#inflight[io.chunk] = undefined;
    this.#unsettled.set(io.chunk, io.seq);
    this.#reject(io, err);
    for (const path of this.#paths) if (path.connected) this.#sendResume(path, io.chunk, io.seq);
  }

  #failover(io: Io): void {
    if (io.aborted || this.#closing) {
      this.#cutOff(io, new TransportError('ECONNABORTED', 'the path failed'));
      return;
    }
    const next = io.iter!.next();
    if (!next) {
      this.#cutOff(io, new TransportError('ECONNABORTED', 'the path failed and no other path could take the IO'));
      return;
    }
    next.counters.failovers++;
    this.#log(`failover: chunk ${io.chunk} seq ${io.seq} -> ${next.name}`);
    if (this.#params!.strict || io.kind === 'read') {
      // the first copy may have invalidated this path's key (strict), and a
      // read must re-post to get its data: ask first (§7.5)
      io.resuming = next;
      this.#sendResume(next, io.chunk, io.seq);
    } else {
      this.#post(io, next);
    }
  }

  #sendResume(path: ClientPath, c: number, seq: bigint): void {
    if (!path.ctrl || !path.conn) return;
    this.#resumeSeq[c] = seq;
    const off = P.CTRL_MSG_SIZE + c * P.RESUME_SIZE;
    P.encodeResumeReq({ chunk: c, seq }).copy(path.ctrl.buf, off);
    path.conn.post([{ opcode: 'SEND', wrId: wrId(WrKind.SEND, 0xfffffffd), sge: [path.ctrl.mr.sge(off, P.RESUME_SIZE)] }]);
  }

  #onSendDone(path: ClientPath, c: number): void {
    const io = this.#inflight[c];
    if (!io || io.path !== path || io.sendsPending === 0) return;
    io.sendsPending--;
    this.#maybeComplete(io);
  }

  // ------------------------------------------------------------- receive

  #onRecv(path: ClientPath, conn: Conn, ctx: P.ClientMsgContext, wc: WorkCompletion, slot: number): void {
    if (path.conn !== conn) return;
    const p = this.#params!;
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
        if (m.chunk >= this.#queueDepth) throw new ProtocolError('chunk', `IO_RSP for chunk ${m.chunk} beyond this client's ${this.#queueDepth} permits`);
        if (this.#lateAnswer(m.chunk, m.seq)) return;
        this.#takeKeys(m.chunk, m.keys);
        this.#onResponse(path, m.chunk, { status: m.status, header, length: m.dataLen }, m.seq, m.read ? 'read' : 'write', { wc, replay: m.replay });
        return;
      }
      conn.repost(slot);
      if (m.type === 'info-rsp') {
        if (!path.infoAsm || path.infoAsm.done) throw new ProtocolError('state', 'INFO_RSP outside the info exchange');
        const keys = path.infoAsm.add(m);
        if (keys) {
          for (let c = 0; c < keys.length; c++) {
            path.keys[c].addr = keys[c].addr;
            if (path.keySource[c] !== KEY_RSP) {
              path.keys[c].rkey = keys[c].rkey;
              path.keySource[c] = keys[c].rkey ? KEY_INFO : KEY_NONE;
            }
          }
          path.infoDone?.();
          path.infoDone = path.infoFail = undefined;
        }
        return;
      }
      this.#onResumeRsp(path, m);
    } catch (err) {
      this.#violation(path, err);
    }
  }

  /**
   * A second answer to a RESUME_REQ (several paths were asked, or asked
   * again after a path failed) for an IO that is already settled: dropped
   * with its keys, which a later IO on the chunk may have invalidated.
   */
  #lateAnswer(c: number, seq: bigint): boolean {
    return this.#resumeSeq[c] === seq && this.#inflight[c]?.seq !== seq && !this.#unsettled.has(c);
  }

  /**
   * The keys an IO_RSP gives for chunk c. Strict: the server invalidated c's
   * keys on every path when the request arrived and bound new ones only
   * where listed, so keys not listed are void.
   */
  #takeKeys(c: number, keys: P.IoRspKey[]): void {
    const strict = this.#params!.strict;
    for (const q of this.#paths) {
      if (q.keys.length === 0) continue;
      const k = keys.find((x) => x.pathIndex === q.id && x.generation === q.generation);
      if (k) q.keys[c].rkey = k.rkey;
      else if (strict) q.keys[c].rkey = 0;
      else continue;
      q.keySource[c] = KEY_RSP;
    }
  }

  /**
   * Strict, after a path failed: free chunks whose only key was on it are
   * asked for on a connected path (RESUME_REQ for their last IO binds a key
   * there); until the answer they are out of the pool, like cut-off chunks.
   * Chunks already waiting for an answer are asked again in case the failed
   * path was the one asked. With no path connected, the next connect asks.
   */
  #reclaimChunks(): void {
    const live = this.#paths.filter((p) => p.connected);
    if (live.length === 0) return;
    if (this.#params?.strict) this.#withdraw((c) => !live.some((p) => p.keys[c]?.rkey));
    for (const [c, seq] of this.#unsettled) this.#sendResume(this.#selector.select() ?? live[0], c, seq);
  }

  #violation(path: ClientPath, err: unknown): void {
    const reason = err instanceof ProtocolError ? err.reason : 'internal';
    const msg = err instanceof ProtocolError ? err.detail : (err as Error).message;
    this.#log(`${path.name}: protocol violation: ${reason}: ${msg}`);
    this.emit('violation', { pathIndex: path.id, reason, message: msg });
    this.#pathFailed(path, err as Error);
  }

  #onResponse(path: ClientPath, c: number, r: { status: number; header: Buffer; length: number }, seq: bigint | undefined, kind: 'write' | 'read', m: { wc: WorkCompletion; replay: boolean } | undefined): void {
    if (c >= this.#queueDepth) throw new ProtocolError('chunk', `response for chunk ${c} beyond this client's ${this.#queueDepth} permits`);
    const io = this.#inflight[c];
    if (!io) {
      const useq = this.#unsettled.get(c);
      if (useq !== undefined && (seq === undefined || seq === useq)) {
        this.#settleChunk(c);
        return;
      }
      throw new ProtocolError('unexpected-response', `response for chunk ${c}, which has no IO in flight`);
    }
    if (seq !== undefined && seq !== io.seq) throw new ProtocolError('unexpected-response', `response for chunk ${c} seq ${seq}, in flight: ${io.seq}`);
    if (kind !== io.kind) throw new ProtocolError('unexpected-response', `${kind} response for a ${io.kind} on chunk ${c}`);
    if (io.resuming === path) {
      // answer to our RESUME_REQ: the IO ran. A read still needs its data: re-post it here
      io.resuming = undefined;
      if (io.kind === 'read' && io.len > 0 && !io.aborted) {
        this.#post(io, path);
        return;
      }
    } else if (io.path !== path) {
      throw new ProtocolError('unexpected-response', `response for chunk ${c} on ${path.name}, posted on ${io.path?.name ?? 'no path'}`);
    }
    if (io.kind === 'read') {
      if (r.length > io.len) throw new ProtocolError('data-len', `read response of ${r.length} bytes for a ${io.len}-byte read`);
      const inv = m?.wc.invalidatedRkey;
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

  #maybeComplete(io: Io): void {
    if (!io.rsp || io.sendsPending > 0) return;
    const path = io.path;
    if (path) {
      path.inflight--;
      if (path.inflight === 0) path.conn?.unref();
      if (io.kind === 'write') {
        path.counters.writes++;
        path.counters.writeBytes += io.data.length;
      } else {
        path.counters.reads++;
        path.counters.readBytes += io.rsp.length;
      }
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
    this.#resolve(io, { status: r.status, header: r.header, length: io.kind === 'read' ? r.length : 0 });
    this.#release(io);
  }

  #release(io: Io): void {
    if (this.#inflight[io.chunk] === io) this.#inflight[io.chunk] = undefined;
    this.#free.push(io.chunk);
    this.#checkDrained();
    this.#pump();
  }

  #onResumeRsp(path: ClientPath, m: P.ResumeRsp): void {
    const c = m.chunk;
    if (c >= this.#queueDepth) throw new ProtocolError('chunk', `RESUME_RSP for chunk ${c} beyond this client's permits`);
    const io = this.#inflight[c];
    if (io && io.resuming === path && io.seq === m.seq) {
      // the IO never reached the server: re-post it here with the key just
      // bound, unless it was aborted meanwhile (then it never runs: its chunk
      // goes back to the pool)
      io.resuming = undefined;
      path.keys[c].rkey = m.rkey;
      path.keySource[c] = KEY_RSP;
      if (io.aborted) this.#release(io);
      else this.#post(io, path);
      return;
    }
    if (!io && this.#unsettled.get(c) === m.seq) {
      path.keys[c].rkey = m.rkey;
      path.keySource[c] = KEY_RSP;
      this.#settleChunk(c);
      return;
    }
    if (this.#lateAnswer(c, m.seq)) return;
    throw new ProtocolError('unexpected-response', `RESUME_RSP for chunk ${c} seq ${m.seq} that was not asked`);
  }

  #settleChunk(c: number): void {
    if (!this.#unsettled.delete(c)) return;
    this.#free.push(c);
    this.#checkDrained();
    this.#pump();
  }

  // ---------------------------------------------------------------- close

  #checkDrained(): void {
    if (!this.#drained) return;
    if (this.#waiting.length || this.#inflight.some((io) => io && !io.settled) || this.#unsettled.size) return;
    this.#drained();
  }

  /**
   * Closes the session. drain (default): new IOs are refused, queued and
   * in-flight ones finish first (at most drainTimeoutMs, default 30 s).
   * Otherwise they fail at once with ECLOSED.
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
    for (const io of this.#waiting.splice(0)) this.#reject(io, err);
    for (const io of this.#inflight) if (io) this.#reject(io, err);
    // tell the server (best effort): it frees the session at once
    const path = this.#paths.find((p) => p.connected && p.conn && p.ctrl);
    if (path && this.#unsettled.size === 0) {
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
      p.conn?.close();
      p.conn = undefined;
      p.ctrl?.mr.close();
      p.ctrl = undefined;
    }
    for (const regs of this.#userBufs.values()) for (const mr of regs.values()) mr.close();
    this.#userBufs.clear();
    for (const d of this.#devs.values()) d.pd.close();
    this.#devs.clear();
    this.#devices.close();
  }
}
