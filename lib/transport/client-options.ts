/**
 * The transport client's options (docs/protocol.md §10.1, docs/api.md) and
 * their checks, and the types of an IO's options and result.
 */
import { checkUint, optBool, optFunction, optString, optUint } from '../verbs/args';
import { BackoffOptions } from './backoff';
import { PolicyName } from './policy';
import * as P from './protocol';
import { checkWindowType, WindowTypeOption } from './windows';

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
  /**
   * How the paths' completion queues are polled (CompletionQueueOptions.busyPoll):
   * 'adaptive' (default) spins while IOs are in flight and sleeps on the
   * completion channel after spinBudgetUs without a completion; true spins
   * while IOs are in flight; false always sleeps on the channel.
   */
  busyPoll?: boolean | 'adaptive';
  /** busyPoll 'adaptive': microseconds of polling with no completion before sleeping (1..10000000, default 1000) */
  spinBudgetUs?: number;
  /**
   * Path slots of the session (the pathCount sent to the server), >= paths.length;
   * default paths.length. addPath() can use a free slot at run time.
   */
  pathSlots?: number;
  /**
   * While no path is connected, an IO (queued, or in flight when its last
   * path failed) waits at most this long (ms) for a path to come back, then
   * fails with ETIMEDOUT and `executed` saying whether the server may have
   * run it. Default 30000; Infinity waits until every path is dead. An IO in
   * flight resumes on the path that comes back and settles with its real
   * outcome (exactly once). Keep it below the server's sessionLingerMs: a
   * server that dropped the session answers ESTALE.
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
  /** after PORT_ERR, reconnect only once the port has been active this long (ms); default 2000 (port-settle.ts) */
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

/** What the checks derive from the options. */
export interface CheckedClientOptions {
  sessionId: string;
  pathSlots: number;
  windowType: WindowTypeOption;
}

/** Checks every option (TypeError/RangeError naming it); returns the derived values. */
export function checkClientOptions(opts: ClientOptions): CheckedClientOptions {
  if (typeof opts !== 'object' || opts === null) throw new TypeError('options must be an object');
  if (!Array.isArray(opts.paths) || opts.paths.length < 1 || opts.paths.length > P.MAX_PATHS) {
    throw new RangeError(`paths must list 1..${P.MAX_PATHS} addresses`);
  }
  for (const p of opts.paths) checkPathOptions(p);
  optUint(opts.maxQueueDepth, 'maxQueueDepth', P.MAX_QUEUE_DEPTH, 1);
  optUint(opts.connectTimeoutMs, 'connectTimeoutMs', 0x7fffffff, 1);
  optUint(opts.resolveTimeoutMs, 'resolveTimeoutMs', 0x7fffffff, 1);
  optUint(opts.portSettleMs, 'portSettleMs', 0x7fffffff);
  for (const k of ['requireStrict', 'watchPortEvents', 'rejoinOnServerRestart'] as const) optBool(opts[k], k);
  checkBusyPoll(opts.busyPoll, opts.spinBudgetUs);
  optFunction(opts.log, 'log');
  optString(opts.name, 'name');
  const windowType = checkWindowType(opts.windowType);
  if (opts.credentials !== undefined && typeof opts.credentials !== 'function') P.checkCredentials(opts.credentials);
  const sessionId = opts.sessionId ?? P.randomSessionId();
  if (!P.isSessionId(sessionId)) throw new TypeError('sessionId must be a lowercase non-nil UUID');
  const pathSlots = opts.pathSlots ?? opts.paths.length;
  if (!Number.isInteger(pathSlots) || pathSlots < opts.paths.length || pathSlots > P.MAX_PATHS) {
    throw new RangeError(`pathSlots must be an integer in ${opts.paths.length}..${P.MAX_PATHS}`);
  }
  const wait = opts.reconnectWaitMs ?? 30000;
  if (typeof wait !== 'number' || Number.isNaN(wait) || wait < 0) throw new RangeError('reconnectWaitMs must be a number >= 0');
  return { sessionId, pathSlots, windowType };
}

/** One path's address (the constructor's paths[], addPath). */
export function checkPathOptions(p: ClientPathOptions): void {
  if (typeof p !== 'object' || p === null || typeof p.host !== 'string') throw new TypeError('every path needs a host string');
  checkUint(p.port, 'port', 65535);
  optString(p.source, 'source');
}

/** busyPoll: a boolean or 'adaptive'; spinBudgetUs only with 'adaptive' (the default). Shared with the server's options. */
export function checkBusyPoll(busyPoll: unknown, spinBudgetUs: unknown): void {
  if (busyPoll !== undefined && typeof busyPoll !== 'boolean' && busyPoll !== 'adaptive') throw new TypeError("busyPoll must be a boolean or 'adaptive'");
  optUint(spinBudgetUs as number | undefined, 'spinBudgetUs', 10_000_000, 1);
  if (spinBudgetUs !== undefined && busyPoll !== undefined && busyPoll !== 'adaptive') throw new TypeError("spinBudgetUs needs busyPoll: 'adaptive'");
}
