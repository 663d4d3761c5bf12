/**
 * p2pmem providers, client mapping (RDMA incl. rxe via its netdev, NVMe,
 * block, net) and provider choice on sysfs fixtures.
 */
import { RdmaError } from '../../lib/errors';
import { listClients, resolveClient } from '../../lib/p2p/clients';
import { chooseProvider, getProvider, listProviders, p2pDistance } from '../../lib/p2p/providers';
import { Sysfs } from '../../lib/p2p/sysfs';
import { buildSysfs, Fixture, FixturePci, FixtureSpec, guestLike } from './p2p/fixture';

const fixtures: Fixture[] = [];
function fixture(spec: FixtureSpec): Fixture {
  const fx = buildSysfs(spec);
  fixtures.push(fx);
  return fx;
}
afterAll(() => fixtures.forEach((f) => f.cleanup()));

const NVME = '0000:03:00.0';
const MiB = 1 << 20;

/** The guest topology plus a second NVMe with p2pmem on a third switch port. */
function twoProviders(p1: FixturePci['p2pmem'], p2: FixturePci['p2pmem']): FixtureSpec {
  const spec = guestLike({ [NVME]: { p2pmem: p1 } });
  spec.pci.push(
    { bdf: '0000:02:02.0', parent: '0000:01:00.0', class: 0x060400, portType: 'downstream-port' },
    { bdf: '0000:05:00.0', parent: '0000:02:02.0', vendor: 0x1b36, device: 0x0010, class: 0x010802, driver: 'nvme', portType: 'endpoint', p2pmem: p2 },
  );
  spec.nvme!.push({ name: 'nvme1', pci: '0000:05:00.0' });
  return spec;
}

describe('discovery', () => {
  test('the NVMe CMB provider with identity, size, free and published', () => {
    const fx = fixture(guestLike());
    const list = listProviders(fx.opts);
    expect(list).toEqual([
      {
        bdf: NVME,
        vendor: '0x1b36',
        device: '0x0010',
        class: '0x010802',
        driver: 'nvme',
        numaNode: null,
        size: 64 * MiB,
        available: 64 * MiB - 131072,
        published: true,
        allocatePath: `${fx.sysfsRoot}/bus/pci/devices/${NVME}/p2pmem/allocate`,
        allocatable: true,
        problems: [],
      },
    ]);
  });

  test('NUMA node when the platform has one', () => {
    const fx = fixture(guestLike({ [NVME]: { numaNode: 1 } }));
    expect(getProvider(NVME, fx.opts).numaNode).toBe(1);
    const none = fixture(guestLike({ [NVME]: { numaNode: -1 } }));
    expect(getProvider(NVME, none.opts).numaNode).toBeNull();
  });

  test('a device without p2pmem is no provider (ENODEV says why)', () => {
    const fx = fixture(guestLike());
    let err: unknown;
    try {
      getProvider('0000:04:00.0', fx.opts);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(RdmaError);
    expect(err).toMatchObject({ code: 'ENODEV', message: expect.stringMatching(/0000:04:00\.0 has no peer-to-peer memory/) });
  });

  test('no providers at all: empty list', () => {
    const spec = guestLike();
    delete spec.pci.find((d) => d.bdf === NVME)!.p2pmem;
    expect(listProviders(fixture(spec).opts)).toEqual([]);
  });

  test('missing and malformed p2pmem files are listed as problems', () => {
    const fx = fixture(twoProviders({ size: 'lots', available: null, published: 'yes' }, { size: 4096, available: 8192 }));
    const [a, b] = listProviders(fx.opts);
    expect(a.size).toBeNull();
    expect(a.available).toBeNull();
    expect(a.published).toBeNull();
    expect(a.problems).toEqual([
      expect.stringMatching(/p2pmem\/size is not a non-negative integer: 'lots'/),
      expect.stringMatching(/p2pmem\/available is missing/),
      expect.stringMatching(/p2pmem\/published is not 0 or 1: 'yes'/),
    ]);
    expect(b.problems).toEqual(['p2pmem/available (8192) exceeds p2pmem/size (4096)']);
  });

  test('a pre-6.2 kernel: p2pmem without allocate', () => {
    const fx = fixture(guestLike({ [NVME]: { p2pmem: { allocate: false } } }));
    expect(getProvider(NVME, fx.opts).allocatable).toBe(false);
  });
});

describe('clients', () => {
  test('rxe maps through its parent netdev to the virtio NIC function', () => {
    const fx = fixture(guestLike());
    const s = new Sysfs(fx.opts);
    expect(resolveClient(s, 'rxe0')).toEqual({ name: 'rxe0', kind: 'rdma', pci: '0000:04:00.0', via: 'netdev eth0' });
    expect(resolveClient(s, 'rxe1')).toEqual({ name: 'rxe1', kind: 'rdma', pci: '0000:00:05.0', via: 'netdev eth1' });
  });

  test('without a parent file the netdev comes from the GID table (ports/1/gid_attrs/ndevs/0)', () => {
    const spec = guestLike();
    spec.infiniband = [{ name: 'siw0', netdev: 'eth0', noParentFile: true }];
    expect(resolveClient(new Sysfs(fixture(spec).opts), 'siw0')).toMatchObject({ pci: '0000:04:00.0', via: 'netdev eth0' });
  });

  test('a hardware RDMA device has its own PCI function', () => {
    const spec = guestLike();
    spec.infiniband!.push({ name: 'mlx5_0', pci: '0000:04:00.0' });
    expect(resolveClient(new Sysfs(fixture(spec).opts), 'mlx5_0')).toEqual({ name: 'mlx5_0', kind: 'rdma', pci: '0000:04:00.0', via: null });
  });

  test('NVMe controllers, namespaces, netdevs and BDFs', () => {
    const s = new Sysfs(fixture(guestLike()).opts);
    expect(resolveClient(s, 'nvme0')).toEqual({ name: 'nvme0', kind: 'nvme', pci: NVME, via: null });
    expect(resolveClient(s, 'nvme0n1')).toEqual({ name: 'nvme0n1', kind: 'block', pci: NVME, via: null });
    expect(resolveClient(s, 'eth0')).toEqual({ name: 'eth0', kind: 'net', pci: '0000:04:00.0', via: null });
    expect(resolveClient(s, '0000:04:00.0')).toEqual({ name: '0000:04:00.0', kind: 'pci', pci: '0000:04:00.0', via: null });
  });

  test('devices without a PCI function resolve with a reason', () => {
    const spec = guestLike();
    spec.infiniband!.push({ name: 'rxe_lo', netdev: 'lo' }, { name: 'rxe_gone', netdev: 'eth9' }, { name: 'orphan' });
    const s = new Sysfs(fixture(spec).opts);
    expect(resolveClient(s, 'lo')).toMatchObject({ pci: null, reason: 'network interface lo is not a PCI device (no PCI parent)' });
    expect(resolveClient(s, 'rxe_lo')).toMatchObject({ pci: null, via: 'netdev lo' });
    expect(resolveClient(s, 'rxe_gone')).toMatchObject({ pci: null, reason: 'network interface eth9 does not exist' });
    expect(resolveClient(s, 'orphan')).toMatchObject({ pci: null, reason: expect.stringMatching(/no PCI device and no parent netdev/) });
  });

  test('unknown names and bad arguments', () => {
    const s = new Sysfs(fixture(guestLike()).opts);
    expect(() => resolveClient(s, 'mlx5_9')).toThrow(expect.objectContaining({ code: 'ENODEV' }));
    expect(() => resolveClient(s, '0000:77:00.0')).toThrow(expect.objectContaining({ code: 'ENODEV' }));
    expect(() => resolveClient(s, '')).toThrow(TypeError);
    expect(() => resolveClient(s, '../../etc')).toThrow(RangeError);
  });

  test('listClients: every RDMA device and NVMe controller', () => {
    const s = new Sysfs(fixture(guestLike()).opts);
    expect(listClients(s).map((c) => `${c.name}=${c.pci}`)).toEqual(['rxe0=0000:04:00.0', 'rxe1=0000:00:05.0', 'nvme0=0000:03:00.0']);
  });
});

describe('choice', () => {
  test('rxe0 and the NVMe namespace: the CMB behind their switch', () => {
    const fx = fixture(guestLike());
    const c = chooseProvider(['rxe0', 'nvme0n1'], { ...fx.opts, size: 2 * MiB });
    expect(c.provider?.bdf).toBe(NVME);
    expect(c.distance).toBe(4);
    expect(c.candidates).toHaveLength(1);
    expect(c.candidates[0].rejected).toBeUndefined();
    expect(c.reason).toMatch(/0000:03:00\.0 is the closest published provider with 2097152 bytes free for rxe0, nvme0n1 \(distance 4/);
  });

  test('the closer of two providers wins; the other says why not', () => {
    const fx = fixture(twoProviders({}, {}));
    const c = chooseProvider(['nvme0'], fx.opts);
    expect(c.provider?.bdf).toBe(NVME); // distance 0 vs 4
    const other = c.candidates.find((x) => x.provider.bdf === '0000:05:00.0')!;
    expect(other.distance).toBe(4);
    expect(other.rejected).toMatch(/farther \(distance 4\) than 0000:03:00\.0 \(distance 0\)/);
  });

  test('equal distance: more free space wins, then the lower BDF', () => {
    const fx = fixture(twoProviders({ size: 8 * MiB, available: 1 * MiB }, { size: 8 * MiB, available: 4 * MiB }));
    expect(chooseProvider(['rxe0'], fx.opts).provider?.bdf).toBe('0000:05:00.0');
    const eq = fixture(twoProviders({ size: 8 * MiB }, { size: 8 * MiB }));
    const c = chooseProvider(['rxe0'], eq.opts);
    expect(c.provider?.bdf).toBe(NVME);
    expect(c.candidates[1].rejected).toMatch(/as close as 0000:03:00\.0/);
  });

  test('a full provider is passed over for one farther away', () => {
    const fx = fixture(twoProviders({ size: 64 * MiB, available: 0 }, {}));
    const c = chooseProvider(['nvme0'], { ...fx.opts, size: 4096 });
    expect(c.provider?.bdf).toBe('0000:05:00.0');
    expect(c.candidates[0].rejected).toBe(`only 0 of ${64 * MiB} bytes free, 4096 needed`);
  });

  test('none qualifies: unpublished, full, malformed, unreachable — each said', () => {
    const fx = fixture(twoProviders({ published: 0 }, { size: 1 * MiB, available: 4096 }));
    const c = chooseProvider(['rxe0'], { ...fx.opts, size: 2 * MiB });
    expect(c.provider).toBeNull();
    expect(c.distance).toBe(-1);
    expect(c.reason).toMatch(/^no provider qualifies for rxe0: /);
    expect(c.reason).toMatch(/0000:03:00\.0: its p2pmem is not published/);
    expect(c.reason).toMatch(/0000:05:00\.0: only 4096 of 1048576 bytes free, 2097152 needed/);

    const bad = fixture(twoProviders({ available: 'n/a' }, {}));
    const b = chooseProvider(['rxe1'], bad.opts);
    expect(b.provider).toBeNull();
    expect(b.reason).toMatch(/0000:03:00\.0: unusable sysfs attributes: .*available is not a non-negative integer/);
    expect(b.reason).toMatch(/0000:05:00\.0: client rxe1 \(0000:00:05\.0\): provider and client share no upstream bridge.*not on the kernel's P2PDMA host bridge whitelist/);
  });

  test('a client without a PCI function rules every provider out', () => {
    const spec = guestLike();
    spec.infiniband!.push({ name: 'rxe_lo', netdev: 'lo' });
    const c = chooseProvider(['rxe_lo'], fixture(spec).opts);
    expect(c.provider).toBeNull();
    expect(c.reason).toMatch(/client rxe_lo: network interface lo is not a PCI device/);
  });

  test('no providers at all', () => {
    const spec = guestLike();
    delete spec.pci.find((d) => d.bdf === NVME)!.p2pmem;
    const c = chooseProvider(['rxe0'], fixture(spec).opts);
    expect(c.provider).toBeNull();
    expect(c.reason).toMatch(/no PCI device has p2pmem/);
  });

  test('without allocate the provider is not chosen for userspace', () => {
    const c = chooseProvider(['rxe0'], fixture(guestLike({ [NVME]: { p2pmem: { allocate: false } } })).opts);
    expect(c.provider).toBeNull();
    expect(c.reason).toMatch(/p2pmem\/allocate is missing \(userspace allocation needs Linux 6\.2\+\)/);
  });

  test('argument errors', () => {
    const o = fixture(guestLike()).opts;
    expect(() => chooseProvider([], o)).toThrow(RangeError);
    expect(() => chooseProvider('rxe0' as unknown as string[], o)).toThrow(TypeError);
    expect(() => chooseProvider(['rxe0'], { ...o, size: 0 })).toThrow(/options.size must be a positive integer/);
    expect(() => chooseProvider(['rxe0'], { ...o, size: 1.5 })).toThrow(RangeError);
    expect(() => chooseProvider(['nope0'], o)).toThrow(expect.objectContaining({ code: 'ENODEV' }));
  });
});

describe('p2pDistance by name', () => {
  test('provider and client by device name', () => {
    const o = fixture(guestLike()).opts;
    expect(p2pDistance('nvme0', 'rxe0', o)).toMatchObject({ provider: NVME, client: '0000:04:00.0', mapType: 'bus-addr', distance: 4 });
    expect(p2pDistance(NVME, 'nvme0n1', o)).toMatchObject({ distance: 0, relation: 'same-function' });
  });

  test('a name without a PCI function is ENODEV with the reason', () => {
    const o = fixture(guestLike()).opts;
    expect(() => p2pDistance('nvme0', 'lo', o)).toThrow(
      expect.objectContaining({ code: 'ENODEV', message: 'client lo has no PCI function: network interface lo is not a PCI device (no PCI parent)' }),
    );
  });
});
