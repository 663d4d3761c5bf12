/**
 * The one-time check that on-demand paging on a SoftRoCE (rxe) device moves
 * the right bytes, before the first ODP region on it is handed out.
 *
 * Why: rxe's ODP in Linux 6.15 to at least 7.3.4 corrupts data without an
 * error. __rxe_odp_mr_copy() (drivers/infiniband/sw/rxe/rxe_odp.c) copies
 * each page's share of a packet to or from the start of the page instead of
 * the in-page offset, and never advances the packet's buffer from one page
 * to the next: an RDMA WRITE of 1 MiB into an ODP region completes with
 * SUCCESS while only the first 1 KiB packet of every 4 KiB page lands.
 * Pinned regions are not affected. scripts/kernel/patches/0001 fixes it.
 *
 * How: a loopback RC QP pair on the device writes a pattern of several
 * pages at an odd page offset into a fresh, untouched ODP region (an RDMA
 * WRITE), reads another pattern out of an ODP region (an RDMA READ), and
 * compares every byte. On a mismatch, ODP registrations on that device are
 * refused with RdmaError code 'EODPBROKEN' for the rest of the process.
 * The verdict is kept per device name (a kernel does not change under a
 * running process). NODE_RDMA_ODP_PROBE=0 skips the probe.
 */
import * as os from 'os';
import { RdmaError } from '../errors';
import { native } from '../native';
import { Access } from './constants';
import type { CompletionQueue } from './cq';
import type { Device } from './device';
import type { ProtectionDomain } from './pd';

/** Where the probe's transfers start in the region: odd, mid-page. */
export const PROBE_OFFSET = 1000 + 333;
/** How many bytes each probe transfer moves: more than two pages, so that packets cross page boundaries. */
export const PROBE_LENGTH = 2 * 4096 + 1717;
/** How long the probe waits for one completion. */
const PROBE_WAIT_MS = 15_000;

/** The probe's pattern: byte i of a transfer (never two equal neighbours, never all zero). */
export function probePattern(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = ((i * 7) + (i >>> 8) * 13 + seed) % 251 + 1;
  return out;
}

export interface ProbeMismatch {
  /** bytes that differ from what was sent */
  wrong: number;
  /** the first wrong byte's offset in the transfer */
  first: number;
  /** how many of the transfer's pages hold a wrong byte */
  pages: number;
}

/**
 * Compares what landed with what was sent (`got` and `want` cover the same
 * transfer; `pageOffset` is where the transfer starts in its first page).
 * null when every byte matches.
 */
export function compareProbe(got: Uint8Array, want: Uint8Array, pageOffset: number, page: number): ProbeMismatch | null {
  if (got.length !== want.length) throw new RangeError(`got ${got.length} bytes, want ${want.length}`);
  let wrong = 0;
  let first = -1;
  const pages = new Set<number>();
  for (let i = 0; i < want.length; i++) {
    if (got[i] === want[i]) continue;
    wrong++;
    if (first < 0) first = i;
    pages.add(Math.floor((pageOffset + i) / page));
  }
  return wrong ? { wrong, first, pages: pages.size } : null;
}

type Verdict = { ok: true } | { ok: false; error: RdmaError };
const verdicts = new Map<string, Verdict>();
const probing = new Set<string>();

/**
 * @internal Fault injection for tests (docs/testing.md): called with the
 * bytes of each probe transfer after it completed and before they are
 * compared, so a test can make them look like what a broken kernel leaves.
 */
export const odpProbeHooks: { afterTransfer?: (landed: Uint8Array, op: 'RDMA_WRITE' | 'RDMA_READ') => void } = {};

/** @internal Forget every verdict (tests). */
export function resetOdpProbe(): void {
  verdicts.clear();
}

/**
 * Throws EODPBROKEN when on-demand paging on `device` was shown to corrupt
 * data, probing it first if this process has not yet. Only rxe is probed
 * (the bug is in its driver); every other device passes at once.
 */
export function checkOdpSound(device: Device): void {
  if (!device.isSoftRoce || probing.has(device.name)) return;
  if (process.env.NODE_RDMA_ODP_PROBE === '0') return;
  let v = verdicts.get(device.name);
  if (!v) {
    probing.add(device.name);
    try {
      v = runProbe(device);
    } finally {
      probing.delete(device.name);
    }
    verdicts.set(device.name, v);
  }
  if (!v.ok) throw v.error;
}

function brokenError(device: Device, op: string, m: ProbeMismatch): RdmaError {
  return new RdmaError(
    `on-demand paging on ${device.name} corrupts data in this kernel (Linux ${os.release()}): ` +
      `an ${op} of ${PROBE_LENGTH} bytes at page offset ${PROBE_OFFSET} ${op === 'RDMA_WRITE' ? 'into' : 'out of'} ` +
      `an ODP region completed with SUCCESS, but ${m.wrong} bytes on ${m.pages} pages are wrong (the first at byte ${m.first}). ` +
      'This is the rxe bug in __rxe_odp_mr_copy() (drivers/infiniband/sw/rxe/rxe_odp.c: each page\'s copy ignores the ' +
      'in-page offset and the buffer is not advanced from page to page; fixed by node-rdma\'s ' +
      'scripts/kernel/patches/0001-rxe-odp-copy-at-page-offset.patch). ODP registrations on ' +
      `${device.name} are refused: register without Access.ON_DEMAND (pinned memory is not affected), ` +
      'run a fixed kernel, or set NODE_RDMA_ODP_PROBE=0 to skip this check at your own risk',
    'EODPBROKEN', undefined, 'ibv_reg_mr');
}

/** The probe itself: everything on its own PD and CQ, closed before it returns. */
function runProbe(device: Device): Verdict {
  const page = native().pageSize() as number;
  const size = Math.ceil((PROBE_OFFSET + PROBE_LENGTH) / page) * page;
  const pd = device.allocPd();
  const cq = device.createCompletionQueue({ cqe: 8 });
  try {
    const gid = probeGid(device);
    const init = { sendCq: cq, recvCq: cq, maxSendWr: 4, maxRecvWr: 1 };
    const a = pd.createQueuePair(init);
    const b = pd.createQueuePair(init);
    a.connectTo({ qpNum: b.qpNum, gid: gid.gid, psn: 1 }, { sgidIndex: gid.index, psn: 2 });
    b.connectTo({ qpNum: a.qpNum, gid: gid.gid, psn: 2 }, { sgidIndex: gid.index, psn: 1 });
    const pinned = pd.registerMemory(pd.allocate(size), Access.LOCAL_WRITE);
    const pinnedBytes = new Uint8Array(pinned.buffer as ArrayBuffer, 0, size);

    // WRITE: pinned -> an ODP region whose pages were never touched
    const writeWant = probePattern(PROBE_LENGTH, 1);
    pinnedBytes.set(writeWant, 0);
    const into = odpRegion(pd, size, Access.LOCAL_WRITE | Access.REMOTE_WRITE);
    a.postSend([{ wrId: 1, opcode: 'RDMA_WRITE', sge: [pinned.sge(0, PROBE_LENGTH)], remoteAddr: into.addr + PROBE_OFFSET, rkey: into.rkey }]);
    waitFor(cq, 'RDMA_WRITE');
    const wrote = new Uint8Array(into.buffer as ArrayBuffer, PROBE_OFFSET, PROBE_LENGTH);
    odpProbeHooks.afterTransfer?.(wrote, 'RDMA_WRITE');
    const mw = compareProbe(wrote, writeWant, PROBE_OFFSET % page, page);
    if (mw) return { ok: false, error: brokenError(device, 'RDMA_WRITE', mw) };

    // READ: an ODP region -> pinned (its pages were written by the CPU)
    const readWant = probePattern(PROBE_LENGTH, 2);
    const from = odpRegion(pd, size, Access.LOCAL_WRITE | Access.REMOTE_READ);
    new Uint8Array(from.buffer as ArrayBuffer).set(readWant, PROBE_OFFSET);
    pinnedBytes.fill(0);
    a.postSend([{ wrId: 2, opcode: 'RDMA_READ', sge: [pinned.sge(0, PROBE_LENGTH)], remoteAddr: from.addr + PROBE_OFFSET, rkey: from.rkey }]);
    waitFor(cq, 'RDMA_READ');
    const read = pinnedBytes.subarray(0, PROBE_LENGTH);
    odpProbeHooks.afterTransfer?.(read, 'RDMA_READ');
    const mr = compareProbe(read, readWant, PROBE_OFFSET % page, page);
    if (mr) return { ok: false, error: brokenError(device, 'RDMA_READ', mr) };
    return { ok: true };
  } catch (err) {
    throw unverified(device, err);
  } finally {
    pd.close();
    cq.close();
  }
}

function odpRegion(pd: ProtectionDomain, size: number, access: number) {
  // lazy: no page of it is resident before the NIC (or the CPU) touches it
  return pd.registerOnDemand(pd.allocate(size, { lazy: true }), access);
}

function probeGid(device: Device): { index: number; gid: string } {
  // the IPv4-mapped RoCE v2 GID where there is one (what rdma_cm uses on rxe)
  const gids = device.gids().filter((g) => g.port === 1);
  const e = gids.find((g) => g.type === 'RoCEv2' && g.gid.startsWith('::ffff:')) ?? gids.find((g) => g.type === 'RoCEv2') ?? gids[0];
  if (!e) throw new Error(`${device.name} port 1 has no GID`);
  return { index: e.index, gid: e.gid };
}

/** Polls `cq` for one completion (the probe runs synchronously, inside a registration). */
function waitFor(cq: CompletionQueue, op: string): void {
  const sleeper = new Int32Array(new SharedArrayBuffer(4));
  const deadline = Date.now() + PROBE_WAIT_MS;
  for (;;) {
    const wcs = cq.poll();
    if (wcs.length) {
      const wc = wcs[0];
      if (!wc.ok) throw new Error(`the probe's ${op} completed with ${wc.statusName}`);
      return;
    }
    if (Date.now() > deadline) throw new Error(`the probe's ${op} did not complete within ${PROBE_WAIT_MS} ms`);
    // let rxe's kernel work run (it may share this CPU)
    Atomics.wait(sleeper, 0, 0, 1);
  }
}

function unverified(device: Device, cause: unknown): RdmaError {
  const why = cause instanceof Error ? cause.message : String(cause);
  return new RdmaError(
    `could not check on-demand paging on ${device.name} before its first ODP registration (rxe's ODP corrupts data ` +
      `on unfixed kernels, docs/api.md "On-demand paging"): the loopback probe failed: ${why}. ` +
      'Set NODE_RDMA_ODP_PROBE=0 to register without the check',
    'EODPUNVERIFIED', undefined, 'ibv_reg_mr');
}
