/**
 * The transport server (docs/protocol.md): listens on one or more addresses;
 * a session (UUID) is created when its first path connects, with its chunk
 * pool allocated once and registered in a protection domain of its own on
 * every device its paths use. Requests reach an async handler that sees the
 * user header and a zero-copy view of the data; its status and response
 * header go back in one message. Strict mode (default) invalidates a chunk's
 * keys on every path before the handler runs and re-keys on completion.
 * This file: the options, the listeners and admission; sessions and paths
 * (requests, responses) are server-session.ts's, the record rules records.ts's.
 */
import { EventEmitter } from 'events';
import { CmId } from '../verbs';
import { checkUint, optBool, optFunction, optUint } from '../verbs/args';
import { checkBusyPoll } from './client-options';
import { DeviceCache } from './conn';
import { TransportError } from './errors';
import type { ServerPathStats } from './types';
import * as P from './protocol';
import { ProtocolError } from './protocol';
import { serverMetrics } from './stats';
import type { TransportServerEvents } from './events';
import { DevState, ServerPath, ServerSession } from './server-session';
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
  /**
   * How the paths' completion queues are polled (CompletionQueueOptions.busyPoll):
   * 'adaptive' (default) spins for spinBudgetUs after each completion, then
   * sleeps on the completion channel; true spins all the time; false always
   * sleeps on the channel.
   */
  busyPoll?: boolean | 'adaptive';
  /** busyPoll 'adaptive': microseconds of polling with no completion before sleeping (1..10000000, default 1000) */
  spinBudgetUs?: number;
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
  readonly busyPoll: boolean | 'adaptive';
  readonly spinBudgetUs: number | undefined;
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
    checkBusyPoll(opts.busyPoll, opts.spinBudgetUs);
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
    this.busyPoll = opts.busyPoll ?? 'adaptive';
    this.spinBudgetUs = opts.spinBudgetUs;
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

function isThenable<T>(v: T | PromiseLike<T>): v is PromiseLike<T> {
  return typeof v === 'object' && v !== null && typeof (v as { then?: unknown }).then === 'function';
}
