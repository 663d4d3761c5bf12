/**
 * `node-rdma p2p` on sysfs fixtures: the provider table, the distance
 * matrix, --json, --choose, usage errors.
 */
import { formatBytes, p2pCommand } from '../../lib/cli/p2p';
import { buildSysfs, Fixture, FixtureSpec, guestLike } from './p2p/fixture';

const fixtures: Fixture[] = [];
afterAll(() => fixtures.forEach((f) => f.cleanup()));

async function run(spec: FixtureSpec | null, ...args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const fxArgs: string[] = [];
  if (spec) {
    const fx = buildSysfs(spec);
    fixtures.push(fx);
    fxArgs.push('--sysfs', fx.sysfsRoot, '--cpuinfo', fx.cpuinfoPath);
  }
  const code = await p2pCommand([...fxArgs, ...args], { stdout: (s) => (out += s), stderr: (s) => (err += s) });
  return { code, out, err };
}

test('text: providers with size/free/published and the distance matrix with reasons', async () => {
  const r = await run(guestLike());
  expect(r.code).toBe(0);
  expect(r.err).toBe('');
  const lines = r.out.split('\n');
  expect(lines).toContainEqual(expect.stringMatching(/^ {2}BDF +DRIVER +ID +CLASS +NUMA +SIZE +FREE +PUBLISHED +ALLOCATE$/));
  expect(lines).toContainEqual(expect.stringMatching(/^ {2}0000:03:00\.0 +nvme +1b36:0010 +0x010802 +- +64 MiB +63\.88 MiB +yes +yes$/));
  expect(lines).toContainEqual(expect.stringMatching(/^ {2}0000:03:00\.0 +rxe0 \(0000:04:00\.0 via netdev eth0\) +bus-addr +4 +same-switch$/));
  expect(lines).toContainEqual(expect.stringMatching(/^ {2}0000:03:00\.0 +rxe1 \(0000:00:05\.0 via netdev eth1\) +not-supported +5 +host-bridge$/));
  expect(lines).toContainEqual(expect.stringMatching(/^ {2}0000:03:00\.0 +nvme0 \(0000:03:00\.0\) +bus-addr +0 +same-function$/));
  expect(r.out).toMatch(/0000:03:00\.0 -> rxe1: .*not on the kernel's P2PDMA host bridge whitelist/);
});

test('--json: providers, clients and the matrix as data', async () => {
  const r = await run(guestLike(), '--json');
  expect(r.code).toBe(0);
  const j = JSON.parse(r.out);
  expect(j.providers).toHaveLength(1);
  expect(j.providers[0]).toMatchObject({ bdf: '0000:03:00.0', size: 67108864, published: true });
  expect(j.clients.map((c: { name: string }) => c.name)).toEqual(['rxe0', 'rxe1', 'nvme0']);
  expect(j.matrix).toHaveLength(3);
  expect(j.matrix[0]).toMatchObject({
    provider: '0000:03:00.0',
    client: 'rxe0',
    clientPci: '0000:04:00.0',
    via: 'netdev eth0',
    mapType: 'bus-addr',
    distance: 4,
    relation: 'same-switch',
    detail: { commonUpstream: '0000:01:00.0' },
  });
  expect(j.choice).toBeUndefined();
});

test('a client without a PCI function shows up as not supported', async () => {
  const spec = guestLike();
  spec.infiniband!.push({ name: 'rxe_lo', netdev: 'lo' });
  const r = await run(spec, '--json');
  const m = JSON.parse(r.out).matrix.find((x: { client: string }) => x.client === 'rxe_lo');
  expect(m).toMatchObject({ mapType: 'not-supported', supported: false, distance: null, relation: null, clientPci: null });
  const t = await run(spec);
  expect(t.out).toMatch(/rxe_lo +not-supported +- +not a PCI device/);
});

test('--choose with --size: the provider, or exit 1 with the reason', async () => {
  const ok = await run(guestLike(), '--choose', 'rxe0,nvme0n1', '--size', '2M');
  expect(ok.code).toBe(0);
  expect(ok.out).toMatch(/choice: 0000:03:00\.0 is the closest published provider with 2097152 bytes free for rxe0, nvme0n1/);
  const full = await run(guestLike(), '--choose', 'rxe0', '--size', '1G', '--json');
  expect(full.code).toBe(1);
  expect(JSON.parse(full.out).choice).toMatchObject({ provider: null, reason: expect.stringMatching(/only .* bytes free, 1073741824 needed/) });
  const text = await run(guestLike(), '--choose', 'rxe1');
  expect(text.code).toBe(1);
  expect(text.out).toMatch(/choice: none\. no provider qualifies for rxe1: /);
});

test('no providers, no clients (a host without p2pmem)', async () => {
  const r = await run({ pci: [{ bdf: '0000:00:00.0', class: 0x060000 }] });
  expect(r.code).toBe(0);
  expect(r.out).toMatch(/p2pmem providers: none/);
  expect(r.out).toMatch(/clients: no RDMA devices or NVMe controllers/);
});

test('usage: --help, unknown arguments, missing values, bad sizes, unknown devices', async () => {
  const h = await run(null, '--help');
  expect(h.code).toBe(0);
  expect(h.out).toMatch(/^Usage: node-rdma p2p/);
  for (const args of [['--bogus'], ['--sysfs'], ['--size', '4K'], ['--choose', 'rxe0', '--size', 'lots'], ['--choose', ',']]) {
    const r = await run(guestLike(), ...args);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/^node-rdma p2p: /);
  }
  const eq = await run(guestLike(), '--choose=rxe0', '--size=2M');
  expect(eq.code).toBe(0);
  expect(eq.out).toMatch(/choice: 0000:03:00\.0 is the closest/);
  for (const args of [['--json=yes'], ['--size='], ['--choose=']]) expect((await run(guestLike(), ...args)).code).toBe(2);
  const u = await run(guestLike(), '--choose', 'mlx5_7');
  expect(u.code).toBe(2);
  expect(u.err).toMatch(/no device named 'mlx5_7'/);
});

test('formatBytes', () => {
  expect(formatBytes(null)).toBe('?');
  expect(formatBytes(512)).toBe('512 B');
  expect(formatBytes(4096)).toBe('4 KiB');
  expect(formatBytes(66977792)).toBe('63.88 MiB');
  expect(formatBytes(2 * 1024 ** 3)).toBe('2 GiB');
});
