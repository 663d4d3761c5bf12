/**
 * Builds a sysfs tree in a temp dir from a small description, laid out like
 * the real one: /sys/devices/pci<dom>:<bus>/<root port>/<...>/<bdf> device
 * directories (vendor, device, class, numa_node, config, driver link,
 * p2pmem/), /sys/bus/pci/devices/<bdf> relative symlinks into them, and
 * class/{infiniband,net,nvme,block} links the way the kernel makes them
 * (rxe under /sys/devices/virtual with a `parent` file naming its netdev).
 *
 * Config space is generated: a PCIe capability (port type) at 0x40, and in
 * extended space an AER header at 0x100 chaining to ACS at 0x148 (so the
 * reader must walk the list). `config: 'short'` gives the 64 bytes an
 * unprivileged reader sees, 'conventional' 256 bytes, 'none' no file.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

export type FixturePortType = 'root-port' | 'upstream-port' | 'downstream-port' | 'endpoint';

export interface FixtureP2pmem {
  /** number -> decimal text; string -> raw text (malformed); null -> file missing */
  size?: number | string | null;
  available?: number | string | null;
  published?: 0 | 1 | string | null;
  /** create p2pmem/allocate (a sparse file of `size` bytes; default true) */
  allocate?: boolean;
}

export interface FixturePci {
  bdf: string;
  /** BDF of the upstream bridge; absent: on the root bus of `hostBridge`. */
  parent?: string;
  /** 'pci0000:00' (default for root-bus devices: pci<domain>:<bus> of the BDF). */
  hostBridge?: string;
  vendor?: number;
  device?: number;
  class?: number;
  driver?: string;
  numaNode?: number;
  portType?: FixturePortType;
  /** ACS Control register value (adds an ACS capability). */
  acs?: number;
  config?: 'full' | 'short' | 'conventional' | 'none';
  p2pmem?: FixtureP2pmem;
  /** BDF of the physical function (makes this a VF). */
  physfn?: string;
  /** Raw attribute text overriding the generated one ('vendor': 'zzz'); null deletes it. */
  files?: Record<string, string | null>;
}

export interface FixtureSpec {
  pci: FixturePci[];
  /** RDMA devices: on a PCI function, or software (rxe/siw) on a netdev. */
  infiniband?: Array<{ name: string; pci?: string; netdev?: string; noParentFile?: boolean }>;
  /** Network interfaces: on a PCI function (through a virtio device when virtio is set) or virtual. */
  net?: Array<{ name: string; pci?: string; virtio?: string }>;
  nvme?: Array<{ name: string; pci: string; namespaces?: string[] }>;
  /** /proc/cpuinfo's first processor; null: no cpuinfo file. */
  cpu?: { vendor: string; family: number } | null;
}

export interface Fixture {
  dir: string;
  sysfsRoot: string;
  cpuinfoPath: string;
  /** Options for the p2p API. */
  opts: { sysfsRoot: string; cpuinfoPath: string };
  /** Absolute path of a device's directory. */
  devDir(bdf: string): string;
  cleanup(): void;
}

const PORT_TYPE_CODE: Record<FixturePortType, number> = {
  endpoint: 0x0,
  'root-port': 0x4,
  'upstream-port': 0x5,
  'downstream-port': 0x6,
};

export function configSpace(d: FixturePci): Buffer {
  const kind = d.config ?? 'full';
  const size = kind === 'short' ? 64 : kind === 'conventional' ? 256 : 4096;
  const b = Buffer.alloc(size);
  const klass = d.class ?? 0;
  b.writeUInt16LE(d.vendor ?? 0x1234, 0);
  b.writeUInt16LE(d.device ?? 0x5678, 2);
  b.writeUInt8(klass & 0xff, 9);
  b.writeUInt8((klass >> 8) & 0xff, 10);
  b.writeUInt8((klass >> 16) & 0xff, 11);
  b.writeUInt8(klass >> 8 === 0x0604 ? 1 : 0, 0x0e);
  if (d.portType) {
    b.writeUInt16LE(0x0010, 0x06); // capabilities list
    b.writeUInt8(0x40, 0x34);
    if (size > 0x44) {
      b.writeUInt8(0x10, 0x40); // PCI Express
      b.writeUInt8(0x00, 0x41);
      b.writeUInt16LE(0x2 | (PORT_TYPE_CODE[d.portType] << 4), 0x42);
    }
  }
  if (size === 4096) {
    // AER (0x0001) at 0x100 -> ACS (0x000d) at 0x148 when present
    b.writeUInt32LE(0x0001 | (1 << 16) | ((d.acs !== undefined ? 0x148 : 0) << 20), 0x100);
    if (d.acs !== undefined) {
      b.writeUInt32LE(0x000d | (1 << 16), 0x148);
      b.writeUInt16LE(0x005f, 0x14c); // capabilities: SV TB RR CR UF DT
      b.writeUInt16LE(d.acs, 0x14e);
    }
  }
  return b;
}

function hex(n: number, digits: number): string {
  return `0x${n.toString(16).padStart(digits, '0')}`;
}

export function buildSysfs(spec: FixtureSpec): Fixture {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'node-rdma-p2p-'));
  const sys = path.join(dir, 'sys');
  const byBdf = new Map(spec.pci.map((d) => [d.bdf, d]));
  const relPath = new Map<string, string>(); // bdf -> 'devices/pci0000:00/.../bdf'

  const devPath = (bdf: string, seen = new Set<string>()): string => {
    const known = relPath.get(bdf);
    if (known) return known;
    const d = byBdf.get(bdf);
    if (!d) throw new Error(`fixture: no PCI device ${bdf}`);
    if (seen.has(bdf)) throw new Error(`fixture: parent loop at ${bdf}`);
    seen.add(bdf);
    let p: string;
    if (d.parent) p = path.join(devPath(d.parent, seen), bdf);
    else {
      const [dom, bus] = bdf.split(':');
      p = path.join('devices', d.hostBridge ?? `pci${dom}:${bus}`, bdf);
    }
    relPath.set(bdf, p);
    return p;
  };

  const link = (from: string, toAbs: string): void => {
    fs.mkdirSync(path.dirname(from), { recursive: true });
    fs.symlinkSync(path.relative(path.dirname(from), toAbs), from);
  };
  const write = (file: string, text: string | Buffer): void => {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, text);
  };

  for (const d of spec.pci) {
    const abs = path.join(sys, devPath(d.bdf));
    fs.mkdirSync(abs, { recursive: true });
    const files: Record<string, string | null> = {
      vendor: hex(d.vendor ?? 0x1234, 4),
      device: hex(d.device ?? 0x5678, 4),
      class: hex(d.class ?? 0, 6),
      ...(d.numaNode !== undefined ? { numa_node: String(d.numaNode) } : {}),
      ...d.files,
    };
    for (const [name, text] of Object.entries(files)) if (text !== null) write(path.join(abs, name), `${text}\n`);
    if ((d.config ?? 'full') !== 'none') write(path.join(abs, 'config'), configSpace(d));
    if (d.driver) {
      const drv = path.join(sys, 'bus/pci/drivers', d.driver);
      fs.mkdirSync(drv, { recursive: true });
      link(path.join(abs, 'driver'), drv);
    }
    if (d.p2pmem) {
      const m = d.p2pmem;
      const pm = path.join(abs, 'p2pmem');
      fs.mkdirSync(pm, { recursive: true });
      const put = (name: string, v: number | string | null | undefined, dflt: number | string): void => {
        if (v === null) return;
        write(path.join(pm, name), `${v ?? dflt}\n`);
      };
      const size = typeof m.size === 'number' ? m.size : 1 << 24;
      put('size', m.size, size);
      put('available', m.available, size);
      put('published', m.published, 1);
      if (m.allocate !== false) {
        const fd = fs.openSync(path.join(pm, 'allocate'), 'w');
        fs.ftruncateSync(fd, size);
        fs.closeSync(fd);
      }
    }
    link(path.join(sys, 'bus/pci/devices', d.bdf), abs);
  }
  for (const d of spec.pci)
    if (d.physfn) link(path.join(sys, devPath(d.bdf), 'physfn'), path.join(sys, devPath(d.physfn)));

  for (const n of spec.net ?? []) {
    let abs: string;
    let device: string | null = null;
    if (n.pci) {
      const pci = path.join(sys, devPath(n.pci));
      const parent = n.virtio ? path.join(pci, n.virtio) : pci;
      fs.mkdirSync(parent, { recursive: true });
      abs = path.join(parent, 'net', n.name);
      device = parent;
    } else abs = path.join(sys, 'devices/virtual/net', n.name);
    fs.mkdirSync(abs, { recursive: true });
    write(path.join(abs, 'ifindex'), '2\n');
    if (device) link(path.join(abs, 'device'), device);
    link(path.join(sys, 'class/net', n.name), abs);
  }
  for (const ib of spec.infiniband ?? []) {
    let abs: string;
    if (ib.pci) {
      const pci = path.join(sys, devPath(ib.pci));
      abs = path.join(pci, 'infiniband', ib.name);
      fs.mkdirSync(abs, { recursive: true });
      link(path.join(abs, 'device'), pci);
    } else {
      abs = path.join(sys, 'devices/virtual/infiniband', ib.name);
      fs.mkdirSync(abs, { recursive: true });
      if (ib.netdev && !ib.noParentFile) write(path.join(abs, 'parent'), `${ib.netdev}\n`);
      if (ib.netdev) write(path.join(abs, 'ports/1/gid_attrs/ndevs/0'), `${ib.netdev}\n`);
    }
    write(path.join(abs, 'node_type'), '1: CA\n');
    link(path.join(sys, 'class/infiniband', ib.name), abs);
  }
  for (const n of spec.nvme ?? []) {
    const pci = path.join(sys, devPath(n.pci));
    const abs = path.join(pci, 'nvme', n.name);
    fs.mkdirSync(abs, { recursive: true });
    link(path.join(abs, 'device'), pci);
    link(path.join(sys, 'class/nvme', n.name), abs);
    for (const ns of n.namespaces ?? []) {
      const nsDir = path.join(abs, ns);
      write(path.join(nsDir, 'queue/logical_block_size'), '512\n');
      link(path.join(sys, 'class/block', ns), nsDir);
    }
  }
  const cpuinfoPath = path.join(dir, 'cpuinfo');
  const cpu = spec.cpu === undefined ? { vendor: 'GenuineIntel', family: 6 } : spec.cpu;
  if (cpu) {
    const one = (i: number): string =>
      `processor\t: ${i}\nvendor_id\t: ${cpu.vendor}\ncpu family\t: ${cpu.family}\nmodel\t\t: 1\n`;
    fs.writeFileSync(cpuinfoPath, `${one(0)}\n${one(1)}\n`);
  }
  return {
    dir,
    sysfsRoot: sys,
    cpuinfoPath,
    opts: { sysfsRoot: sys, cpuinfoPath },
    devDir: (bdf) => path.join(sys, devPath(bdf)),
    cleanup: () => fs.rmSync(dir, { recursive: true, force: true }),
  };
}

/** The guest's topology (scripts/vm-run --nics 2 --nvme-cmb 64), as a fixture description. */
export function guestLike(over: Partial<Record<string, Partial<FixturePci>>> = {}): FixtureSpec {
  const dev = (d: FixturePci): FixturePci => ({ ...d, ...(over[d.bdf] ?? {}) });
  return {
    pci: [
      dev({ bdf: '0000:00:00.0', vendor: 0x8086, device: 0x29c0, class: 0x060000, config: 'conventional' }),
      dev({ bdf: '0000:00:05.0', vendor: 0x1af4, device: 0x1000, class: 0x020000, driver: 'virtio-pci', config: 'conventional' }),
      dev({ bdf: '0000:00:10.0', vendor: 0x8086, device: 0x3420, class: 0x060400, driver: 'pcieport', portType: 'root-port' }),
      dev({ bdf: '0000:01:00.0', parent: '0000:00:10.0', vendor: 0x104c, device: 0x8232, class: 0x060400, driver: 'pcieport', portType: 'upstream-port' }),
      dev({ bdf: '0000:02:00.0', parent: '0000:01:00.0', vendor: 0x104c, device: 0x8233, class: 0x060400, driver: 'pcieport', portType: 'downstream-port' }),
      dev({ bdf: '0000:02:01.0', parent: '0000:01:00.0', vendor: 0x104c, device: 0x8233, class: 0x060400, driver: 'pcieport', portType: 'downstream-port' }),
      dev({
        bdf: '0000:03:00.0',
        parent: '0000:02:00.0',
        vendor: 0x1b36,
        device: 0x0010,
        class: 0x010802,
        driver: 'nvme',
        portType: 'endpoint',
        p2pmem: { size: 64 << 20, available: (64 << 20) - 131072, published: 1 },
      }),
      dev({ bdf: '0000:04:00.0', parent: '0000:02:01.0', vendor: 0x1af4, device: 0x1041, class: 0x020000, driver: 'virtio-pci', portType: 'endpoint' }),
    ],
    net: [
      { name: 'eth0', pci: '0000:04:00.0', virtio: 'virtio5' },
      { name: 'eth1', pci: '0000:00:05.0', virtio: 'virtio4' },
      { name: 'lo' },
    ],
    infiniband: [
      { name: 'rxe0', netdev: 'eth0' },
      { name: 'rxe1', netdev: 'eth1' },
    ],
    nvme: [{ name: 'nvme0', pci: '0000:03:00.0', namespaces: ['nvme0n1'] }],
    cpu: { vendor: 'AuthenticAMD', family: 15 },
  };
}
