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
import { checkClientOptions, checkPathOptions, ClientOptions, ClientPathOptions, IoOptions, IoResult } from './client-options';
import { ClientIos } from './client-ios';
import { ClientPath, PathHost, portState } from './client-path';
import { ClientMemory } from './client-memory';
import { isFatalForPath, TransportError } from './errors';
import type { TransportClientEvents } from './events';
import { PathSelector, PolicyName, DEFAULT_POLICY } from './policy';
import * as P from './protocol';
import { ProtocolError } from './protocol';
import { clientMetrics } from './stats';
import type { ClientSessionStats, PathUpReason, SessionUpReason } from './types';

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
  /** slot -> the highest reconnect count a removed path used in it (the server refuses lower ones) */
  readonly #slotReconnect = new Map<number, number>();
  #sessionUp = false;
  #sessionCounters = { downs: 0, rejoins: 0 };
  /** the next session-up reason when a path connects while the session is down */
  #upReason: SessionUpReason = 'connected';
  readonly #selector: PathSelector<ClientPath>;
  /** devices, PDs, windows, staging slots and the caller's registered buffers */
  readonly #mem: ClientMemory;
  /** the IOs: queue, chunk ledger, failover, answers */
  readonly #ios: ClientIos;
  #established = false;
  #closing = false;
  /** SESSION_CLOSE is on its way: the server's disconnects that answer it are no path going down */
  #closeSent = false;
  #closed = false;
  #fatal: Error | undefined;
  readonly #host: PathHost;

  constructor(opts: ClientOptions) {
    super();
    const checked = checkClientOptions(opts);
    this.#sessionId = checked.sessionId;
    this.#pathSlots = checked.pathSlots;
    this.#mem = new ClientMemory(checked.windowType);
    this.#opts = opts;
    this.#paths = opts.paths.map((p, i) => new ClientPath(i, p, opts.reconnect));
    this.#selector = new PathSelector(opts.policy ?? DEFAULT_POLICY, () => this.#paths);
    this.#host = this.#pathHost();
    this.#ios = this.#ioHost();
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
    const ios = this.#ios;
    return {
      sessionId: this.#sessionId, state: this.#closed ? 'closed' : this.#sessionUp ? 'up' : 'down', queueDepth: this.#queueDepth,
      waiting: ios.waitingCount, unsettled: ios.unsettledCount, inflight: ios.inflightCount,
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
    path.attemptFailed = false; // a path waiting to reconnect is torn down too
    this.#pathFailed(path, new TransportError('ECONNRESET', 'the path was removed'));
    path.state = 'closed';
    this.#forget(path);
    this.#log(`${path.name}: removed`);
    this.emit('path', path.id, 'removed');
    this.#failIfNoPaths(); // the others may all be dead
  }

  #forget(path: ClientPath): void {
    const i = this.#paths.indexOf(path);
    if (i >= 0) this.#paths.splice(i, 1);
    this.#ios.ledger?.dropKeys(path.id);
    this.#slotReconnect.set(path.id, Math.max(path.reconnectCount, this.#slotReconnect.get(path.id) ?? -1));
  }

  /**
   * Registered memory for zero-copy IO: data written from it and reads into
   * it skip the staging copy. Registered lazily on each device used.
   */
  allocBuffer(size: number): Buffer {
    if (!Number.isInteger(size) || size < 1) throw new RangeError('size must be a positive integer');
    if (this.#closing || this.#closed) throw new TransportError('ECLOSED', 'the client is closed');
    return this.#mem.allocBuffer(size);
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
      get ledger() { return self.#ios.ledger; },
      get params() { return self.#params; },
      get queueDepth() { return self.#queueDepth; },
      pathSlots: this.#pathSlots,
      opts: this.#opts,
      devices: this.#mem.devices,
      devState: (name) => this.#mem.devState(name),
      staged: (d) => this.#mem.staged(d),
      accepted: (acc) => (this.#params ? this.#checkSame(acc) : this.#adopt(acc)),
      credentials: (path) => {
        const c = this.#opts.credentials;
        if (typeof c !== 'function') return c;
        return P.checkCredentials(c({ sessionId: this.#sessionId, pathIndex: path.id, reconnectCount: path.reconnectCount }));
      },
      onRecv: (path, conn, ctx, wc, slot) => this.#ios.onRecv(path, conn, ctx, wc, slot),
      pathFailed: (path, err) => this.#pathFailed(path, err),
    };
  }

  /** What client-ios.ts needs of the session. */
  #ioHost(): ClientIos {
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const self = this;
    return new ClientIos({
      get paths() { return self.#paths; },
      get sessionUp() { return self.#sessionUp; },
      get closing() { return self.#closing; },
      selector: this.#selector,
      mem: this.#mem,
      reconnectWaitMs: this.#opts.reconnectWaitMs ?? 30000,
      log: (line) => this.#log(line),
      violation: (path, err) => this.#violation(path, err),
    });
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
    this.#mem.allocStaging(this.#queueDepth, acc.chunkSize);
    this.#ios.adopt(this.#params, this.#queueDepth, this.#pathSlots);
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
      this.#ios.sessionUp();
      this.#log(`session up: ${reason}`);
      this.emit('session-up', reason);
    }
    this.#ios.pathUp(path);
  }

  #pathFailed(path: ClientPath, err: Error): void {
    if (path.state === 'closed' || path.state === 'dead') return;
    if (this.#closeSent) {
      // the answer to our SESSION_CLOSE (it can beat the SEND's own completion)
      path.state = 'closed';
      path.unwatch?.();
      path.teardown(err);
      return;
    }
    const wasConnected = path.state === 'connected' || path.state === 'draining';
    if (!wasConnected && path.attemptFailed) return; // this attempt's failure was handled already
    path.attemptFailed = true;
    path.state = this.#closing || path.removed ? 'closed' : 'reconnecting';
    // port events stay watched until the next connect: a PORT_ERR after the
    // flush errors still holds the reconnects back
    if (this.#closing || path.removed) path.unwatch?.();
    else if (path.device && path.portNum && !path.portDown && portState(this.#mem.devices.get(path.device), path.portNum) === 'DOWN') {
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
    this.#ios.pathFailed(path);
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
      if (path.portStillDown(this.#mem.devices)) {
        // a connect over a port that is down cannot work: count the attempt, wait again
        path.attemptFailed = false;
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
    if (!this.#closing) this.#ios.sessionDown();
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
    this.#ios.rejoin(err);
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
    this.#ios.failAll(err);
    // 'error' without a listener would throw from inside an rdma_cm callback
    if (this.listenerCount('error') > 0) this.emit('error', err);
  }

  // ------------------------------------------------------------------ IO

  /** Writes `data` with `header` to the server; resolves with the handler's status and response header. */
  write(header: Uint8Array, data: Uint8Array, opts: IoOptions = {}): Promise<IoResult> {
    return this.#submit('write', header, data, opts);
  }

  /** Reads into `into` (up to its length); resolves with status, response header and the length read. */
  read(header: Uint8Array, into: Uint8Array, opts: IoOptions = {}): Promise<IoResult> {
    return this.#submit('read', header, into, opts);
  }

  #submit(kind: 'write' | 'read', header: Uint8Array, data: Uint8Array, opts: IoOptions): Promise<IoResult> {
    if (!(header instanceof Uint8Array)) return Promise.reject(new TypeError('header must be a Uint8Array'));
    if (!(data instanceof Uint8Array)) return Promise.reject(new TypeError(`${kind === 'write' ? 'data' : 'into'} must be a Uint8Array`));
    if (typeof opts !== 'object' || opts === null) return Promise.reject(new TypeError('options must be an object'));
    if (this.#closing || this.#closed) return Promise.reject(new TransportError('ECLOSED', 'the client is closing', false));
    if (this.#fatal) return Promise.reject(this.#fatal instanceof TransportError ? this.#fatal.forIo(false) : this.#fatal);
    const p = this.#params!;
    if (header.length > p.maxHeaderSize) return Promise.reject(new TransportError('EMSGSIZE', `header of ${header.length} bytes exceeds maxHeaderSize ${p.maxHeaderSize}`, false));
    if (data.length > this.#maxIo) return Promise.reject(new TransportError('EMSGSIZE', `${data.length} bytes exceed maxIoSize ${this.#maxIo}`, false));
    return this.#ios.submit(kind, header, data, data.length, opts.signal);
  }

  #violation(path: ClientPath, err: unknown): void {
    const reason = err instanceof ProtocolError ? err.reason : 'internal';
    const msg = err instanceof ProtocolError ? err.detail : (err as Error).message;
    this.#log(`${path.name}: protocol violation: ${reason}: ${msg}`);
    this.emit('violation', { pathIndex: path.id, reason, message: msg });
    this.#pathFailed(path, err as Error);
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
        this.#ios.whenDrained(() => {
          clearTimeout(timer);
          resolve();
        });
      });
      this.#ios.whenDrained(undefined);
    }
    const err = new TransportError('ECLOSED', 'the client was closed before the IO completed');
    this.#ios.failAll(err);
    // tell the server (best effort): it frees the session at once
    const path = this.#paths.find((p) => p.connected && p.conn && p.ctrl);
    if (path && this.#ios.unsettledCount === 0) {
      const off = P.CTRL_MSG_SIZE + this.#queueDepth * P.RESUME_SIZE;
      P.encodeSessionClose().copy(path.ctrl!.buf, off);
      this.#closeSent = true;
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
    this.#mem.close();
  }
}
