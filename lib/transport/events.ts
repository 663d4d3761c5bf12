/**
 * The events of TransportClient and TransportServer as maps from event name
 * to the listener's arguments (docs/protocol.md 10.1, docs/api.md), so that
 * `client.on('path-down', (pathIndex, err) => ...)` is typed and a misspelt
 * event name is a compile error. client.ts and server.ts merge typed
 * listener methods over these maps into their classes (an interface of the
 * same name), which replace EventEmitter's untyped ones; `emit` stays
 * EventEmitter's. The runtime name lists let the unit tests check the maps
 * against what the classes emit.
 */
import type { ClientPathState, PathUpReason, SessionUpReason } from './types';

/** An error a path or session failed with: a TransportError, a ProtocolError or an RdmaError, each with its `code`. */
export type TransportFailure = Error & { readonly code?: string };

/** A protocol violation by the peer on one path (`reason`: the ProtocolError reason, or 'internal'). */
export interface ClientViolation {
  pathIndex: number;
  reason: string;
  message: string;
}
export interface ServerViolation extends ClientViolation {
  sessionId: string;
}

export interface TransportClientEvents {
  /** a path finished its info exchange */
  'path-up': [pathIndex: number, reason: PathUpReason];
  /** a connected path failed (ENETDOWN, ETIMEDOUT, ECONNRESET, a protocol violation) */
  'path-down': [pathIndex: number, error: TransportFailure];
  'session-up': [reason: SessionUpReason];
  /** the last connected path went down */
  'session-down': [error: TransportFailure];
  /** the older combined path event (error with 'down' and 'dead') */
  path: [pathIndex: number, what: Extract<ClientPathState, 'connected' | 'dead'> | 'down' | 'removed', error?: TransportFailure];
  /** the session failed for good; emitted only when there is a listener */
  error: [error: TransportFailure];
  violation: [violation: ClientViolation];
  log: [line: string];
}

export interface TransportServerEvents {
  violation: [violation: ServerViolation];
  log: [line: string];
}

export const TRANSPORT_CLIENT_EVENTS = Object.keys({
  'path-up': 1, 'path-down': 1, 'session-up': 1, 'session-down': 1, path: 1, error: 1, violation: 1, log: 1,
} satisfies Record<keyof TransportClientEvents, 1>) as Array<keyof TransportClientEvents>;
export const TRANSPORT_SERVER_EVENTS = Object.keys({ violation: 1, log: 1 } satisfies Record<keyof TransportServerEvents, 1>) as Array<keyof TransportServerEvents>;
