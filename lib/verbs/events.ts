/**
 * The events of the verbs objects, as maps from event name to the listener's
 * arguments, so that `cq.on('completions', (wcs) => ...)` is typed and a
 * misspelt event name is a compile error. The runtime lists next to each map
 * let the unit tests check the maps against what the sources emit and what
 * docs/api.md documents.
 */
import type { NativeAsyncEvent } from '../native';
import type { CmId } from './cm';
import type { CompletionBatch, WorkCompletion } from './cq';
import type { RdmaError } from '../errors';

/** The `IBV_EVENT_*` types an async event can carry (native/context.cc), 'UNKNOWN' for any other. */
export const ASYNC_EVENT_TYPES = [
  'CQ_ERR', 'QP_FATAL', 'QP_REQ_ERR', 'QP_ACCESS_ERR', 'COMM_EST', 'SQ_DRAINED', 'PATH_MIG', 'PATH_MIG_ERR',
  'DEVICE_FATAL', 'PORT_ACTIVE', 'PORT_ERR', 'LID_CHANGE', 'PKEY_CHANGE', 'SM_CHANGE', 'SRQ_ERR',
  'SRQ_LIMIT_REACHED', 'QP_LAST_WQE_REACHED', 'CLIENT_REREGISTER', 'GID_CHANGE', 'WQ_FATAL', 'UNKNOWN',
] as const;
export type AsyncEventType = (typeof ASYNC_EVENT_TYPES)[number];

/** An async event of a device: `{ type: 'PORT_ACTIVE', port: 1 }` (docs/api.md "Async events"). */
export interface AsyncEvent extends NativeAsyncEvent {
  type: AsyncEventType;
}

/** Device events: every async event as 'event', and again under its own type name. */
export type DeviceEvents = { event: [ev: AsyncEvent] } & { [T in AsyncEventType]: [ev: AsyncEvent & { type: T }] };

/** CompletionQueue events. */
export interface CompletionQueueEvents {
  /** a batch of completions, in the order the CQ returned them */
  completions: [wcs: WorkCompletion[]];
  /**
   * the same batch read in place (no object per completion): the CQ's one
   * CompletionBatch, valid only during the listener call
   */
  batch: [batch: CompletionBatch];
  /** the CQ can no longer be armed (its device was removed): nothing more completes here */
  error: [err: RdmaError];
}

/** CmId events (docs/api.md "CmId events"). */
export interface CmIdEvents {
  /** on a listening id, for each CONNECT_REQUEST: accept() or reject() `id` */
  connection: [id: CmId, privateData: Buffer];
  established: [];
  rejected: [privateData: Buffer];
  disconnected: [];
  'device-removal': [];
  'addr-change': [];
  'timewait-exit': [];
  /** any other CM event (CONNECT_RESPONSE, MULTICAST_JOIN, ...) */
  event: [type: string, status: number];
}
export const CM_ID_EVENTS = Object.keys({
  connection: 1, established: 1, rejected: 1, disconnected: 1, 'device-removal': 1, 'addr-change': 1, 'timewait-exit': 1, event: 1,
} satisfies Record<keyof CmIdEvents, 1>) as Array<keyof CmIdEvents>;
export const COMPLETION_QUEUE_EVENTS = Object.keys({ completions: 1, batch: 1, error: 1 } satisfies Record<keyof CompletionQueueEvents, 1>) as Array<keyof CompletionQueueEvents>;
