/**
 * The shared types of the transport's state and statistics, apart from the
 * classes that produce them, so that stats.ts and events.ts need neither
 * client.ts nor server.ts (no import circle).
 */
import type { WireStats } from './conn';

/** Why a path came up: its first connect or a reconnect. */
export type PathUpReason = 'first-connect' | 'reconnect';
/** Why the session came up. */
export type SessionUpReason = 'connected' | 'path-reconnected' | 'new-server-session';

export type ClientPathState = 'connecting' | 'connected' | 'reconnecting' | 'draining' | 'dead' | 'closed';

export interface ClientPathStats {
  index: number;
  host: string;
  port: number;
  state: ClientPathState;
  device: string | undefined;
  reads: number;
  readBytes: number;
  writes: number;
  writeBytes: number;
  inflight: number;
  failovers: number;
  reconnects: { ok: number; fail: number };
  latencyNs: number | undefined;
  /** times the path went down (path-down events) */
  downs: number;
  /** messages and local work of all its connections */
  wire: WireStats;
}

export interface ClientSessionStats {
  sessionId: string;
  /** 'up' while at least one path is connected */
  state: 'up' | 'down' | 'closed';
  queueDepth: number;
  waiting: number;
  unsettled: number;
  /** IOs in flight: posted and not yet answered (aborted ones too, until their answer frees the chunk) */
  inflight: number;
  /** session-down events */
  downs: number;
  /** new sessions started with a restarted server (rejoinOnServerRestart) */
  rejoins: number;
  paths: ClientPathStats[];
}

export interface ServerPathStats {
  index: number;
  state: 'connecting' | 'connected' | 'closed';
  device: string;
  reads: number;
  readBytes: number;
  writes: number;
  writeBytes: number;
  replays: number;
  latencyNs: number | undefined;
  /** messages and local work of the path's connection */
  wire: WireStats;
}
