/**
 * Devices that take part in P2P DMA ("clients"), mapped to their PCI
 * function the way the kernel's find_parent_pci_dev() does (walk up the
 * device's sysfs parents to the first PCI device):
 *
 * - RDMA devices: /sys/class/infiniband/<dev>/device. Software devices
 *   (rxe, siw) have no device link (they live in /sys/devices/virtual); their
 *   DMA is done by the NIC under them, so we follow their parent netdev
 *   (`parent`, else ports/<n>/gid_attrs/ndevs/0) to /sys/class/net/<if>/device.
 *   The kernel itself would call rxe "not a PCI device"; `via` says when the
 *   mapping went through a netdev.
 * - NVMe controllers: /sys/class/nvme/<ctrl>/device; namespaces
 *   (/sys/class/block/nvme0n1) through their parents.
 * - Network interfaces: /sys/class/net/<if>/device.
 * - A BDF names a PCI function directly.
 */
import * as path from 'path';
import { RdmaError } from '../errors';
import { pciPathOf } from './pci';
import { BDF_RE, Sysfs } from './sysfs';

export type P2pClientKind = 'pci' | 'rdma' | 'nvme' | 'block' | 'net';

export interface P2pClient {
  /** The name as given ('rxe0', 'nvme0', '0000:03:00.0'). */
  name: string;
  kind: P2pClientKind;
  /** The PCI function that does the DMA, or null when there is none. */
  pci: string | null;
  /** How it was reached when not directly ('netdev eth0'). */
  via: string | null;
  /** Why there is no PCI function (when pci is null). */
  reason?: string;
}

/** The PCI function at or above a resolved sysfs path (find_parent_pci_dev()). */
export function pciFunctionOf(sysfs: Sysfs, real: string | null): string | null {
  if (!real) return null;
  const { path: chain } = pciPathOf(sysfs.rel(real));
  return chain.length ? chain[chain.length - 1] : null;
}

function netdevOfRdma(sysfs: Sysfs, dev: string): string | null {
  const base = sysfs.path('class/infiniband', dev);
  const parent = sysfs.readText(path.join(base, 'parent'));
  if (parent.ok && parent.value) return parent.value;
  for (const port of sysfs.list(path.join(base, 'ports'))) {
    const nd = sysfs.readText(path.join(base, 'ports', port, 'gid_attrs/ndevs/0'));
    if (nd.ok && nd.value) return nd.value;
  }
  return null;
}

function netClient(sysfs: Sysfs, name: string, ifname: string, kind: P2pClientKind, via: string | null): P2pClient {
  const base = sysfs.path('class/net', ifname);
  if (!sysfs.exists(base))
    return { name, kind, pci: null, via, reason: `network interface ${ifname} does not exist` };
  const pci = pciFunctionOf(sysfs, sysfs.realpath(path.join(base, 'device')));
  if (!pci) return { name, kind, pci: null, via, reason: `network interface ${ifname} is not a PCI device (no PCI parent)` };
  return { name, kind, pci, via };
}

/**
 * Resolves a client name: a BDF, an RDMA device, an NVMe controller, a block
 * device or a network interface. Throws RdmaError ENODEV when no such device
 * exists; a device that exists but has no PCI function resolves with
 * `pci: null` and a reason.
 */
function checkSysfs(sysfs: unknown): void {
  if (!(sysfs instanceof Sysfs)) throw new TypeError('sysfs must be a Sysfs');
}

export function resolveClient(sysfs: Sysfs, name: string, what = 'client'): P2pClient {
  checkSysfs(sysfs);
  if (typeof name !== 'string' || name === '') throw new TypeError(`${what} must be a non-empty string`);
  if (name.includes('/') || name === '.' || name === '..')
    throw new RangeError(`client must be a device name or BDF, got '${name}'`);
  const lower = name.toLowerCase();
  if (BDF_RE.test(lower)) {
    if (!sysfs.exists(sysfs.path('bus/pci/devices', lower)))
      throw new RdmaError(`no PCI device ${lower}`, 'ENODEV', 19);
    return { name, kind: 'pci', pci: lower, via: null };
  }
  const ib = sysfs.path('class/infiniband', name);
  if (sysfs.exists(ib)) {
    const pci = pciFunctionOf(sysfs, sysfs.realpath(path.join(ib, 'device')));
    if (pci) return { name, kind: 'rdma', pci, via: null };
    const nd = netdevOfRdma(sysfs, name);
    if (!nd)
      return { name, kind: 'rdma', pci: null, via: null, reason: `RDMA device ${name} has no PCI device and no parent netdev` };
    return netClient(sysfs, name, nd, 'rdma', `netdev ${nd}`);
  }
  const nvme = sysfs.path('class/nvme', name);
  if (sysfs.exists(nvme)) {
    const pci = pciFunctionOf(sysfs, sysfs.realpath(path.join(nvme, 'device')));
    if (pci) return { name, kind: 'nvme', pci, via: null };
    return { name, kind: 'nvme', pci: null, via: null, reason: `NVMe controller ${name} is not a PCI device (fabrics?)` };
  }
  const blk = sysfs.path('class/block', name);
  if (sysfs.exists(blk)) {
    const pci = pciFunctionOf(sysfs, sysfs.realpath(blk));
    if (pci) return { name, kind: 'block', pci, via: null };
    return { name, kind: 'block', pci: null, via: null, reason: `block device ${name} is not below a PCI device` };
  }
  if (sysfs.exists(sysfs.path('class/net', name))) return netClient(sysfs, name, name, 'net', null);
  throw new RdmaError(
    `no device named '${name}' (looked for a PCI BDF, /sys/class/infiniband, nvme, block and net)`,
    'ENODEV',
    19,
  );
}

/** Every RDMA device and NVMe controller, resolved (for the distance matrix). */
export function listClients(sysfs: Sysfs): P2pClient[] {
  checkSysfs(sysfs);
  const out: P2pClient[] = [];
  for (const n of sysfs.list(sysfs.path('class/infiniband'))) out.push(resolveClient(sysfs, n));
  for (const n of sysfs.list(sysfs.path('class/nvme'))) out.push(resolveClient(sysfs, n));
  return out;
}
