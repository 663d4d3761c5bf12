/**
 * One path of a client session (docs/protocol.md §3, §4, §10): its state and
 * counters, the connect (address and route resolution, the CM connect with a
 * timeout, the accept), the info exchange that fills the path's key table,
 * and the watch on its device port. The client (client.ts) owns the path
 * set, decides what a failure means, and carries the IOs.
 */
import { CmId, MemoryRegion, MemoryWindow, ProtectionDomain, WorkCompletion } from '../verbs';
import { Area, closesPending, Conn, DeviceCache, registerArea, wireCounters, wireStats, wrId, WrKind } from './conn';
import { ReconnectTimer } from './backoff';
import type { ChunkLedger } from './chunk-ledger';
import type { ClientOptions, ClientPathOptions } from './client-options';
import { connectError, TransportError } from './errors';
import { PathLike } from './policy';
import { PortSettle, PORT_SETTLE_MS } from './port-settle';
import * as P from './protocol';
import type { ClientPathState, ClientPathStats } from './types';

/** A device the session uses: its PD, the staging registration and its windows. */
export interface DevState {
  pd: ProtectionDomain;
  /** the staging slots, registered once the pool parameters are known */
  staging: MemoryRegion | undefined;
  /** the type of the windows over read destinations on this device */
  windowType: 1 | 2;
  /** unbound windows: type 2 ones back from answered reads, type 1 spares allocated ahead (a type 1 window is never bound twice) */
  freeMws: MemoryWindow[];
}

/** What a path needs of its client while it connects. */
export interface PathHost {
  readonly sessionId: string;
  /** the session was established once: connects no longer ask for a new session */
  readonly established: boolean;
  readonly closing: boolean;
  readonly pathSlots: number;
  readonly opts: ClientOptions;
  readonly devices: DeviceCache;
  /** the session's ledger (after the first accept) */
  readonly ledger: ChunkLedger<unknown> | undefined;
  readonly params: P.SessionParams | undefined;
  /** the permits this client uses */
  readonly queueDepth: number;
  devState(name: string): DevState;
  staged(dev: DevState): MemoryRegion;
  /** the first accept sets the session's parameters, later ones must match (throws) */
  accepted(acc: P.AcceptData): void;
  credentials(path: ClientPath): Uint8Array | undefined;
  onRecv(path: ClientPath, conn: Conn, ctx: P.ClientMsgContext, wc: WorkCompletion, slot: number): void;
  pathFailed(path: ClientPath, err: Error): void;
}

export class ClientPath implements PathLike {
  readonly id: number;
  readonly opts: ClientPathOptions;
  state: ClientPathState = 'connecting';
  conn: Conn | undefined;
  dev: DevState | undefined;
  device: string | undefined;
  reconnectCount = 0;
  /** IOs posted on the path and not yet answered */
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
  /** the device port whose PORT_ERR took the path down, until it has settled again */
  portDown: { dev: string; port: number; settle: PortSettle } | undefined;
  /** closes the CM id of a connect under way */
  abortConnect: (() => void) | undefined;
  /** a connect attempt is under way */
  connecting = false;
  /**
   * The current connect attempt's failure was handled: a failure during a
   * connect reaches the client twice (the server's disconnect, then the
   * connect's own rejection), and counts and backs off once.
   */
  attemptFailed = false;
  /** removePath() was called: never reconnects */
  removed = false;
  /** stops watching the device's port events */
  unwatch: (() => void) | undefined;
  #infoAsm: P.InfoAssembler | undefined;
  #infoDone: (() => void) | undefined;
  #infoFail: ((e: Error) => void) | undefined;

  constructor(index: number, opts: ClientPathOptions, reconnect: ClientOptions['reconnect']) {
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

  /** the connection generation keys are bound for (protocol.md §7.4) */
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

  /** Connects and runs the info exchange; resolves with the accept once the path can carry IOs. */
  async connect(host: PathHost): Promise<P.AcceptData> {
    const sid = host.sessionId;
    this.connecting = true;
    try {
      return await this.#connectOnce(host);
    } catch (err) {
      if (sid !== host.sessionId && (err as TransportError).code === 'ESTALE') {
        throw new TransportError('EAGAIN', 'the connect raced a session rejoin');
      }
      throw err;
    } finally {
      this.connecting = false;
    }
  }

  async #connectOnce(host: PathHost): Promise<P.AcceptData> {
    if (host.closing) throw new TransportError('ECLOSED', 'the client is closed');
    if (this.removed) throw new TransportError('ECLOSED', 'the path was removed');
    this.state = this.reconnectCount === 0 && !host.established ? 'connecting' : 'reconnecting';
    this.attemptFailed = false;
    const opts = host.opts;
    const id = CmId.create();
    let conn: Conn | undefined;
    this.abortConnect = () => (conn ? conn.close() : id.close());
    try {
      const tmo = opts.resolveTimeoutMs ?? 5000;
      await id.resolveAddr(this.opts.host, this.opts.port, { source: this.opts.source, timeoutMs: tmo });
      await id.resolveRoute(tmo);
      const devName = id.info().device!;
      const dev = host.devState(devName);
      // the pool parameters (queue depth) come with the first accept: size
      // the QP for the most this client will use
      const maxQd = opts.maxQueueDepth ?? 512;
      conn = new Conn(id, dev.pd, {
        maxRecvWr: maxQd + P.RECV_SLACK, maxSendWr: maxQd * 3 + 32, busyPoll: opts.busyPoll, spinBudgetUs: opts.spinBudgetUs, wire: this.wire, reuseCompletion: true,
      });
      const req = P.encodeConnectRequest({
        newSession: !host.established, pathIndex: this.id, pathCount: host.pathSlots, reconnectCount: this.reconnectCount, sessionId: host.sessionId,
        localReadInvalidate: dev.windowType === 1, credentials: host.credentials(this),
      });
      const pending = id.connect({ privateData: req, retryCount: 7, rnrRetryCount: 7 });
      pending.catch(() => undefined); // settles after a timeout too, when the id is closed
      const acc = await withTimeout(opts.connectTimeoutMs ?? 15000, 'no answer to the connect', async () => P.decodeAccept((await pending).privateData))
        .catch((err) => {
          throw connectError(err);
        });
      host.accepted(acc);
      if (host.closing) throw new TransportError('ECLOSED', 'the client is closed');
      if (this.removed) throw new TransportError('ECLOSED', 'the path was removed');
      host.staged(dev);
      this.conn = conn;
      this.device = devName;
      this.dev = dev;
      this.portNum = id.info().portNum;
      this.watchPort(host, conn, devName, this.portNum);
      await this.#info(host, conn);
      return acc;
    } catch (err) {
      if (this.conn === conn) this.conn = undefined;
      if (conn) conn.close();
      else id.close();
      throw err;
    } finally {
      this.abortConnect = undefined;
    }
  }

  /** The info exchange (§4): receives set up, INFO_REQ sent, INFO_RSPs fill the key table. */
  async #info(host: PathHost, conn: Conn): Promise<void> {
    const p = host.params!;
    host.ledger!.initKeys(this.id);
    const recvSize = P.clientRecvSize(p, host.pathSlots);
    conn.setupReceives(recvSize, host.queueDepth + P.RECV_SLACK);
    this.ctrl = registerArea(this.dev!.pd, P.CTRL_MSG_SIZE + P.RESUME_SIZE * host.queueDepth + P.SESSION_CLOSE_SIZE);
    // the decoder's context, built once per connection (the params cannot
    // change within a session: accepted() checks)
    const ctx: P.ClientMsgContext = { ...p, pathCount: host.pathSlots, pathIndex: this.id };
    conn.onRecv = (wc, slot) => host.onRecv(this, conn, ctx, wc, slot);
    conn.onError = (err) => {
      if (this.conn === conn) host.pathFailed(this, err);
    };
    conn.id.on('disconnected', () => {
      if (this.conn === conn) host.pathFailed(this, new TransportError('ECONNRESET', 'the server disconnected the path'));
    });
    const done = new Promise<void>((resolve, reject) => {
      this.#infoAsm = new P.InfoAssembler(p);
      this.#infoDone = resolve;
      this.#infoFail = reject;
    });
    const name = (host.opts.name ?? '').slice(0, P.MAX_NAME_LEN);
    const m = P.encodeInfoReq({ recvSize, name });
    m.copy(this.ctrl.buf, 0);
    conn.ref();
    try {
      conn.post([{ opcode: 'SEND', sge: [this.ctrl.mr.sge(0, m.length)], wrId: wrId(WrKind.SEND, 0xfffffffe) }]);
      // a server that accepts and then stays silent: the attempt fails and is retried
      await withTimeout(host.opts.connectTimeoutMs ?? 15000, 'no INFO_RSP', () => done);
    } finally {
      conn.unref();
    }
    if (this.removed) throw new TransportError('ECLOSED', 'the path was removed');
  }

  /** An INFO_RSP arrived (the ledger gets the keys after the last one); a ProtocolError is a violation. */
  onInfoRsp(m: P.InfoRsp, ledger: ChunkLedger<unknown>): void {
    if (!this.#infoAsm || this.#infoAsm.done) throw new P.ProtocolError('state', 'INFO_RSP outside the info exchange');
    const keys = this.#infoAsm.add(m);
    if (!keys) return;
    ledger.setInfoKeys(this.id, keys);
    this.#infoDone?.();
    this.#infoDone = this.#infoFail = undefined;
  }

  /** The connection is gone: a connect under way fails with `err`; the QP and the control area are freed. */
  teardown(err: Error): void {
    if (this.#infoFail) {
      this.#infoFail(err);
      this.#infoFail = this.#infoDone = undefined;
    }
    const conn = this.conn;
    this.conn = undefined;
    conn?.close();
    this.ctrl?.mr.close();
    this.ctrl = undefined;
  }

  /**
   * PORT_ERR on the path's device port declares the path down at once: on a
   * link that went away the peer may send nothing at all, and heartbeats
   * would take hbIntervalMs * hbMissedMax to notice.
   */
  watchPort(host: PathHost, conn: Conn, devName: string, portNum: number): void {
    this.unwatch?.();
    if (host.opts.watchPortEvents === false) return;
    const dev = host.devices.get(devName);
    const onErr = (ev: { port?: number }): void => {
      if (ev.port !== undefined && ev.port !== portNum) return;
      if (this.conn !== conn) {
        // the path already went down (flush errors came first): hold its
        // reconnects until the port is back, and drop a connect under way
        if (this.state === 'reconnecting' && !this.portDown && portState(dev, portNum) !== 'ACTIVE') {
          this.markPortDown(host, devName, portNum);
          this.abortConnect?.();
        }
        return;
      }
      // async events queue on the device until someone listens: a PORT_ERR
      // from before this connection is stale when the port is active now
      if (portState(dev, portNum) === 'ACTIVE') return;
      this.markPortDown(host, devName, portNum);
      host.pathFailed(this, new TransportError('ENETDOWN', `${devName} port ${portNum} reported PORT_ERR`));
    };
    dev.on('PORT_ERR', onErr);
    this.unwatch = () => {
      this.unwatch = undefined;
      if (!dev.closed) dev.off('PORT_ERR', onErr);
    };
  }

  /** The path went down with its port: its reconnects wait until the port has settled. */
  markPortDown(host: PathHost, dev: string, port: number): void {
    this.portDown = { dev, port, settle: new PortSettle(host.opts.portSettleMs ?? PORT_SETTLE_MS) };
  }

  /** After its port went down: true until that port has settled and its held-back disconnects went out. */
  portStillDown(devices: DeviceCache): boolean {
    const pd = this.portDown;
    if (!pd) return false;
    let state: string;
    try {
      state = devices.get(pd.dev).queryPort(pd.port).state;
    } catch {
      return false; // cannot tell: try to connect
    }
    if (!pd.settle.observe(state) || closesPending(pd.dev, pd.port)) return true;
    this.portDown = undefined;
    return false;
  }
}

/** A port's state, 'UNKNOWN' when the device went away. */
export function portState(dev: { queryPort(p: number): { state: string } }, port: number): string {
  try {
    return dev.queryPort(port).state;
  } catch {
    return 'UNKNOWN';
  }
}

/** fn(), failing with ETIMEDOUT when it takes longer than ms. */
async function withTimeout<T>(ms: number, what: string, fn: () => Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([fn(), new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new TransportError('ETIMEDOUT', `${what} within ${ms} ms`)), ms);
    })]);
  } finally {
    clearTimeout(timer);
  }
}
