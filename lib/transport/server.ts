/**
 * The transport server (docs/protocol.md): listens on one or more addresses;
 * a session (UUID) is created when its first path connects, with its chunk
 * pool allocated once and registered in a protection domain of its own on
 * every device its paths use. Requests reach an async handler that sees the
 * user header and a zero-copy view of the data; its status and response
 * header go back in one message. Strict mode (default) invalidates a chunk's
 * keys on every path before the handler runs and re-keys on completion.
 */
import { EventEmitter } from 'events';
import { CmId, MemoryRegion, ProtectionDomain, SendWorkRequest, Sge, WorkCompletion } from '../verbs';
import { Access } from '../verbs/constants';
import { checkUint, optBool, optFunction, optUint } from '../verbs/args';
import { Area, Conn, DeviceCache, registerArea, TransportError, wireCounters, WireStats, wireStats, wrId, WrKind } from './conn';
import * as P from './protocol';
import { ProtocolError } from './protocol';
import { serverMetrics } from './stats';
import type { TransportServerEvents } from './events';
import * as R from './records';
import { ChunkKeys, DeviceWindows, PathWindows } from './server-keys';
import { checkWindowType, windowTypeFor, WindowTypeOption } from './windows';

export interface TransportRequest {
  kind: 'write' | 'read';
  sessionId: string;
  pathIndex: number;
  /** the user header (a view into the chunk: valid until the handler settles) */
  header: Buffer;
  /** write: the data written by the client; read: the area to fill (its length is the requested length) */
  data: Buffer;
}

export interface TransportResponse {
  /** 0 (default) for success, 1..4095 for an error (errno values or the application's own) */
  status?: number;
  /** at most maxHeaderSize bytes back to the client */
  header?: Uint8Array;
  /** read: bytes produced at the start of data (default: data.length when status is 0, else 0) */
  length?: number;
}

export type TransportHandler = (req: TransportRequest) => TransportResponse | void | Promise<TransportResponse | void>;

export interface ServerOptions {
  handler: TransportHandler;
  queueDepth?: number;
  chunkSize?: number;
  maxHeaderSize?: number;
  /** strict mode (default true): see docs/protocol.md §1 */
  strict?: boolean;
  hbIntervalMs?: number;
  hbMissedMax?: number;
  /** how long a session outlives its last path (ms), default 30000 */
  sessionLingerMs?: number;
  /**
   * a path that has not sent INFO_REQ this long after it connected is
   * closed (ms), default 10000: a peer that connects and stays silent would
   * otherwise hold a session and its registered pool for good
   */
  infoTimeoutMs?: number;
  maxSessions?: number;
  /** log lines (violations, rejects, path events); default: none */
  log?: (line: string) => void;
  /** busy-poll completion queues while work is outstanding (see CompletionQueueOptions.busyPoll) */
  busyPoll?: boolean;
  /**
   * How strict mode takes a type 2 window's key away: 'local-inv' (a
   * LOCAL_INV work request), 'dealloc' (free the window and allocate a fresh
   * one), or 'auto' (default, = 'local-inv'). Type 1 windows are always
   * deallocated (LOCAL_INV does not apply to them).
   */
  invalidation?: 'auto' | 'local-inv' | 'dealloc';
  /**
   * Which memory windows expose the pool (docs/protocol.md §1.1): 'auto'
   * (default) = type 1 on rxe, where a peer's SEND_WITH_INV of a type 2
   * window can crash the kernel, type 2 elsewhere; 2 on rxe is refused.
   */
  windowType?: WindowTypeOption;
  /**
   * Admission (docs/protocol.md §3.4): called for every connect request
   * before anything is allocated, registered or keyed for it. Return (or
   * resolve) true, or a principal name, to admit: a session belongs to the
   * principal that created it, and a connect admitted for another cannot
   * join it. false (or any other value) refuses with EACCES; a throw, a
   * rejection or a timeout refuses with EBUSY and RETRY (the hook's backend
   * may be back soon). Default: admit everyone.
   */
  authorize?: (peer: PeerInfo) => AuthorizeResult | Promise<AuthorizeResult>;
  /** how long authorize may take before the connection is refused (ms), 1..60000, default 5000 */
  authorizeTimeoutMs?: number;
  /** connect requests whose authorize has not answered yet, at most (more: EBUSY with RETRY); default 128 */
  maxPendingAdmissions?: number;
}

/** What authorize answers: true or a principal name admits, anything else refuses. */
export type AuthorizeResult = boolean | string;

const TIMED_OUT = Symbol('timed out');

/** What the server knows of a connecting peer when it decides on admission. */
export interface PeerInfo {
  /** the peer's address and port (rdma_cm) */
  address: string;
  port: number;
  /** the device the request arrived on */
  device: string;
  sessionId: string;
  pathIndex: number;
  pathCount: number;
  reconnectCount: number;
  /** the client says it has no session yet */
  newSession: boolean;
  /** the client's `credentials` option (0..23 bytes; empty when it sent none) */
  credentials: Buffer;
}

export interface ServerPathStats {
  index: number;
  state: 'connecting' | 'connected' | 'closed';
  device: string;
  reads: number;
  readBytes: number;
  writes: number;
  writeBytes: number;
  replays: number;
  latencyNs: number | undefined;
  /** messages and local work of the path's connection */
  wire: WireStats;
}

type ChunkRecord = R.ChunkRecord<ServerPath>;

interface DevState {
  pd: ProtectionDomain;
  pool: MemoryRegion;
  /** type 1: the session's windows on this device, shared by its paths here; type 2: each path has its own */
  windows: DeviceWindows | undefined;
  /** type 2 strict mode invalidates by deallocating windows (see ServerOptions.invalidation) */
  deallocInvalidate: boolean;
}

const EMPTY = Buffer.alloc(0);

// typed listener methods over the event map in events.ts (declaration merging:
// they replace EventEmitter's untyped ones; emit stays EventEmitter's)
export interface TransportServer {
  on<K extends keyof TransportServerEvents>(event: K, listener: (...args: TransportServerEvents[K]) => void): this;
  once<K extends keyof TransportServerEvents>(event: K, listener: (...args: TransportServerEvents[K]) => void): this;
  off<K extends keyof TransportServerEvents>(event: K, listener: (...args: TransportServerEvents[K]) => void): this;
  addListener<K extends keyof TransportServerEvents>(event: K, listener: (...args: TransportServerEvents[K]) => void): this;
  removeListener<K extends keyof TransportServerEvents>(event: K, listener: (...args: TransportServerEvents[K]) => void): this;
  prependListener<K extends keyof TransportServerEvents>(event: K, listener: (...args: TransportServerEvents[K]) => void): this;
  prependOnceListener<K extends keyof TransportServerEvents>(event: K, listener: (...args: TransportServerEvents[K]) => void): this;
}
export class TransportServer extends EventEmitter {
  readonly params: P.SessionParams;
  readonly hbIntervalMs: number;
  readonly hbMissedMax: number;
  readonly infoTimeoutMs: number;
  readonly #handler: TransportHandler;
  readonly #lingerMs: number;
  readonly #maxSessions: number;
  readonly #log: (line: string) => void;
  /** @internal */
  readonly busyPoll: boolean;
  /** @internal */
  readonly invalidation: 'auto' | 'local-inv' | 'dealloc';
  /** @internal */
  readonly windowType: WindowTypeOption;
  readonly #authorize: ((peer: PeerInfo) => AuthorizeResult | Promise<AuthorizeResult>) | undefined;
  readonly #authorizeTimeoutMs: number;
  readonly #maxPendingAdmissions: number;
  #pendingAdmissions = 0;
  readonly #devices = new DeviceCache();
  readonly #listeners: CmId[] = [];
  readonly #sessions = new Map<string, ServerSession>();
  /** ids of closed sessions: a late connect for one gets ESTALE */
  readonly #closedSessions = new Set<string>();
  #closing = false;

  constructor(opts: ServerOptions) {
    super();
    if (typeof opts !== 'object' || opts === null) throw new TypeError('options must be an object');
    if (typeof opts.handler !== 'function') throw new TypeError('handler must be a function');
    optBool(opts.strict, 'strict');
    optBool(opts.busyPoll, 'busyPoll');
    optFunction(opts.log, 'log');
    optUint(opts.sessionLingerMs, 'sessionLingerMs');
    optUint(opts.maxSessions, 'maxSessions', 0xffff, 1);
    this.params = {
      queueDepth: opts.queueDepth ?? P.DEFAULT_QUEUE_DEPTH,
      chunkSize: opts.chunkSize ?? P.DEFAULT_CHUNK_SIZE,
      maxHeaderSize: opts.maxHeaderSize ?? P.DEFAULT_MAX_HEADER_SIZE,
      strict: opts.strict ?? true,
    };
    const problem = P.sessionParamsProblem(this.params);
    if (problem) throw new RangeError(problem);
    this.hbIntervalMs = opts.hbIntervalMs ?? P.DEFAULT_HB_INTERVAL_MS;
    this.hbMissedMax = opts.hbMissedMax ?? P.DEFAULT_HB_MISSED_MAX;
    this.infoTimeoutMs = opts.infoTimeoutMs ?? 10000;
    if (!Number.isInteger(this.infoTimeoutMs) || this.infoTimeoutMs < 1) throw new RangeError(`infoTimeoutMs must be an integer >= 1, got ${String(opts.infoTimeoutMs)}`);
    P.encodeAccept({ ...this.params, sessionCreated: false, hbIntervalMs: this.hbIntervalMs, hbMissedMax: this.hbMissedMax }); // validates
    this.#handler = opts.handler;
    this.#lingerMs = opts.sessionLingerMs ?? 30000;
    this.#maxSessions = opts.maxSessions ?? 64;
    this.#log = opts.log ?? (() => undefined);
    this.busyPoll = opts.busyPoll ?? false;
    this.invalidation = opts.invalidation ?? 'auto';
    if (!['auto', 'local-inv', 'dealloc'].includes(this.invalidation)) throw new RangeError("invalidation must be 'auto', 'local-inv' or 'dealloc'");
    this.windowType = checkWindowType(opts.windowType);
    optFunction(opts.authorize, 'authorize');
    optUint(opts.authorizeTimeoutMs, 'authorizeTimeoutMs', 60_000, 1);
    optUint(opts.maxPendingAdmissions, 'maxPendingAdmissions', 0xffff, 1);
    this.#authorize = opts.authorize;
    this.#authorizeTimeoutMs = opts.authorizeTimeoutMs ?? 5000;
    this.#maxPendingAdmissions = opts.maxPendingAdmissions ?? 128;
  }

  /** Listens on every address (rdma_cm, RC). */
  listen(addresses: Array<{ host: string; port: number }>): void {
    if (this.#closing) throw new TransportError('ECLOSED', 'the server is closed');
    if (!Array.isArray(addresses) || addresses.length === 0) throw new TypeError('addresses must be a non-empty array of { host, port }');
    for (const a of addresses) {
      if (typeof a?.host !== 'string') throw new TypeError('every address needs a host string');
      checkUint(a.port, 'port', 65535);
    }
    for (const a of addresses) {
      const id = CmId.create();
      try {
        id.on('connection', (req, pd) => this.#onConnection(req, pd));
        id.listen(a.host, a.port);
        // an address bound to a device: refuse a window type that is unsafe
        // there now rather than on every connect (a wildcard listener
        // refuses such connects with EOPNOTSUPP)
        const dev = id.info().device;
        if (dev) windowTypeFor(this.#devices.get(dev), this.windowType);
      } catch (err) {
        id.close();
        throw err;
      }
      this.#listeners.push(id);
    }
  }

  get sessionCount(): number {
    return this.#sessions.size;
  }

  /** Per session: its paths' state and counters. */
  stats(): Record<string, { paths: ServerPathStats[] }> {
    const out: Record<string, { paths: ServerPathStats[] }> = {};
    for (const [id, s] of this.#sessions) out[id] = { paths: s.paths.filter((p): p is ServerPath => !!p).map((p) => p.stats()) };
    return out;
  }

  /** stats() as Prometheus text exposition. */
  prometheus(): string {
    return serverMetrics(this.stats());
  }

  /**
   * Disconnects one path of a session (like RTRS's server sysfs
   * `disconnect`): the client fails its IOs over and reconnects.
   */
  disconnectPath(sessionId: string, pathIndex: number): boolean {
    const p = this.#sessions.get(sessionId)?.paths[pathIndex];
    if (!p || p.state === 'closed') return false;
    p.close('disconnected by the server');
    return true;
  }

  /** Stops listening, disconnects every path and frees every session. */
  async close(): Promise<void> {
    if (this.#closing) return;
    this.#closing = true;
    for (const l of this.#listeners) l.close();
    this.#listeners.length = 0;
    for (const s of [...this.#sessions.values()]) await s.destroy('server closing');
    this.#devices.close();
  }

  /** @internal */
  log(line: string): void {
    this.#log(line);
    this.emit('log', line);
  }

  /** @internal */
  get handler(): TransportHandler {
    return this.#handler;
  }

  /** @internal */
  forget(s: ServerSession): void {
    this.#sessions.delete(s.id);
    this.#closedSessions.add(s.id);
    if (this.#closedSessions.size > 4096) this.#closedSessions.delete(this.#closedSessions.values().next().value as string);
  }

  /** @internal */
  get lingerMs(): number {
    return this.#lingerMs;
  }

  #reject(id: CmId, code: P.RejectCode, why: string, opts: { retry?: boolean; detail?: number } = {}): void {
    try {
      this.log(`reject ${id.closed ? '?' : id.info().peer?.host ?? '?'}: ${code}: ${why}`);
      id.reject(P.encodeReject({ code, ...opts }));
    } catch (err) {
      // the peer gave up meanwhile (an admission that took its time)
      this.log(`reject (${code}) not delivered: ${(err as Error).message}`);
    } finally {
      id.close();
    }
  }

  #onConnection(id: CmId, privateData: Buffer): void {
    let req: P.ConnectRequest;
    try {
      req = P.decodeConnectRequest(privateData);
    } catch (err) {
      const e = err as ProtocolError;
      this.#reject(id, e.code === 'EPROTONOSUPPORT' ? 'EPROTONOSUPPORT' : 'EPROTO', e.message);
      return;
    }
    if (this.#closing) return this.#reject(id, 'ESHUTDOWN', 'server closing');
    if (!this.#authorize) return this.#admit(id, req, '');
    // admission first: until the hook says yes, the peer has no session, no
    // pool, no registration and no key (docs/protocol.md §3.4)
    if (this.#pendingAdmissions >= this.#maxPendingAdmissions) {
      return this.#reject(id, 'EBUSY', `${this.#pendingAdmissions} admissions pending`, { retry: true, detail: this.#maxPendingAdmissions });
    }
    const info = id.info();
    const peer: PeerInfo = {
      address: info.peer?.host ?? '', port: info.peer?.port ?? 0, device: info.device ?? '',
      sessionId: req.sessionId, pathIndex: req.pathIndex, pathCount: req.pathCount, reconnectCount: req.reconnectCount,
      newSession: req.newSession, credentials: Buffer.from(req.credentials ?? []),
    };
    // an explicit no is EACCES (final); a hook that throws, rejects or does
    // not answer in time is EBUSY with RETRY: its backend may be back soon
    const decide = (v: unknown): void => {
      if (this.#closing) return this.#reject(id, 'ESHUTDOWN', 'server closing');
      if (v === true) return this.#admit(id, req, '');
      if (typeof v === 'string') return this.#admit(id, req, v);
      this.#reject(id, 'EACCES', 'not authorized');
    };
    const unavailable = (why: string): void => this.#reject(id, 'EBUSY', why, { retry: true });
    let verdict: AuthorizeResult | Promise<AuthorizeResult>;
    try {
      verdict = this.#authorize(peer);
    } catch (err) {
      return unavailable(`authorize threw: ${(err as Error)?.message ?? String(err)}`);
    }
    if (!isThenable(verdict)) return decide(verdict);
    this.#pendingAdmissions++;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<symbol>((resolve) => {
      timer = setTimeout(() => resolve(TIMED_OUT), this.#authorizeTimeoutMs);
    });
    Promise.race([Promise.resolve(verdict), timeout]).then(
      (v) => (v === TIMED_OUT ? unavailable(`authorize did not answer within ${this.#authorizeTimeoutMs} ms`) : decide(v)),
      (err: unknown) => unavailable(`authorize rejected: ${(err as Error)?.message ?? String(err)}`),
    ).catch((err: unknown) => this.log(`admission of ${peer.address}: ${(err as Error)?.message ?? String(err)}`))
      .finally(() => {
        clearTimeout(timer);
        this.#pendingAdmissions--;
      });
  }

  /** Session lookup and accept, for a connect request admitted for `principal` (§3.3, §3.4). */
  #admit(id: CmId, req: P.ConnectRequest, principal: string): void {
    let s = this.#sessions.get(req.sessionId);
    let created = false;
    // a session belongs to the principal that created it: another may not join it
    if (s && s.principal !== principal) return this.#reject(id, 'EACCES', `session ${s.id} belongs to another principal`);
    if (!s) {
      if (!req.newSession || this.#closedSessions.has(req.sessionId)) return this.#reject(id, 'ESTALE', `unknown session ${req.sessionId}`);
      if (this.#sessions.size >= this.#maxSessions) return this.#reject(id, 'EUSERS', 'session limit', { retry: true, detail: this.#maxSessions });
      try {
        s = new ServerSession(this, req.sessionId, req.pathCount, principal);
      } catch (err) {
        return this.#reject(id, 'ENOMEM', `pool allocation failed: ${(err as Error).message}`, { retry: true });
      }
      this.#sessions.set(s.id, s);
      created = true;
    }
    if (s.closing) return this.#reject(id, 'ESTALE', `session ${s.id} is closing`);
    if (req.pathCount !== s.pathCount) return this.#reject(id, 'EINVAL', `pathCount ${req.pathCount} != ${s.pathCount}`, { detail: s.pathCount });
    const old = s.paths[req.pathIndex];
    const last = s.lastReconnect[req.pathIndex];
    if (old && old.state !== 'closed') {
      if (req.reconnectCount <= old.reconnectCount) {
        return this.#reject(id, 'EBUSY', `path ${req.pathIndex} is connected (reconnect ${old.reconnectCount} >= ${req.reconnectCount})`, { retry: true });
      }
      old.close(`superseded by reconnect ${req.reconnectCount}`);
    } else if (last !== undefined && req.reconnectCount < last) {
      return this.#reject(id, 'EBUSY', `stale reconnect ${req.reconnectCount} < ${last}`, { retry: true });
    }
    let dev: DevState;
    try {
      const info = id.info();
      dev = s.devState(this.#devices, info.device!);
    } catch (err) {
      if (created) void s.destroy('setup failed');
      if ((err as TransportError).code === 'EOPNOTSUPP') return this.#reject(id, 'EOPNOTSUPP', (err as Error).message);
      return this.#reject(id, 'ENOMEM', `registration failed: ${(err as Error).message}`, { retry: true });
    }
    let path: ServerPath;
    try {
      path = new ServerPath(s, req.pathIndex, req.reconnectCount, id, dev, req.localReadInvalidate ?? false);
    } catch (err) {
      if (created) void s.destroy('setup failed');
      return this.#reject(id, 'ENOMEM', `connection setup failed: ${(err as Error).message}`, { retry: true });
    }
    s.attach(path);
    const accept = P.encodeAccept({ ...this.params, sessionCreated: created, hbIntervalMs: this.hbIntervalMs, hbMissedMax: this.hbMissedMax });
    const failed = (err: unknown): void => {
      path.close(`accept failed: ${(err as Error)?.message ?? String(err)}`);
      // a session this connect created has nothing to linger for
      if (created && !s!.paths.some((x) => x && x.state !== 'closed')) void s!.destroy('its first connect failed');
    };
    try {
      // (rdma_accept throws at once when the peer already gave up)
      id.accept({ privateData: accept, retryCount: 7, rnrRetryCount: 7 }).then(() => path.established(), failed);
    } catch (err) {
      failed(err);
    }
  }
}

class ServerSession {
  readonly server: TransportServer;
  readonly id: string;
  readonly pathCount: number;
  readonly params: P.SessionParams;
  readonly paths: Array<ServerPath | undefined>;
  readonly lastReconnect: Array<number | undefined>;
  readonly records: ChunkRecord[];
  /** 1 while a task (an IO, a resume, a key's info bind) holds chunk c */
  readonly #busy: Uint8Array;
  /** tasks waiting for chunk c */
  readonly #queued: Array<Array<() => void | Promise<void>> | undefined>;
  readonly #devs = new Map<string, DevState>();
  /** #devs' values, for the request path (walked without an iterator) */
  readonly devList: DevState[] = [];
  /** each chunk's latest header and data views (a request's Buffers, reused while their extent repeats) */
  readonly #headerViews: Array<Buffer | undefined>;
  readonly #dataViews: Array<Buffer | undefined>;
  #linger: NodeJS.Timeout | undefined;
  closing = false;

  /** who the authorize hook admitted when the session was created ('' without a hook, or for `true`) */
  readonly principal: string;

  constructor(server: TransportServer, id: string, pathCount: number, principal: string) {
    this.server = server;
    this.id = id;
    this.principal = principal;
    this.pathCount = pathCount;
    this.params = server.params;
    this.#poolSize = this.params.queueDepth * this.params.chunkSize;
    this.paths = new Array(pathCount).fill(undefined);
    this.lastReconnect = new Array(pathCount).fill(undefined);
    this.records = Array.from({ length: this.params.queueDepth }, () => R.newRecord<ServerPath>());
    this.#busy = new Uint8Array(this.params.queueDepth);
    this.#headerViews = new Array(this.params.queueDepth).fill(undefined);
    this.#dataViews = new Array(this.params.queueDepth).fill(undefined);
    this.#queued = new Array(this.params.queueDepth).fill(undefined);
  }

  readonly #poolSize: number;
  #poolMem: ArrayBuffer | undefined;
  #buf: Buffer = EMPTY;

  /** The chunk pool (allocated once, when the first device registers it). */
  get buf(): Buffer {
    return this.#buf;
  }

  /** The session's PD and pool registration on `name` (created on first use). */
  devState(devices: DeviceCache, name: string): DevState {
    let d = this.#devs.get(name);
    if (d) return d;
    const dev = devices.get(name);
    const pd = dev.allocPd();
    try {
      if (!this.#poolMem) {
        this.#poolMem = pd.allocate(this.#poolSize);
        this.#buf = Buffer.from(this.#poolMem);
      }
      // remote access only through memory windows (docs/protocol.md §1.1):
      // type 1 in this session's PD where type 2 is unsafe (rxe)
      const type = windowTypeFor(dev, this.server.windowType);
      const pool = pd.registerMemory(this.#poolMem, Access.LOCAL_WRITE | Access.MW_BIND);
      const windows = type === 1 ? new DeviceWindows(pd, pool, this.params) : undefined;
      d = { pd, pool, windows, deallocInvalidate: this.server.invalidation === 'dealloc' };
    } catch (err) {
      pd.close();
      throw err;
    }
    this.#devs.set(name, d);
    this.devList.push(d);
    return d;
  }

  /**
   * Chunk c's bytes [off, off + len) (a view of the pool, nothing copied);
   * the header's and the data's latest views are kept per chunk and handed
   * out again while an IO's extent is the same as the last one's.
   */
  view(c: number, off: number, len: number, header: boolean): Buffer {
    const cache = header ? this.#headerViews : this.#dataViews;
    const start = c * this.params.chunkSize + off;
    const v = cache[c];
    if (v !== undefined && v.byteOffset === this.#buf.byteOffset + start && v.length === len) return v;
    const fresh = this.#buf.subarray(start, start + len);
    cache[c] = fresh;
    return fresh;
  }

  attach(p: ServerPath): void {
    if (this.#linger) clearTimeout(this.#linger);
    this.#linger = undefined;
    this.paths[p.index] = p;
    this.lastReconnect[p.index] = p.reconnectCount;
  }

  detach(p: ServerPath): void {
    if (this.paths[p.index] === p) this.paths[p.index] = undefined;
    if (this.closing || this.paths.some((x) => x && x.state !== 'closed')) return;
    this.#linger = setTimeout(() => void this.destroy('no paths left'), this.server.lingerMs);
    this.#linger.unref();
  }

  /** Paths that hold keys for the pool (info exchange started, not closed). */
  keyedPaths(): ServerPath[] {
    return this.paths.filter((p): p is ServerPath => !!p && p.state !== 'closed' && p.keyed);
  }

  /**
   * Every key set through which a peer may reach the pool: each device's
   * type 1 windows (whether or not a path there is keyed now: a key the
   * client learnt stays valid until taken away) and each keyed path's type 2
   * windows.
   */
  keySets(): ChunkKeys[] {
    const out: ChunkKeys[] = [];
    for (const d of this.#devs.values()) if (d.windows) out.push(d.windows);
    for (const p of this.keyedPaths()) if (p.keys.type === 2) out.push(p.keys);
    return out;
  }

  /**
   * Runs fn after every earlier task on chunk c (one IO per chunk at a
   * time). A free chunk runs it at once, and a task that finishes
   * synchronously (returns no promise) frees the chunk at once: a request
   * with a synchronous handler costs no promise and no microtask hop.
   */
  serialize(c: number, fn: () => void | Promise<void>): void {
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

  #run(c: number, fn: () => void | Promise<void>): void {
    this.#busy[c] = 1;
    let r: void | Promise<void> = undefined;
    try {
      r = fn();
    } catch (err) {
      this.taskFailed(c, err);
    }
    this.release(c, r);
  }

  #after(c: number, r: Promise<void>): void {
    r.then(() => this.#next(c), (err: unknown) => {
      this.taskFailed(c, err);
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
        this.taskFailed(c, err);
      }
      if (r) return this.#after(c, r);
    }
    this.#busy[c] = 0;
  }

  /** a task on chunk c failed (it threw or rejected): logged, the chunk goes on */
  taskFailed(c: number, err: unknown): void {
    this.server.log(`session ${this.id}: chunk ${c}: ${(err as Error)?.message ?? String(err)}`);
  }

  async destroy(why: string): Promise<void> {
    if (this.closing && this.#devs.size === 0) return;
    this.closing = true;
    if (this.#linger) clearTimeout(this.#linger);
    // running handlers finish on their own; their responses are dropped
    for (const p of this.paths) p?.close(why);
    for (const d of this.#devs.values()) {
      d.windows?.close();
      d.pd.close(); // closes its windows, the spare ones too
    }
    this.#devs.clear();
    this.devList.length = 0;
    this.server.forget(this);
    this.server.log(`session ${this.id} closed: ${why}`);
  }
}

class ServerPath {
  readonly session: ServerSession;
  readonly index: number;
  readonly reconnectCount: number;
  readonly conn: Conn;
  readonly dev: DevState;
  readonly device: string;
  state: 'connecting' | 'connected' | 'closed' = 'connecting';
  /** the keys this path's peer uses: its device's type 1 windows, or its own type 2 ones */
  readonly keys: ChunkKeys;
  /** the info exchange has started: this path's peer may hold keys */
  keyed = false;
  /** the client invalidates its read windows itself (1.1): answer reads with SEND */
  readonly localReadInvalidate: boolean;
  readonly #rsp: Area;
  readonly #rspSlot: number;
  readonly #ctrl: Area;
  #infoDone = false;
  #infoTimer: NodeJS.Timeout | undefined;
  #counters = { reads: 0, readBytes: 0, writes: 0, writeBytes: 0, replays: 0 };
  readonly #wire = wireCounters();
  // per-IO scratch, reused (one IO at a time uses them, synchronously)
  readonly #writeTrailer = Buffer.alloc(P.WRITE_TRAILER_SIZE);
  readonly #readTrailer = Buffer.alloc(P.READ_TRAILER_SIZE);
  readonly #result: Result = { status: 0, header: EMPTY, length: 0 };
  readonly #out: Outgoing;

  constructor(session: ServerSession, index: number, reconnectCount: number, id: CmId, dev: DevState, localReadInvalidate: boolean) {
    this.session = session;
    this.index = index;
    this.reconnectCount = reconnectCount;
    this.dev = dev;
    this.device = dev.pd.device.name;
    this.localReadInvalidate = localReadInvalidate;
    const qd = session.params.queueDepth;
    this.conn = new Conn(id, dev.pd, { maxRecvWr: qd + P.RECV_SLACK, maxSendWr: qd * 4 + 64, busyPoll: session.server.busyPoll, wire: this.#wire });
    try {
      if (dev.windows) {
        this.keys = dev.windows;
      } else {
        const own = new PathWindows(dev.pd, dev.pool, session.params, this.conn, dev.deallocInvalidate);
        own.onInvalidate = () => this.#wire.invalidations++;
        this.keys = own;
      }
      this.conn.setupReceives(P.CTRL_MSG_SIZE, qd + P.RECV_SLACK);
      this.#rspSlot = P.clientRecvSize(session.params, session.pathCount);
      this.#rsp = registerArea(dev.pd, this.#rspSlot * qd);
      this.#ctrl = registerArea(dev.pd, P.RESUME_SIZE * qd);
      this.#out = outgoing(dev.pool.lkey, this.#rsp.mr.lkey);
    } catch (err) {
      this.conn.close();
      throw err;
    }
    this.conn.onRecv = (wc, slot) => this.#onRecv(wc, slot);
    this.conn.onError = (err) => this.close(err.message);
    const infoMs = session.server.infoTimeoutMs;
    this.#infoTimer = setTimeout(() => this.close(`no INFO_REQ within ${infoMs} ms`), infoMs);
    this.#infoTimer.unref();
    id.on('disconnected', () => this.close('peer disconnected'));
  }

  get name(): string {
    return `path ${this.session.id}/${this.index}`;
  }

  /** (a getter, so checks after an await are not narrowed away) */
  get closed(): boolean {
    return this.state === 'closed';
  }

  stats(): ServerPathStats {
    return { index: this.index, state: this.state, device: this.device, ...this.#counters, latencyNs: this.conn.latencyNs, wire: wireStats(this.#wire) };
  }

  established(): void {
    if (this.state === 'closed') return;
    this.session.server.log(`${this.name}: established on ${this.device} (reconnect ${this.reconnectCount})`);
    // busy polling: a server waits for requests all the time, so poll all
    // the time (until the path closes); the channel would add a wakeup
    if (this.session.server.busyPoll) this.conn.ref();
  }

  violation(err: unknown): void {
    const reason = err instanceof ProtocolError ? err.reason : 'internal';
    const msg = err instanceof ProtocolError ? err.detail : (err as Error)?.message ?? String(err);
    this.session.server.log(`${this.name}: protocol violation: ${reason}: ${msg}`);
    this.session.server.emit('violation', { sessionId: this.session.id, pathIndex: this.index, reason, message: msg });
    this.close(`protocol violation: ${reason}`);
  }

  close(why: string): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    clearTimeout(this.#infoTimer);
    this.session.server.log(`${this.name}: closed: ${why}`);
    this.conn.close();
    // a device's type 1 windows stay: the session's other paths there use them
    if (this.keys.type === 2) this.keys.close();
    this.#rsp.mr.close();
    this.#ctrl.mr.close();
    this.session.detach(this);
  }

  #onRecv(wc: WorkCompletion, slot: number): void {
    if (this.state === 'closed') return;
    const p = this.session.params;
    try {
      // the protocol never has a client invalidate server keys (rxe's flag
      // quirk is turned into invalidatedRkey by the CompletionQueue)
      if (wc.invalidatedRkey !== undefined) throw new ProtocolError('send-with-inv', 'the client sent SEND_WITH_INV');
      if (wc.opcodeName === 'RECV_RDMA_WITH_IMM') {
        const imm = P.decodeImm(wc.imm ?? 0, wc.byteLen, 'server', p);
        switch (imm.type) {
          case 'hb':
            this.conn.answerHeartbeat(imm.id);
            break;
          case 'hb-ack':
            this.conn.heartbeatAck(imm.id);
            break;
          case 'write-req':
          case 'read-req':
            if (!this.#infoDone) throw new ProtocolError('state', 'IO request before the info exchange');
            this.#onRequest(imm.type === 'write-req' ? 'write' : 'read', imm.chunk, imm.trailerOffset, wc.byteLen);
            break;
          default:
            throw new ProtocolError('imm-direction', `${imm.type} imm received by the server`);
        }
        // replaced after the request ran (a synchronous handler's response is
        // already posted): the post is off the IO's critical path, and the
        // RECV_SLACK spare receives cover the client's next request meanwhile
        this.conn.repost(slot);
        return;
      }
      if (wc.opcodeName !== 'RECV') throw new ProtocolError('opcode', `unexpected completion ${wc.opcodeName}`);
      const m = P.decodeServerMessage(this.conn.recvBytes(slot, wc.byteLen), {
        queueDepth: p.queueDepth, strict: p.strict, minRecvSize: P.clientRecvSize(p, this.session.pathCount),
      });
      this.conn.repost(slot);
      switch (m.type) {
        case 'info-req':
          if (this.#infoDone) throw new ProtocolError('state', 'second INFO_REQ');
          this.#infoDone = true;
          clearTimeout(this.#infoTimer);
          void this.#info(m.name).catch((err) => this.close(`info exchange failed: ${(err as Error).message}`));
          return;
        case 'resume-req':
          if (!this.#infoDone) throw new ProtocolError('state', 'RESUME_REQ before the info exchange');
          this.session.serialize(m.chunk, () => this.#resume(m.chunk, m.seq));
          return;
        case 'session-close':
          void this.session.destroy('client closed the session');
          return;
      }
    } catch (err) {
      this.violation(err);
    }
  }

  // ------------------------------------------------------------ keys (§4)

  async #info(name: string): Promise<void> {
    const { queueDepth: qd, chunkSize: cs, strict } = this.session.params;
    const descs: P.InfoDesc[] = [];
    const pool = this.dev.pool;
    // from here on this path is "keyed": IOs on other paths invalidate and
    // re-key its keys too
    this.keyed = true;
    if (strict) {
      // each key is made ready under its chunk's lock, so none is live
      // while a handler runs on the chunk
      const binds: Promise<void>[] = [];
      for (let c = 0; c < qd; c++) {
        binds.push(new Promise<void>((resolve, reject) => {
          this.session.serialize(c, async () => {
            try {
              if (!this.closed) await this.keys.ready(c, this.conn);
              resolve();
            } catch (err) {
              reject(err as Error);
            }
          });
        }));
      }
      await Promise.all(binds);
      for (let c = 0; c < qd; c++) descs.push({ addr: BigInt(pool.addr + c * cs), rkey: this.keys.key(c), len: cs });
    } else {
      const rkey = await this.keys.ready(0, this.conn);
      descs.push({ addr: BigInt(pool.addr), rkey, len: qd * cs });
    }
    if (this.closed) return;
    const msgs = P.encodeInfoRsp(descs);
    const area = registerArea(this.dev.pd, msgs.length * P.CTRL_MSG_SIZE);
    // connected before the client can know it: its first request may arrive
    // in the same completion batch as this send's own completion
    this.state = 'connected';
    try {
      msgs.forEach((m, i) => m.copy(area.buf, i * P.CTRL_MSG_SIZE));
      // every chunk key is bound before the client learns it (SQ order)
      await this.conn.postAndWait(msgs.map((m, i) => ({ opcode: 'SEND', sge: [area.mr.sge(i * P.CTRL_MSG_SIZE, m.length)] })));
    } finally {
      area.mr.close();
    }
    if (this.closed) return;
    this.conn.startHeartbeat(this.session.server.hbIntervalMs, this.session.server.hbMissedMax, () => this.close('heartbeats missed'));
    this.session.server.log(`${this.name}: connected (${name || 'unnamed'}), ${descs.length} descriptors`);
  }

  // ----------------------------------------------------------- IO (§6, §7)

  /** One IO at a time per chunk: a free chunk runs the request now (no closure), a busy one queues it. */
  #onRequest(kind: 'write' | 'read', c: number, trailerOffset: number, byteLen: number): void {
    const s = this.session;
    if (!s.acquire(c)) return s.serialize(c, () => this.#request(kind, c, trailerOffset, byteLen));
    let r: void | Promise<void> = undefined;
    try {
      r = this.#request(kind, c, trailerOffset, byteLen);
    } catch (err) {
      s.taskFailed(c, err);
    }
    s.release(c, r);
  }

  /**
   * A request copy arrived for chunk c (§7.1). Synchronous as far as it can
   * be: a strict invalidation that completes at once (type 1 windows are
   * deallocated) and a handler that returns its result (not a promise)
   * cost no promise and no microtask hop; the returned promise (if any)
   * holds the chunk's lock until the IO is answered.
   */
  #request(kind: 'write' | 'read', c: number, trailerOffset: number, byteLen: number): void | Promise<void> {
    const s = this.session;
    if (this.state !== 'connected' || s.closing) return;
    if (s.params.strict) {
      const inv = this.#invalidate(c);
      if (inv === false) return;
      if (inv !== true) return inv.then((ok) => (ok ? this.#arrived(kind, c, trailerOffset, byteLen) : undefined));
    }
    return this.#arrived(kind, c, trailerOffset, byteLen);
  }

  /**
   * Strict, on arrival (§7.1 step 2): chunk c's key taken away in every key
   * set of the session (ServerSession.keySets(), walked without building
   * the list). true: done now; false: it could not be, this path closed; a
   * promise: some invalidation completes later (a LOCAL_INV, a bind still
   * queued), resolved with the same meaning.
   */
  #invalidate(c: number): boolean | Promise<boolean> {
    const s = this.session;
    let pending: Array<Promise<void>> | undefined;
    try {
      // type 1 deallocations are counted on the arrival path (a device's
      // windows are shared by its paths); LOCAL_INVs by the path posting them
      for (const d of s.devList) {
        const k = d.windows;
        if (!k) continue;
        if (k.exposed(c)) this.#wire.invalidations++;
        const x = k.invalidate(c);
        if (x) (pending ??= []).push(x);
      }
      for (const q of s.paths) {
        if (!q || q.state === 'closed' || !q.keyed || q.keys.type !== 2) continue;
        const x = q.keys.invalidate(c);
        if (x) (pending ??= []).push(x);
      }
    } catch (err) {
      // no fresh window (the device's windows are used up): the chunk's
      // key stays, so its handler must not run; the client fails over
      for (const x of pending ?? []) x.catch(() => undefined);
      this.close(`cannot take chunk ${c}'s key away: ${(err as Error).message}`);
      return false;
    }
    if (!pending) return !this.closed;
    return Promise.allSettled(pending).then((settled) => {
      const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed && s.keySets().some((k) => k.type === 1 && k.exposed(c))) {
        this.close(`cannot take chunk ${c}'s key away: ${(failed.reason as Error)?.message}`);
        return false;
      }
      return !this.closed;
    });
  }

  /** The request's keys are gone (strict): its trailer, the record's decision, the handler (§7.1 steps 3-4). */
  #arrived(kind: 'write' | 'read', c: number, trailerOffset: number, byteLen: number): void | Promise<void> {
    const s = this.session;
    const p = s.params;
    if (this.state !== 'connected') return;
    const at = c * p.chunkSize + trailerOffset;
    // copy the trailer out: no re-reads of peer-writable memory after the
    // checks (into this path's scratch: the decoders copy its fields out)
    const tb = kind === 'write' ? this.#writeTrailer : this.#readTrailer;
    s.buf.copy(tb, 0, at, at + tb.length);
    let w: P.WriteTrailer | undefined;
    let r: P.ReadTrailer | undefined;
    try {
      if (kind === 'write') w = P.decodeWriteTrailer(tb, trailerOffset, p);
      else r = P.decodeReadTrailer(tb, trailerOffset, byteLen, p);
    } catch (err) {
      this.violation(err);
      return;
    }
    const rec = s.records[c];
    const d = r ? R.onRequest(rec, c, r.seq, 'read', this, r.addr, r.rkey) : R.onRequest(rec, c, w!.seq, 'write', this);
    switch (d.decision) {
      case 'run':
        break;
      case 'replay':
        this.#counters.replays++;
        this.#respond(c, rec, true);
        return;
      case 'await':
        return; // (the chunk's lock means a running IO is never seen here)
      case 'drop-stale':
        s.server.log(`${this.name}: dropped a stale copy of chunk ${c} seq ${rec.seq}`);
        return this.#rekey(c);
      case 'violation':
        return this.violation(new ProtocolError(d.reason, d.message));
      default:
        throw new Error(`unexpected decision ${d.decision} for a request`);
    }
    const req: TransportRequest = {
      kind, sessionId: s.id, pathIndex: this.index,
      header: w ? s.view(c, w.dataLen, w.hdrLen, true) : s.view(c, trailerOffset - r!.hdrLen, r!.hdrLen, true),
      data: s.view(c, 0, w ? w.dataLen : r!.len, false),
    };
    let res: TransportResponse | void | Promise<TransportResponse | void>;
    try {
      res = s.server.handler(req);
    } catch (err) {
      res = this.#handlerFailed(c, err);
    }
    // a handler that answers at once is answered at once
    if (isThenable(res)) {
      return Promise.resolve(res).then(
        (v) => this.#handled(c, rec, req, v),
        (err: unknown) => this.#handled(c, rec, req, this.#handlerFailed(c, err)),
      );
    }
    this.#handled(c, rec, req, res);
  }

  #handlerFailed(c: number, err: unknown): TransportResponse {
    this.session.server.log(`${this.name}: handler failed on chunk ${c}: ${(err as Error)?.message ?? String(err)}`);
    return HANDLER_FAILED;
  }

  /** The handler's result for the running IO on chunk c: recorded (§7.2) and answered on the latest copy's path. */
  #handled(c: number, rec: ChunkRecord, req: TransportRequest, res: TransportResponse | void): void {
    const out = this.#result;
    const problem = checkResult(res, req, this.session.params.maxHeaderSize, out);
    if (problem) this.session.server.log(`${this.name}: handler result rejected: ${problem}`);
    const latest = R.complete(rec, out.status, out.header, out.length);
    if (req.kind === 'write') {
      this.#counters.writes++;
      this.#counters.writeBytes += req.data.length;
    } else {
      this.#counters.reads++;
      this.#counters.readBytes += rec.dataLen;
    }
    const target = latest && latest.state === 'connected' ? latest : this;
    target.#respond(c, rec, false);
  }

  /** Strict: new keys for chunk c on every live path's key set except this one's (bound and awaited). */
  async #rekeyOthers(c: number): Promise<void> {
    const sets = new Map<ChunkKeys, ServerPath>();
    for (const q of this.session.keyedPaths()) if (q.keys !== this.keys && q.keys.key(c) === 0 && !sets.has(q.keys)) sets.set(q.keys, q);
    await Promise.all([...sets].map(([k, q]) => k.ready(c, q.conn).catch(() => 0)));
  }

  async #rekey(c: number): Promise<void> {
    if (!this.session.params.strict) return;
    await this.#rekeyOthers(c);
    if (this.keys.key(c) === 0 && this.state === 'connected') await this.keys.ready(c, this.conn).catch(() => 0);
  }

  /** Sends chunk c's recorded result on this path (§7.3, §7.4), through this path's reused work requests. */
  #respond(c: number, rec: ChunkRecord, replay: boolean): void {
    if (this.state !== 'connected') return; // the client resumes on another path
    const s = this.session;
    const p = s.params;
    const o = this.#out;
    const wrs = o.wrs;
    wrs.length = 0;
    // read data goes only to the destination of a copy that arrived here (§7.5)
    const dest = R.readDataGoesTo(rec, this);
    if (dest && rec.dataLen > 0) {
      const wr = o.data;
      wr.sge![0].addr = this.dev.pool.addr + c * p.chunkSize;
      wr.sge![0].length = rec.dataLen;
      wr.remoteAddr = rec.destAddr;
      wr.rkey = rec.destRkey;
      wr.wrId = wrId(WrKind.SEND, c);
      wrs.push(wr);
    }
    if (p.strict && this.keys.key(c) === 0) {
      // a new key through this path (§7.3), bound ahead of the response in
      // its send queue: valid for every path of this device's key set (type
      // 1) or this path only (type 2); another path without one gets one
      // when the client asks there with RESUME_REQ
      const bind = this.keys.rekey(c, this.conn, c);
      if (bind) wrs.push(bind);
    }
    if (!p.strict && rec.kind === 'write' && rec.header.length === 0) {
      o.imm.imm = P.encodeIoRspImm(c, rec.status);
      o.imm.wrId = wrId(WrKind.SEND, c);
      wrs.push(o.imm);
      this.conn.post(wrs);
      return;
    }
    const keys = o.keys;
    keys.length = 0;
    if (p.strict) {
      let n = 0;
      for (const q of s.paths) {
        if (!q || q.state === 'closed' || !q.keyed || q.keys.key(c) === 0) continue;
        const k = (o.keyPool[n++] ??= { pathIndex: 0, generation: 0, rkey: 0 });
        k.pathIndex = q.index;
        k.generation = q.reconnectCount & 0xffff;
        k.rkey = q.keys.key(c);
        keys.push(k);
      }
    }
    const off = c * this.#rspSlot;
    const f = o.fields;
    f.chunk = c;
    f.status = rec.status;
    f.seq = rec.seq;
    f.dataLen = dest ? rec.dataLen : 0;
    f.read = rec.kind === 'read';
    f.replay = replay;
    f.header = rec.header;
    const len = P.writeIoRsp(this.#rsp.buf, off, f);
    // a 1.1 client on rxe exposes type 1 windows, which SEND_WITH_INV cannot
    // invalidate (and fails the connection trying): it takes them away itself
    const invalidate = dest && rec.destRkey !== 0 && !this.localReadInvalidate;
    const wr = o.rsp;
    wr.opcode = invalidate ? 'SEND_WITH_INV' : 'SEND';
    wr.invalidateRkey = invalidate ? rec.destRkey : undefined;
    wr.sge![0].addr = this.#rsp.mr.addr + off;
    wr.sge![0].length = len;
    wr.wrId = wrId(WrKind.SEND, c);
    wrs.push(wr);
    // not posted: the connection failed (and closes this path); no key was bound
    if (!this.conn.post(wrs) && p.strict) this.keys.forget(c);
  }

  #resume(c: number, seq: bigint): void | Promise<void> {
    if (this.state !== 'connected') return;
    const rec = this.session.records[c];
    const d = R.onResume(rec, c, seq, this);
    switch (d.decision) {
      case 'await':
        return;
      case 'replay':
        this.#counters.replays++;
        this.#respond(c, rec, true);
        return;
      case 'resumed':
        return this.#resumeRsp(c, seq);
      case 'violation':
        return this.violation(new ProtocolError(d.reason, d.message));
      default:
        throw new Error(`unexpected decision ${d.decision} for a resume`);
    }
  }

  /** RESUME_RSP: chunk c's key on this path (bound first when it has none). */
  async #resumeRsp(c: number, seq: bigint): Promise<void> {
    const rkey = this.session.params.strict ? await this.keys.ready(c, this.conn) : this.keys.key(c);
    if (this.state !== 'connected') return;
    const m = P.encodeResumeRsp({ chunk: c, rkey, seq });
    m.copy(this.#ctrl.buf, c * P.RESUME_SIZE);
    this.conn.post([{ opcode: 'SEND', sge: [this.#ctrl.mr.sge(c * P.RESUME_SIZE, P.RESUME_SIZE)], wrId: wrId(WrKind.SEND, c) }]);
  }
}

/**
 * A path's response work requests, reused by every response (postSend
 * copies them into the send queue): what changes per IO is written into
 * them before the post.
 */
interface Outgoing {
  wrs: SendWorkRequest[];
  /** a read's data, RDMA WRITE to the request's destination */
  data: SendWorkRequest & { sge: Sge[] };
  /** relaxed write with no response header: the response is the imm */
  imm: SendWorkRequest;
  /** IO_RSP (SEND, or SEND_WITH_INV of the read destination's key) */
  rsp: SendWorkRequest & { sge: Sge[] };
  keys: P.IoRspKey[];
  keyPool: P.IoRspKey[];
  fields: P.IoRspFields & { keys: P.IoRspKey[] };
}

function outgoing(poolLkey: number, rspLkey: number): Outgoing {
  const keys: P.IoRspKey[] = [];
  return {
    wrs: [],
    data: { opcode: 'RDMA_WRITE', sge: [{ addr: 0, length: 0, lkey: poolLkey }], remoteAddr: 0, rkey: 0, wrId: 0 },
    imm: { opcode: 'RDMA_WRITE_WITH_IMM', imm: 0, sge: [], remoteAddr: 0, rkey: 0, wrId: 0 },
    rsp: { opcode: 'SEND', invalidateRkey: undefined, sge: [{ addr: 0, length: 0, lkey: rspLkey }], wrId: 0 },
    keys,
    keyPool: [],
    fields: { chunk: 0, status: 0, seq: 1n, dataLen: 0, read: false, replay: false, keys, header: EMPTY },
  };
}

/** What the handler's result is recorded as (one per path, reused: read before the next IO starts). */
interface Result {
  status: number;
  header: Buffer;
  length: number;
}

const HANDLER_FAILED: TransportResponse = Object.freeze({ status: P.STATUS_EIO });

/** Checks a handler's result into out; returns why it was refused (then out is EIO), or undefined. */
function checkResult(res: TransportResponse | void, req: TransportRequest, maxHeader: number, out: Result): string | undefined {
  out.status = P.STATUS_EIO;
  out.header = EMPTY;
  out.length = 0;
  const status = res?.status ?? 0;
  if (!Number.isInteger(status) || status < 0 || status > P.MAX_STATUS) return `status ${String(status)} outside 0..${P.MAX_STATUS}`;
  const h = res?.header ?? EMPTY;
  if (!(h instanceof Uint8Array) || h.length > maxHeader) return `response header larger than ${maxHeader} bytes`;
  const length = req.kind === 'read' ? res?.length ?? (status === 0 ? req.data.length : 0) : 0;
  if (!Number.isInteger(length) || length < 0 || length > req.data.length) return `read length ${String(length)} outside 0..${req.data.length}`;
  out.status = status;
  // the record keeps a copy (replays answer with it after the handler's
  // buffer may have changed); an empty header needs none
  out.header = h.length === 0 ? EMPTY : Buffer.from(h);
  out.length = length;
  return undefined;
}

function isThenable<T>(v: T | PromiseLike<T>): v is PromiseLike<T> {
  return typeof v === 'object' && v !== null && typeof (v as { then?: unknown }).then === 'function';
}
