/**
 * Prepared sends: a send work request checked and packed once, posted many
 * times. For latency-critical loops, where building and checking a work
 * request object per post costs as much as the post itself; see
 * QueuePair.prepareSend().
 */
import { Resource } from './resource';
import type { MemoryRegion } from './memory';
import type { QueuePair, SendWorkRequest } from './qp';

/** Offsets in a packed send record (native/qp.cc PostSendPacked). */
const WR_ID = 0;
const IMM = 4;
const REMOTE_ADDR = 5;
const SGE0_ADDR = 9;
const SGE0_LENGTH = 10;

/** Whether a WR of this opcode carries an immediate. */
export function carriesImm(opcode: SendWorkRequest['opcode']): boolean {
  return opcode === 'SEND_WITH_IMM' || opcode === 'RDMA_WRITE_WITH_IMM';
}

/** Whether a WR of this opcode targets peer memory (remoteAddr, rkey). */
export function targetsPeer(opcode: SendWorkRequest['opcode']): boolean {
  return opcode.startsWith('RDMA_') || opcode.startsWith('ATOMIC_');
}

export class PreparedSend extends Resource {
  readonly qp: QueuePair;
  readonly opcode: SendWorkRequest['opcode'];
  /** Whether each post asks for a completion. */
  readonly signaled: boolean;
  readonly #record: Float64Array;
  readonly #hasImm: boolean;
  readonly #remote: boolean;
  /** the region of an inline first SGE (its data is copied by the CPU) */
  readonly #inlineRegion: MemoryRegion | undefined;

  /** @internal use QueuePair.prepareSend() */
  constructor(qp: QueuePair, wr: SendWorkRequest, record: Float64Array, signaled: boolean, regions: MemoryRegion[]) {
    super();
    this.qp = qp;
    this.opcode = wr.opcode;
    this.signaled = signaled;
    this.#record = record;
    this.#hasImm = carriesImm(wr.opcode);
    this.#remote = targetsPeer(wr.opcode);
    this.#inlineRegion = wr.inline && wr.sge?.length ? regions.find((r) => r.lkey === wr.sge![0].lkey) : undefined;
    this.dependOn(qp, ...regions);
  }

  /**
   * Posts the work request (one ibv_post_send). `wrId` and `imm` replace
   * the prepared values for this post and the following ones.
   */
  post(wrId?: number, imm?: number): void {
    this.assertOpen();
    const r = this.#record;
    if (wrId !== undefined) {
      if (!Number.isSafeInteger(wrId) || wrId < 0) throw new RangeError(`wrId must be an integer from 0 to 2^53-1, got ${wrId}`);
      r[WR_ID] = wrId;
    }
    if (imm !== undefined) {
      if (!this.#hasImm) throw new TypeError(`${this.opcode} carries no immediate`);
      if (imm >>> 0 !== imm) throw new RangeError(`imm must be an integer from 0 to 2^32-1, got ${imm}`);
      r[IMM] = imm;
    }
    this.qp.postPrepared(r, this.signaled);
  }

  /** The peer address of an RDMA or atomic operation. */
  get remoteAddr(): number {
    return this.#record[REMOTE_ADDR];
  }

  set remoteAddr(addr: number) {
    this.assertOpen();
    if (!this.#remote) throw new TypeError(`${this.opcode} has no remote address`);
    if (!Number.isSafeInteger(addr) || addr < 0) throw new RangeError(`remoteAddr must be an integer from 0 to 2^53-1, got ${addr}`);
    this.#record[REMOTE_ADDR] = addr;
  }

  /** The length of the first SGE: how many bytes the next posts send. */
  get length(): number {
    return this.#record[SGE0_LENGTH];
  }

  set length(length: number) {
    this.assertOpen();
    const r = this.#record;
    if (r[3] < 1) throw new TypeError('this work request has no SGE');
    if (length >>> 0 !== length) throw new RangeError(`length must be an integer from 0 to 2^32-1, got ${length}`);
    if (this.#inlineRegion && !this.#inlineRegion.covers(r[SGE0_ADDR], length)) {
      throw new RangeError(`length ${length} runs past the region of the inline SGE`);
    }
    r[SGE0_LENGTH] = length;
  }

  /** Nothing native: the record lives in JS. */
  protected release(): void {}
}
