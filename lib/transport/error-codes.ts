/**
 * The `code`s of TransportError (docs/api.md "Transport errors"): what the
 * transport raises itself, and the server's reject reasons (protocol.md
 * §4.3) that reach a client when the server refuses a path.
 */
import type { RejectCode } from './protocol';

export type TransportErrorCode =
  | 'ABORT_ERR' // the IO's AbortSignal fired
  | 'EAGAIN'
  | 'EBUSY' // removePath of the last path
  | 'ECLOSED' // the client or server is closed (or closing)
  | 'ECONNABORTED' // no path could complete the IO / every path is dead
  | 'ECONNRESET' // the path was disconnected, flushed or removed
  | 'EIO' // a work request completed with an error
  | 'EMSGSIZE' // header or data over the session's limits
  | 'ENETDOWN' // the path's port is down (PORT_ERR)
  | 'ENOSPC' // addPath: no free path slot
  | 'EPERM' // the server's authorization hook refused the client
  | 'ESTALE' // the server no longer knows the session
  | 'ETIMEDOUT' // heartbeats missed, or no path came back within reconnectWaitMs
  | RejectCode;
