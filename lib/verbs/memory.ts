/**
 * Memory regions, memory windows and the udmabuf helper.
 */
import { RdmaError } from '../errors';
import { native } from '../native';
import { ADVISE_MR_FLAG_FLUSH, Advice } from './constants';
import { QueuePair } from './qp';
import { rdmaCoreVersion } from './rdma-core';
import { checkBytes, checkOptions, checkUint, optBool } from './args';
import { Resource } from './resource';
import type { ProtectionDomain } from './pd';

/** A scatter/gather element: `length` bytes at `addr`, registered under `lkey`. */
export interface Sge {
  addr: number;
  length: number;
  lkey: number;
}

export type MemoryRegionKind = 'buffer' | 'on-demand' | 'implicit-on-demand' | 'dmabuf';

/**
 * A registered memory region (ibv_mr). The memory it covers stays alive
 * while it is registered, whatever JS does with its references.
 */
export class MemoryRegion extends Resource {
  readonly pd: ProtectionDomain;
  readonly kind: MemoryRegionKind;
  /** The registered JS memory (kind 'buffer' and 'on-demand'). */
  readonly buffer: ArrayBuffer | ArrayBufferView | undefined;
  /** @internal */
  readonly handle: any;
  readonly addr: number;
  readonly length: number;
  readonly lkey: number;
  readonly rkey: number;

  /** @internal use ProtectionDomain.registerMemory() and friends */
  constructor(pd: ProtectionDomain, kind: MemoryRegionKind, handle: any, buffer?: ArrayBuffer | ArrayBufferView) {
    super(pd);
    this.pd = pd;
    this.kind = kind;
    this.handle = handle;
    this.buffer = buffer;
    this.addr = handle.addr;
    this.length = handle.length;
    this.lkey = handle.lkey;
    this.rkey = handle.rkey;
    pd.trackRegion(this);
  }

  /** Whether [addr, addr + length) lies inside this region's JS-visible memory. */
  covers(addr: number, length: number): boolean {
    return (this.kind === 'buffer' || this.kind === 'on-demand') && !this.closed &&
      addr >= this.addr && addr + length <= this.addr + this.length;
  }

  /** An SGE for [offset, offset + length) of this region. */
  sge(offset = 0, length = this.length - offset): Sge {
    this.assertOpen();
    if (!Number.isInteger(offset) || offset < 0 || offset > this.length) {
      throw new RangeError(`offset must be an integer from 0 to ${this.length}, got ${offset}`);
    }
    if (!Number.isInteger(length) || length < 0 || offset + length > this.length) {
      throw new RangeError(`length must be an integer from 0 to ${this.length - offset}, got ${length}`);
    }
    return { addr: this.addr + offset, length, lkey: this.lkey };
  }

  /**
   * ibv_advise_mr on an on-demand region: prefetch pages ahead of use.
   * `ranges` default to the whole region (an implicit region needs them).
   */
  advise(
    advice: keyof typeof Advice,
    options: { flush?: boolean; ranges?: Array<{ addr: number; length: number }> } = {},
  ): void {
    this.assertOpen();
    if (!(advice in Advice)) throw new TypeError(`advice must be one of ${Object.keys(Advice).join(', ')}`);
    if (this.kind !== 'on-demand' && this.kind !== 'implicit-on-demand') {
      throw new RdmaError(
        'ibv_advise_mr failed: EOPNOTSUPP: advise applies to on-demand paging regions only',
        'EOPNOTSUPP', 95, 'ibv_advise_mr');
    }
    const ranges = options.ranges ?? [{ addr: this.addr, length: this.length }];
    if (this.kind === 'implicit-on-demand' && !options.ranges) {
      throw new TypeError('ranges are required for an implicit on-demand region');
    }
    try {
      this.handle.advise(Advice[advice], options.flush ? ADVISE_MR_FLAG_FLUSH : 0, ranges);
    } catch (err) {
      if (err instanceof RdmaError && err.code === 'EOPNOTSUPP' && this.pd.device.isSoftRoce) throw rxeAdviseUnsupported(this.pd.device.name);
      throw err;
    }
  }

  protected release(): void {
    this.handle.close();
    this.pd.untrackRegion(this);
  }
}

/**
 * rxe prefetches (advise_mr) from Linux 6.17, but rdma-core's rxe provider
 * passes ibv_advise_mr on to the kernel only from v59: older ones answer
 * EOPNOTSUPP themselves, whatever the kernel can do.
 */
function rxeAdviseUnsupported(device: string): RdmaError {
  const v = rdmaCoreVersion();
  const have = v === null ? 'this rdma-core (version unknown)' : `this process's rdma-core is v${v}`;
  const why = v !== null && v >= 59 ? 'the kernel does not support it (rxe prefetches from Linux 6.17)'
    : 'rdma-core\'s rxe provider passes ibv_advise_mr to the kernel only from rdma-core v59 (and the kernel needs Linux 6.17+)';
  return new RdmaError(`ibv_advise_mr failed: EOPNOTSUPP: ${device} cannot prefetch on-demand paging memory: ${why}; ${have}. ` +
    'The pages are faulted in on first use instead', 'EOPNOTSUPP', 95, 'ibv_advise_mr');
}

/**
 * A memory window (ibv_mw): a window onto part of a region, with its own
 * rkey, bound and invalidated through the send queue. Type 1 binds with
 * bind(); type 2 with a BIND_MW work request ({ opcode: 'BIND_MW', bind })
 * and is invalidated by LOCAL_INV or the peer's SEND_WITH_INV.
 */
export class MemoryWindow extends Resource {
  readonly pd: ProtectionDomain;
  readonly type: 1 | 2;
  /** @internal */
  readonly handle: any;

  /** @internal use ProtectionDomain.allocMemoryWindow() */
  constructor(pd: ProtectionDomain, type: 1 | 2, handle: any) {
    super(pd);
    this.pd = pd;
    this.type = type;
    this.handle = handle;
    this.#rkey = handle.rkey;
  }

  /** the rkey as of the last bind (read from the native window once per bind, not per use) */
  #rkey: number;

  /**
   * @internal After a bind was posted: the new rkey is read, and a window
   * bound through a QP onto a region is closed before
   * either: ibv_dereg_mr refuses a region with bound windows, and rxe holds
   * the QP while a type 2 window is bound to it (destroying the QP first
   * stalls for ~50 s in the kernel).
   */
  boundThrough(qp: Resource, mr: MemoryRegion | null): void {
    // a type 1 window is not tied to the QP it was bound through (any QP of
    // its PD may use it, and the kernel keeps no reference to that QP): it
    // outlives the QP, and only the region must outlive it
    this.dependOn(this.type === 2 ? qp : undefined, mr ?? undefined);
    this.#rkey = this.handle.rkey;
  }

  /** The current rkey (a successful bind posts a new one); 0 once closed. */
  get rkey(): number {
    return this.closed ? 0 : this.#rkey;
  }

  /**
   * Type 1: binds [addr, addr + length) of `mr` with `access` by posting a
   * bind on `qp` (ibv_bind_mw); the completion (wrId) reports the result.
   * Returns the new rkey. `mr` null unbinds.
   */
  bind(
    qp: QueuePair,
    mr: MemoryRegion | null,
    options: { addr?: number; length?: number; access?: number; wrId?: number; signaled?: boolean } = {},
  ): number {
    this.assertOpen();
    if (!(qp instanceof QueuePair)) throw new TypeError('qp must be a QueuePair');
    checkOptions(options);
    if (mr !== null && !(mr instanceof MemoryRegion)) throw new TypeError('mr must be a MemoryRegion or null');
    this.boundThrough(qp, mr);
    const addr = options.addr ?? mr?.addr ?? 0;
    const length = options.length ?? mr?.length ?? 0;
    const signaled = options.signaled !== false;
    this.#rkey = this.handle.bind(qp.handle, mr ? mr.handle : null, addr, length, options.access ?? 0,
      options.wrId ?? 0, signaled ? 2 : 0);
    // the bind's completion is outstanding work of the send CQ like a send's
    if (signaled) qp.sendCq.expect(1);
    return this.#rkey;
  }

  protected release(): void {
    this.handle.close();
  }
}

/**
 * A dma-buf made from memfd memory by /dev/udmabuf: CPU-visible memory
 * (`buffer`) with a dma-buf fd (`fd`) to register with
 * ProtectionDomain.registerDmabuf(). For tests and CPU staging.
 */
export class Udmabuf extends Resource {
  readonly fd: number;
  readonly buffer: ArrayBuffer;

  constructor(size: number) {
    super();
    const { fd, buffer } = native().createUdmabuf(size);
    this.fd = fd;
    this.buffer = buffer;
  }

  protected release(): void {
    native().closeFd(this.fd);
  }
}

export interface AllocateOptions {
  /**
   * Map the memory without touching it (an anonymous mapping): no page is
   * resident until first used, by the CPU or by the NIC through an
   * on-demand paging region. Default false: heap memory, zeroed up front.
   */
  lazy?: boolean;
}

/** Page-aligned, zeroed memory from the addon, for registration. */
export function allocate(size: number, options: AllocateOptions = {}): ArrayBuffer {
  checkOptions(options);
  optBool(options.lazy, 'options.lazy');
  return native().allocate(size, options.lazy === true);
}

/** [offset, offset + length) of `buffer`'s bytes, checked; length defaults to the rest. */
function pageSpan(buffer: unknown, offset: unknown, length: unknown): [ArrayBuffer | ArrayBufferView, number, number] {
  const b = checkBytes(buffer, 'buffer');
  const size = b.byteLength;
  const o = checkUint(offset, 'offset', Number.MAX_SAFE_INTEGER);
  const l = checkUint(length ?? Math.max(0, size - o), 'length', Number.MAX_SAFE_INTEGER);
  return [b, o, l];
}

/**
 * madvise(MADV_DONTNEED) on whole pages of addon memory (allocate(),
 * mapFile()): anonymous pages read as zero afterwards, file pages reread the
 * file. A pinned region over them keeps the old pages (the NIC and the CPU
 * then see different memory); an on-demand paging region is invalidated and
 * faults the new pages in on its next use. RangeError unless the range is
 * page-aligned addon memory.
 */
export function discardPages(buffer: ArrayBuffer | ArrayBufferView, offset = 0, length?: number): void {
  native().discardPages(...pageSpan(buffer, offset, length));
}

/** How many pages of the page-aligned range are resident (mincore). */
export function residentPages(buffer: ArrayBuffer | ArrayBufferView, offset = 0, length?: number): number {
  return native().residentPages(...pageSpan(buffer, offset, length));
}

/**
 * A shared read-write mapping of `length` bytes of the open file `fd` from
 * `offset` (a multiple of the page size): what is written through it
 * reaches the file, and a change to the file shows in it. It is unmapped
 * when the buffer is collected and no region covers it; the fd may be
 * closed at once. Touching pages past the file's end raises SIGBUS, as
 * with any mapping: do not shrink a mapped file while it is used.
 */
export function mapFile(fd: number, length: number, offset = 0): ArrayBuffer {
  checkUint(fd, 'fd', 0x7fffffff);
  checkUint(length, 'length', 2 ** 40, 1);
  checkUint(offset, 'offset', Number.MAX_SAFE_INTEGER);
  return native().mapFile(fd, length, offset);
}

export function pageSize(): number {
  return native().pageSize();
}
