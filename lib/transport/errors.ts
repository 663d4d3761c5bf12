/**
 * The transport's errors (docs/api.md "Transport errors"): TransportError and
 * its codes, the AbortError of an aborted IO, and what a refused connect's
 * reject (protocol.md §3.3) means for the client.
 */
import { RdmaError } from '../errors';
import { decodeReject, ProtocolError, RejectCode } from './protocol';

/** The `code`s of TransportError: what the transport raises itself, and the server's reject reasons. */
export type TransportErrorCode =
  | 'ABORT_ERR' // the IO's AbortSignal fired
  | 'EAGAIN'
  | 'EBUSY' // removePath of the last path
  | 'ECLOSED' // the client or server is closed (or closing)
  | 'ECONNABORTED' // every path of the session is dead
  | 'ECONNRESET' // the path was disconnected, flushed or removed
  | 'EIO' // a work request completed with an error
  | 'EMSGSIZE' // header or data over the session's limits
  | 'ENETDOWN' // the path's port is down (PORT_ERR)
  | 'ENOSPC' // addPath: no free path slot
  | 'EPERM' // requireStrict and a relaxed server
  | 'ESTALE' // the server no longer knows the session
  | 'ETIMEDOUT' // heartbeats missed, or no path came back within reconnectWaitMs
  | RejectCode;

/**
 * What a rejected IO's caller can rely on (docs/api.md, "Exactly-once"):
 * false: the server never ran it, a retry runs it once; 'unknown': its
 * request may have reached the server, which may have run it.
 */
export type Executed = false | 'unknown';

/** Errors of the transport's API: `code` says what happened; an IO's rejection also says `executed`. */
export class TransportError extends Error {
  readonly code: TransportErrorCode;
  /** set on the rejection of an IO (write/read); undefined elsewhere */
  executed?: Executed;
  constructor(code: TransportErrorCode, message: string, executed?: Executed) {
    super(`${code}: ${message}`);
    this.name = 'TransportError';
    this.code = code;
    if (executed !== undefined) this.executed = executed;
  }

  /** A copy of this error for one IO, with what is known of its execution. */
  forIo(executed: Executed): TransportError {
    const e = new TransportError(this.code, this.message.slice(this.code.length + 2), executed);
    e.name = this.name;
    return e;
  }
}

/** The rejection of an aborted IO: name AbortError, code ABORT_ERR. */
export function abortError(reason?: unknown, executed?: Executed): TransportError {
  const e = new TransportError('ABORT_ERR', `the IO was aborted${reason instanceof Error ? `: ${reason.message}` : ''}`, executed);
  e.name = 'AbortError';
  return e;
}

/** A refused connect as a TransportError with the server's reason (and whether it says retry). */
export function connectError(err: unknown): Error {
  if (err instanceof ProtocolError) return err;
  const e = err as RdmaError & { privateData?: Buffer };
  if (e instanceof RdmaError && e.code === 'ECONNREFUSED' && e.privateData) {
    try {
      const r = decodeReject(e.privateData);
      const te = new TransportError(r.code, `the server rejected the path: ${r.code}${r.detail ? ` (detail ${r.detail})` : ''}`) as TransportError & { retry: boolean };
      te.retry = r.retry;
      return te;
    } catch {
      // not our private data: no listener, or a CM-level reject
    }
  }
  return err as Error;
}

/** The reject reasons after which a path is dead (no reconnect), unless the server set RETRY. */
const FATAL_REJECTS: ReadonlySet<string> = new Set(['EPROTO', 'EPROTONOSUPPORT', 'EINVAL', 'ESHUTDOWN', 'EPERM', 'EACCES', 'EOPNOTSUPP']);

/** True when a path that failed with `err` must not reconnect. */
export function isFatalForPath(err: Error): boolean {
  if (err instanceof ProtocolError && err.reason === 'pool-changed') return true;
  return err instanceof TransportError && FATAL_REJECTS.has(err.code) && !(err as { retry?: boolean }).retry;
}
