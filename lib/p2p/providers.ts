/**
 * p2pmem providers: PCI devices whose driver called
 * pci_p2pdma_add_resource() (an NVMe CMB, some NICs and accelerators), seen
 * as /sys/bus/pci/devices/<bdf>/p2pmem/{size,available,published,allocate}.
 * `published` means the driver offers the memory to other users
 * (pci_p2pmem_publish()); the kernel's own provider search
 * (pci_p2pmem_find_many()) only considers published providers, and so do we.
 */
import * as path from 'path';
import { RdmaError } from '../errors';
import { resolveClient, P2pClient } from './clients';
import { P2pDistance, P2pTopology } from './distance';
import { PciIdentity } from './pci';
import { P2pOptions } from './sysfs';

export interface P2pProvider extends PciIdentity {
  /** Total p2pmem bytes (p2pmem/size), null when unreadable. */
  size: number | null;
  /** Free bytes (p2pmem/available), null when unreadable. */
  available: number | null;
  /** p2pmem/published is 1. */
  published: boolean | null;
  /** Absolute path of p2pmem/allocate (mmap it to allocate). */
  allocatePath: string;
  /** p2pmem/allocate exists (kernel 6.2+). */
  allocatable: boolean;
  /** Missing or malformed attributes. A provider with problems is never chosen. */
  problems: string[];
}

function topologyOf(opts: P2pOptions | P2pTopology | undefined): P2pTopology {
  return opts instanceof P2pTopology ? opts : new P2pTopology(opts ?? {});
}

/** Reads one provider; throws RdmaError ENODEV when `bdf` has no p2pmem. */
export function getProvider(bdf: string, opts?: P2pOptions | P2pTopology): P2pProvider {
  const topo = topologyOf(opts);
  const s = topo.sysfs;
  const dev = topo.pci.get(bdf);
  const dir = s.path('bus/pci/devices', dev.bdf, 'p2pmem');
  if (!s.isDir(dir))
    throw new RdmaError(
      `PCI device ${dev.bdf} has no peer-to-peer memory (${s.rel(dir)} does not exist: its driver registered none, ` +
        `or the kernel lacks CONFIG_PCI_P2PDMA)`,
      'ENODEV',
      19,
    );
  const problems = [...dev.problems];
  const num = (attr: string): number | null => {
    const r = s.readUInt(path.join(dir, attr));
    if (r.ok) return r.value;
    problems.push(r.problem);
    return null;
  };
  const size = num('size');
  const available = num('available');
  let published: boolean | null = null;
  const pub = s.readText(path.join(dir, 'published'));
  if (!pub.ok) problems.push(pub.problem);
  else if (pub.value === '0' || pub.value === '1') published = pub.value === '1';
  else problems.push(`${s.rel(path.join(dir, 'published'))} is not 0 or 1: '${pub.value}'`);
  if (size !== null && available !== null && available > size)
    problems.push(`p2pmem/available (${available}) exceeds p2pmem/size (${size})`);
  const allocatePath = path.join(dir, 'allocate');
  return {
    bdf: dev.bdf,
    vendor: dev.vendor,
    device: dev.device,
    class: dev.class,
    driver: dev.driver,
    numaNode: dev.numaNode,
    size,
    available,
    published,
    allocatePath,
    allocatable: s.exists(allocatePath),
    problems,
  };
}

/** Every device with a p2pmem directory, in BDF order. */
export function listProviders(opts?: P2pOptions | P2pTopology): P2pProvider[] {
  const topo = topologyOf(opts);
  const s = topo.sysfs;
  return topo.pci
    .list()
    .filter((bdf) => s.isDir(s.path('bus/pci/devices', bdf, 'p2pmem')))
    .map((bdf) => getProvider(bdf, topo));
}

export interface ProviderCandidate {
  provider: P2pProvider;
  /** Summed distance to all clients, -1 when any client cannot reach it. */
  distance: number;
  results: P2pDistance[];
  /** Why it was not chosen (absent for the chosen one). */
  rejected?: string;
}

export interface ProviderChoice {
  /** The closest qualifying provider, or null. */
  provider: P2pProvider | null;
  distance: number;
  clients: P2pClient[];
  /** Every provider considered, with why it was or was not taken. */
  candidates: ProviderCandidate[];
  /** The outcome in words. */
  reason: string;
}

export interface ChooseOptions extends P2pOptions {
  /** Bytes needed (default: any non-zero amount free). */
  size?: number;
}

/**
 * The closest published provider with at least `size` bytes free for all
 * `clients` (RDMA devices, NVMe controllers or namespaces, netdevs, BDFs):
 * pci_p2pmem_find_many() plus a free-space check. Ties go to the provider
 * with more free space, then the lower BDF (the kernel picks at random).
 * When none qualifies, `provider` is null and `reason` says why.
 */
export function chooseProvider(clients: readonly string[], opts: ChooseOptions = {}): ProviderChoice {
  if (!Array.isArray(clients) || clients.some((c) => typeof c !== 'string'))
    throw new TypeError('clients must be an array of device names');
  if (clients.length === 0) throw new RangeError('clients must name at least one device');
  const size = opts.size ?? 1;
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size <= 0)
    throw new RangeError(`options.size must be a positive integer, got ${String(opts.size)}`);
  const topo = new P2pTopology(opts);
  const resolved = clients.map((c) => resolveClient(topo.sysfs, c));
  const providers = listProviders(topo);
  const nonPci = resolved.filter((c) => !c.pci);
  const candidates: ProviderCandidate[] = [];
  for (const p of providers) {
    const cand: ProviderCandidate = { provider: p, distance: -1, results: [] };
    candidates.push(cand);
    if (p.problems.length) {
      cand.rejected = `unusable sysfs attributes: ${p.problems.join('; ')}`;
      continue;
    }
    if (!p.published) {
      cand.rejected = 'its p2pmem is not published (reserved for its own driver)';
      continue;
    }
    if (nonPci.length) {
      cand.rejected = nonPci.map((c) => `client ${c.name}: ${c.reason}`).join('; ');
      continue;
    }
    const many = topo.distanceMany(p.bdf, resolved.map((c) => c.pci as string));
    cand.distance = many.distance;
    cand.results = many.results;
    if (many.distance < 0) {
      cand.rejected = many.results
        .filter((r) => !r.supported)
        .map((r) => `client ${nameOf(resolved, r.client)}: ${r.reason}`)
        .join('; ');
      continue;
    }
    if ((p.available ?? 0) < size) {
      cand.rejected = `only ${p.available} of ${p.size} bytes free, ${size} needed`;
      continue;
    }
    if (!p.allocatable) {
      cand.rejected = 'p2pmem/allocate is missing (userspace allocation needs Linux 6.2+)';
      continue;
    }
  }
  const ok = candidates.filter((c) => c.rejected === undefined);
  ok.sort(
    (a, b) =>
      a.distance - b.distance ||
      (b.provider.available ?? 0) - (a.provider.available ?? 0) ||
      a.provider.bdf.localeCompare(b.provider.bdf),
  );
  const best = ok[0];
  for (const c of ok.slice(1))
    c.rejected =
      c.distance > best.distance
        ? `farther (distance ${c.distance}) than ${best.provider.bdf} (distance ${best.distance})`
        : `as close as ${best.provider.bdf}, which has more free space or the lower BDF`;
  const names = clients.join(', ');
  if (best) {
    return {
      provider: best.provider,
      distance: best.distance,
      clients: resolved,
      candidates,
      reason: `${best.provider.bdf} is the closest published provider with ${size} bytes free for ${names} (distance ${best.distance}: ${best.results.map((r) => `${nameOf(resolved, r.client)} ${r.mapType}`).join(', ')})`,
    };
  }
  const reason =
    providers.length === 0
      ? `no PCI device has p2pmem (no /sys/bus/pci/devices/*/p2pmem: no provider driver, or the kernel lacks CONFIG_PCI_P2PDMA)`
      : `no provider qualifies for ${names}: ` + candidates.map((c) => `${c.provider.bdf}: ${c.rejected}`).join('; ');
  return { provider: null, distance: -1, clients: resolved, candidates, reason };
}

function nameOf(clients: P2pClient[], bdf: string): string {
  const c = clients.find((x) => x.pci === bdf);
  return c ? (c.name === bdf ? bdf : `${c.name} (${bdf})`) : bdf;
}

/**
 * Distance and mapping type between two devices given by name: the provider
 * (a BDF or a device name such as 'nvme0') and a client (RDMA device, NVMe
 * controller or namespace, netdev or BDF). Throws RdmaError ENODEV for an
 * unknown name or one without a PCI function.
 */
export function p2pDistance(provider: string, client: string, opts: P2pOptions = {}): P2pDistance {
  const topo = new P2pTopology(opts);
  const ends = [provider, client].map((name, i) => {
    const c = resolveClient(topo.sysfs, name, i === 0 ? 'provider' : 'client');
    if (!c.pci)
      throw new RdmaError(`${i === 0 ? 'provider' : 'client'} ${name} has no PCI function: ${c.reason}`, 'ENODEV', 19);
    return c.pci;
  });
  return topo.distance(ends[0], ends[1]);
}
