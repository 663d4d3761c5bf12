/**
 * `node-rdma devices`: the RDMA devices of this host, like ibv_devinfo, with
 * the capabilities node-rdma cares about: on-demand paging, memory windows,
 * dma-buf (not reported by verbs: probed by registering a udmabuf), atomics.
 */
import { listDevices, openDevice, Udmabuf, pageSize, DeviceAttributes, PortAttributes, GidEntry } from '../verbs';
import { parseArgs, UsageError } from './args';
import { CliIo, defaultIo } from './display';
import { checkOdpSound } from '../verbs/odp-probe';

export const DEVICES_USAGE = `Usage: node-rdma devices [options]

Lists the RDMA devices of this host (like ibv_devinfo): transport, firmware,
ports (state, MTU, link layer), RoCE GIDs with their netdevs, and the
capabilities node-rdma uses:
  ODP            on-demand paging (odp_caps), per transport; on rxe also
                 whether ODP moves the right bytes (a loopback probe: rxe's
                 ODP corrupts data on unfixed kernels, EODPBROKEN)
  memory windows type 1 / type 2 (device capability flags)
  dma-buf        verbs cannot report it: probed by registering a udmabuf
                 (/dev/udmabuf); 'unknown' when no probe was possible
  atomics        atomic_cap and PCIe atomic capabilities

Options:
  --device NAME   only this device
  --no-probe      do not probe dma-buf or rxe's ODP (reports 'unknown (probe with registration)')
  -v, --verbose   every attribute and every GID
  --json          machine-readable output
  -h, --help      this text

Exit status: 0 ok, also when the kernel has RDMA support and no devices
(like ibv_devices; ibv_devinfo exits 255 there); 1 when the devices cannot
be listed, as ibv_devinfo fails too: the kernel has no RDMA verbs interface
(ENOSYS: the ib_uverbs module is not loaded; --json still prints
{ "devices": [], "error": { "code": "ENOSYS", ... } }), or a device failed
to open or query; 2 usage error.
`;

export interface DmabufProbe {
  supported: boolean | null;
  detail: string;
}

export interface DeviceReport {
  name: string;
  guid: string;
  nodeType: string;
  transport: string;
  fwVer: string;
  vendorId: string;
  vendorPartId: number;
  hwVer: number;
  ports: Array<PortAttributes & { port: number; gids: GidEntry[] }>;
  capabilities: {
    odp: {
      supported: boolean; implicit: boolean; rc: string[]; ud: string[]; uc: string[]; xrc: string[];
      /** rxe only: what the loopback probe found ('ok', 'broken', 'unverified'), or why it did not run */
      check: 'ok' | 'broken' | 'unverified' | 'not probed' | 'not needed';
      checkDetail?: string;
    };
    memoryWindows: { type1: boolean; type2: boolean; maxMw: number };
    dmabuf: DmabufProbe;
    atomics: { atomicCap: string; pciAtomic: { fetchAdd: number; swap: number; compareSwap: number } };
    flags: string[];
  };
  limits: { maxQp: number; maxQpWr: number; maxCq: number; maxCqe: number; maxMr: number; maxMrSize: string; maxPd: number; maxSge: number; maxSrq: number };
  attributes?: Record<string, unknown>;
  error?: string;
}

/** rxe with ODP: runs the data check every ODP registration on it needs (odp-probe.ts). */
function probeOdp(dev: ReturnType<typeof openDevice>, a: DeviceAttributes, probe: boolean): Pick<DeviceReport['capabilities']['odp'], 'check' | 'checkDetail'> {
  if (!a.odpCaps.general.includes('SUPPORT') || !dev.isSoftRoce) return { check: 'not needed' };
  if (!probe) return { check: 'not probed' };
  try {
    checkOdpSound(dev);
    return { check: 'ok' };
  } catch (err) {
    const e = err as { code?: string; message: string };
    return { check: e.code === 'EODPBROKEN' ? 'broken' : 'unverified', checkDetail: e.message };
  }
}

/** Registers a one-page udmabuf on `pd`'s device: the only way to learn dma-buf MR support. */
function probeDmabuf(dev: ReturnType<typeof openDevice>): DmabufProbe {
  let ub: Udmabuf | undefined;
  try {
    ub = new Udmabuf(pageSize());
  } catch (err) {
    return { supported: null, detail: `unknown (probe with registration: no udmabuf: ${(err as Error).message})` };
  }
  const pd = dev.allocPd();
  try {
    const mr = pd.registerDmabuf({ fd: ub.fd, length: pageSize() });
    mr.close();
    return { supported: true, detail: 'yes (udmabuf registration succeeded)' };
  } catch (err) {
    const e = err as { code?: string; message: string };
    if (e.code === 'EOPNOTSUPP' || e.code === 'ENOTSUP' || e.code === 'ENOSYS') return { supported: false, detail: `no (${e.code} on udmabuf registration)` };
    return { supported: null, detail: `unknown (udmabuf registration failed: ${e.message})` };
  } finally {
    pd.close();
    ub.close();
  }
}

function jsonSafe(v: unknown): unknown {
  if (typeof v === 'bigint') return v.toString();
  if (Array.isArray(v)) return v.map(jsonSafe);
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, jsonSafe(x)]));
  return v;
}

export function deviceReport(name: string, opts: { probe?: boolean; verbose?: boolean } = {}): DeviceReport {
  const info = listDevices().find((d) => d.name === name);
  const dev = openDevice(name);
  try {
    const a: DeviceAttributes = dev.query();
    const gids = dev.gids();
    const ports = [];
    for (let p = 1; p <= a.physPortCnt; p++) ports.push({ port: p, ...dev.queryPort(p), gids: gids.filter((g) => g.port === p) });
    const caps = a.capabilities;
    return {
      name,
      guid: info?.guid ?? a.nodeGuid,
      nodeType: info?.nodeType ?? '?',
      transport: info?.transport ?? '?',
      fwVer: a.fwVer,
      vendorId: `0x${a.vendorId.toString(16).padStart(4, '0')}`,
      vendorPartId: a.vendorPartId,
      hwVer: a.hwVer,
      ports,
      capabilities: {
        odp: {
          supported: a.odpCaps.general.includes('SUPPORT'), implicit: a.odpCaps.general.includes('SUPPORT_IMPLICIT'),
          rc: a.odpCaps.rc, ud: a.odpCaps.ud, uc: a.odpCaps.uc, xrc: a.odpCaps.xrc,
          ...probeOdp(dev, a, opts.probe !== false),
        },
        memoryWindows: {
          type1: caps.includes('MEM_WINDOW'),
          type2: caps.includes('MEM_WINDOW') && (caps.includes('MEM_WINDOW_TYPE_2A') || caps.includes('MEM_WINDOW_TYPE_2B')),
          maxMw: a.maxMw,
        },
        dmabuf: opts.probe === false ? { supported: null, detail: 'unknown (probe with registration)' } : probeDmabuf(dev),
        atomics: { atomicCap: a.atomicCap, pciAtomic: a.pciAtomicCaps },
        flags: caps,
      },
      limits: {
        maxQp: a.maxQp, maxQpWr: a.maxQpWr, maxCq: a.maxCq, maxCqe: a.maxCqe, maxMr: a.maxMr, maxMrSize: a.maxMrSize.toString(),
        maxPd: a.maxPd, maxSge: a.maxSge, maxSrq: a.maxSrq,
      },
      attributes: opts.verbose ? (jsonSafe(a) as Record<string, unknown>) : undefined,
    };
  } finally {
    dev.close();
  }
}

function yn(b: boolean): string {
  return b ? 'yes' : 'no';
}

function formatReport(r: DeviceReport, verbose: boolean): string {
  const c = r.capabilities;
  const out: string[] = [];
  out.push(`${r.name}`);
  const ll = [...new Set(r.ports.map((p) => p.linkLayer))];
  const roce = r.transport === 'IB' && ll.includes('Ethernet') ? ', RoCE (Ethernet link layer)' : ll.length ? `, ${ll.join('/')} link layer` : '';
  out.push(`  transport       ${r.transport} (${r.nodeType})${roce}`);
  out.push(`  node guid       ${r.guid}`);
  out.push(`  firmware        ${r.fwVer || '-'}   vendor ${r.vendorId} part ${r.vendorPartId} hw ${r.hwVer}`);
  for (const p of r.ports) {
    out.push(`  port ${p.port}          ${p.state}  ${p.linkLayer}  mtu ${p.activeMtu} (max ${p.maxMtu})  lid ${p.lid}`);
    const gids = verbose ? p.gids : p.gids.filter((g) => g.type === 'RoCEv2' || g.type === 'IB');
    for (const g of gids) out.push(`    gid[${g.index}]  ${g.gid.padEnd(40)} ${g.type.padEnd(7)} ${g.netdev ?? ''}`.trimEnd());
  }
  const check = { ok: '; data checked (loopback probe)', broken: '; BROKEN: registrations refused (EODPBROKEN, below)',
    unverified: '; data not checked (probe failed, below)', 'not probed': '; data not checked (--no-probe)', 'not needed': '' }[c.odp.check];
  const odp = c.odp.supported
    ? `yes${c.odp.implicit ? ' (implicit too)' : ''}; rc: ${c.odp.rc.join(',') || '-'}; ud: ${c.odp.ud.join(',') || '-'}${check}`
    : 'no';
  out.push(`  ODP             ${odp}`);
  if (c.odp.checkDetail) out.push(`                  ${c.odp.checkDetail}`);
  out.push(`  memory windows  type 1: ${yn(c.memoryWindows.type1)}, type 2: ${yn(c.memoryWindows.type2)} (max ${c.memoryWindows.maxMw})`);
  out.push(`  dma-buf         ${c.dmabuf.detail}`);
  const pa = c.atomics.pciAtomic;
  out.push(`  atomics         ${c.atomics.atomicCap}; PCIe atomics fetch-add 0x${pa.fetchAdd.toString(16)} swap 0x${pa.swap.toString(16)} cas 0x${pa.compareSwap.toString(16)}`);
  const l = r.limits;
  out.push(`  limits          qp ${l.maxQp} (wr ${l.maxQpWr}, sge ${l.maxSge})  cq ${l.maxCq} (cqe ${l.maxCqe})  mr ${l.maxMr} (max ${fmtMrSize(l.maxMrSize)})  pd ${l.maxPd}  srq ${l.maxSrq}`);
  if (verbose) {
    out.push(`  flags           ${c.flags.join(' ') || '-'}`);
    for (const [k, v] of Object.entries(r.attributes ?? {})) out.push(`    ${k.padEnd(24)} ${typeof v === 'object' ? JSON.stringify(v) : String(v)}`);
  }
  return out.join('\n') + '\n';
}

function fmtMrSize(s: string): string {
  const n = Number(s);
  if (n >= 2 ** 63) return '2^64';
  if (n >= 2 ** 30) return `${+(n / 2 ** 30).toFixed(1)} GiB`;
  return s;
}

export async function devicesCommand(argv: string[], io: CliIo = defaultIo): Promise<number> {
  let o;
  try {
    o = parseArgs(argv, { device: { type: 'string' }, 'no-probe': { type: 'flag' }, verbose: { type: 'flag', short: 'v' }, json: { type: 'flag' } });
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    io.stderr(`node-rdma devices: ${err.message}\nRun 'node-rdma devices --help' for the options.\n`);
    return 2;
  }
  if (o.help) {
    io.stdout(DEVICES_USAGE);
    return 0;
  }
  let names: string[];
  try {
    names = listDevices().map((d) => d.name);
  } catch (err) {
    const e = err as Error & { code?: string };
    if (o.json) io.stdout(JSON.stringify({ devices: [], error: { code: e.code ?? 'ERDMA', message: e.message } }, null, 2) + '\n');
    io.stderr(`node-rdma devices: cannot list RDMA devices: ${e.message}\n`);
    return 1;
  }
  if (o.device !== undefined) {
    if (!names.includes(o.device as string)) {
      io.stderr(`node-rdma devices: no RDMA device '${o.device}'${names.length ? ` (present: ${names.join(', ')})` : ' (this host has none)'}\n`);
      return 1;
    }
    names = [o.device as string];
  }
  const reports: DeviceReport[] = [];
  let failed = false;
  for (const n of names) {
    try {
      reports.push(deviceReport(n, { probe: !o['no-probe'], verbose: !!o.verbose }));
    } catch (err) {
      failed = true;
      reports.push({ name: n, error: (err as Error).message } as DeviceReport);
    }
  }
  if (o.json) {
    io.stdout(JSON.stringify({ devices: reports.map((r) => jsonSafe(r)) }, null, 2) + '\n');
    return failed ? 1 : 0;
  }
  if (reports.length === 0) {
    io.stdout('No RDMA devices found on this host.\n' +
      'Load a driver for your adapter (mlx5_ib, ...), or create a SoftRoCE device:\n' +
      '  sudo rdma link add rxe0 type rxe netdev eth0\n' +
      "(`npm start` runs node-rdma in a SoftRoCE guest when the host has no devices.)\n");
    return 0;
  }
  reports.forEach((r, i) => {
    if (i > 0) io.stdout('\n');
    if (r.error) io.stdout(`${r.name}\n  error: ${r.error}\n`);
    else io.stdout(formatReport(r, !!o.verbose));
  });
  return failed ? 1 : 0;
}
