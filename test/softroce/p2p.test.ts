/**
 * PCI peer-to-peer memory on the real kernel. The guest (scripts/vm-run
 * --nvme-cmb 64) has an NVMe (0000:03:00.0) with a 64 MiB CMB that the nvme
 * driver registers and publishes as p2pmem, behind one PCIe switch together
 * with eth0's virtio NIC (0000:04:00.0), on which rxe0 runs. /dev/nvme0n1 is
 * a blank 1 GiB image.
 */
import * as fs from 'fs';
import { spawnSync } from 'child_process';
import * as path from 'path';
import { p2p, RdmaError } from '../../lib';
import { p2pCommand } from '../../lib/cli/p2p';

const NVME = '0000:03:00.0';
const NIC = '0000:04:00.0';
const NS = '/dev/nvme0n1';
const MiB = 1 << 20;

function available(): number {
  const a = p2p.getProvider(NVME).available;
  if (a === null) throw new Error('p2pmem/available unreadable');
  return a;
}

/** p2pmem is freed when the pages' last reference goes: give it a moment. */
async function availableBecomes(want: number, ms = 5000): Promise<number> {
  const end = Date.now() + ms;
  let a = available();
  while (a !== want && Date.now() < end) {
    await new Promise((r) => setTimeout(r, 20));
    a = available();
  }
  return a;
}

test('the NVMe CMB is a published p2pmem provider', () => {
  const providers = p2p.listProviders();
  const cmb = providers.find((p) => p.bdf === NVME);
  expect(cmb).toMatchObject({
    vendor: '0x1b36',
    device: '0x0010',
    class: '0x010802',
    driver: 'nvme',
    size: 64 * MiB,
    published: true,
    allocatable: true,
    problems: [],
  });
  expect(cmb!.available).toBeGreaterThan(0);
  expect(cmb!.available).toBeLessThanOrEqual(64 * MiB);
});

test("rxe0 (through eth0's NIC) and the NVMe are at 'same switch' distance", () => {
  expect(p2p.resolveClient(new p2p.Sysfs(), 'rxe0')).toEqual({ name: 'rxe0', kind: 'rdma', pci: NIC, via: 'netdev eth0' });
  const topo = new p2p.P2pTopology();
  const d = topo.distance(NVME, NIC);
  expect(d).toMatchObject({
    mapType: 'bus-addr',
    supported: true,
    distance: 4,
    relation: 'same-switch',
    commonUpstream: '0000:01:00.0',
    acsRedirect: [],
    acsUnknown: [], // root reads the whole config space
  });
  expect(topo.pci.get(NVME).path).toEqual(['0000:00:10.0', '0000:01:00.0', '0000:02:00.0', NVME]);
  expect(topo.pci.get('0000:00:10.0').portType).toBe('root-port');
  expect(topo.pci.get('0000:01:00.0').portType).toBe('upstream-port');
  expect(topo.pci.get('0000:02:01.0').portType).toBe('downstream-port');
  // rxe1 sits on eth1, a NIC on the root bus: the path crosses q35's host bridge (not whitelisted)
  const d1 = topo.distance(NVME, p2p.resolveClient(topo.sysfs, 'rxe1').pci!);
  expect(d1).toMatchObject({ mapType: 'not-supported', relation: 'host-bridge' });
  expect(d1.reason).toMatch(/\[8086:29c0\] is not on the kernel's P2PDMA host bridge whitelist/);

  const choice = p2p.chooseProvider(['rxe0', 'nvme0n1'], { size: 2 * MiB });
  expect(choice.provider?.bdf).toBe(NVME);
  expect(choice.distance).toBe(4);
  const none = p2p.chooseProvider(['rxe1']);
  expect(none.provider).toBeNull();
  expect(none.reason).toMatch(/no provider qualifies for rxe1/);
});

test('allocate, fill, O_DIRECT write to the NVMe, read back into another p2pmem buffer; free returns the space', async () => {
  const before = available();
  const a = p2p.allocateP2pmem(NVME, 2 * MiB);
  let b: p2p.P2pMemory | undefined;
  try {
    expect(a.byteLength).toBe(2 * MiB);
    expect(available()).toBe(before - 2 * MiB);
    b = p2p.allocateP2pmem(NVME, 2 * MiB);
    expect(available()).toBe(before - 4 * MiB);

    const src = a.bytes();
    for (let i = 0; i < src.length; i += 4) src.writeUInt32LE((i * 2654435761) >>> 0, i);
    const expected = Buffer.from(src); // a copy in ordinary memory

    expect(await a.writeTo(NS, 4 * MiB)).toBe(2 * MiB);
    b.bytes().fill(0);
    expect(await b.readFrom(NS, 4 * MiB)).toBe(2 * MiB);
    expect(b.bytes().equals(expected)).toBe(true);

    // the bytes really are on the namespace (read without the CMB)
    const fd = fs.openSync(NS, 'r');
    try {
      const disk = Buffer.alloc(2 * MiB);
      expect(fs.readSync(fd, disk, 0, disk.length, 4 * MiB)).toBe(2 * MiB);
      expect(disk.equals(expected)).toBe(true);
    } finally {
      fs.closeSync(fd);
    }

    // partial IO at an offset within the buffers
    b.bytes(0, 4096).fill(0xab);
    expect(await b.writeTo(NS, 0, { offset: 0, length: 4096 })).toBe(4096);
    expect(await a.readFrom(NS, 0, { offset: 8192, length: 4096 })).toBe(4096);
    expect(a.bytes(8192, 4096).every((x) => x === 0xab)).toBe(true);
  } finally {
    a.close();
    b?.close();
  }
  expect(await availableBecomes(before)).toBe(before);
});

test('a mapping dropped without close() is unmapped by the GC, and the space comes back', () => {
  // In a child process with --expose-gc: forcing full collections here would
  // also run the finalizers of every other suite's leftovers in this process.
  const script = `
    const { p2p } = require(${JSON.stringify(path.resolve(__dirname, '../../lib'))});
    const avail = () => p2p.getProvider('${NVME}').available;
    const before = avail();
    (() => { p2p.allocateP2pmem('${NVME}', ${MiB}).bytes().fill(1); })();
    const during = avail();
    const end = Date.now() + 10000;
    (function poll() {
      global.gc();
      const now = avail();
      if (now === before || Date.now() > end) console.log(JSON.stringify({ before, during, after: now }));
      else setTimeout(poll, 20);
    })();`;
  const r = spawnSync(process.execPath, ['--expose-gc', '-e', script], { encoding: 'utf8', timeout: 60_000 });
  expect(r.stderr).toBe('');
  expect(r.status).toBe(0);
  const { before, during, after } = JSON.parse(r.stdout);
  expect(during).toBe(before - MiB);
  expect(after).toBe(before);
});

test('asking for more than is free: ENOMEM with the free space', () => {
  const free = available();
  let err: unknown;
  try {
    p2p.allocateP2pmem(NVME, free + 64 * MiB).close();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(RdmaError);
  expect(err).toMatchObject({
    code: 'ENOMEM',
    syscall: 'mmap',
    message: expect.stringMatching(new RegExp(`cannot provide ${free + 64 * MiB} contiguous bytes of p2pmem, ${free} bytes are available`)),
  });
  expect(available()).toBe(free);
});

test('ibv_reg_mr on p2pmem: the kernel refuses, and the error says why', () => {
  const mem = p2p.allocateP2pmem(NVME, 2 * MiB);
  try {
    let err: unknown;
    try {
      mem.tryRegister('rxe0');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(RdmaError);
    expect(err).toMatchObject({
      code: 'EFAULT',
      errno: 14,
      syscall: 'ibv_reg_mr',
      message: expect.stringMatching(/does not support RDMA registration of PCI peer-to-peer memory \(p2pmem\) on rxe0/),
    });
    expect((err as Error).message).toMatch(/FOLL_PCI_P2PDMA/);
    // the mapping is still fine afterwards
    mem.bytes().fill(5);
    expect(mem.bytes()[MiB]).toBe(5);
  } finally {
    mem.close();
  }
});

test('node-rdma p2p --json shows the provider and the matrix', async () => {
  let out = '';
  const code = await p2pCommand(['--json'], { stdout: (s) => (out += s), stderr: (s) => (out += s) });
  expect(code).toBe(0);
  const j = JSON.parse(out);
  expect(j.providers.map((p: { bdf: string }) => p.bdf)).toContain(NVME);
  expect(j.matrix).toContainEqual(
    expect.objectContaining({ provider: NVME, client: 'rxe0', clientPci: NIC, mapType: 'bus-addr', distance: 4, relation: 'same-switch' }),
  );
  expect(j.matrix).toContainEqual(
    expect.objectContaining({ provider: NVME, client: 'nvme0', mapType: 'bus-addr', distance: 0, relation: 'same-function' }),
  );
});
