/**
 * PCI devices as sysfs shows them: identity (BDF, vendor, device, class,
 * driver, NUMA node), place in the hierarchy (host bridge, upstream bridge),
 * PCIe port type and ACS redirect state (both from config space).
 *
 * Where the hierarchy comes from: /sys/bus/pci/devices/<bdf> is a symlink
 * to /sys/devices/.../pci<dom>:<bus>/<root port>/<switch up>/<switch down>/<bdf>;
 * the PCI components of that path, in order, are the device's upstream
 * bridges (the kernel's pci_upstream_bridge() chain), and pci<dom>:<bus> is
 * its host bridge. A virtual function's upstream bridge is its physical
 * function's (the kernel uses pci_physfn()), found through `physfn`.
 *
 * ACS: sysfs has no ACS attribute; the kernel reads the ACS extended
 * capability (ID 0x000d) from config space. We do the same from
 * /sys/bus/pci/devices/<bdf>/config: extended capabilities start at 0x100,
 * ACS Control is the 16-bit word at capability + 6, and redirect means any
 * of Request Redirect (bit 2), Completion Redirect (bit 3) or Egress Control
 * (bit 5) (PCI_ACS_RR | PCI_ACS_CR | PCI_ACS_EC). Unprivileged readers get
 * only the first 64 bytes of config space, so without root the ACS state
 * (and the PCIe port type) is 'unknown', and results say so.
 */
import * as path from 'path';
import { RdmaError } from '../errors';
import { BDF_RE, HOST_BRIDGE_RE, Sysfs } from './sysfs';

export type PciePortType =
  | 'endpoint'
  | 'legacy-endpoint'
  | 'root-port'
  | 'upstream-port'
  | 'downstream-port'
  | 'pcie-to-pci-bridge'
  | 'pci-to-pcie-bridge'
  | 'rc-integrated-endpoint'
  | 'rc-event-collector'
  | 'conventional-pci'
  | 'unknown';

const PCIE_TYPES: Record<number, PciePortType> = {
  0x0: 'endpoint',
  0x1: 'legacy-endpoint',
  0x4: 'root-port',
  0x5: 'upstream-port',
  0x6: 'downstream-port',
  0x7: 'pcie-to-pci-bridge',
  0x8: 'pci-to-pcie-bridge',
  0x9: 'rc-integrated-endpoint',
  0xa: 'rc-event-collector',
};

/** ACS as the kernel's pci_bridge_has_acs_redir() sees it. */
export type AcsState =
  | { kind: 'none' } // no ACS capability: never redirects
  | { kind: 'present'; control: number; redirect: boolean; bits: string[] }
  | { kind: 'unknown'; why: string }; // config space not readable far enough

export const PCI_EXT_CAP_ID_ACS = 0x000d;
export const PCI_ACS_CTRL = 6;
export const PCI_ACS_RR = 0x0004;
export const PCI_ACS_CR = 0x0008;
export const PCI_ACS_EC = 0x0020;

export interface PciIdentity {
  /** '0000:03:00.0' */
  bdf: string;
  /** '0x1b36' (null when the attribute is missing or malformed; see problems) */
  vendor: string | null;
  device: string | null;
  /** '0x010802' */
  class: string | null;
  /** Bound driver's name, or null. */
  driver: string | null;
  /** NUMA node, or null when the platform has none (-1) or it is unreadable. */
  numaNode: number | null;
}

export interface PciDevice extends PciIdentity {
  /** Resolved sysfs path, relative to the sysfs root ('devices/pci0000:00/...'). */
  sysfsPath: string;
  /** 'pci0000:00', or null when the device is not below a PCI host bridge. */
  hostBridge: string | null;
  /** BDFs from the root bus down to this device (inclusive). */
  path: string[];
  /** The upstream bridge (pci_upstream_bridge()), null on a root bus. */
  upstream: string | null;
  /** For a virtual function: its physical function. */
  physfn: string | null;
  portType: PciePortType;
  acs: AcsState;
  /** Size of config space we could read (64 unprivileged, 256/4096 as root). */
  configBytes: number;
  /** Attributes that were missing or malformed. */
  problems: string[];
}

/** Parses the parts of config space the P2P rules need. */
export function parseConfigSpace(cfg: Buffer | null): { portType: PciePortType; acs: AcsState } {
  if (!cfg || cfg.length < 64)
    return { portType: 'unknown', acs: { kind: 'unknown', why: 'config space is not readable' } };
  let portType: PciePortType = 'unknown';
  const status = cfg.readUInt16LE(0x06);
  if (cfg.length > 64 && status & 0x10) {
    // classic capability list from 0x34, at most 48 entries (as the kernel)
    let pos = cfg.readUInt8(0x34) & 0xfc;
    for (let ttl = 48; pos >= 0x40 && pos + 4 <= cfg.length && ttl > 0; ttl--) {
      const id = cfg.readUInt8(pos);
      if (id === 0xff) break;
      if (id === 0x10) {
        const flags = cfg.readUInt16LE(pos + 2);
        portType = PCIE_TYPES[(flags >> 4) & 0xf] ?? 'unknown';
        break;
      }
      pos = cfg.readUInt8(pos + 1) & 0xfc;
    }
    if (portType === 'unknown') portType = 'conventional-pci';
  }
  if (cfg.length <= 64)
    return {
      portType,
      acs: { kind: 'unknown', why: 'only the first 64 bytes of config space are readable (not root)' },
    };
  if (cfg.length <= 0x100) return { portType, acs: { kind: 'none' } }; // no extended config space
  // extended capability list from 0x100 (pci_find_ext_capability)
  let pos = 0x100;
  for (let ttl = (4096 - 0x100) / 8; ttl > 0 && pos + 8 <= cfg.length; ttl--) {
    const header = cfg.readUInt32LE(pos);
    if (header === 0 || header === 0xffffffff) break;
    if ((header & 0xffff) === PCI_EXT_CAP_ID_ACS) {
      const control = cfg.readUInt16LE(pos + PCI_ACS_CTRL);
      const bits: string[] = [];
      if (control & PCI_ACS_RR) bits.push('RR');
      if (control & PCI_ACS_CR) bits.push('CR');
      if (control & PCI_ACS_EC) bits.push('EC');
      return { portType, acs: { kind: 'present', control, redirect: bits.length > 0, bits } };
    }
    const next = (header >>> 20) & 0xffc;
    if (next < 0x100) break;
    pos = next;
  }
  return { portType, acs: { kind: 'none' } };
}

/** The PCI components of a resolved sysfs device path. */
export function pciPathOf(sysfsRel: string): { hostBridge: string | null; path: string[] } {
  const parts = sysfsRel.split(path.sep);
  let hostBridge: string | null = null;
  const chain: string[] = [];
  for (const p of parts) {
    if (HOST_BRIDGE_RE.test(p)) {
      hostBridge = p;
      chain.length = 0;
    } else if (hostBridge && BDF_RE.test(p)) {
      chain.push(p);
    }
  }
  return { hostBridge, path: chain };
}

/**
 * The PCI devices below one sysfs root, loaded on demand and cached for the
 * lifetime of this object (create a new one to re-read).
 */
export class PciBus {
  readonly sysfs: Sysfs;
  #cache = new Map<string, PciDevice>();

  constructor(sysfs: Sysfs) {
    this.sysfs = sysfs;
  }

  /** BDFs of every device in /sys/bus/pci/devices. */
  list(): string[] {
    return this.sysfs.list(this.sysfs.path('bus/pci/devices')).filter((n) => BDF_RE.test(n));
  }

  has(bdf: string): boolean {
    return this.sysfs.exists(this.sysfs.path('bus/pci/devices', bdf));
  }

  /** The device; throws RdmaError ENODEV when there is no such PCI device. */
  get(bdf: string): PciDevice {
    if (typeof bdf !== 'string') throw new TypeError('bdf must be a string');
    const key = bdf.toLowerCase();
    const cached = this.#cache.get(key);
    if (cached) return cached;
    if (!BDF_RE.test(key))
      throw new RangeError(`bdf must look like 0000:03:00.0 (domain:bus:device.function), got '${bdf}'`);
    const link = this.sysfs.path('bus/pci/devices', key);
    const real = this.sysfs.realpath(link);
    if (!real)
      throw new RdmaError(`no PCI device ${key} (${this.sysfs.rel(link)} does not exist)`, 'ENODEV', 19);
    const dev = this.#load(key, real);
    this.#cache.set(key, dev);
    return dev;
  }

  #load(bdf: string, real: string): PciDevice {
    const s = this.sysfs;
    const problems: string[] = [];
    const hex = (attr: string): string | null => {
      const r = s.readHex(path.join(real, attr));
      if (r.ok) return r.value;
      problems.push(r.problem);
      return null;
    };
    const vendor = hex('vendor');
    const device = hex('device');
    const klass = hex('class');
    const driver = s.linkName(path.join(real, 'driver'));
    let numaNode: number | null = null;
    const numa = s.readText(path.join(real, 'numa_node'));
    if (numa.ok) {
      if (/^-?\d+$/.test(numa.value)) numaNode = Number(numa.value) < 0 ? null : Number(numa.value);
      else problems.push(`${s.rel(path.join(real, 'numa_node'))} is not an integer: '${numa.value}'`);
    }
    const rel = s.rel(real);
    const { hostBridge, path: chain } = pciPathOf(rel);
    if (!hostBridge || chain[chain.length - 1] !== bdf)
      problems.push(`${rel} is not below a PCI host bridge (pciDDDD:BB) directory`);
    const physfnReal = s.realpath(path.join(real, 'physfn'));
    const physfn = physfnReal ? path.basename(physfnReal) : null;
    let upstream: string | null;
    if (physfn && physfnReal) {
      const pf = pciPathOf(s.rel(physfnReal)).path;
      upstream = pf.length >= 2 ? pf[pf.length - 2] : null;
    } else {
      upstream = chain.length >= 2 ? chain[chain.length - 2] : null;
    }
    const cfg = s.readBytes(path.join(real, 'config'));
    const { portType, acs } = parseConfigSpace(cfg);
    return {
      bdf,
      vendor,
      device,
      class: klass,
      driver,
      numaNode,
      sysfsPath: rel,
      hostBridge,
      path: chain,
      upstream,
      physfn,
      portType,
      acs,
      configBytes: cfg ? cfg.length : 0,
      problems,
    };
  }

  /** pci_upstream_bridge(): the bridge above `bdf`, or null on a root bus. */
  upstream(bdf: string): PciDevice | null {
    const up = this.get(bdf).upstream;
    return up ? this.get(up) : null;
  }

  /** True when the device is a PCI-to-PCI bridge (class 0x0604xx). */
  isBridge(bdf: string): boolean {
    return this.get(bdf).class?.startsWith('0x0604') ?? false;
  }

  /**
   * The device the kernel's whitelist check looks at for a host bridge
   * (pci_host_bridge_dev()): the first device on the root bus if it is
   * devfn 00.0 or a PCIe root port. The kernel takes the first entry of the
   * bus's device list, which is the lowest devfn for devices found at boot;
   * we take the lowest devfn. Without root, a root port is recognised by its
   * bridge class (0x0604) since its PCIe capability is not readable.
   */
  hostBridgeDevice(hostBridge: string): PciDevice | null {
    const m = HOST_BRIDGE_RE.exec(hostBridge);
    if (!m) return null;
    const dir = this.sysfs.path('devices', hostBridge);
    let dirs = this.sysfs.list(dir);
    if (dirs.length === 0) {
      // the host bridge may sit below a platform device: find it via any member
      for (const b of this.list()) {
        const d = this.get(b);
        if (d.hostBridge === hostBridge) {
          const parts = d.sysfsPath.split(path.sep);
          dirs = this.sysfs.list(this.sysfs.path(...parts.slice(0, parts.indexOf(hostBridge) + 1)));
          break;
        }
      }
    }
    const onRootBus = dirs
      .filter((n) => {
        const b = BDF_RE.exec(n);
        return b && b[1] === m[1] && b[2] === m[2] && this.has(n);
      })
      .sort((a, b) => devfn(a) - devfn(b));
    if (onRootBus.length === 0) return null;
    const first = this.get(onRootBus[0]);
    if (devfn(first.bdf) === 0) return first;
    if (first.portType === 'root-port') return first;
    if (first.portType === 'unknown' && this.isBridge(first.bdf)) return first;
    return null;
  }
}

export function devfn(bdf: string): number {
  const m = BDF_RE.exec(bdf);
  if (!m) return -1;
  return (parseInt(m[3], 16) << 3) | Number(m[4]);
}

/** Same domain, bus and slot: two functions of one physical device. */
export function sameSlot(a: string, b: string): boolean {
  return a.slice(0, a.lastIndexOf('.')) === b.slice(0, b.lastIndexOf('.'));
}
