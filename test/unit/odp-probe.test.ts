/**
 * The ODP probe's judgement (lib/verbs/odp-probe.ts) without a kernel: a
 * model of rxe's __rxe_odp_mr_copy() as shipped in 7.3.4 (no in-page
 * offset, the packet buffer never advanced) and as patched (0001) moves the
 * probe's transfer packet by packet, and the comparison must call the first
 * broken and the second sound. Also the memory helpers the ODP tests use
 * (lazy allocation, discarding pages, residency, file mappings) and the
 * rdma-core version that names what advise_mr on rxe needs.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { allocate, discardPages, mapFile, pageSize, residentPages } from '../../lib';
import { compareProbe, probePattern, PROBE_LENGTH, PROBE_OFFSET } from '../../lib/verbs/odp-probe';
import { rdmaCoreVersion, rdmaCoreVersionFromMaps } from '../../lib/verbs/rdma-core';

const PAGE = 4096;
const MTU = 1024;

/**
 * rxe's copy between a packet and an ODP region, for one packet: `region`
 * is the region's memory (page-aligned), `iova` the packet's offset in it.
 * `toRegion` is RXE_TO_MR_OBJ (WRITE, SEND: packet -> region), else
 * RXE_FROM_MR_OBJ (READ responses: region -> packet).
 */
function rxeOdpCopy(region: Uint8Array, iova: number, packet: Uint8Array, toRegion: boolean, fixed: boolean): void {
  let idx = Math.floor(iova / PAGE);
  let offset = iova % PAGE;
  let length = packet.length;
  let addr = 0; // into the packet
  while (length > 0) {
    const pageStart = idx * PAGE + (fixed ? offset : 0);
    const bytes = Math.min(PAGE - offset, length);
    if (toRegion) region.set(packet.subarray(addr, addr + bytes), pageStart);
    else packet.set(region.subarray(pageStart, pageStart + bytes), addr);
    length -= bytes;
    if (fixed) addr += bytes;
    idx++;
    offset = 0;
  }
}

/** An RDMA WRITE of `data` at `at` in a zeroed region of `size`, split into MTU packets. */
function modelWrite(data: Uint8Array, at: number, size: number, fixed: boolean): Uint8Array {
  const region = new Uint8Array(size);
  for (let o = 0; o < data.length; o += MTU) rxeOdpCopy(region, at + o, data.slice(o, o + MTU), true, fixed);
  return region;
}

/** An RDMA READ of `length` bytes at `at` out of `region`, packet by packet. */
function modelRead(region: Uint8Array, at: number, length: number, fixed: boolean): Uint8Array {
  const out = new Uint8Array(length);
  for (let o = 0; o < length; o += MTU) {
    const packet = new Uint8Array(Math.min(MTU, length - o));
    rxeOdpCopy(region, at + o, packet, false, fixed);
    out.set(packet, o);
  }
  return out;
}

const size = Math.ceil((PROBE_OFFSET + PROBE_LENGTH) / PAGE) * PAGE;

describe('the ODP probe against a model of rxe\'s copy', () => {
  test('the probe\'s transfer starts mid-page at an odd offset and crosses at least two page boundaries', () => {
    expect(PROBE_OFFSET % 2).toBe(1);
    expect(PROBE_OFFSET % PAGE).not.toBe(0);
    expect(Math.floor((PROBE_OFFSET + PROBE_LENGTH - 1) / PAGE) - Math.floor(PROBE_OFFSET / PAGE)).toBeGreaterThanOrEqual(2);
    const p = probePattern(PROBE_LENGTH, 1);
    expect(p.every((b, i) => b !== 0 && (i === 0 || b !== p[i - 1]))).toBe(true);
    expect(probePattern(64, 1)).not.toEqual(probePattern(64, 2));
  });

  test('the 7.3.4 copy: what the issue saw (a 1 MiB WRITE at offset 0 leaves all but the first 1 KiB of every page zero)', () => {
    const data = probePattern(1 << 20, 3);
    const region = modelWrite(data, 0, 1 << 20, false);
    for (let p = 0; p < (1 << 20) / PAGE; p++) {
      expect(region.subarray(p * PAGE + MTU, (p + 1) * PAGE).every((b) => b === 0)).toBe(true);
      expect(region.subarray(p * PAGE, p * PAGE + MTU).some((b) => b !== 0)).toBe(true);
    }
    expect(compareProbe(region, data, 0, PAGE)).toMatchObject({ pages: 256 });
  });

  test('the 7.3.4 copy: the probe\'s WRITE and READ are both judged broken, naming the first wrong byte', () => {
    const want = probePattern(PROBE_LENGTH, 1);
    const landed = modelWrite(want, PROBE_OFFSET, size, false).subarray(PROBE_OFFSET, PROBE_OFFSET + PROBE_LENGTH);
    const w = compareProbe(landed, want, PROBE_OFFSET % PAGE, PAGE);
    expect(w).not.toBeNull();
    expect(w!.wrong).toBeGreaterThan(PROBE_LENGTH / 2);
    expect(w!.pages).toBe(3);
    expect(w!.first).toBe(0); // the first packet already lands at the page's start, not at PROBE_OFFSET

    const region = new Uint8Array(size);
    region.set(probePattern(PROBE_LENGTH, 2), PROBE_OFFSET);
    const read = modelRead(region, PROBE_OFFSET, PROBE_LENGTH, false);
    expect(compareProbe(read, probePattern(PROBE_LENGTH, 2), PROBE_OFFSET % PAGE, PAGE)).toMatchObject({ first: 0, pages: 3 });
  });

  test('the patched copy: the same WRITE and READ are judged sound', () => {
    const want = probePattern(PROBE_LENGTH, 1);
    const region = modelWrite(want, PROBE_OFFSET, size, true);
    expect(compareProbe(region.subarray(PROBE_OFFSET, PROBE_OFFSET + PROBE_LENGTH), want, PROBE_OFFSET % PAGE, PAGE)).toBeNull();
    expect(region.subarray(0, PROBE_OFFSET).every((b) => b === 0)).toBe(true);
    expect(region.subarray(PROBE_OFFSET + PROBE_LENGTH).every((b) => b === 0)).toBe(true);
    const read = modelRead(region, PROBE_OFFSET, PROBE_LENGTH, true);
    expect(compareProbe(read, want, PROBE_OFFSET % PAGE, PAGE)).toBeNull();
  });

  test('one wrong byte is enough, and is located', () => {
    const want = probePattern(PROBE_LENGTH, 1);
    const got = want.slice();
    got[5000] ^= 0xff;
    const pageOffset = PROBE_OFFSET % PAGE;
    expect(compareProbe(got, want, pageOffset, PAGE)).toEqual({ wrong: 1, first: 5000, pages: 1 });
    expect(() => compareProbe(got.subarray(1), want, pageOffset, PAGE)).toThrow(RangeError);
  });
});

describe('memory for on-demand paging', () => {
  const page = pageSize();

  test('allocate({ lazy: true }) maps zeroed memory with no page resident until touched', () => {
    const buf = allocate(16 * page, { lazy: true });
    expect(buf.byteLength).toBe(16 * page);
    expect(residentPages(buf)).toBe(0);
    const u = new Uint8Array(buf);
    u[3 * page + 5] = 7;
    expect(residentPages(buf)).toBe(1);
    expect(u[3 * page + 5]).toBe(7);
    expect(() => allocate(page, { lazy: 1 as unknown as boolean })).toThrow(TypeError);
    expect(() => allocate(page, 'lazy' as never)).toThrow(TypeError);
  });

  test('discardPages() drops whole pages of addon memory: they read as zero and are no longer resident', () => {
    const buf = allocate(8 * page);
    const u = new Uint8Array(buf);
    u.fill(0xab);
    expect(residentPages(buf)).toBe(8);
    discardPages(buf, 2 * page, 3 * page);
    expect(residentPages(buf, 2 * page, 3 * page)).toBe(0);
    expect(u.subarray(2 * page, 5 * page).every((b) => b === 0)).toBe(true);
    expect(u[2 * page - 1]).toBe(0xab);
    expect(u[5 * page]).toBe(0xab);
  });

  test('discardPages() refuses ranges off page boundaries, past the end, and memory that is not the addon\'s', () => {
    const buf = allocate(4 * page);
    expect(() => discardPages(buf, 1, page)).toThrow(/page boundaries/);
    expect(() => discardPages(buf, 0, page + 1)).toThrow(/page boundaries/);
    expect(() => discardPages(buf, 3 * page, 2 * page)).toThrow(/buffer's end/);
    expect(() => discardPages('x' as never)).toThrow(TypeError);
    expect(() => discardPages(buf, -1)).toThrow(RangeError);
    // a page-aligned range of JS heap memory (its page may hold other live
    // data): JS cannot see addresses, so every 8-byte offset of the first
    // page is tried; exactly the aligned one gets past the alignment check
    const js = new Uint8Array(8 * page);
    const errors = new Set<string>();
    for (let o = 0; o < page; o += 8) {
      try {
        discardPages(js, o, page);
        errors.add('no error');
      } catch (err) {
        errors.add((err as Error).message.includes('page boundaries') ? 'unaligned' : (err as Error).message);
      }
    }
    expect([...errors].sort()).toEqual([expect.stringMatching(/memory from allocate\(\) or mapFile\(\)/), 'unaligned']);
  });

  test('mapFile(): writes through the mapping reach the file, and the file shows through it', () => {
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'node-rdma-')), 'mapped');
    fs.writeFileSync(file, Buffer.alloc(2 * page, 0x41));
    const fd = fs.openSync(file, 'r+');
    const buf = mapFile(fd, 2 * page);
    fs.closeSync(fd);
    const u = new Uint8Array(buf);
    expect(u[page + 3]).toBe(0x41);
    u.fill(0x42, 0, 10);
    expect(fs.readFileSync(file).subarray(0, 11)).toEqual(Buffer.from('BBBBBBBBBBA'));
    expect(() => mapFile(-1, page)).toThrow(RangeError);
    expect(() => mapFile(0, 0)).toThrow(RangeError);
    expect(() => mapFile(0, page, 1)).toThrow(/multiple of the page size/);
    expect(() => mapFile(999_999, page)).toThrow(expect.objectContaining({ code: 'EBADF', syscall: 'mmap' }));
    fs.rmSync(path.dirname(file), { recursive: true });
  });
});

describe('the rdma-core version (what advise_mr on rxe needs is named by it)', () => {
  test('read from libibverbs\' file name in the process mappings', () => {
    const maps = '7f00-7f01 r-xp 00000000 08:01 123 /usr/lib/x86_64-linux-gnu/libibverbs.so.1.14.44.0\n' +
      '7f02-7f03 r-xp 00000000 08:01 124 /usr/lib/x86_64-linux-gnu/librdmacm.so.1.3.44.0\n';
    expect(rdmaCoreVersionFromMaps(maps)).toBe(44);
    expect(rdmaCoreVersionFromMaps('/opt/rdma/lib/libibverbs.so.1.15.59.0\n')).toBe(59);
    expect(rdmaCoreVersionFromMaps('/usr/lib/libc.so.6\n')).toBeNull();
  });

  test('this process has libibverbs mapped (the addon links it), so its version is known', () => {
    const v = rdmaCoreVersion();
    expect(typeof v).toBe('number');
    expect(v).toBeGreaterThanOrEqual(30);
  });
});
