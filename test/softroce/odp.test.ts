/**
 * On-demand paging on rxe (Linux 6.15+; the guest runs 7.3.4 with
 * scripts/kernel/patches/0001, without which rxe's ODP corrupts data):
 * explicit ODP regions over memory whose pages were never touched, RC
 * WRITE, READ, SEND/RECV and atomics into and out of them at page offsets
 * other than 0 and across page boundaries (every byte of the region
 * compared), UD SEND/RECV, memory that changes under a registration
 * (MADV_DONTNEED, a file truncated and rewritten) seen fresh by the next
 * IO, the clear errors of implicit ODP and advise_mr, `devices` showing the
 * ODP caps, and the probe that guards users of unfixed kernels
 * (lib/verbs/odp-probe.ts), its refusal path by fault injection.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Access, discardPages, mapFile, MemoryRegion, openDevice, pageSize, residentPages, WcFlags } from '../../lib';
import { devicesCommand } from '../../lib/cli/devices';
import { odpProbeHooks, PROBE_OFFSET, resetOdpProbe } from '../../lib/verbs/odp-probe';
import { completions, ipv4GidIndex, loopback, Loopback, region } from './helpers';

const ALL = Access.LOCAL_WRITE | Access.REMOTE_WRITE | Access.REMOTE_READ | Access.REMOTE_ATOMIC;
const PAGE = pageSize();

/** A position-dependent pattern (never constant, so a misplaced piece shows). */
function pattern(length: number, seed: number): Buffer {
  const b = Buffer.alloc(length);
  for (let i = 0; i < length; i++) b[i] = (i * 7 + (i >>> 9) * 31 + seed) % 253 + 1;
  return b;
}

let lb: Loopback;
beforeAll(() => {
  lb = loopback('rxe0');
});
afterAll(() => lb.close());

/** An ODP region over `pages` pages of lazily mapped memory: none of its pages was ever touched. */
function odpRegion(pages: number, access = ALL): { mr: MemoryRegion; mem: Buffer } {
  const buf = lb.pd.allocate(pages * PAGE, { lazy: true });
  expect(residentPages(buf)).toBe(0);
  const mr = lb.pd.registerOnDemand(buf, access);
  expect(mr.kind).toBe('on-demand');
  // registration faults nothing in: rxe snapshots only pages already present
  expect(residentPages(buf)).toBe(0);
  return { mr, mem: Buffer.from(buf) };
}

function pagesFor(offset: number, length: number): number {
  return Math.ceil((offset + length) / PAGE) + 1; // one more page: nothing may spill past the end
}

/** `mem` holds `want` at `offset` and zeros everywhere else. */
function expectOnly(mem: Buffer, offset: number, want: Buffer): void {
  expect(mem.subarray(offset, offset + want.length).equals(want)).toBe(true);
  expect(mem.subarray(0, offset).every((b) => b === 0)).toBe(true);
  expect(mem.subarray(offset + want.length).every((b) => b === 0)).toBe(true);
}

async function post(op: 'RDMA_WRITE' | 'RDMA_READ', local: MemoryRegion, localOffset: number, length: number, remote: MemoryRegion, remoteOffset: number): Promise<void> {
  const done = completions(lb.cqA, 1);
  lb.a.postSend([{ wrId: 1, opcode: op, sge: [local.sge(localOffset, length)], remoteAddr: remote.addr + remoteOffset, rkey: remote.rkey }]);
  const [wc] = await done;
  expect(wc).toMatchObject({ ok: true, opcodeName: op });
}

// [page offset, length]: mid-page odd starts, a 2-byte straddle, several
// pages, 1 MiB (256 pages, the size at which the issue saw the bug)
const CASES: Array<[number, number]> = [[1, 1024], [PAGE - 1, 2], [1333, 3 * PAGE + 17], [PAGE + 7, 2 * PAGE - 1], [2049, 1 << 20]];

describe('RC on ODP memory', () => {
  test('the first ODP registration on rxe0 probes it: this kernel passes, and later registrations do not probe again', () => {
    resetOdpProbe();
    let transfers = 0;
    odpProbeHooks.afterTransfer = () => void transfers++;
    try {
      odpRegion(1).mr.close();
      expect(transfers).toBe(2); // the probe's WRITE and READ
      odpRegion(1).mr.close();
      expect(transfers).toBe(2);
    } finally {
      odpProbeHooks.afterTransfer = undefined;
    }
  });

  test.each(CASES)('RDMA WRITE into untouched ODP pages at offset %i, %i bytes: every byte lands, nothing else changes', async (offset, length) => {
    const src = region(lb.pd, length);
    const want = pattern(length, offset);
    want.copy(Buffer.from(src.buffer as ArrayBuffer));
    const dst = odpRegion(pagesFor(offset, length));
    await post('RDMA_WRITE', src, 0, length, dst.mr, offset);
    // the NIC faulted exactly the pages it wrote in (checked before the CPU reads any)
    const touched = Math.floor((offset + length - 1) / PAGE) - Math.floor(offset / PAGE) + 1;
    expect(residentPages(dst.mr.buffer as ArrayBuffer)).toBe(touched);
    expectOnly(dst.mem, offset, want);
    dst.mr.close();
    src.close();
  });

  test.each(CASES)('RDMA READ out of ODP memory at offset %i, %i bytes: what the CPU wrote comes back byte for byte', async (offset, length) => {
    const src = odpRegion(pagesFor(offset, length));
    const want = pattern(length, offset + 1);
    want.copy(src.mem, offset);
    const dst = region(lb.pd, length + 2);
    const d = Buffer.from(dst.buffer as ArrayBuffer);
    d.fill(0xee);
    await post('RDMA_READ', dst, 1, length, src.mr, offset);
    expect(d.subarray(1, 1 + length).equals(want)).toBe(true);
    expect([d[0], d[length + 1]]).toEqual([0xee, 0xee]);
    src.mr.close();
    dst.close();
  });

  test('RDMA READ out of ODP pages never touched by anyone reads zeros (the NIC faults fresh zero pages in)', async () => {
    const src = odpRegion(5);
    const dst = region(lb.pd, 3 * PAGE + 100);
    Buffer.from(dst.buffer as ArrayBuffer).fill(0xee);
    await post('RDMA_READ', dst, 0, 3 * PAGE + 100, src.mr, 777);
    expect(Buffer.from(dst.buffer as ArrayBuffer).every((b) => b === 0)).toBe(true);
    src.mr.close();
    dst.close();
  });

  test('SEND/RECV into and out of ODP memory, mid-page and across pages', async () => {
    // into: the receive buffer is untouched ODP memory from offset 1500
    const length = 3 * PAGE - 5;
    const src = region(lb.pd, length);
    const want = pattern(length, 9);
    want.copy(Buffer.from(src.buffer as ArrayBuffer));
    const rcv = odpRegion(pagesFor(1500, 3 * PAGE));
    let got = completions(lb.cqB, 1);
    let sent = completions(lb.cqA, 1);
    lb.b.postRecv([{ wrId: 7, sge: [rcv.mr.sge(1500, 3 * PAGE)] }]);
    lb.a.postSend([{ wrId: 8, opcode: 'SEND', sge: [src.sge()] }]);
    expect((await sent)[0]).toMatchObject({ ok: true, opcodeName: 'SEND' });
    expect((await got)[0]).toMatchObject({ wrId: 7, ok: true, opcodeName: 'RECV', byteLen: length });
    expectOnly(rcv.mem, 1500, want);

    // out of: the send buffer is ODP memory (from offset 3000, 2 pages + 11)
    const out = odpRegion(pagesFor(3000, 2 * PAGE + 11));
    const want2 = pattern(2 * PAGE + 11, 10);
    want2.copy(out.mem, 3000);
    const land = region(lb.pd, 3 * PAGE);
    got = completions(lb.cqB, 1);
    sent = completions(lb.cqA, 1);
    lb.b.postRecv([{ wrId: 9, sge: [land.sge()] }]);
    lb.a.postSend([{ wrId: 10, opcode: 'SEND', sge: [out.mr.sge(3000, want2.length)] }]);
    expect((await sent)[0].ok).toBe(true);
    expect((await got)[0]).toMatchObject({ wrId: 9, ok: true, byteLen: want2.length });
    expectOnly(Buffer.from(land.buffer as ArrayBuffer), 0, want2);
    for (const r of [src, rcv.mr, out.mr, land]) r.close();
  });

  test('atomics on untouched ODP pages, their results landing in ODP memory across a page boundary', async () => {
    const target = odpRegion(3);
    const result = odpRegion(2);
    const t = new DataView(target.mem.buffer, target.mem.byteOffset);
    const r = new DataView(result.mem.buffer, result.mem.byteOffset);
    const at1 = PAGE + 8; // on the untouched second page
    const at2 = 2 * PAGE - 8; // the last 8 bytes of that page
    const res = PAGE - 4; // each result straddles pages 0 and 1 of its region
    let c = completions(lb.cqA, 1);
    lb.a.postSend([{ wrId: 1, opcode: 'ATOMIC_FETCH_AND_ADD', sge: [result.mr.sge(res, 8)], remoteAddr: target.mr.addr + at1, rkey: target.mr.rkey, compareAdd: 5 }]);
    expect((await c)[0]).toMatchObject({ ok: true, opcodeName: 'FETCH_ADD' });
    expect(r.getBigUint64(res, true)).toBe(0n);
    expect(t.getBigUint64(at1, true)).toBe(5n);

    c = completions(lb.cqA, 2);
    lb.a.postSend([
      { wrId: 2, opcode: 'ATOMIC_CMP_AND_SWP', sge: [result.mr.sge(res, 8)], remoteAddr: target.mr.addr + at2, rkey: target.mr.rkey, compareAdd: 0, swap: 0x1122334455667788n },
      { wrId: 3, opcode: 'ATOMIC_CMP_AND_SWP', sge: [result.mr.sge(res + 8, 8)], remoteAddr: target.mr.addr + at2, rkey: target.mr.rkey, compareAdd: 1, swap: 9 },
    ]);
    expect((await c).map((w) => [w.wrId, w.statusName])).toEqual([[2, 'SUCCESS'], [3, 'SUCCESS']]);
    expect(r.getBigUint64(res, true)).toBe(0n);
    expect(r.getBigUint64(res + 8, true)).toBe(0x1122334455667788n); // compare failed: the old value, no swap
    expect(t.getBigUint64(at2, true)).toBe(0x1122334455667788n);
    // nothing else in the target changed
    const rest = Buffer.from(target.mem);
    rest.fill(0, at1, at1 + 8);
    rest.fill(0, at2, at2 + 8);
    expect(rest.every((b) => b === 0)).toBe(true);
    target.mr.close();
    result.mr.close();
  });
});

describe('UD on ODP memory', () => {
  test('a UD SEND out of ODP memory lands in an ODP receive buffer whose GRH and payload straddle a page boundary', async () => {
    const QKEY = 0x22222222;
    const GRH = 40;
    const cq = lb.dev.createCompletionQueue({ cqe: 16 });
    const ready = (qp: ReturnType<typeof lb.pd.createQueuePair>) => {
      qp.modify({ qpState: 'INIT', pkeyIndex: 0, portNum: 1, qkey: QKEY });
      qp.modify({ qpState: 'RTR' });
      qp.modify({ qpState: 'RTS', sqPsn: 0 });
    };
    const s = lb.pd.createQueuePair({ type: 'UD', sendCq: cq, recvCq: cq, maxSendWr: 4, maxRecvWr: 4 });
    const r = lb.pd.createQueuePair({ type: 'UD', sendCq: cq, recvCq: cq, maxSendWr: 4, maxRecvWr: 4 });
    ready(s);
    ready(r);
    const { index, gid } = ipv4GidIndex(lb.dev);
    const ah = lb.pd.createAddressHandle({ portNum: 1, grh: { dgid: gid, sgidIndex: index, hopLimit: 64 } });
    const src = odpRegion(2);
    const want = pattern(1000, 11);
    want.copy(src.mem, 3500); // the payload crosses from page 0 into page 1
    const dst = odpRegion(3);
    const at = PAGE - 20; // GRH on page 0, the payload from page 0 into page 1
    const got = completions(cq, 2);
    r.postRecv([{ wrId: 1, sge: [dst.mr.sge(at, GRH + 1024)] }]);
    s.postSend([{ wrId: 2, opcode: 'SEND', sge: [src.mr.sge(3500, 1000)], ud: { ah, remoteQpn: r.qpNum, remoteQkey: QKEY } }]);
    const wcs = await got;
    const recv = wcs.find((w) => w.opcodeName === 'RECV');
    expect(wcs.every((w) => w.ok)).toBe(true);
    expect(recv).toMatchObject({ wrId: 1, byteLen: GRH + 1000, srcQp: s.qpNum });
    expect(recv!.wcFlags & WcFlags.GRH).toBe(WcFlags.GRH);
    expect(dst.mem.subarray(at + GRH, at + GRH + 1000).equals(want)).toBe(true);
    expect(dst.mem.subarray(0, at).every((b) => b === 0)).toBe(true);
    expect(dst.mem.subarray(at + GRH + 1000).every((b) => b === 0)).toBe(true);
    s.close();
    r.close();
    ah.close();
    src.mr.close();
    dst.mr.close();
    cq.close();
  });
});

describe('memory that changes under a registration', () => {
  test('MADV_DONTNEED: the next IO sees the fresh pages under an ODP region, while a pinned region keeps serving the old ones', async () => {
    const odp = odpRegion(4);
    const buf = odp.mr.buffer as ArrayBuffer;
    const len = 3 * PAGE;
    const src = region(lb.pd, len);
    const s = Buffer.from(src.buffer as ArrayBuffer);
    pattern(len, 1).copy(s);
    await post('RDMA_WRITE', src, 0, len, odp.mr, 100);
    expectOnly(odp.mem, 100, pattern(len, 1));

    discardPages(buf);
    expect(residentPages(buf)).toBe(0);
    expect(odp.mem.every((b) => b === 0)).toBe(true);
    s.fill(0xee);
    await post('RDMA_READ', src, 0, len, odp.mr, 100);
    expect(s.every((b) => b === 0)).toBe(true); // zeros, not the discarded pattern

    pattern(len, 2).copy(odp.mem, 100);
    await post('RDMA_READ', src, 0, len, odp.mr, 100);
    expect(s.equals(pattern(len, 2))).toBe(true);
    pattern(len, 3).copy(s);
    await post('RDMA_WRITE', src, 0, len, odp.mr, 100);
    expectOnly(odp.mem, 100, pattern(len, 3));

    // the same on pinned memory: the region keeps the pages it pinned, the
    // CPU gets new ones, and the two no longer agree (why ODP exists)
    const pinned = region(lb.pd, 2 * PAGE);
    const p = Buffer.from(pinned.buffer as ArrayBuffer);
    pattern(2 * PAGE, 4).copy(p);
    discardPages(pinned.buffer as ArrayBuffer);
    expect(p.every((b) => b === 0)).toBe(true);
    await post('RDMA_READ', src, 0, 2 * PAGE, pinned, 0);
    expect(s.subarray(0, 2 * PAGE).equals(pattern(2 * PAGE, 4))).toBe(true);
    for (const r of [odp.mr, src, pinned]) r.close();
  });

  test('a file mapping under an ODP region: a WRITE reaches the file, and after the file is truncated and rewritten the next READ sees the new bytes', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'node-rdma-odp-'));
    const file = path.join(dir, 'data');
    const size = 3 * PAGE;
    fs.writeFileSync(file, pattern(size, 20));
    const fd = fs.openSync(file, 'r+');
    try {
      const mapped = mapFile(fd, size);
      const mr = lb.pd.registerOnDemand(mapped, ALL);
      const local = region(lb.pd, 2 * PAGE);
      const l = Buffer.from(local.buffer as ArrayBuffer);
      await post('RDMA_READ', local, 0, 2 * PAGE, mr, 333);
      expect(l.equals(pattern(size, 20).subarray(333, 333 + 2 * PAGE))).toBe(true);

      pattern(1000, 21).copy(l);
      await post('RDMA_WRITE', local, 0, 1000, mr, 4000);
      const onDisk = fs.readFileSync(file);
      expect(onDisk.subarray(4000, 5000).equals(pattern(1000, 21))).toBe(true);
      expect(onDisk.subarray(0, 4000).equals(pattern(size, 20).subarray(0, 4000))).toBe(true);

      // truncation frees the file's pages (the kernel invalidates every
      // mapping of them); the rewrite puts new pages in their place
      fs.ftruncateSync(fd, 0);
      fs.writeSync(fd, pattern(size, 22), 0, size, 0);
      l.fill(0xee);
      await post('RDMA_READ', local, 0, 2 * PAGE, mr, 333);
      expect(l.equals(pattern(size, 22).subarray(333, 333 + 2 * PAGE))).toBe(true);
      mr.close();
      local.close();
    } finally {
      fs.closeSync(fd);
      fs.rmSync(dir, { recursive: true });
    }
  });
});

describe('what rxe cannot do with ODP: clear errors', () => {
  test('implicit ODP: EOPNOTSUPP naming IBV_ODP_SUPPORT_IMPLICIT', () => {
    expect(() => lb.pd.registerImplicitOnDemand()).toThrow(expect.objectContaining({
      code: 'EOPNOTSUPP', message: expect.stringMatching(/rxe0 does not support implicit on-demand paging.*IBV_ODP_SUPPORT_IMPLICIT/),
    }));
  });

  test('advise_mr (prefetch): EOPNOTSUPP naming the rdma-core version rxe needs for it and the one in use', () => {
    const { mr } = odpRegion(2);
    for (const advice of ['PREFETCH', 'PREFETCH_WRITE', 'PREFETCH_NO_FAULT'] as const) {
      expect(() => mr.advise(advice)).toThrow(expect.objectContaining({
        code: 'EOPNOTSUPP', syscall: 'ibv_advise_mr',
        message: expect.stringMatching(/rxe0 cannot prefetch.*rdma-core v59.*Linux 6\.17.*rdma-core is v44/),
      }));
    }
    mr.close();
  });
});

describe('devices', () => {
  test('`node-rdma devices` shows rxe0\'s ODP caps and that the probe checked its data', async () => {
    let out = '';
    const io = { stdout: (s: string) => void (out += s), stderr: (s: string) => void (out += s) };
    expect(await devicesCommand(['--device', 'rxe0'], io)).toBe(0);
    expect(out).toMatch(/ODP +yes; rc: SEND,RECV,WRITE,READ,ATOMIC,SRQ_RECV[^;]*; ud: SEND,RECV,SRQ_RECV[^;]*; data checked \(loopback probe\)/);
    out = '';
    expect(await devicesCommand(['--device', 'rxe0', '--json'], io)).toBe(0);
    expect(JSON.parse(out).devices[0].capabilities.odp).toMatchObject({ supported: true, implicit: false, check: 'ok' });
  });
});

describe('the probe on a kernel whose rxe ODP corrupts data (fault injection)', () => {
  // what 7.3.4 without patch 0001 leaves in the probe's transfer: only the
  // first 1 KiB (one packet) of each page holds data, the rest stays zero
  // (test/unit/odp-probe.test.ts derives this from a model of the copy)
  const unpatched = (landed: Uint8Array) => {
    for (let i = 0; i < landed.length; i++) if ((PROBE_OFFSET + i) % PAGE >= 1024) landed[i] = 0;
  };

  afterEach(() => {
    odpProbeHooks.afterTransfer = undefined;
    delete process.env.NODE_RDMA_ODP_PROBE;
    resetOdpProbe();
  });

  test('ODP registrations on that device are refused with EODPBROKEN naming the bug, the patch and the opt-out; pinned ones still work', async () => {
    resetOdpProbe();
    let transfers = 0;
    odpProbeHooks.afterTransfer = (landed) => {
      transfers++;
      unpatched(landed);
    };
    const broken = expect.objectContaining({
      code: 'EODPBROKEN', syscall: 'ibv_reg_mr',
      message: expect.stringMatching(/on-demand paging on rxe0 corrupts data in this kernel \(Linux 7\.3.*RDMA_WRITE of \d+ bytes at page offset 1333.*__rxe_odp_mr_copy\(\).*0001-rxe-odp-copy-at-page-offset\.patch.*NODE_RDMA_ODP_PROBE=0/),
    });
    expect(() => lb.pd.registerOnDemand(lb.pd.allocate(PAGE, { lazy: true }))).toThrow(broken);
    expect(transfers).toBe(1); // the WRITE was judged; the READ was not needed
    // the verdict stays for the process: no new probe, through either entry point
    expect(() => lb.pd.registerMemory(lb.pd.allocate(PAGE), Access.LOCAL_WRITE | Access.ON_DEMAND)).toThrow(broken);
    const other = openDevice('rxe0').allocPd();
    expect(() => other.registerOnDemand(other.allocate(PAGE))).toThrow(broken);
    expect(transfers).toBe(1);
    // another device has its own verdict (probed on first use, and sound)
    odpProbeHooks.afterTransfer = undefined;
    const rxe1 = openDevice('rxe1');
    const pd1 = rxe1.allocPd();
    pd1.registerOnDemand(pd1.allocate(PAGE, { lazy: true })).close();
    rxe1.close();
    // pinned memory is not affected
    const pinned = region(other, PAGE);
    expect(pinned.kind).toBe('buffer');
    other.device.close();
    // the devices command reports it
    let out = '';
    await devicesCommand(['--device', 'rxe0'], { stdout: (s) => void (out += s), stderr: (s) => void (out += s) });
    expect(out).toMatch(/ODP .*BROKEN: registrations refused \(EODPBROKEN, below\)\n {18}on-demand paging on rxe0 corrupts data/);
    // the opt-out registers without looking
    process.env.NODE_RDMA_ODP_PROBE = '0';
    lb.pd.registerOnDemand(lb.pd.allocate(PAGE, { lazy: true })).close();
  });

  test('a probe that cannot run gives EODPUNVERIFIED with its cause, and is tried again on the next registration', () => {
    resetOdpProbe();
    odpProbeHooks.afterTransfer = () => {
      throw new Error('injected probe failure');
    };
    expect(() => lb.pd.registerOnDemand(lb.pd.allocate(PAGE))).toThrow(expect.objectContaining({
      code: 'EODPUNVERIFIED', message: expect.stringMatching(/could not check on-demand paging on rxe0.*injected probe failure.*NODE_RDMA_ODP_PROBE=0/),
    }));
    odpProbeHooks.afterTransfer = undefined;
    lb.pd.registerOnDemand(lb.pd.allocate(PAGE)).close();
  });
});
