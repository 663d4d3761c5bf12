/**
 * The server's sessions and paths (docs/protocol.md §4-§7): a session's
 * chunk pool, its registrations and key sets per device, its records; a
 * path's connection, info exchange, requests and responses. The record
 * rules are records.ts's; the keys are server-keys.ts's; admission and the
 * listeners are server.ts's.
 */
import { CmId, MemoryRegion, ProtectionDomain, SendWorkRequest, Sge, WorkCompletion } from '../verbs';
import { Access } from '../verbs/constants';
import { Area, Conn, DeviceCache, PostOptions, registerArea, wireCounters, wireStats, wrId, WrKind } from './conn';
import * as P from './protocol';
import { ProtocolError } from './protocol';
import * as R from './records';
import { ChunkLocks } from './chunk-locks';
import { ChunkKeys, DeviceWindows, PathWindows } from './server-keys';
import { windowTypeFor } from './windows';
import type { TransportRequest, TransportResponse, TransportServer } from './server';
import type { ServerPathStats } from './types';

const UNSIGNALED: PostOptions = { unsignaled: true };

type ChunkRecord = R.ChunkRecord<ServerPath>;

export interface DevState {
  pd: ProtectionDomain;
  pool: MemoryRegion;
  /** type 1: the session's windows on this device, shared by its paths here; type 2: each path has its own */
  windows: DeviceWindows | undefined;
  /** type 2 strict mode invalidates by deallocating windows (see ServerOptions.invalidation) */
  deallocInvalidate: boolean;
}

const EMPTY = Buffer.alloc(0);

export class ServerSession {
  readonly server: TransportServer;
  readonly id: string;
  readonly pathCount: number;
  readonly params: P.SessionParams;
  readonly paths: Array<ServerPath | undefined>;
  readonly lastReconnect: Array<number | undefined>;
  readonly records: ChunkRecord[];
  /** one task (an IO, a resume, a key's info bind) at a time per chunk */
  readonly locks: ChunkLocks;
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
    this.locks = new ChunkLocks(this.params.queueDepth, (c, err) => this.server.log(`session ${this.id}: chunk ${c}: ${(err as Error)?.message ?? String(err)}`));
    this.#headerViews = new Array(this.params.queueDepth).fill(undefined);
    this.#dataViews = new Array(this.params.queueDepth).fill(undefined);
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

export class ServerPath {
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
  /** each chunk's response work requests (a chunk has one response at a time in postSoon's queue: see #respond) */
  readonly #outs: Outgoing[] = [];
  readonly #poolLkey: number;

  constructor(session: ServerSession, index: number, reconnectCount: number, id: CmId, dev: DevState, localReadInvalidate: boolean) {
    this.session = session;
    this.index = index;
    this.reconnectCount = reconnectCount;
    this.dev = dev;
    this.device = dev.pd.device.name;
    this.localReadInvalidate = localReadInvalidate;
    const qd = session.params.queueDepth;
    this.conn = new Conn(id, dev.pd, {
      maxRecvWr: qd + P.RECV_SLACK, maxSendWr: qd * 4 + 64, busyPoll: session.server.busyPoll, spinBudgetUs: session.server.spinBudgetUs, wire: this.#wire, reuseCompletion: true,
    });
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
      this.#rsp = registerArea(dev.pd, this.#rspSlot * qd * 2); // two slots per chunk: see #respond
      this.#ctrl = registerArea(dev.pd, P.RESUME_SIZE * qd);
      this.#poolLkey = dev.pool.lkey;
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
    if (this.session.server.busyPoll === true) this.conn.ref();
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
        // an immediate's receive carries no data: it is replaced with the
        // next post, which for a synchronous handler is this request's
        // response (one native call for both); else in this turn
        this.conn.repostLater(slot);
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
          this.session.locks.serialize(m.chunk, () => this.#resume(m.chunk, m.seq));
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
          this.session.locks.serialize(c, async () => {
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
    if (!s.locks.acquire(c)) return s.locks.serialize(c, () => this.#request(kind, c, trailerOffset, byteLen));
    let r: void | Promise<void> = undefined;
    try {
      r = this.#request(kind, c, trailerOffset, byteLen);
    } catch (err) {
      s.locks.failed(c, err);
    }
    s.locks.release(c, r);
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

  /**
   * Sends chunk c's recorded result on this path (§7.3, §7.4), through the
   * chunk's reused work requests. Relaxed: with Conn.postSoon, so the
   * answers to one batch of requests go out in one native call. The WRs
   * are the chunk's own because they wait in that queue until the flush; a
   * second answer for the chunk while the first still waits (a stale
   * RESUME_REQ's replay, then the chunk's next IO) posts the first before
   * rewriting them, and a replay writes the chunk's second response slot.
   * Only an answer with a type 2 bind in it (strict) posts at once,
   * signaled: a failed post must forget the key it did not bind.
   */
  #respond(c: number, rec: ChunkRecord, replay: boolean): void {
    if (this.state !== 'connected') return; // the client resumes on another path
    const s = this.session;
    const p = s.params;
    const o = (this.#outs[c] ??= outgoing(this.#poolLkey, this.#rsp.mr.lkey));
    // the chunk's last answer still waits in postSoon's queue (a stale
    // RESUME_REQ's replay and the chunk's next IO in one batch): it goes out
    // before its WRs are rewritten for this one
    if (o.queuedEpoch === this.conn.soonEpoch) {
      this.conn.flushSoon();
      if (this.state !== 'connected') return; // that post failed and closed this path
    }
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
    // responses are posted unsignaled (no completion each: nobody waits for
    // one), except with a type 2 bind in the post, whose completion counts
    let post: PostOptions | undefined = UNSIGNALED;
    if (p.strict && this.keys.key(c) === 0) {
      // a new key through this path (§7.3), bound ahead of the response in
      // its send queue: valid for every path of this device's key set (type
      // 1) or this path only (type 2); another path without one gets one
      // when the client asks there with RESUME_REQ
      const bind = this.keys.rekey(c, this.conn, c);
      if (bind) {
        wrs.push(bind);
        post = undefined;
      }
    }
    // a replay carries its seq: an immediate-only answer could settle a newer
    // IO on the chunk (§7.4); so does the answer to a RESUME_REQ that came
    // while the IO ran (rec.asked): the client asked because it holds the
    // chunk unsettled or its IO parked, and takes an answer without a seq
    // only for a posted request
    if (!replay && !p.strict && rec.kind === 'write' && rec.header.length === 0 && !rec.asked) {
      o.imm.imm = P.encodeIoRspImm(c, rec.status);
      o.imm.wrId = wrId(WrKind.SEND, c);
      wrs.push(o.imm);
      o.queuedEpoch = this.conn.postSoon(wrs); // (relaxed: no bind in it)
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
    // a replay in the chunk's second slot: the device reads a SEND's bytes
    // when it sends them (rxe: in a kernel task, after the post returns), so
    // the chunk's next answer, written at once after a replay, must not
    // land in the bytes the replay is still to send
    const off = (2 * c + (replay ? 1 : 0)) * this.#rspSlot;
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
    if (post === UNSIGNALED) {
      // no bind WR in it: relaxed, or strict with the key bound already or by
      // ibv_bind_mw (type 1), which is on the send queue ahead of this answer
      // now; if the flush fails, that bind fails with the connection (the
      // key set then drops its key) or it completed, and its key, never
      // handed out on this path, is still exposed() and invalidated on the
      // chunk's next arrival like any other
      o.queuedEpoch = this.conn.postSoon(wrs);
      return;
    }
    // a type 2 bind in the post, not posted: the connection failed (and
    // closes this path); no key was bound, so it is not handed out
    if (!this.conn.post(wrs, post)) this.keys.forget(c);
  }

  #resume(c: number, seq: bigint): void | Promise<void> {
    if (this.state !== 'connected') return;
    const rec = this.session.records[c];
    const d = R.onResume(rec, c, seq, this);
    switch (d.decision) {
      case 'await':
        return;
      case 'drop-stale':
        this.session.server.log(`${this.name}: dropped a stale RESUME_REQ for chunk ${c} seq ${seq} (recorded ${rec.seq})`);
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
    this.conn.post([{ opcode: 'SEND', sge: [this.#ctrl.mr.sge(c * P.RESUME_SIZE, P.RESUME_SIZE)], wrId: wrId(WrKind.SEND, c) }], UNSIGNALED);
  }
}

/**
 * A chunk's response work requests on a path, reused by each of its
 * responses (postSend copies them into the send queue): what changes per IO
 * is written into them before the post.
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
  /** Conn.soonEpoch when these WRs were last given to postSoon (-1: never) */
  queuedEpoch: number;
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
    queuedEpoch: -1,
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
