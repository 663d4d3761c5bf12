/**
 * The IOs of a client session (docs/protocol.md §6, §7.3-7.5, §10): the
 * queue of waiting IOs, the chunk ledger, starting IOs on a path (the pump),
 * failover, the answers from the server, and what becomes of each IO when
 * paths fail, the session is replaced or the client closes. An IO whose
 * last path failed waits for a path and then settles with its real
 * outcome; one given up on says whether it may have run (`executed`).
 * TransportClient (client.ts) owns the paths and the session, and tells
 * this class when a path comes up or fails.
 */
import { MemoryWindow, WorkCompletion } from '../verbs';
import { ChunkLedger } from './chunk-ledger';
import type { ClientMemory, IoRequest } from './client-memory';
import type { IoResult } from './client-options';
import type { ClientPath } from './client-path';
import { Conn, wrId, WrKind } from './conn';
import { abortError, TransportError } from './errors';
import { PathIterator, PathSelector } from './policy';
import * as P from './protocol';
import { ProtocolError } from './protocol';

const EMPTY = Buffer.alloc(0);

/**
 * An IO fails over at most this often. Each failover needs a path failure,
 * so only a request that takes its path down every time reaches it; then it
 * fails (ECONNABORTED, executed 'unknown') instead of bouncing forever.
 */
const MAX_FAILOVERS = 32;

/** One write or read: its request (client-memory.ts) and its life here. */
interface Io extends IoRequest {
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
  rsp?: { status: number; header: Buffer; length: number };
  /** while no path is connected: fails the IO after reconnectWaitMs */
  waitTimer?: NodeJS.Timeout;
}

/** What the IOs need of their client. */
export interface IoHost {
  /** the live paths */
  readonly paths: readonly ClientPath[];
  readonly selector: PathSelector<ClientPath>;
  readonly mem: ClientMemory;
  readonly sessionUp: boolean;
  readonly closing: boolean;
  readonly reconnectWaitMs: number;
  log(line: string): void;
  /** the server broke the protocol on `path`: the client closes the path */
  violation(path: ClientPath, err: unknown): void;
}

export class ClientIos {
  readonly #host: IoHost;
  #params: P.SessionParams | undefined;
  /** the chunks (permits), their IOs and seqs, and every path's keys; after the first accept */
  #ledger: ChunkLedger<Io> | undefined;
  readonly #waiting: Io[] = [];
  #drained: (() => void) | undefined;

  constructor(host: IoHost) {
    this.#host = host;
  }

  /** The first accept: the session's pool, `queueDepth` permits of it used. */
  adopt(params: P.SessionParams, queueDepth: number, pathSlots: number): void {
    this.#params = params;
    this.#ledger = new ChunkLedger<Io>(queueDepth, pathSlots);
  }

  get ledger(): ChunkLedger<unknown> | undefined {
    return this.#ledger as ChunkLedger<unknown> | undefined;
  }

  get waitingCount(): number {
    return this.#waiting.length;
  }

  get inflightCount(): number {
    return this.#ledger?.inflightCount ?? 0;
  }

  get unsettledCount(): number {
    return this.#ledger?.unsettledCount ?? 0;
  }

  /** Calls `fn` (once) when nothing is queued, in flight or unsettled; undefined stops. */
  whenDrained(fn: (() => void) | undefined): void {
    this.#drained = fn;
    this.checkDrained();
  }

  /**
   * `path` connected: unsettled chunks are asked on it, strict chunks
   * without a key there claimed, parked IOs resume on it, waiting ones start.
   */
  pathUp(path: ClientPath): void {
    const ledger = this.#ledger!;
    for (const c of ledger.chunksIn('unsettled')) this.sendResume(path, c, ledger.ask(c));
    if (this.#params!.strict) this.#claimChunks(path);
    for (const c of ledger.chunksIn('parked')) {
      if (!path.connected) break; // a post failed and took the path down (synchronously)
      this.moveTo(ledger.io(c)!, path);
    }
    this.pump();
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
    for (const c of l.withdraw((x) => !l.hasKey(path.id, x))) this.sendResume(path, c, l.ask(c));
  }

  /** `path` failed: its IOs go to another path, or park until one comes back. */
  pathFailed(path: ClientPath): void {
    const ledger = this.#ledger;
    if (!ledger) return;
    for (const c of ledger.pathFailed(path.id)) {
      const io = ledger.io(c)!;
      this.#detach(io);
      this.#failover(io);
    }
    if (!this.#host.closing) this.#reclaimChunks();
  }

  /** The session went down: queued IOs wait at most reconnectWaitMs. */
  sessionDown(): void {
    for (const io of this.#waiting) this.armWait(io);
  }

  /** The session came up: queued IOs stop counting down. */
  sessionUp(): void {
    for (const io of this.#waiting) this.clearWait(io);
  }

  /**
   * A new session (the server lost the old one): an IO whose request may
   * have reached the old server fails with err (executed 'unknown'); the
   * rest go back to the front of the queue, in their order.
   */
  rejoin(err: TransportError): void {
    const ledger = this.#ledger!;
    const again: Io[] = [];
    for (const io of ledger.ios()) {
      this.#detach(io);
      if (ledger.executed(io.chunk) === false && !io.aborted && !io.settled) again.push(io);
      else this.reject(io, err.forIo('unknown'));
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
    if (!this.#host.sessionUp) for (const io of again) this.armWait(io);
  }

  /** Every IO fails with err (queued ones: executed false; in flight: what the ledger knows). */
  failAll(err: Error): void {
    const te = err instanceof TransportError ? err : undefined;
    for (const io of this.#waiting.splice(0)) this.reject(io, te ? te.forIo(false) : err);
    const ledger = this.#ledger;
    if (!ledger) return;
    for (const io of ledger.ios()) if (!io.settled) this.reject(io, te ? te.forIo(ledger.executed(io.chunk)) : err);
  }

  /**
   * An IO with no connected path (queued, or parked in the ledger): fails
   * after reconnectWaitMs unless a path comes back. A parked IO whose
   * request may have run says so (executed 'unknown'); its chunk stays
   * unsettled until a RESUME answers.
   */
  armWait(io: Io): void {
    const ms = this.#host.reconnectWaitMs;
    if (io.waitTimer || ms === Infinity) return;
    io.waitTimer = setTimeout(() => {
      io.waitTimer = undefined;
      const err = new TransportError('ETIMEDOUT', `no path of the session came back within reconnectWaitMs (${ms} ms)`);
      const i = this.#waiting.indexOf(io);
      if (i >= 0) {
        this.#waiting.splice(i, 1);
        this.reject(io, err.forIo(false));
      } else if (io.chunk >= 0 && this.#ledger?.io(io.chunk) === io && this.#ledger.state(io.chunk) === 'parked') {
        this.#giveUp(io, err);
      }
    }, ms);
  }

  clearWait(io: Io): void {
    if (!io.waitTimer) return;
    clearTimeout(io.waitTimer);
    io.waitTimer = undefined;
  }

  /** Queues a checked IO; it starts when a permit and a path are free. */
  submit(kind: 'write' | 'read', header: Uint8Array, data: Uint8Array, len: number, signal: AbortSignal | undefined): Promise<IoResult> {
    if (signal?.aborted) return Promise.reject(abortError(signal.reason, false));
    return new Promise<IoResult>((resolve, reject) => {
      const io: Io = {
        kind, header, data, len, chunk: -1, seq: 0, signal, resolve, reject,
        settled: false, aborted: false, failovers: 0, zeroCopy: false,
      };
      if (io.signal) {
        io.onAbort = () => this.#abort(io);
        io.signal.addEventListener('abort', io.onAbort, { once: true });
      }
      this.#waiting.push(io);
      if (!this.#host.sessionUp) this.armWait(io);
      this.pump();
    });
  }

  /** The caller's signal fired: the IO rejects now; its chunk returns once it is known not to run any more. */
  #abort(io: Io): void {
    if (io.settled) return;
    const i = this.#waiting.indexOf(io);
    if (i >= 0) {
      this.#waiting.splice(i, 1);
      this.reject(io, abortError(io.signal?.reason, false));
      return;
    }
    const ledger = this.#ledger!;
    if (io.chunk < 0 || ledger.io(io.chunk) !== io) {
      // not queued and not on a chunk: nothing can be known of it any more
      this.reject(io, abortError(io.signal?.reason, 'unknown'));
      return;
    }
    io.aborted = true;
    this.reject(io, abortError(io.signal?.reason, ledger.executed(io.chunk)));
    // posted or resuming: the answer settles the chunk; parked: cut off now
    if (ledger.state(io.chunk) === 'parked') this.#cutOff(io);
  }

  reject(io: Io, err: Error): void {
    if (io.settled) return;
    io.settled = true;
    this.clearWait(io);
    if (io.onAbort) io.signal?.removeEventListener('abort', io.onAbort);
    io.reject(err);
    this.checkDrained();
  }

  #resolve(io: Io, r: IoResult): void {
    if (io.settled) return;
    io.settled = true;
    this.clearWait(io);
    if (io.onAbort) io.signal?.removeEventListener('abort', io.onAbort);
    io.resolve(r);
  }

  /** Starts waiting IOs while permits and a connected path exist. */
  pump(): void {
    const ledger = this.#ledger;
    if (!ledger) return;
    if (this.#params!.strict) return this.#pumpStrict(ledger);
    while (this.#waiting.length && ledger.freeCount && this.#host.paths.some((p) => p.connected)) {
      const io = this.#start(ledger, 0);
      io.iter = this.#host.selector.iterate((p) => ledger.hasKey(p.id, io.chunk));
      const path = io.iter.next();
      if (path) this.#post(io, path);
      else this.armWait(io); // parked, never sent: the next path up takes it
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
      const path = this.#host.selector.select(undefined, (p) => (at[p.id] = ledger.findFree((c) => ledger.hasKey(p.id, c))) >= 0);
      if (!path) return; // no key anywhere: a connect or a RESUME answer brings one
      const io = this.#start(ledger, at[path.id]);
      io.iter = this.#host.selector.iterate();
      io.iter.markTried(path);
      this.#post(io, path);
    }
  }

  /** Takes the next waiting IO and the free chunk at free-list index `at`. */
  #start(ledger: ChunkLedger<Io>, at: number): Io {
    const io = this.#waiting.shift()!;
    this.clearWait(io);
    const { chunk, seq } = ledger.start(io, at);
    io.chunk = chunk;
    io.seq = seq;
    this.#host.mem.stage(io);
    return io;
  }

  #post(io: Io, path: ClientPath): void {
    const ledger = this.#ledger!;
    const dev = path.dev!;
    let mw: MemoryWindow | undefined;
    if (io.kind === 'read' && io.len > 0) {
      try {
        mw = this.#host.mem.takeWindow(dev);
      } catch (err) {
        this.#giveUp(io, new TransportError('EIO', `no memory window for the read's destination: ${(err as Error).message}`));
        return;
      }
    }
    this.clearWait(io);
    ledger.post(io.chunk, path.id);
    io.path = path;
    path.inflight++;
    if (path.inflight === 1) path.conn!.ref();
    this.#host.mem.postRequest(io, path.conn!, path.device!, dev, ledger.addr(path.id, io.chunk), ledger.rkey(path.id, io.chunk), this.#params!, mw);
  }

  /** The IO leaves its path: counters, the connection's ref, its window (bound on that QP: never reused). */
  #detach(io: Io): void {
    const path = io.path;
    if (path) {
      path.inflight--;
      if (path.inflight === 0) path.conn?.unref();
      io.path = undefined;
    }
    io.rsp = undefined;
    if (io.mw) {
      io.mw.close();
      io.mw = undefined;
    }
  }

  /** The client gives up on the IO: it rejects with err, saying whether it may have run. */
  #giveUp(io: Io, err: TransportError): void {
    this.reject(io, err.forIo(this.#ledger!.executed(io.chunk)));
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
      for (const path of this.#host.paths) if (path.connected) this.sendResume(path, io.chunk, ledger.ask(io.chunk));
    } else {
      this.checkDrained();
      this.pump();
    }
  }

  /** The IO's path failed (it is parked): on to another connected path, or it waits for one. */
  #failover(io: Io): void {
    // (while close() drains, IOs fail over as usual: the drain is for them to finish)
    if (io.aborted || io.settled) {
      this.#cutOff(io);
      return;
    }
    if (++io.failovers > MAX_FAILOVERS) {
      this.#giveUp(io, new TransportError('ECONNABORTED', `the IO failed over ${MAX_FAILOVERS} times: each path it was sent on failed`));
      return;
    }
    const next = io.iter?.next() ?? this.#host.selector.select();
    if (!next) {
      // no path now: wait for one (exactly-once: its outcome is asked there)
      this.armWait(io);
      return;
    }
    next.counters.failovers++;
    this.#host.log(`failover: chunk ${io.chunk} seq ${io.seq} -> ${next.name}`);
    this.moveTo(io, next);
  }

  /**
   * A parked IO goes to `path`. In strict mode, or for a read, the request's
   * copy may have arrived (strict: and invalidated the chunk's key there),
   * and a read must be posted again to get its data: ask first (§7.5). A
   * relaxed write is posted again as is: the server's record replays it.
   */
  moveTo(io: Io, path: ClientPath): void {
    if (io.aborted || io.settled) {
      this.#cutOff(io);
      return;
    }
    if (!path.connected || !path.conn) {
      this.armWait(io); // the path failed meanwhile: it stays parked
      return;
    }
    this.clearWait(io);
    if (this.#params!.strict || io.kind === 'read') this.sendResume(path, io.chunk, this.#ledger!.resume(io.chunk, path.id));
    else this.#post(io, path);
  }

  sendResume(path: ClientPath, c: number, seq: number): void {
    if (!path.ctrl || !path.conn) return;
    const off = P.CTRL_MSG_SIZE + c * P.RESUME_SIZE;
    P.encodeResumeReq({ chunk: c, seq: BigInt(seq) }).copy(path.ctrl.buf, off);
    path.conn.post([{ opcode: 'SEND', wrId: wrId(WrKind.SEND, 0xfffffffd), sge: [path.ctrl.mr.sge(off, P.RESUME_SIZE)] }], { unsignaled: true });
  }

  // ------------------------------------------------------------- receive

  onRecv(path: ClientPath, conn: Conn, ctx: P.ClientMsgContext, wc: WorkCompletion, slot: number): void {
    if (path.conn !== conn) return;
    const p = this.#params!;
    const ledger = this.#ledger!;
    try {
      if (wc.opcodeName === 'RECV_RDMA_WITH_IMM') {
        const imm = P.decodeImm(wc.imm ?? 0, wc.byteLen, 'client', p);
        // an immediate's receive carries no data: replaced with the next
        // post (the heartbeat's answer, an IO started below or the next one
        // the caller's continuation posts: one native call for both), else
        // in this turn. RECV_SLACK spare receives cover the server's
        // messages meanwhile
        conn.repostLater(slot);
        if (imm.type === 'hb') conn.answerHeartbeat(imm.id);
        else if (imm.type === 'hb-ack') conn.heartbeatAck(imm.id);
        else if (imm.type === 'io-rsp') {
          // a strict response carries the chunk's new key, which an immediate cannot (§5)
          if (p.strict) throw new ProtocolError('imm-rsp-strict', `an immediate-only IO_RSP for chunk ${imm.chunk} in strict mode`);
          this.#onResponse(path, imm.chunk, { status: imm.status, header: EMPTY, length: 0 }, undefined, 'write', undefined);
        }
        else throw new ProtocolError('imm-direction', `${imm.type} imm received by the client`);
        return;
      }
      if (wc.opcodeName !== 'RECV') throw new ProtocolError('opcode', `unexpected completion ${wc.opcodeName}`);
      const m = P.decodeClientMessage(conn.recvBytes(slot, wc.byteLen), ctx);
      if (m.type === 'io-rsp') {
        const header = Buffer.from(m.header); // copy: the caller keeps it, the buffer is reposted
        conn.repostLater(slot); // with the next post, as above (m's fields are copied out)
        this.#onResponse(path, m.chunk, { status: m.status, header, length: m.dataLen }, m, m.read ? 'read' : 'write', wc);
        return;
      }
      conn.repost(slot);
      if (m.type === 'info-rsp') path.onInfoRsp(m, ledger as ChunkLedger<unknown>);
      else this.#onResumeRsp(path, m);
    } catch (err) {
      this.#host.violation(path, err);
    }
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
    if (r.length > io.len) throw new ProtocolError('data-len', `read response of ${r.length} bytes for a ${io.len}-byte read`);
    if (ledger.state(c) === 'resuming') {
      // the answer to our RESUME_REQ: the IO ran. A read still needs its data: post it again here
      if (io.kind === 'read' && io.len > 0 && !io.aborted) {
        this.#post(io, path);
        return;
      }
    } else if (io.kind === 'read') {
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
    if (keys.length === 0 && !this.#params!.strict) return; // relaxed: the pool keys stay
    const current = keys.filter((k) => this.#host.paths.some((q) => q.id === k.pathIndex && q.generation === k.generation));
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
    const live = this.#host.paths.filter((p) => p.connected);
    if (live.length === 0) return;
    if (this.#params?.strict) ledger.withdraw((c) => !live.some((p) => ledger.hasKey(p.id, c)));
    for (const c of ledger.chunksIn('unsettled')) this.sendResume(this.#host.selector.select() ?? live[0], c, ledger.ask(c));
  }

  #maybeComplete(io: Io): void {
    if (!io.rsp) return;
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
    if (io.kind === 'read' && !io.zeroCopy && r.length > 0 && !io.aborted) this.#host.mem.copyRead(io, r.length);
    this.#ledger!.complete(io.chunk);
    this.#resolve(io, { status: r.status, header: r.header, length: io.kind === 'read' ? r.length : 0 });
    this.checkDrained();
    this.pump();
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
    this.checkDrained();
    this.pump();
  }

  // ---------------------------------------------------------------- close

  checkDrained(): void {
    if (!this.#drained) return;
    const ledger = this.#ledger;
    if (this.#waiting.length || ledger?.unsettledCount) return;
    if (ledger?.ios().some((io) => !io.settled)) return;
    this.#drained();
  }
}
