/**
 * Work request lists from JS: their length is checked against the queue
 * before anything is built for them, and a failed post says how many of
 * them were posted.
 */
import { RdmaError } from '../errors';
import { checkObject } from './args';
import type { Sge } from './memory';
import type { RecvWorkRequest } from './qp';

/**
 * A list's length, checked before anything is built for it: a queue takes
 * at most its size in one post (and a 2^32-1 long array-like would
 * otherwise be walked, or allocated for, in full).
 */
export function checkListLength(wrs: { length: number }, max: number, what: string): number {
  const n = wrs.length;
  if (n > max) throw new RangeError(`${what} has ${n} work requests; at most ${max} fit this queue in one post`);
  return n;
}

/** How many work requests a failed post did post (0 for an error thrown before the verb). */
export function postedBefore(err: unknown): number {
  return err instanceof RdmaError && typeof err.posted === 'number' ? err.posted : 0;
}

/** Receive WRs for the general path (an index loop: an Array subclass's map() could return anything). */
export function toNativeRecvs(wrs: RecvWorkRequest[]): Array<{ wrId: number; sge: Sge[] | undefined }> {
  const out = new Array(wrs.length);
  for (let i = 0; i < out.length; i++) {
    const wr = checkObject<RecvWorkRequest>(wrs[i], `wrs[${i}]`);
    out[i] = { wrId: wr.wrId ?? 0, sge: wr.sge };
  }
  return out;
}
