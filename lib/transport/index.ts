/**
 * The RTRS-style IO transport: wire protocol (docs/protocol.md), server,
 * client, path policies and reconnect backoff.
 *
 *   const server = new TransportServer({
 *     queueDepth: 128, chunkSize: 128 * 1024,          // strict mode by default
 *     handler: async ({ kind, header, data }) => {     // data: a view into the chunk
 *       if (kind === 'write') { await store(header, data); return { status: 0 }; }
 *       const n = await load(header, data);            // fill data for a read
 *       return n < 0 ? { status: 2 } : { length: n, header: Buffer.from('meta') };
 *     },
 *   });
 *   server.listen([{ host: '10.0.0.1', port: 7470 }, { host: '10.0.1.1', port: 7470 }]);
 *
 *   const client = await connect({ paths: [{ host: '10.0.0.1', port: 7470 }, { host: '10.0.1.1', port: 7470 }] });
 *   const { status, header } = await client.write(Buffer.from('key'), data, { signal: AbortSignal.timeout(5000) });
 *   const into = client.allocBuffer(65536);            // registered: zero-copy
 *   const r = await client.read(Buffer.from('key'), into);   // r.length bytes landed in into
 *   await client.close();                              // drains, then ends the session
 *
 * Errors are TransportError with a code (and, for an IO, `executed`: false
 * or 'unknown'): EMSGSIZE (header/data over the
 * limits), ECLOSED, ECONNABORTED (no path could complete the IO), ESTALE
 * (the server lost the session), ETIMEDOUT (no path came back within
 * reconnectWaitMs), ENOSPC (addPath: no free path slot), ABORT_ERR
 * (AbortSignal); a refused connect: EACCES (the server's authorize hook), EOPNOTSUPP
 * (windowType 2 on rxe). Events: path-up, path-down, session-up, session-down
 * (docs/protocol.md "Client API"). Statistics:
 * client.stats() / server.stats(), or .prometheus() for the text format.
 */
export { TransportClient, connect } from './client';
export { ClientOptions, ClientPathOptions, IoOptions, IoResult } from './client-options';
export {
  TransportServer, ServerOptions, TransportHandler, TransportRequest, TransportResponse, PeerInfo, AuthorizeResult,
} from './server';
export { TransportError, TransportErrorCode, Executed } from './errors';
export { ProtocolError, ProtocolErrorCode, RejectCode, SessionParams, randomSessionId, isSessionId, MAX_PATHS, MAX_QUEUE_DEPTH, MAX_STATUS, STATUS_EIO } from './protocol';
export { WindowTypeOption } from './windows';
export { PolicyName, POLICIES, DEFAULT_POLICY, isPolicyName } from './policy';
export { BackoffOptions, Backoff } from './backoff';
export {
  ClientPathState, ClientPathStats, ClientSessionStats, ServerPathStats, PathUpReason, SessionUpReason,
} from './types';
export { WireStats } from './conn';
export { clientMetrics, serverMetrics, escapeLabel } from './stats';
export { TransportClientEvents, TransportServerEvents, TransportFailure, ClientViolation, ServerViolation } from './events';
/** The wire codec (docs/protocol.md), for tools and tests: not part of the IO API. */
export * as protocol from './protocol';
