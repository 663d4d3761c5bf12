/// <reference types="node" preserve="true" />
// (kept in index.d.ts, so that a consumer compiling with "types": [] still
// gets Node's types: Buffer, EventEmitter and AbortSignal are in this API)
/** node-rdma's public surface. */
export { ErrnoCode, RdmaError, RdmaErrorCode } from './errors';
export * from './verbs';
/** PCI peer-to-peer memory (p2pmem): discovery, distance, choice, allocation. */
export * as p2p from './p2p';
/** The RTRS-style IO transport: protocol, server, client, policies, backoff. */
export * as transport from './transport';
