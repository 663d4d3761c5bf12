/**
 * Protection domains: the parent of memory regions, memory windows, queue
 * pairs and shared receive queues. Closing a PD closes those first.
 */
import { RdmaError, unsupported } from '../errors';
import { native } from '../native';
import { checkBytes, checkObject, checkOptions, checkUint } from './args';
import { Access } from './constants';
import { allocate, AllocateOptions, MemoryRegion, MemoryWindow, pageSize } from './memory';
import { forkSafety } from './device';
import { checkOdpSound } from './odp-probe';
import { AddressHandle, AhAttr, QueuePair, QueuePairInit, SharedReceiveQueue, SharedReceiveQueueInit } from './qp';
import { Resource } from './resource';
import type { Device, OdpCap } from './device';

/**
 * In rdma-core's madvise(DONTFORK) mode (RDMAV_FORK_SAFE / IBV_FORK_SAFE in the
 * environment, or forkSafety() 'enabled' after ibv_fork_init), a
 * registration hides its whole pages from forked children: JS memory that
 * shares a page with other heap data would make a child crash between fork()
 * and exec() (child_process.spawn). Such registrations are refused there.
 */
function checkForkMode(mr: MemoryRegion): void {
  // rdma-core 44 turns the madvise mode on for RDMAV_FORK_SAFE/IBV_FORK_SAFE
  // even where the kernel copies pinned pages (and then reports 'unneeded')
  const dontfork = forkSafety() === 'enabled' || !!(process.env.RDMAV_FORK_SAFE || process.env.IBV_FORK_SAFE);
  if (!dontfork) return;
  const page = pageSize();
  if (mr.addr % page === 0 && mr.length % page === 0) return;
  // pd.allocate() memory: its block is whole pages of its own, whatever
  // length was asked for (allocate(1000) is one page nothing else uses)
  if (mr.handle.ownPages) return;
  mr.close();
  throw new RangeError('buffer must cover whole pages while fork safety is in madvise(DONTFORK) mode ' +
    '(RDMAV_FORK_SAFE / ibv_fork_init): other data on its pages would vanish from forked children; use pd.allocate()');
}

const ALL_ACCESS = Object.values(Access).reduce((a, b) => a | b, 0);

function checkAccess(access: unknown): number {
  const a = checkUint(access, 'access');
  if (a & ~ALL_ACCESS) throw new RangeError(`access has unknown bits: 0x${(a & ~ALL_ACCESS).toString(16)}`);
  return a;
}

/**
 * A dma-buf region's iova becomes its `addr`, a JS number: one at or above
 * 2^53 would come back rounded (and SGEs and peers would name the wrong
 * address), so it is refused.
 */
function checkIova(iova: unknown): number {
  if (typeof iova === 'bigint') {
    if (iova < 0n || iova > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw new RangeError(`iova must be from 0 to 2^53-1 (a region's addr is a number), got ${iova}`);
    }
    return Number(iova);
  }
  return checkUint(iova, 'iova', Number.MAX_SAFE_INTEGER);
}

export interface DmabufRange {
  fd: number;
  offset?: number;
  length: number;
  /** The address the region is known by on the wire. Default 0. */
  iova?: number | bigint;
}

export class ProtectionDomain extends Resource {
  readonly device: Device;
  /** @internal */
  readonly handle: any;

  /** @internal use Device.allocPd() */
  constructor(device: Device) {
    super();
    this.device = device;
    this.handle = new (native().ProtectionDomain)(device.handle);
    this.dependOn(device);
  }

  /**
   * Page-aligned zeroed memory from the addon (kept alive while registered);
   * `{ lazy: true }` leaves its pages untouched (for on-demand paging).
   */
  allocate(size: number, options: AllocateOptions = {}): ArrayBuffer {
    this.assertOpen();
    return allocate(checkUint(size, 'size', 2 ** 40, 1), options);
  }

  /** Registers JS memory (ibv_reg_mr). */
  registerMemory(buffer: ArrayBuffer | ArrayBufferView, access: number = Access.LOCAL_WRITE): MemoryRegion {
    this.assertOpen();
    checkBytes(buffer, 'buffer');
    const a = checkAccess(access);
    if (a & Access.ON_DEMAND) return this.registerOnDemand(buffer, a);
    const mr = new MemoryRegion(this, 'buffer', new (native().MemoryRegion)(this.handle, 'buffer', buffer, a), buffer);
    checkForkMode(mr);
    return mr;
  }

  /**
   * Explicit on-demand paging over `buffer`: pages are faulted in by the
   * NIC as used, never pinned. Needs odp_caps.general_caps SUPPORT. On rxe
   * the first ODP registration on a device probes it (odp-probe.ts) and
   * throws EODPBROKEN on a kernel whose rxe ODP corrupts data.
   */
  registerOnDemand(buffer: ArrayBuffer | ArrayBufferView, access: number = Access.LOCAL_WRITE): MemoryRegion {
    this.assertOpen();
    checkBytes(buffer, 'buffer');
    const a = checkAccess(access) | Access.ON_DEMAND;
    this.#requireOdp(false, a);
    // rxe's ODP corrupts data on unfixed kernels: probed once per device
    checkOdpSound(this.device);
    return new MemoryRegion(this, 'on-demand', new (native().MemoryRegion)(this.handle, 'buffer', buffer, a), buffer);
  }

  /**
   * Implicit on-demand paging: one region over the whole address space
   * (ibv_reg_mr(pd, NULL, SIZE_MAX, ON_DEMAND)). Needs SUPPORT_IMPLICIT.
   */
  registerImplicitOnDemand(access: number = Access.LOCAL_WRITE): MemoryRegion {
    this.assertOpen();
    const a = checkAccess(access) | Access.ON_DEMAND;
    this.#requireOdp(true, a);
    checkOdpSound(this.device);
    return new MemoryRegion(this, 'implicit-on-demand', new (native().MemoryRegion)(this.handle, 'implicit', null, a));
  }

  /** Registers a dma-buf (ibv_reg_dmabuf_mr), e.g. GPU memory or a Udmabuf. */
  registerDmabuf(range: DmabufRange, access: number = Access.LOCAL_WRITE): MemoryRegion {
    this.assertOpen();
    checkObject(range, 'range');
    const spec = {
      fd: checkUint(range.fd, 'fd', 0x7fffffff),
      offset: checkUint(range.offset ?? 0, 'offset', Number.MAX_SAFE_INTEGER),
      length: checkUint(range.length, 'length', Number.MAX_SAFE_INTEGER, 1),
      iova: checkIova(range.iova ?? 0),
    };
    try {
      return new MemoryRegion(this, 'dmabuf', new (native().MemoryRegion)(this.handle, 'dmabuf', spec, checkAccess(access)));
    } catch (err) {
      if (err instanceof RdmaError && err.code === 'EOPNOTSUPP') {
        throw new RdmaError(
          `ibv_reg_dmabuf_mr failed: EOPNOTSUPP: device ${this.device.name} does not support dma-buf memory regions`,
          'EOPNOTSUPP', 95, 'ibv_reg_dmabuf_mr');
      }
      throw err;
    }
  }

  /** A memory window of type 1 or 2; checks the device's MEM_WINDOW caps first. */
  /** An address handle for UD sends (ibv_create_ah): `{ portNum, grh: { dgid, sgidIndex } }` for RoCE. */
  createAddressHandle(attr: AhAttr): AddressHandle {
    this.assertOpen();
    return new AddressHandle(this, attr);
  }

  allocMemoryWindow(type: 1 | 2 = 2): MemoryWindow {
    this.assertOpen();
    if (type !== 1 && type !== 2) throw new RangeError(`type must be 1 or 2, got ${String(type)}`);
    const caps = this.device.attributes.capabilities;
    if (!caps.includes('MEM_WINDOW')) {
      throw unsupported('ibv_alloc_mw', `device ${this.device.name} does not support memory windows (no IBV_DEVICE_MEM_WINDOW)`);
    }
    if (type === 2 && !caps.includes('MEM_WINDOW_TYPE_2A') && !caps.includes('MEM_WINDOW_TYPE_2B')) {
      throw unsupported('ibv_alloc_mw', `device ${this.device.name} does not support type 2 memory windows`);
    }
    return new MemoryWindow(this, type, new (native().MemoryWindow)(this.handle, type));
  }

  createQueuePair(init: QueuePairInit): QueuePair {
    this.assertOpen();
    return new QueuePair(this, init);
  }

  createSharedReceiveQueue(init: SharedReceiveQueueInit = {}): SharedReceiveQueue {
    this.assertOpen();
    checkOptions(init, 'init');
    return new SharedReceiveQueue(this, init);
  }

  readonly #regions = new Map<number, MemoryRegion>();

  /** @internal */
  trackRegion(mr: MemoryRegion): void {
    this.#regions.set(mr.lkey, mr);
  }

  /** @internal */
  untrackRegion(mr: MemoryRegion): void {
    if (this.#regions.get(mr.lkey) === mr) this.#regions.delete(mr.lkey);
  }

  /** @internal the open region registered here under `lkey` */
  regionFor(lkey: number): MemoryRegion | undefined {
    return this.#regions.get(lkey);
  }

  #requireOdp(implicit: boolean, access: number): void {
    const odp = this.device.attributes.odpCaps;
    if (!odp.general.includes('SUPPORT')) {
      throw unsupported('ibv_reg_mr',
        `device ${this.device.name} does not support on-demand paging (odp_caps.general_caps lacks IBV_ODP_SUPPORT)`);
    }
    if (implicit && !odp.general.includes('SUPPORT_IMPLICIT')) {
      throw unsupported('ibv_reg_mr',
        `device ${this.device.name} does not support implicit on-demand paging (odp_caps.general_caps lacks IBV_ODP_SUPPORT_IMPLICIT)`);
    }
    // the remote access asked for needs the matching RC operation on ODP
    // memory (else the registration succeeds and the first access fails)
    const need: Array<[number, OdpCap]> = [[Access.REMOTE_WRITE, 'WRITE'], [Access.REMOTE_READ, 'READ'], [Access.REMOTE_ATOMIC, 'ATOMIC']];
    for (const [flag, cap] of need) {
      if (access & flag && !odp.rc.includes(cap)) {
        throw unsupported('ibv_reg_mr',
          `device ${this.device.name} does not support RC ${cap} on on-demand paging memory (odp_caps.per_transport_caps.rc_odp_caps lacks IBV_ODP_SUPPORT_${cap})`);
      }
    }
  }

  protected release(): void {
    this.handle.close();
  }
}
