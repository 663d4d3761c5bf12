/**
 * P2pMemory on the host: the native mmap/munmap path and the O_DIRECT IO
 * path, exercised on a fixture provider whose p2pmem/allocate is a regular
 * (sparse) file, which maps MAP_SHARED the same way. The real p2pmem
 * (pool accounting, NVMe DMA, ibv_reg_mr refusal) is covered in
 * test/softroce/p2p.test.ts.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { spawnSync } from 'child_process';
import { RdmaError } from '../../lib/errors';
import { allocateP2pmem, p2pPageSize, P2pMemory } from '../../lib/p2p/memory';
import { getProvider } from '../../lib/p2p/providers';
import { native } from '../../lib/native';
import { buildSysfs, Fixture, guestLike } from './p2p/fixture';

const NVME = '0000:03:00.0';
let fx: Fixture;
let tmp: string;
beforeAll(() => {
  fx = buildSysfs(guestLike({ [NVME]: { p2pmem: { size: 1 << 20, available: 1 << 20 } } }));
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'node-rdma-p2pmem-'));
});
afterAll(() => {
  fx.cleanup();
  fs.rmSync(tmp, { recursive: true, force: true });
});

const allocateFile = (): string => `${fx.sysfsRoot}/bus/pci/devices/${NVME}/p2pmem/allocate`;

test('allocate maps MAP_SHARED at offset 0, rounded up to the page size', () => {
  const ps = p2pPageSize();
  expect(ps).toBeGreaterThanOrEqual(4096);
  const mem = allocateP2pmem(NVME, 100, fx.opts);
  try {
    expect(mem).toBeInstanceOf(P2pMemory);
    expect(mem.provider).toBe(NVME);
    expect(mem.byteLength).toBe(ps);
    expect(mem.buffer.byteLength).toBe(ps);
    mem.bytes(0, 5).write('hello');
    mem.bytes().writeUInt32LE(0xdeadbeef, ps - 4);
  } finally {
    mem.close();
  }
  // MAP_SHARED: the bytes went to the mapped object
  const back = fs.readFileSync(allocateFile());
  expect(back.subarray(0, 5).toString()).toBe('hello');
  expect(back.readUInt32LE(ps - 4)).toBe(0xdeadbeef);
});

test('close detaches the ArrayBuffer: every view goes empty, use after close is ECLOSED, close is idempotent', () => {
  const mem = allocateP2pmem(getProvider(NVME, fx.opts), 8192);
  const ab = mem.buffer;
  const view = new Uint8Array(ab);
  const buf = mem.bytes();
  view[1] = 7;
  expect(native().p2pmemIsMapped(ab)).toBe(true);
  mem.close();
  expect(mem.closed).toBe(true);
  expect(ab.byteLength).toBe(0);
  expect(view.length).toBe(0);
  expect(buf.length).toBe(0);
  expect(native().p2pmemIsMapped(ab)).toBe(false);
  expect(() => mem.buffer).toThrow(expect.objectContaining({ code: 'ECLOSED' }));
  expect(() => mem.bytes()).toThrow(expect.objectContaining({ code: 'ECLOSED' }));
  expect(() => mem.close()).not.toThrow();
  // the native layer refuses a second unmap of the same ArrayBuffer
  expect(() => native().p2pmemUnmap(ab)).toThrow(expect.objectContaining({ code: 'EINVAL', syscall: 'munmap' }));
});

test('a mapping dropped without close() is unmapped when its ArrayBuffer is collected', () => {
  // in a child with --expose-gc, so forced collections touch no other suite's objects
  const file = fs.realpathSync(allocateFile()); // /proc/self/maps shows the resolved path
  const script = `
    const fs = require('fs');
    const { allocateP2pmem } = require(${JSON.stringify(path.resolve(__dirname, '../../lib/p2p/memory'))});
    const mapped = () => fs.readFileSync('/proc/self/maps', 'latin1').includes(${JSON.stringify(file)});
    const before = mapped();
    (() => { allocateP2pmem('${NVME}', 4096, ${JSON.stringify(fx.opts)}).bytes().fill(3); })();
    const during = mapped();
    const end = Date.now() + 5000;
    (function poll() {
      global.gc();
      if (!mapped() || Date.now() > end) console.log(JSON.stringify({ before, during, after: mapped() }));
      else setTimeout(poll, 10);
    })();`;
  const r = spawnSync(process.execPath, ['--expose-gc', '-e', script], { encoding: 'utf8', timeout: 30_000 });
  expect(r.stderr).toBe('');
  expect(r.status).toBe(0);
  expect(JSON.parse(r.stdout)).toEqual({ before: false, during: true, after: false });
});

test('Symbol.dispose closes', () => {
  const mem = allocateP2pmem(NVME, 4096, fx.opts);
  mem[Symbol.dispose]();
  expect(mem.closed).toBe(true);
});

test('O_DIRECT write from and read into the mapping round-trips', async () => {
  const file = path.join(tmp, 'disk.img');
  fs.writeFileSync(file, Buffer.alloc(64 * 1024));
  const a = allocateP2pmem(NVME, 16384, fx.opts);
  const b = allocateP2pmem(NVME, 16384, fx.opts);
  try {
    const src = a.bytes();
    for (let i = 0; i < src.length; i++) src[i] = (i * 31 + 7) & 0xff;
    expect(await a.writeTo(file, 8192)).toBe(16384);
    expect(await b.readFrom(file, 8192, { offset: 4096, length: 8192 })).toBe(8192);
    expect(b.bytes(4096, 8192).equals(src.subarray(0, 8192))).toBe(true);
    expect(fs.readFileSync(file).subarray(8192, 8192 + 16384).equals(src)).toBe(true);
    // a read at the end of the file returns what is there
    expect(await b.readFrom(file, 60 * 1024)).toBe(4096);
  } finally {
    a.close();
    b.close();
  }
});

test('close during IO is EBUSY; after the IO it works', async () => {
  const file = path.join(tmp, 'busy.img');
  fs.writeFileSync(file, Buffer.alloc(8192));
  const mem = allocateP2pmem(NVME, 8192, fx.opts);
  const io = mem.writeTo(file, 0);
  expect(() => mem.close()).toThrow(expect.objectContaining({ code: 'EBUSY' }));
  await io;
  mem.close();
  expect(mem.closed).toBe(true);
});

test('IO argument errors name the argument', async () => {
  const mem = allocateP2pmem(NVME, 8192, fx.opts);
  try {
    const file = path.join(tmp, 'args.img');
    fs.writeFileSync(file, Buffer.alloc(8192));
    await expect(mem.writeTo(file, 100)).rejects.toThrow(/position \(100\) must be a multiple of the logical block size \(512\)/);
    await expect(mem.writeTo(file, 0, { offset: 10 })).rejects.toThrow(RangeError);
    await expect(mem.writeTo(file, 0, { length: 9000 })).rejects.toThrow(/length must be an integer/);
    await expect(mem.readFrom(file, -512)).rejects.toThrow(/position must be a non-negative integer/);
    await expect(mem.readFrom('', 0)).rejects.toThrow(TypeError);
    await expect(mem.readFrom(path.join(tmp, 'missing'), 0)).rejects.toThrow(expect.objectContaining({ code: 'ENOENT' }));
    expect(() => mem.bytes(9000)).toThrow(/offset must be an integer from 0 to 8192/);
    expect(() => mem.tryRegister('')).toThrow(TypeError);
  } finally {
    mem.close();
  }
  await expect(mem.writeTo('/dev/null', 0)).rejects.toThrow(expect.objectContaining({ code: 'ECLOSED' }));
});

test('allocation errors: size, provider, pre-6.2 kernel, no p2pmem', () => {
  expect(() => allocateP2pmem(NVME, 0, fx.opts)).toThrow(/size must be a positive integer/);
  expect(() => allocateP2pmem(NVME, 1.5, fx.opts)).toThrow(RangeError);
  expect(() => allocateP2pmem(null as unknown as string, 4096, fx.opts)).toThrow(TypeError);
  expect(() => allocateP2pmem('0000:04:00.0', 4096, fx.opts)).toThrow(expect.objectContaining({ code: 'ENODEV' }));
  const old = buildSysfs(guestLike({ [NVME]: { p2pmem: { allocate: false } } }));
  try {
    let err: unknown;
    try {
      allocateP2pmem(NVME, 4096, old.opts);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(RdmaError);
    expect(err).toMatchObject({ code: 'EOPNOTSUPP', syscall: 'mmap', message: expect.stringMatching(/needs Linux 6\.2 or newer/) });
  } finally {
    old.cleanup();
  }
});

test('P2pMemory wraps only live p2pmem mappings', () => {
  expect(() => new P2pMemory(NVME, new ArrayBuffer(4096))).toThrow(/must be a live p2pmem mapping/);
  expect(() => new P2pMemory(NVME, {} as ArrayBuffer)).toThrow(TypeError);
});

test('native argument checks', () => {
  const n = native();
  expect(() => n.p2pmemMap(allocateFile(), 100)).toThrow(/length must be a positive multiple of the page size/);
  expect(() => n.p2pmemMap(42 as unknown as string, 4096)).toThrow(/path must be a string/);
  expect(() => n.p2pmemMap('/nonexistent/p2pmem/allocate', 4096)).toThrow(
    expect.objectContaining({ code: 'ENOENT', syscall: 'open' }),
  );
  expect(() => n.p2pmemUnmap(new ArrayBuffer(8))).toThrow(expect.objectContaining({ code: 'EINVAL' }));
  expect(() => n.p2pmemUnmap({} as ArrayBuffer)).toThrow(/arrayBuffer must be an ArrayBuffer/);
  expect(() => n.tryRegisterP2pmem('rxe0', new ArrayBuffer(0))).toThrow(/detached or empty/);
});

test('tryRegister names a missing RDMA device', () => {
  const mem = allocateP2pmem(NVME, 4096, fx.opts);
  try {
    expect(() => mem.tryRegister('no_such_dev9')).toThrow(
      expect.objectContaining({ name: 'RdmaError', code: expect.stringMatching(/^(ENODEV|ENOSYS)$/) }),
    );
  } finally {
    mem.close();
  }
});
