/**
 * Shared receive queues.
 */
import { native } from '../native';
import { checkUint } from './args';
import { checkListLength, toNativeRecvs } from './lists';
import { Resource } from './resource';
import type { ProtectionDomain } from './pd';
import type { RecvWorkRequest } from './qp';

export interface SharedReceiveQueueInit {
  maxWr?: number;
  maxSge?: number;
  /** SRQ_LIMIT_REACHED fires when fewer WRs remain (0: off). */
  limit?: number;
}

/** A shared receive queue (ibv_srq). */
export class SharedReceiveQueue extends Resource {
  readonly pd: ProtectionDomain;
  /** @internal */
  readonly handle: any;

  /** @internal use ProtectionDomain.createSharedReceiveQueue() */
  constructor(pd: ProtectionDomain, init: SharedReceiveQueueInit = {}) {
    super();
    this.pd = pd;
    this.handle = new (native().SharedReceiveQueue)(pd.handle, {
      maxWr: checkUint(init.maxWr ?? 256, 'maxWr', 0xffffffff, 1),
      maxSge: checkUint(init.maxSge ?? 1, 'maxSge', 0xffffffff, 1),
      limit: checkUint(init.limit ?? 0, 'limit'),
    });
    this.#maxWr = this.handle.maxWr;
    this.dependOn(pd);
  }

  /** the size the provider granted: the longest list one post takes */
  readonly #maxWr: number;

  postRecv(wrs: RecvWorkRequest[]): void {
    this.assertOpen();
    if (!Array.isArray(wrs)) throw new TypeError('wrs must be an array of work requests');
    checkListLength(wrs, this.#maxWr, 'wrs');
    this.handle.postRecv(toNativeRecvs(wrs));
  }

  setLimit(limit: number): void {
    this.assertOpen();
    this.handle.modify({ limit: checkUint(limit, 'limit') });
  }

  query(): { maxWr: number; maxSge: number; limit: number } {
    this.assertOpen();
    return this.handle.query();
  }

  protected release(): void {
    this.handle.close();
  }
}
