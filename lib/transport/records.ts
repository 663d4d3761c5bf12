/**
 * The server's record rules (docs/protocol.md §7.1 step 2, §7.5), in one
 * place and nothing else: no verbs, no timers, no I/O. Each chunk has a
 * record; a request copy or a RESUME_REQ that arrives for the chunk is
 * decided against it, and the record moves on. The server (server.ts) does
 * the posting the decision calls for. Paths are opaque here (`P`): the rules
 * only compare them.
 *
 * The decisions are shared constants (a request's common case allocates
 * nothing); only a violation carries its own reason and message.
 */

export type RecordState = 'idle' | 'running' | 'done' | 'resumed';
export type IoKind = 'write' | 'read';

export interface ChunkRecord<P> {
  /** the seq of the chunk's latest IO (or resume); 0 before the first */
  seq: bigint;
  state: RecordState;
  kind: IoKind;
  /** the handler's result, kept for replays until the chunk's next IO */
  status: number;
  header: Uint8Array;
  /** read: bytes of chunk[0, dataLen) the handler produced */
  dataLen: number;
  /** the path that answers when the running IO finishes: the latest copy's */
  respondOn: P | undefined;
  /** read: the destination of the latest request copy and the path it arrived on (read data goes only there) */
  destPath: P | undefined;
  destAddr: bigint;
  destRkey: number;
  /** state 'resumed': the path the RESUME_REQ came on */
  resumedOn: P | undefined;
  /**
   * A RESUME_REQ asked for the running IO: its answer carries its seq (an
   * IO_RSP message, never the immediate-only fast path). The client asked
   * because the chunk is unsettled or its IO parked, and answers without a
   * seq are only for a posted request (§5, §7.4).
   */
  asked: boolean;
}

const EMPTY = new Uint8Array(0);

export function newRecord<P>(): ChunkRecord<P> {
  return {
    seq: 0n, state: 'idle', kind: 'write', status: 0, header: EMPTY, dataLen: 0,
    respondOn: undefined, destPath: undefined, destAddr: 0n, destRkey: 0, resumedOn: undefined, asked: false,
  };
}

export interface Violation {
  readonly decision: 'violation';
  /** the ProtocolError reason ('seq', 'chunk-busy') */
  readonly reason: string;
  readonly message: string;
}

/**
 * - run: a new IO; the record is now running it (call complete() with the handler's result)
 * - replay: the seq is done; answer with the record's result (REPLAY)
 * - await: the seq is running; its answer goes to this copy's path when it finishes
 * - drop-stale: a request copy of a seq resumed on another path, or a
 *   RESUME_REQ older than the record; no answer
 * - resumed: the seq never arrived; the record is resumed on this path (answer RESUME_RSP)
 */
export type Decision =
  | { readonly decision: 'run' }
  | { readonly decision: 'replay' }
  | { readonly decision: 'await' }
  | { readonly decision: 'drop-stale' }
  | { readonly decision: 'resumed' }
  | Violation;

export const RUN: Decision = Object.freeze({ decision: 'run' });
export const REPLAY: Decision = Object.freeze({ decision: 'replay' });
export const AWAIT: Decision = Object.freeze({ decision: 'await' });
export const DROP_STALE: Decision = Object.freeze({ decision: 'drop-stale' });
export const RESUMED: Decision = Object.freeze({ decision: 'resumed' });

function violation(reason: string, message: string): Violation {
  return { decision: 'violation', reason, message };
}

/**
 * A request copy for chunk c: `kind` with `seq`, arrived on `path`; a read
 * names its destination (addr, rkey). Applies the transition the decision
 * implies; a violation leaves the record as it was.
 */
export function onRequest<P>(
  rec: ChunkRecord<P>, c: number, seq: bigint, kind: IoKind, path: P, destAddr = 0n, destRkey = 0,
): Decision {
  // a client reuses a chunk only after the response: an older seq cannot happen
  if (seq < rec.seq) return violation('seq', `chunk ${c}: seq ${seq} < recorded ${rec.seq}`);
  if (seq === rec.seq) {
    if (rec.state === 'resumed') {
      // resumed on another path: this copy is stale (§7.1 step 2); on the
      // resumed path the same seq runs as a new IO (below)
      if (rec.resumedOn !== path) return DROP_STALE;
    } else {
      if (rec.kind !== kind) return violation('seq', `chunk ${c}: seq ${seq} reused for a ${kind}`);
      // the latest copy's destination is where read data goes (§7.5)
      if (kind === 'read') setDest(rec, path, destAddr, destRkey);
      if (rec.state === 'running') {
        rec.respondOn = path;
        return AWAIT;
      }
      return REPLAY;
    }
  } else if (rec.state === 'running') {
    return violation('chunk-busy', `chunk ${c} is running seq ${rec.seq}`);
  }
  rec.seq = seq;
  rec.state = 'running';
  rec.kind = kind;
  rec.respondOn = path;
  rec.resumedOn = undefined;
  rec.asked = false;
  if (kind === 'read') setDest(rec, path, destAddr, destRkey);
  else setDest(rec, undefined, 0n, 0);
  return RUN;
}

/** A RESUME_REQ for chunk c with `seq` on `path` (§7.5, strict failover and unsettled chunks). */
export function onResume<P>(rec: ChunkRecord<P>, c: number, seq: bigint, path: P): Decision {
  // a stale ask, no answer: the client asks an unsettled chunk on every
  // connected path, and once one answer settled it the chunk may carry a
  // newer IO before the other asks arrive (before 1.1: a violation)
  if (seq < rec.seq) return DROP_STALE;
  if (seq === rec.seq && rec.state === 'running') {
    rec.respondOn = path;
    rec.asked = true;
    return AWAIT;
  }
  // never with read data: the original copy's destination belongs to a
  // connection that is gone (§7.5); replay() knows it from destPath
  if (seq === rec.seq && rec.state === 'done') return REPLAY;
  if (seq > rec.seq && rec.state === 'running') return violation('chunk-busy', `RESUME_REQ for chunk ${c} while seq ${rec.seq} runs`);
  rec.seq = seq;
  rec.state = 'resumed';
  rec.resumedOn = path;
  rec.header = EMPTY;
  return RESUMED;
}

/**
 * The running IO's handler finished: the record keeps its result for
 * replays. Returns the path to answer on: the latest copy's.
 */
export function complete<P>(rec: ChunkRecord<P>, status: number, header: Uint8Array, dataLen: number): P | undefined {
  if (rec.state !== 'running') throw new Error(`complete() on a ${rec.state} record`);
  rec.status = status;
  rec.header = header;
  rec.dataLen = rec.kind === 'read' ? dataLen : 0;
  rec.state = 'done';
  return rec.respondOn;
}

/** Whether an answer on `path` carries the read data: only to a destination of a copy that arrived there. */
export function readDataGoesTo<P>(rec: ChunkRecord<P>, path: P): boolean {
  return rec.kind === 'read' && rec.destPath === path;
}

function setDest<P>(rec: ChunkRecord<P>, path: P | undefined, addr: bigint, rkey: number): void {
  rec.destPath = path;
  rec.destAddr = addr;
  rec.destRkey = rkey;
}
