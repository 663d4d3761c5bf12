/**
 * Devices: listing (no open), opening, queries and async events.
 */
import { EventEmitter } from 'events';
import { RdmaError } from '../errors';
import { native, NativeContext, NativeDeviceInfo, NativeGidEntry } from '../native';
import { CompletionQueue, CompletionQueueOptions } from './cq';
import { ProtectionDomain } from './pd';
import { AsyncEvent, DeviceEvents } from './events';
import { Resource } from './resource';

export type DeviceInfo = NativeDeviceInfo;
export type GidEntry = NativeGidEntry;
export type { AsyncEvent } from './events';

export interface PortAttributes {
  state: 'NOP' | 'DOWN' | 'INIT' | 'ARMED' | 'ACTIVE' | 'ACTIVE_DEFER' | 'UNKNOWN';
  maxMtu: number;
  activeMtu: number;
  gidTblLen: number;
  portCapFlags: number;
  maxMsgSz: number;
  pkeyTblLen: number;
  lid: number;
  smLid: number;
  lmc: number;
  maxVlNum: number;
  smSl: number;
  activeWidth: number;
  activeSpeed: number;
  physState: number;
  linkLayer: 'InfiniBand' | 'Ethernet' | 'Unspecified';
}

export type OdpCap = 'SEND' | 'RECV' | 'WRITE' | 'READ' | 'ATOMIC' | 'SRQ_RECV';

export interface DeviceAttributes {
  fwVer: string;
  nodeGuid: string;
  sysImageGuid: string;
  maxMrSize: bigint;
  pageSizeCap: bigint;
  vendorId: number;
  vendorPartId: number;
  hwVer: number;
  maxQp: number;
  maxQpWr: number;
  deviceCapFlags: bigint;
  /** Names of the set IBV_DEVICE_* capability flags, e.g. 'MEM_WINDOW'. */
  capabilities: string[];
  maxSge: number;
  maxSgeRd: number;
  maxCq: number;
  maxCqe: number;
  maxMr: number;
  maxPd: number;
  maxQpRdAtom: number;
  maxQpInitRdAtom: number;
  maxResRdAtom: number;
  atomicCap: 'NONE' | 'HCA' | 'GLOB' | 'UNKNOWN';
  maxMw: number;
  maxMcastGrp: number;
  maxMcastQpAttach: number;
  maxTotalMcastQpAttach: number;
  maxAh: number;
  maxSrq: number;
  maxSrqWr: number;
  maxSrqSge: number;
  maxPkeys: number;
  localCaAckDelay: number;
  physPortCnt: number;
  odpCaps: {
    general: Array<'SUPPORT' | 'SUPPORT_IMPLICIT'>;
    rc: OdpCap[];
    uc: OdpCap[];
    ud: OdpCap[];
    xrc: OdpCap[];
  };
  deviceCapFlagsEx: bigint;
  completionTimestampMask: bigint;
  hcaCoreClock: bigint;
  maxDmSize: bigint;
  pciAtomicCaps: { fetchAdd: number; swap: number; compareSwap: number };
}

/**
 * Whether registered memory is safe across fork() (ibv_is_fork_initialized):
 * 'unneeded' when the kernel copies pinned pages into the child at fork
 * (Linux 5.13+), 'enabled' when rdma-core's madvise(DONTFORK) mode is on
 * (ibv_fork_init / RDMAV_FORK_SAFE), else 'disabled'. See docs/fork-safety.md.
 */
export function forkSafety(): 'disabled' | 'enabled' | 'unneeded' {
  return native().forkStatus();
}

/**
 * RDMA devices present (ibv_get_device_list); [] when the kernel has RDMA
 * support and no devices. Throws RdmaError ENOSYS when the kernel has no
 * RDMA verbs interface at all (ib_uverbs not loaded), as ibv_devinfo fails
 * there: that is a different fix from "no devices".
 */
export function listDevices(): DeviceInfo[] {
  try {
    return native().getDevices();
  } catch (err) {
    if (err instanceof RdmaError && err.code === 'ENOSYS') {
      throw new RdmaError(
        'ibv_get_device_list failed: ENOSYS: this kernel has no RDMA verbs interface (no /sys/class/infiniband_verbs: ' +
          'the ib_uverbs module is not loaded, or the kernel was built without InfiniBand support). ' +
          'Load it with the driver of the adapter: modprobe ib_uverbs mlx5_ib (or rdma_rxe for SoftRoCE)',
        'ENOSYS', err.errno, 'ibv_get_device_list',
      );
    }
    throw err;
  }
}

/**
 * An opened device (librdmacm's ibv_context for it; see openDevice). Emits 'event' for every async event
 * ({ type: 'PORT_ACTIVE', port: 1 }, 'PORT_ERR', 'GID_CHANGE', 'DEVICE_FATAL',
 * 'QP_FATAL', 'CQ_ERR', ...) and also under the event's own type name.
 * Listening does not keep the process alive.
 */
export class Device extends Resource {
  readonly name: string;
  /** @internal */
  readonly handle: NativeContext;
  readonly #events = new EventEmitter();
  #watching = false;

  /** @internal use openDevice() */
  constructor(handle: NativeContext) {
    super();
    this.handle = handle;
    this.name = handle.name;
  }

  #attrs: DeviceAttributes | undefined;

  /** ibv_query_device_ex: every attribute and capability the kernel reports. */
  query(): DeviceAttributes {
    this.assertOpen();
    this.#attrs = this.handle.queryDevice() as unknown as DeviceAttributes;
    return this.#attrs;
  }

  /** @internal The attributes, queried once (they do not change while open). */
  get attributes(): DeviceAttributes {
    return this.#attrs ?? this.query();
  }

  /** SoftRoCE (rdma_rxe): vendor id 0xffffff, the id rxe reports. */
  get isSoftRoce(): boolean {
    return this.attributes.vendorId === 0xffffff;
  }

  queryPort(port = 1): PortAttributes {
    this.assertOpen();
    return this.handle.queryPort(port) as unknown as PortAttributes;
  }

  /** The GID table of every port (ibv_query_gid_table). */
  gids(): GidEntry[] {
    this.assertOpen();
    return this.handle.queryGidTable();
  }

  /** A protection domain (ibv_alloc_pd). */
  allocPd(): ProtectionDomain {
    this.assertOpen();
    return new ProtectionDomain(this);
  }

  /** A completion queue with its own completion channel. */
  createCompletionQueue(options: CompletionQueueOptions = {}): CompletionQueue {
    this.assertOpen();
    return new CompletionQueue(this, options);
  }

  /** `'event'` for every async event, or one type name ('PORT_ERR', ...): see DeviceEvents. */
  on<K extends keyof DeviceEvents>(event: K, listener: (...args: DeviceEvents[K]) => void): this {
    this.assertOpen();
    this.#events.on(event, listener as (ev: AsyncEvent) => void);
    try {
      this.#updateWatch();
    } catch (err) {
      // not watched (EBUSY: another thread watches this device): the
      // listener would never be called, so it is not kept
      this.#events.off(event, listener as (ev: AsyncEvent) => void);
      throw err;
    }
    return this;
  }

  off<K extends keyof DeviceEvents>(event: K, listener: (...args: DeviceEvents[K]) => void): this {
    this.#events.off(event, listener as (ev: AsyncEvent) => void);
    this.#updateWatch();
    return this;
  }

  #updateWatch(): void {
    const want = !this.closed && this.#events.eventNames().length > 0;
    if (want && !this.#watching) {
      // weakly, as for CompletionQueue: the native side must not root us
      const events = new WeakRef(this.#events);
      this.handle.watchEvents((ev) => {
        const e = events.deref();
        e?.emit('event', ev);
        e?.emit(ev.type, ev);
      });
    } else if (!want && this.#watching) {
      this.handle.unwatchEvents();
    }
    this.#watching = want;
  }

  protected release(): void {
    this.#events.removeAllListeners();
    this.#watching = false;
    this.handle.close();
  }
}

/**
 * Opens a device by name. The context is librdmacm's (rdma_get_devices), so
 * objects made on it work with QPs created on CM ids bound to the same
 * device. Throws ENODEV if there is no such device, ENOSYS when the kernel
 * has no RDMA verbs interface (see listDevices).
 */
export function openDevice(name: string): Device {
  if (typeof name !== 'string' || name.length === 0) throw new TypeError('name must be a non-empty string');
  try {
    return new Device(new (native().Context)(name));
  } catch (err) {
    // no such device: on a kernel without the verbs interface, say that instead (ENOSYS)
    if (err instanceof RdmaError && err.code === 'ENODEV') listDevices();
    throw err;
  }
}
