/**
 * P2P distance and mapping type between a provider and a client, computed
 * the way Linux's drivers/pci/p2pdma.c does (calc_map_type_and_dist() and
 * pci_p2pdma_distance_many(), as of 6.12), from sysfs:
 *
 * - Walk up from the provider; at each device A (provider first), walk up
 *   from the client looking for A. The first match is the closest common
 *   upstream bridge; distance = hops from the provider to it + hops from
 *   the client to it (0: same function, 2: two functions of one device,
 *   4: two devices behind one switch, more through nested switches).
 * - ACS redirect (RR, CR or EC in ACS Control) on any device of the
 *   provider's walk up to and including the common bridge, or of the
 *   client's walk below it, sends the TLPs up to the root complex: the
 *   mapping then goes through the host bridge.
 * - With a common bridge and no redirect: PCI bus addresses (BUS_ADDR).
 * - Through the host bridge (no common upstream bridge, or ACS redirect):
 *   allowed (THRU_HOST_BRIDGE) only when the CPU is AMD Zen or newer
 *   (vendor AuthenticAMD, family >= 0x17) or the host bridge device is on
 *   the kernel's whitelist (both host bridges when they differ; entries
 *   flagged REQ_SAME_HOST_BRIDGE only when both devices share it);
 *   otherwise NOT_SUPPORTED. The distance then is the number of devices on
 *   both paths up to their root buses.
 *
 * The kernel stays the final judge (it decides at DMA-map time); this is
 * the same rule, evaluated from userspace, with reasons in words.
 */
import * as fs from 'fs';
import { PciBus, PciDevice, sameSlot } from './pci';
import { HostBridgeWhitelistEntry, P2pOptions, Sysfs } from './sysfs';

export type P2pMapType = 'bus-addr' | 'thru-host-bridge' | 'not-supported';

/** How the two devices are connected. */
export type P2pRelation = 'same-function' | 'same-device' | 'same-switch' | 'host-bridge';

export interface P2pDistance {
  provider: string;
  client: string;
  mapType: P2pMapType;
  supported: boolean;
  /** The kernel's distance (hops); compare only between supported results. */
  distance: number;
  relation: P2pRelation;
  /** BDF of the closest common upstream bridge (or the device itself), null if none. */
  commonUpstream: string | null;
  /** Devices on the path whose ACS redirect is on (the kernel's pci=disable_acs_redir list). */
  acsRedirect: string[];
  /** Devices on the path whose ACS state could not be read (not root): the result assumes no redirect. */
  acsUnknown: string[];
  /** Host-bridge rule, when it was consulted. */
  hostBridge?: {
    provider: string | null;
    client: string | null;
    cpuSupportsP2pdma: boolean;
    whitelisted: boolean;
    detail: string;
  };
  /** The result in words. */
  reason: string;
}

/**
 * Host bridges on the kernel's pci_p2pdma_whitelist (Linux 6.12).
 * Newer kernels add entries (e.g. Google SoCs); pass
 * `options.hostBridgeWhitelist` to use another table.
 */
export const HOST_BRIDGE_WHITELIST: readonly HostBridgeWhitelistEntry[] = Object.freeze([
  { vendor: 0x8086, device: 0x3c00, requireSameHostBridge: true, name: 'Intel Xeon E5/Core i7 (Sandy Bridge-E)' },
  { vendor: 0x8086, device: 0x3c01, requireSameHostBridge: true, name: 'Intel Xeon E5/Core i7 (Sandy Bridge-E)' },
  { vendor: 0x8086, device: 0x2f00, requireSameHostBridge: true, name: 'Intel Xeon E7 v3/E5 v3/Core i7 (Haswell-E)' },
  { vendor: 0x8086, device: 0x2f01, requireSameHostBridge: true, name: 'Intel Xeon E7 v3/E5 v3/Core i7 (Haswell-E)' },
  { vendor: 0x8086, device: 0x2030, requireSameHostBridge: false, name: 'Intel Skylake-E' },
  { vendor: 0x8086, device: 0x2031, requireSameHostBridge: false, name: 'Intel Skylake-E' },
  { vendor: 0x8086, device: 0x2032, requireSameHostBridge: false, name: 'Intel Skylake-E' },
  { vendor: 0x8086, device: 0x2033, requireSameHostBridge: false, name: 'Intel Skylake-E' },
  { vendor: 0x8086, device: 0x2020, requireSameHostBridge: false, name: 'Intel Skylake-E' },
  { vendor: 0x8086, device: 0x09a2, requireSameHostBridge: false, name: 'Intel Ice Lake-SP' },
]);

/** cpu_supports_p2pdma(): AMD Zen (family 0x17) or newer, read from cpuinfo. */
export function cpuSupportsP2pdma(cpuinfoPath: string): { supported: boolean; cpu: string } {
  let text: string;
  try {
    text = fs.readFileSync(cpuinfoPath, 'latin1');
  } catch {
    return { supported: false, cpu: `unknown CPU (${cpuinfoPath} not readable)` };
  }
  const first = text.split(/\n\s*\n/)[0] ?? '';
  const field = (name: string): string | undefined =>
    new RegExp(`^${name}\\s*:\\s*(.*)$`, 'm').exec(first)?.[1]?.trim();
  const vendor = field('vendor_id');
  const family = field('cpu family');
  if (!vendor) return { supported: false, cpu: 'a non-x86 CPU' };
  const fam = family !== undefined && /^\d+$/.test(family) ? Number(family) : NaN;
  const cpu = `${vendor} family ${Number.isNaN(fam) ? '?' : `0x${fam.toString(16)}`}`;
  return { supported: vendor === 'AuthenticAMD' && fam >= 0x17, cpu };
}

/** The topology of one sysfs root plus the host-bridge rules. */
export class P2pTopology {
  readonly sysfs: Sysfs;
  readonly pci: PciBus;
  readonly whitelist: readonly HostBridgeWhitelistEntry[];
  #cpu: { supported: boolean; cpu: string } | undefined;

  constructor(opts: P2pOptions = {}) {
    if (opts === null || typeof opts !== 'object') throw new TypeError('options must be an object');
    this.sysfs = new Sysfs(opts);
    this.pci = new PciBus(this.sysfs);
    if (opts.hostBridgeWhitelist !== undefined && !Array.isArray(opts.hostBridgeWhitelist))
      throw new TypeError('options.hostBridgeWhitelist must be an array');
    this.whitelist = opts.hostBridgeWhitelist ?? HOST_BRIDGE_WHITELIST;
  }

  get cpu(): { supported: boolean; cpu: string } {
    if (!this.#cpu) this.#cpu = cpuSupportsP2pdma(this.sysfs.cpuinfoPath);
    return this.#cpu;
  }

  /** __host_bridge_whitelist() for one host bridge. */
  #hostBridgeListed(hostBridge: string | null, sameHostBridge: boolean): { ok: boolean; what: string } {
    if (!hostBridge) return { ok: false, what: 'no PCI host bridge' };
    const root = this.pci.hostBridgeDevice(hostBridge);
    if (!root) return { ok: false, what: `host bridge ${hostBridge} (no devfn 00.0 device or root port on its root bus)` };
    const id = `${hex4(root.vendor)}:${hex4(root.device)}`;
    const vendor = root.vendor ? parseInt(root.vendor, 16) : -1;
    const device = root.device ? parseInt(root.device, 16) : -1;
    for (const e of this.whitelist) {
      if (e.vendor !== vendor) continue;
      if (e.device !== 'any' && e.device !== device) continue;
      if (e.requireSameHostBridge && !sameHostBridge)
        return { ok: false, what: `${root.bdf} [${id}] (${e.name}) is whitelisted only for devices on the same host bridge` };
      return { ok: true, what: `${root.bdf} [${id}] (${e.name}) is on the kernel's P2PDMA whitelist` };
    }
    return { ok: false, what: `${root.bdf} [${id}] is not on the kernel's P2PDMA host bridge whitelist` };
  }

  /** host_bridge_whitelist(provider, client). */
  #hostBridgeRule(p: PciDevice, c: PciDevice): NonNullable<P2pDistance['hostBridge']> {
    const cpu = this.cpu;
    let whitelisted: boolean;
    let detail: string;
    if (p.hostBridge === c.hostBridge) {
      const r = this.#hostBridgeListed(p.hostBridge, true);
      whitelisted = r.ok;
      detail = r.what;
    } else {
      const a = this.#hostBridgeListed(p.hostBridge, false);
      const b = this.#hostBridgeListed(c.hostBridge, false);
      whitelisted = a.ok && b.ok;
      detail = `different host bridges: ${a.what}; ${b.what}`;
    }
    detail = cpu.supported
      ? `the CPU (${cpu.cpu}) supports P2PDMA through the host bridge (AMD Zen or newer)`
      : `${detail}, and the CPU (${cpu.cpu}) is not AMD Zen or newer`;
    return { provider: p.hostBridge, client: c.hostBridge, cpuSupportsP2pdma: cpu.supported, whitelisted, detail };
  }

  /** calc_map_type_and_dist(provider, client). Both are BDFs. */
  distance(providerBdf: string, clientBdf: string): P2pDistance {
    const p = this.pci.get(providerBdf);
    const c = this.pci.get(clientBdf);
    const acsRedirect: string[] = [];
    const acsUnknown: string[] = [];
    const checkAcs = (d: PciDevice): void => {
      if (d.acs.kind === 'present' && d.acs.redirect) acsRedirect.push(d.bdf);
      else if (d.acs.kind === 'unknown') acsUnknown.push(d.bdf);
    };

    let common: PciDevice | null = null;
    let distA = 0;
    let distB = 0;
    for (let a: PciDevice | null = p; a; a = this.pci.upstream(a.bdf), distA++) {
      distB = 0;
      checkAcs(a);
      let bb: PciDevice | null = c;
      for (; bb; bb = this.pci.upstream(bb.bdf), distB++) if (bb.bdf === a.bdf) break;
      if (bb) {
        common = a;
        break;
      }
    }
    const base = {
      provider: p.bdf,
      client: c.bdf,
      distance: distA + distB,
      commonUpstream: common ? common.bdf : null,
      acsRedirect,
      acsUnknown,
    };
    if (common) {
      for (let bb: PciDevice | null = c; bb && bb.bdf !== common.bdf; bb = this.pci.upstream(bb.bdf)) checkAcs(bb);
      const relation: P2pRelation =
        base.distance === 0
          ? 'same-function'
          : p.upstream === c.upstream && (sameSlot(p.bdf, c.bdf) || sameDevice(p, c))
            ? 'same-device'
            : 'same-switch';
      const where =
        relation === 'same-function'
          ? 'the provider is the client itself (same PCI function)'
          : relation === 'same-device'
            ? `provider and client are functions of one device (below ${common.bdf})`
            : `provider and client are behind the same switch (common upstream bridge ${common.bdf})`;
      const unknownNote = acsUnknown.length
        ? `; ACS state of ${acsUnknown.join(', ')} is unknown (config space needs root), assumed not redirecting`
        : '';
      if (acsRedirect.length === 0) {
        return {
          ...base,
          mapType: 'bus-addr',
          supported: true,
          relation,
          reason: `${where}: peer-to-peer with PCI bus addresses, distance ${base.distance}${unknownNote}`,
        };
      }
      const hb = this.#hostBridgeRule(p, c);
      const ok = hb.cpuSupportsP2pdma || hb.whitelisted;
      const acsWords =
        `${where}, but ACS redirect is set on ${acsRedirect.join(', ')}, which forces the traffic up through the host bridge ` +
        `(the kernel parameter pci=disable_acs_redir=${acsRedirect.join(';')} turns it off)`;
      return {
        ...base,
        mapType: ok ? 'thru-host-bridge' : 'not-supported',
        supported: ok,
        relation,
        hostBridge: hb,
        reason: ok
          ? `${acsWords}; allowed through the host bridge: ${hb.detail}, distance ${base.distance}`
          : `${acsWords}; not supported: ${hb.detail}`,
      };
    }
    const hb = this.#hostBridgeRule(p, c);
    const ok = hb.cpuSupportsP2pdma || hb.whitelisted;
    const where = `provider and client share no upstream bridge (the path crosses the host bridge${
      p.hostBridge !== c.hostBridge ? `s ${p.hostBridge} and ${c.hostBridge}` : ` ${p.hostBridge}`
    })`;
    return {
      ...base,
      // the kernel counts ACS on these paths but does not use it here
      acsRedirect: [],
      acsUnknown: [],
      mapType: ok ? 'thru-host-bridge' : 'not-supported',
      supported: ok,
      relation: 'host-bridge',
      hostBridge: hb,
      reason: ok
        ? `${where}; allowed through the host bridge: ${hb.detail}, distance ${base.distance}`
        : `${where}; not supported: ${hb.detail}`,
    };
  }

  /**
   * pci_p2pdma_distance_many(): the summed distance from a provider to all
   * clients, or -1 when any of them is not supported (or there are none).
   */
  distanceMany(providerBdf: string, clientBdfs: readonly string[]): { distance: number; results: P2pDistance[] } {
    if (!Array.isArray(clientBdfs)) throw new TypeError('clients must be an array of BDFs');
    const results = clientBdfs.map((c) => this.distance(providerBdf, c));
    if (results.length === 0) return { distance: -1, results };
    const bad = results.some((r) => !r.supported);
    return { distance: bad ? -1 : results.reduce((s, r) => s + r.distance, 0), results };
  }
}

/** A virtual function and its physical function, or two VFs of one PF. */
function sameDevice(a: PciDevice, b: PciDevice): boolean {
  return a.physfn === b.bdf || b.physfn === a.bdf || (a.physfn !== null && a.physfn === b.physfn);
}

function hex4(v: string | null): string {
  return v ? v.replace(/^0x/, '').padStart(4, '0') : '????';
}
