/**
 * The RTRS-style IO transport: wire protocol (docs/protocol.md), server,
 * client, path policies and reconnect backoff.
 */
export * from './protocol';
export * from './policy';
export * from './backoff';
export { TransportError } from './conn';
export { TransportServer, ServerOptions, TransportHandler, TransportRequest, TransportResponse, ServerPathStats } from './server';
export { TransportClient, connect, ClientOptions, ClientPathOptions, ClientPathState, ClientPathStats, IoOptions, IoResult } from './client';
export { clientMetrics, serverMetrics, escapeLabel } from './stats';
