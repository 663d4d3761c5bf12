/**
 * `node-rdma p2p`: p2pmem providers (size, free, published) and the P2P
 * distance matrix between every provider and every RDMA device and NVMe
 * controller; `--choose` picks a provider for a set of clients.
 */
import { RdmaError } from '../errors';
import { listClients, P2pClient } from '../p2p/clients';
import { P2pDistance, P2pTopology } from '../p2p/distance';
import { chooseProvider, listProviders, P2pProvider, ProviderChoice } from '../p2p/providers';
import { P2pOptions } from '../p2p/sysfs';

const USAGE = `Usage: node-rdma p2p [options]

Lists PCI peer-to-peer memory (p2pmem) providers with their size, free space
and published state, and the P2P distance and mapping type (bus-addr,
thru-host-bridge, not-supported) from each provider to each RDMA device and
NVMe controller, computed like the kernel's pci_p2pdma_distance().

Options:
  --json               machine-readable output
  --choose DEV[,DEV]   pick the closest published provider for these clients
                       (RDMA devices, NVMe controllers/namespaces, netdevs, BDFs)
  --size BYTES         with --choose: bytes needed (suffixes K, M, G; default 1)
  --sysfs DIR          read sysfs from DIR instead of /sys
  --cpuinfo FILE       read the CPU from FILE instead of /proc/cpuinfo
  -h, --help           this text

Exit status: 0 ok, 1 --choose found no provider, 2 usage error.
`;

export interface CliIo {
  stdout: (s: string) => void;
  stderr: (s: string) => void;
}

const defaultIo: CliIo = {
  stdout: (s) => process.stdout.write(s),
  stderr: (s) => process.stderr.write(s),
};

function parseSize(v: string): number {
  const m = /^(\d+)([kmg]i?b?)?$/i.exec(v.trim());
  if (!m) throw new RangeError(`--size must be a number of bytes (optionally with K, M or G), got '${v}'`);
  const mult = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 }[(m[2] ?? '').charAt(0).toLowerCase()] ?? 1;
  const n = Number(m[1]) * mult;
  if (!Number.isSafeInteger(n) || n <= 0) throw new RangeError(`--size must be a positive number of bytes, got '${v}'`);
  return n;
}

export function formatBytes(n: number | null): string {
  if (n === null) return '?';
  if (n >= 1024 ** 3 && n % 1024 ** 2 === 0) return `${+(n / 1024 ** 3).toFixed(2)} GiB`;
  if (n >= 1024 ** 2) return `${+(n / 1024 ** 2).toFixed(2)} MiB`;
  if (n >= 1024) return `${+(n / 1024).toFixed(2)} KiB`;
  return `${n} B`;
}

function table(rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => '  ' + r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join('  ')).join('\n') + '\n';
}

/** One cell of the distance matrix. */
export interface P2pMatrixEntry {
  provider: string;
  /** Client name ('rxe0', 'nvme0'). */
  client: string;
  /** The client's PCI function, null when it has none. */
  clientPci: string | null;
  via: string | null;
  mapType: P2pDistance['mapType'];
  supported: boolean;
  distance: number | null;
  relation: P2pDistance['relation'] | null;
  reason: string;
  /** The full result (ACS, host-bridge rule), when the client is a PCI device. */
  detail?: P2pDistance;
}

export interface P2pReport {
  providers: P2pProvider[];
  clients: P2pClient[];
  matrix: P2pMatrixEntry[];
  choice?: ProviderChoice;
}

/** Providers, clients and the distance matrix of one system. */
export function p2pReport(opts: P2pOptions = {}): P2pReport {
  const topo = new P2pTopology(opts);
  const providers = listProviders(topo);
  const clients = listClients(topo.sysfs);
  const matrix: P2pMatrixEntry[] = [];
  for (const p of providers)
    for (const c of clients) {
      const base = { provider: p.bdf, client: c.name, clientPci: c.pci, via: c.via };
      if (!c.pci) {
        matrix.push({ ...base, mapType: 'not-supported', supported: false, distance: null, relation: null, reason: c.reason ?? 'not a PCI device' });
        continue;
      }
      const d = topo.distance(p.bdf, c.pci);
      matrix.push({ ...base, mapType: d.mapType, supported: d.supported, distance: d.distance, relation: d.relation, reason: d.reason, detail: d });
    }
  return { providers, clients, matrix };
}

/** Runs `node-rdma p2p`; prints, and returns the exit code. */
export async function p2pCommand(argv: string[], io: CliIo = defaultIo): Promise<number> {
  const opts: P2pOptions = {};
  let json = false;
  let choose: string[] | null = null;
  let size: number | undefined;
  try {
    for (let i = 0; i < argv.length; i++) {
      // --name value, or --name=value
      const eq = argv[i].startsWith('--') ? argv[i].indexOf('=') : -1;
      const a = eq > 0 ? argv[i].slice(0, eq) : argv[i];
      const inline = eq > 0 ? argv[i].slice(eq + 1) : undefined;
      const value = (): string => {
        const v = inline ?? argv[++i];
        if (v === undefined || v === '' || (inline === undefined && v.startsWith('--')))
          throw new RangeError(`${a} needs a value`);
        return v;
      };
      if (inline !== undefined && (a === '--json' || a === '--help'))
        throw new RangeError(`${a} takes no value`);
      if (a === '-h' || a === '--help') {
        io.stdout(USAGE);
        return 0;
      } else if (a === '--json') json = true;
      else if (a === '--sysfs') opts.sysfsRoot = value();
      else if (a === '--cpuinfo') opts.cpuinfoPath = value();
      else if (a === '--choose') choose = value().split(',').filter(Boolean);
      else if (a === '--size') size = parseSize(value());
      else throw new RangeError(`unknown argument '${a}'`);
    }
    if (size !== undefined && !choose) throw new RangeError('--size needs --choose');
    if (choose && choose.length === 0) throw new RangeError('--choose needs at least one device');
  } catch (err) {
    io.stderr(`node-rdma p2p: ${(err as Error).message}\n\n${USAGE}`);
    return 2;
  }

  let report: P2pReport;
  try {
    report = p2pReport(opts);
    if (choose) report.choice = chooseProvider(choose, { ...opts, size });
  } catch (err) {
    const e = err as RdmaError;
    io.stderr(`node-rdma p2p: ${e.message}\n`);
    return e instanceof RangeError || e instanceof TypeError || e.code === 'ENODEV' ? 2 : 1;
  }

  if (json) {
    io.stdout(JSON.stringify(report, null, 2) + '\n');
    return report.choice && !report.choice.provider ? 1 : 0;
  }

  let out = '';
  if (report.providers.length === 0) {
    out += 'p2pmem providers: none (no /sys/bus/pci/devices/*/p2pmem: no provider driver, or no CONFIG_PCI_P2PDMA)\n';
  } else {
    out += 'p2pmem providers:\n';
    const rows = [['BDF', 'DRIVER', 'ID', 'CLASS', 'NUMA', 'SIZE', 'FREE', 'PUBLISHED', 'ALLOCATE']];
    for (const p of report.providers)
      rows.push([
        p.bdf,
        p.driver ?? '-',
        `${(p.vendor ?? '?').replace(/^0x/, '')}:${(p.device ?? '?').replace(/^0x/, '')}`,
        p.class ?? '?',
        p.numaNode === null ? '-' : String(p.numaNode),
        formatBytes(p.size),
        formatBytes(p.available),
        p.published === null ? '?' : p.published ? 'yes' : 'no',
        p.allocatable ? 'yes' : 'no',
      ]);
    out += table(rows);
    for (const p of report.providers) for (const pr of p.problems) out += `  ! ${p.bdf}: ${pr}\n`;
  }
  out += '\n';
  if (report.clients.length === 0) out += 'clients: no RDMA devices or NVMe controllers\n';
  else if (report.providers.length) {
    out += 'distance from provider to client:\n';
    const rows = [['PROVIDER', 'CLIENT', 'MAP TYPE', 'DIST', 'RELATION']];
    for (const m of report.matrix)
      rows.push([
        m.provider,
        m.clientPci ? `${m.client} (${m.clientPci}${m.via ? ` via ${m.via}` : ''})` : m.client,
        m.mapType,
        m.distance === null ? '-' : String(m.distance),
        m.relation ?? 'not a PCI device',
      ]);
    out += table(rows) + '\n';
    for (const m of report.matrix) out += `  ${m.provider} -> ${m.client}: ${m.reason}\n`;
  }
  if (report.choice) {
    out += '\n';
    out += report.choice.provider ? `choice: ${report.choice.reason}\n` : `choice: none. ${report.choice.reason}\n`;
  }
  io.stdout(out);
  return report.choice && !report.choice.provider ? 1 : 0;
}

