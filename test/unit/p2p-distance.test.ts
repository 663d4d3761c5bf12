/**
 * P2P distance and mapping type on sysfs fixtures: the kernel's
 * calc_map_type_and_dist() rules (same function/device/switch, nested
 * switches, host bridge whitelist, AMD Zen, ACS redirect) from userspace.
 */
import { RdmaError } from '../../lib/errors';
import { cpuSupportsP2pdma, P2pTopology } from '../../lib/p2p/distance';
import { parseConfigSpace } from '../../lib/p2p/pci';
import { buildSysfs, configSpace, Fixture, FixturePci, FixtureSpec, guestLike } from './p2p/fixture';

const fixtures: Fixture[] = [];
function topo(spec: FixtureSpec, extra: object = {}): P2pTopology {
  const fx = buildSysfs(spec);
  fixtures.push(fx);
  return new P2pTopology({ ...fx.opts, ...extra });
}
afterAll(() => fixtures.forEach((f) => f.cleanup()));

const NVME = '0000:03:00.0';
const NIC = '0000:04:00.0';

describe('same switch (the guest topology)', () => {
  test('NVMe and NIC behind one switch: bus addresses, distance 4, common upstream port', () => {
    const t = topo(guestLike());
    const d = t.distance(NVME, NIC);
    expect(d).toMatchObject({
      mapType: 'bus-addr',
      supported: true,
      distance: 4,
      relation: 'same-switch',
      commonUpstream: '0000:01:00.0',
      acsRedirect: [],
      acsUnknown: [],
    });
    expect(d.reason).toMatch(/same switch.*0000:01:00\.0.*bus addresses, distance 4/);
    expect(d.hostBridge).toBeUndefined();
    // symmetric in distance and type
    expect(t.distance(NIC, NVME)).toMatchObject({ mapType: 'bus-addr', distance: 4 });
  });

  test('provider is the client: same function, distance 0', () => {
    const d = topo(guestLike()).distance(NVME, NVME);
    expect(d).toMatchObject({ mapType: 'bus-addr', distance: 0, relation: 'same-function', commonUpstream: NVME });
  });

  test('device identity and place in the hierarchy come from sysfs', () => {
    const dev = topo(guestLike()).pci.get(NVME);
    expect(dev).toMatchObject({
      bdf: NVME,
      vendor: '0x1b36',
      device: '0x0010',
      class: '0x010802',
      driver: 'nvme',
      numaNode: null,
      hostBridge: 'pci0000:00',
      path: ['0000:00:10.0', '0000:01:00.0', '0000:02:00.0', NVME],
      upstream: '0000:02:00.0',
      portType: 'endpoint',
      acs: { kind: 'none' },
      configBytes: 4096,
      problems: [],
    });
  });

  test('a device on the root bus next to a switch: through the host bridge, refused on QEMU q35 with a non-Zen CPU', () => {
    const d = topo(guestLike()).distance(NVME, '0000:00:05.0');
    expect(d).toMatchObject({ mapType: 'not-supported', supported: false, relation: 'host-bridge', commonUpstream: null });
    // 4 devices up from the NVMe + 1 (the NIC on the root bus)
    expect(d.distance).toBe(5);
    expect(d.reason).toMatch(/share no upstream bridge/);
    expect(d.reason).toMatch(/0000:00:00\.0 \[8086:29c0\] is not on the kernel's P2PDMA host bridge whitelist/);
    expect(d.reason).toMatch(/AuthenticAMD family 0xf\) is not AMD Zen/);
    expect(d.hostBridge).toMatchObject({ provider: 'pci0000:00', client: 'pci0000:00', whitelisted: false, cpuSupportsP2pdma: false });
  });

  test('the same pair on an AMD Zen CPU goes through the host bridge', () => {
    const d = topo({ ...guestLike(), cpu: { vendor: 'AuthenticAMD', family: 0x19 } }).distance(NVME, '0000:00:05.0');
    expect(d).toMatchObject({ mapType: 'thru-host-bridge', supported: true, distance: 5 });
    expect(d.reason).toMatch(/supports P2PDMA through the host bridge/);
  });
});

/** Two root ports, a switch under each, an endpoint under each switch. */
function twoSwitches(hostBridge: Partial<FixturePci>, opts: { secondDomain?: boolean } = {}): FixtureSpec {
  const dom2 = opts.secondDomain ? '0001' : '0000';
  const hb2 = opts.secondDomain ? `pci0001:00` : undefined;
  return {
    pci: [
      { bdf: '0000:00:00.0', vendor: 0x8086, device: 0x1111, class: 0x060000, ...hostBridge },
      ...(opts.secondDomain ? [{ bdf: `${dom2}:00:00.0`, vendor: 0x8086, device: 0x1111, class: 0x060000, ...hostBridge }] : []),
      { bdf: '0000:00:1c.0', class: 0x060400, portType: 'root-port' },
      { bdf: '0000:05:00.0', parent: '0000:00:1c.0', class: 0x060400, portType: 'upstream-port' },
      { bdf: '0000:06:00.0', parent: '0000:05:00.0', class: 0x060400, portType: 'downstream-port' },
      { bdf: '0000:07:00.0', parent: '0000:06:00.0', class: 0x010802, portType: 'endpoint', p2pmem: {} },
      { bdf: `${dom2}:00:1d.0`, class: 0x060400, portType: 'root-port', hostBridge: hb2 },
      { bdf: `${dom2}:08:00.0`, parent: `${dom2}:00:1d.0`, class: 0x060400, portType: 'upstream-port' },
      { bdf: `${dom2}:09:00.0`, parent: `${dom2}:08:00.0`, class: 0x060400, portType: 'downstream-port' },
      { bdf: `${dom2}:0a:00.0`, parent: `${dom2}:09:00.0`, class: 0x020000, portType: 'endpoint' },
    ] as FixturePci[],
    cpu: { vendor: 'GenuineIntel', family: 6 },
  };
}

describe('different switches, root ports and host bridges', () => {
  test('behind different switches on root ports of an unknown host bridge: not supported', () => {
    const d = topo(twoSwitches({})).distance('0000:07:00.0', '0000:0a:00.0');
    expect(d).toMatchObject({ mapType: 'not-supported', relation: 'host-bridge', commonUpstream: null, distance: 8 });
    expect(d.reason).toMatch(/\[8086:1111\] is not on the kernel's P2PDMA host bridge whitelist/);
  });

  test('the same on a whitelisted host bridge (Skylake-E 8086:2020): through the host bridge', () => {
    const d = topo(twoSwitches({ device: 0x2020 })).distance('0000:07:00.0', '0000:0a:00.0');
    expect(d).toMatchObject({ mapType: 'thru-host-bridge', supported: true, distance: 8, relation: 'host-bridge' });
    expect(d.reason).toMatch(/Intel Skylake-E\) is on the kernel's P2PDMA whitelist/);
    expect(d.hostBridge?.whitelisted).toBe(true);
  });

  test('a root port as the first root-bus device counts as the host bridge device (no 00.0 device)', () => {
    const spec: FixtureSpec = {
      pci: [
        { bdf: '0000:00:01.0', vendor: 0x8086, device: 0x2030, class: 0x060400, portType: 'root-port' },
        { bdf: '0000:00:02.0', vendor: 0x8086, device: 0x2031, class: 0x060400, portType: 'root-port' },
        { bdf: '0000:10:00.0', parent: '0000:00:01.0', class: 0x010802, portType: 'endpoint', p2pmem: {} },
        { bdf: '0000:20:00.0', parent: '0000:00:02.0', class: 0x020000, portType: 'endpoint' },
      ],
    };
    const d = topo(spec).distance('0000:10:00.0', '0000:20:00.0');
    expect(d).toMatchObject({ mapType: 'thru-host-bridge', distance: 4 });
    expect(d.reason).toMatch(/0000:00:01\.0 \[8086:2030\]/);
  });

  test('without root, a bridge-class first device is taken as the root port', () => {
    const spec: FixtureSpec = {
      pci: [
        { bdf: '0000:00:01.0', vendor: 0x8086, device: 0x2030, class: 0x060400, portType: 'root-port', config: 'short' },
        { bdf: '0000:10:00.0', parent: '0000:00:01.0', class: 0x010802, config: 'short', p2pmem: {} },
        { bdf: '0000:00:02.0', vendor: 0x8086, device: 0x2031, class: 0x060400, config: 'short' },
        { bdf: '0000:20:00.0', parent: '0000:00:02.0', class: 0x020000, config: 'short' },
      ],
    };
    expect(topo(spec).distance('0000:10:00.0', '0000:20:00.0').mapType).toBe('thru-host-bridge');
  });

  test('a first root-bus device that is neither 00.0 nor a root port: no host bridge device, not supported', () => {
    const spec: FixtureSpec = {
      pci: [
        { bdf: '0000:00:01.0', vendor: 0x8086, device: 0x2030, class: 0x020000, portType: 'endpoint' },
        { bdf: '0000:00:02.0', vendor: 0x8086, device: 0x2020, class: 0x060400, portType: 'root-port' },
        { bdf: '0000:20:00.0', parent: '0000:00:02.0', class: 0x020000, portType: 'endpoint' },
      ],
    };
    const d = topo(spec).distance('0000:00:01.0', '0000:20:00.0');
    expect(d.mapType).toBe('not-supported');
    expect(d.reason).toMatch(/no devfn 00\.0 device or root port/);
  });

  test('a host bridge below a platform device (not directly in /sys/devices) is still found', () => {
    const hb = 'platform/soc@0/pci0000:00';
    const spec: FixtureSpec = {
      pci: [
        { bdf: '0000:00:00.0', hostBridge: hb, vendor: 0x8086, device: 0x09a2, class: 0x060000 },
        { bdf: '0000:00:01.0', hostBridge: hb, class: 0x060400, portType: 'root-port' },
        { bdf: '0000:00:02.0', hostBridge: hb, class: 0x060400, portType: 'root-port' },
        { bdf: '0000:01:00.0', parent: '0000:00:01.0', class: 0x010802, portType: 'endpoint', p2pmem: {} },
        { bdf: '0000:02:00.0', parent: '0000:00:02.0', class: 0x020000, portType: 'endpoint' },
      ],
    };
    const t = topo(spec);
    expect(t.pci.get('0000:01:00.0')).toMatchObject({ hostBridge: 'pci0000:00', path: ['0000:00:01.0', '0000:01:00.0'] });
    const d = t.distance('0000:01:00.0', '0000:02:00.0');
    expect(d).toMatchObject({ mapType: 'thru-host-bridge', distance: 4 });
    expect(d.reason).toMatch(/Ice Lake-SP/);
  });

  test('REQ_SAME_HOST_BRIDGE entries (Haswell-E 8086:2f00) allow one host bridge but not two', () => {
    const same = topo(twoSwitches({ device: 0x2f00 })).distance('0000:07:00.0', '0000:0a:00.0');
    expect(same.mapType).toBe('thru-host-bridge');
    const two = topo(twoSwitches({ device: 0x2f00 }, { secondDomain: true })).distance('0000:07:00.0', '0001:0a:00.0');
    expect(two).toMatchObject({ mapType: 'not-supported', relation: 'host-bridge' });
    expect(two.hostBridge).toMatchObject({ provider: 'pci0000:00', client: 'pci0001:00' });
    expect(two.reason).toMatch(/whitelisted only for devices on the same host bridge/);
  });

  test('two whitelisted host bridges without the same-bridge flag: allowed', () => {
    const d = topo(twoSwitches({ device: 0x09a2 }, { secondDomain: true })).distance('0000:07:00.0', '0001:0a:00.0');
    expect(d.mapType).toBe('thru-host-bridge');
    expect(d.reason).toMatch(/different host bridges/);
  });

  test('a caller-supplied whitelist replaces the kernel table', () => {
    const t = topo(twoSwitches({}), {
      hostBridgeWhitelist: [{ vendor: 0x8086, device: 'any', requireSameHostBridge: false, name: 'test bridge' }],
    });
    expect(t.distance('0000:07:00.0', '0000:0a:00.0').mapType).toBe('thru-host-bridge');
  });

  test('nested switches under a common upstream port: distance counts every port', () => {
    const spec: FixtureSpec = {
      pci: [
        { bdf: '0000:00:00.0', vendor: 0x8086, device: 0x1111, class: 0x060000 },
        { bdf: '0000:00:1c.0', class: 0x060400, portType: 'root-port' },
        { bdf: '0000:01:00.0', parent: '0000:00:1c.0', class: 0x060400, portType: 'upstream-port' },
        { bdf: '0000:02:00.0', parent: '0000:01:00.0', class: 0x060400, portType: 'downstream-port' },
        { bdf: '0000:02:01.0', parent: '0000:01:00.0', class: 0x060400, portType: 'downstream-port' },
        { bdf: '0000:03:00.0', parent: '0000:02:00.0', class: 0x060400, portType: 'upstream-port' },
        { bdf: '0000:04:00.0', parent: '0000:03:00.0', class: 0x060400, portType: 'downstream-port' },
        { bdf: '0000:05:00.0', parent: '0000:04:00.0', class: 0x010802, portType: 'endpoint', p2pmem: {} },
        { bdf: '0000:06:00.0', parent: '0000:02:01.0', class: 0x020000, portType: 'endpoint' },
      ],
    };
    const d = topo(spec).distance('0000:05:00.0', '0000:06:00.0');
    expect(d).toMatchObject({ mapType: 'bus-addr', distance: 6, relation: 'same-switch', commonUpstream: '0000:01:00.0' });
  });

  test('two functions of one device: distance 2, same device; a VF and its PF too', () => {
    const spec: FixtureSpec = {
      pci: [
        { bdf: '0000:00:1c.0', class: 0x060400, portType: 'root-port' },
        { bdf: '0000:01:00.0', parent: '0000:00:1c.0', class: 0x020000, portType: 'endpoint', p2pmem: {} },
        { bdf: '0000:01:00.1', parent: '0000:00:1c.0', class: 0x020000, portType: 'endpoint' },
        { bdf: '0000:01:02.3', parent: '0000:00:1c.0', class: 0x020000, portType: 'endpoint', physfn: '0000:01:00.0' },
      ],
    };
    const t = topo(spec);
    expect(t.distance('0000:01:00.0', '0000:01:00.1')).toMatchObject({
      mapType: 'bus-addr',
      distance: 2,
      relation: 'same-device',
      commonUpstream: '0000:00:1c.0',
    });
    expect(t.pci.get('0000:01:02.3')).toMatchObject({ physfn: '0000:01:00.0', upstream: '0000:00:1c.0' });
    expect(t.distance('0000:01:00.0', '0000:01:02.3')).toMatchObject({ distance: 2, relation: 'same-device' });
  });
});

describe('ACS redirect', () => {
  const RR = 0x04;
  const CR = 0x08;
  const EC = 0x20;

  test('RR on a switch downstream port forces the host bridge; on q35 that is not supported', () => {
    const d = topo(guestLike({ '0000:02:01.0': { acs: RR | 0x01 } })).distance(NVME, NIC);
    expect(d).toMatchObject({ mapType: 'not-supported', supported: false, relation: 'same-switch', acsRedirect: ['0000:02:01.0'], distance: 4 });
    expect(d.reason).toMatch(/ACS redirect is set on 0000:02:01\.0/);
    expect(d.reason).toMatch(/pci=disable_acs_redir=0000:02:01\.0/);
    expect(d.reason).toMatch(/not supported: 0000:00:00\.0 \[8086:29c0\]/);
  });

  test('with a whitelisted host bridge the redirected path is thru-host-bridge at the switch distance', () => {
    const d = topo(
      guestLike({ '0000:00:00.0': { device: 0x2020 }, '0000:02:00.0': { acs: CR }, '0000:02:01.0': { acs: EC } }),
    ).distance(NVME, NIC);
    expect(d).toMatchObject({ mapType: 'thru-host-bridge', supported: true, distance: 4 });
    expect(d.acsRedirect.sort()).toEqual(['0000:02:00.0', '0000:02:01.0']);
    expect(d.reason).toMatch(/pci=disable_acs_redir=0000:02:00\.0;0000:02:01\.0/);
  });

  test('the common upstream port itself is checked (the kernel walks the provider side up to it)', () => {
    const d = topo(guestLike({ '0000:01:00.0': { acs: RR } })).distance(NVME, NIC);
    expect(d.acsRedirect).toEqual(['0000:01:00.0']);
    expect(d.mapType).toBe('not-supported');
  });

  test('ports above the common bridge do not matter', () => {
    const d = topo(guestLike({ '0000:00:10.0': { acs: RR | CR | EC } })).distance(NVME, NIC);
    expect(d).toMatchObject({ mapType: 'bus-addr', acsRedirect: [] });
  });

  test('ACS without redirect bits (source validation, translation blocking, upstream forwarding) keeps bus addresses', () => {
    const d = topo(guestLike({ '0000:02:00.0': { acs: 0x01 | 0x02 | 0x10 | 0x40 } })).distance(NVME, NIC);
    expect(d).toMatchObject({ mapType: 'bus-addr', acsRedirect: [] });
  });

  test('unreadable config space (not root): ACS unknown, assumed off, and said so', () => {
    const short = { config: 'short' as const };
    const d = topo(guestLike({ '0000:02:00.0': short, '0000:02:01.0': short })).distance(NVME, NIC);
    expect(d).toMatchObject({ mapType: 'bus-addr', acsRedirect: [] });
    expect(d.acsUnknown.sort()).toEqual(['0000:02:00.0', '0000:02:01.0']);
    expect(d.reason).toMatch(/ACS state of .* is unknown \(config space needs root\)/);
  });
});

describe('config space and cpuinfo parsing', () => {
  test('port type and ACS from generated config space', () => {
    expect(parseConfigSpace(configSpace({ bdf: 'x', class: 0x060400, portType: 'downstream-port', acs: 0x0c }))).toEqual({
      portType: 'downstream-port',
      acs: { kind: 'present', control: 0x0c, redirect: true, bits: ['RR', 'CR'] },
    });
    expect(parseConfigSpace(configSpace({ bdf: 'x', portType: 'root-port' }))).toEqual({ portType: 'root-port', acs: { kind: 'none' } });
    expect(parseConfigSpace(configSpace({ bdf: 'x', config: 'conventional' }))).toEqual({ portType: 'unknown', acs: { kind: 'none' } });
    expect(parseConfigSpace(configSpace({ bdf: 'x', portType: 'endpoint', config: 'short' })).acs.kind).toBe('unknown');
    expect(parseConfigSpace(null)).toEqual({ portType: 'unknown', acs: { kind: 'unknown', why: 'config space is not readable' } });
    expect(parseConfigSpace(Buffer.alloc(10)).acs.kind).toBe('unknown');
  });

  test('a broken extended capability chain ends the walk (no ACS)', () => {
    const b = configSpace({ bdf: 'x', portType: 'endpoint' });
    b.writeUInt32LE(0x0001 | (1 << 16) | (0x010 << 20), 0x100); // next pointer below 0x100
    expect(parseConfigSpace(b).acs).toEqual({ kind: 'none' });
    b.writeUInt32LE(0xffffffff, 0x100);
    expect(parseConfigSpace(b).acs).toEqual({ kind: 'none' });
  });

  test('cpu_supports_p2pdma: AMD family >= 0x17 only', () => {
    const fx = buildSysfs({ pci: [], cpu: { vendor: 'AuthenticAMD', family: 0x17 } });
    fixtures.push(fx);
    expect(cpuSupportsP2pdma(fx.cpuinfoPath)).toEqual({ supported: true, cpu: 'AuthenticAMD family 0x17' });
    const old = buildSysfs({ pci: [], cpu: { vendor: 'AuthenticAMD', family: 0x15 } });
    const intel = buildSysfs({ pci: [], cpu: { vendor: 'GenuineIntel', family: 6 } });
    const hygon = buildSysfs({ pci: [], cpu: { vendor: 'HygonGenuine', family: 0x18 } });
    fixtures.push(old, intel, hygon);
    expect(cpuSupportsP2pdma(old.cpuinfoPath).supported).toBe(false);
    expect(cpuSupportsP2pdma(intel.cpuinfoPath).supported).toBe(false);
    expect(cpuSupportsP2pdma(hygon.cpuinfoPath).supported).toBe(false);
    expect(cpuSupportsP2pdma(fx.dir + '/missing')).toEqual({ supported: false, cpu: expect.stringMatching(/not readable/) });
    const arm = buildSysfs({ pci: [], cpu: null });
    fixtures.push(arm);
    require('fs').writeFileSync(arm.cpuinfoPath, 'processor\t: 0\nBogoMIPS\t: 50.00\nCPU implementer\t: 0x41\n');
    expect(cpuSupportsP2pdma(arm.cpuinfoPath)).toEqual({ supported: false, cpu: 'a non-x86 CPU' });
  });
});

describe('errors', () => {
  test('bad and unknown BDFs', () => {
    const t = topo(guestLike());
    expect(() => t.distance('03:00.0', NIC)).toThrow(RangeError);
    expect(() => t.distance('03:00.0', NIC)).toThrow(/bdf must look like 0000:03:00\.0/);
    expect(() => t.distance(NVME, 42 as unknown as string)).toThrow(TypeError);
    let err: unknown;
    try {
      t.distance(NVME, '0000:99:00.0');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(RdmaError);
    expect(err).toMatchObject({ code: 'ENODEV', message: expect.stringMatching(/no PCI device 0000:99:00\.0/) });
  });

  test('distanceMany: sum, -1 when any client is not supported, -1 for no clients', () => {
    const t = topo(guestLike());
    expect(t.distanceMany(NVME, [NIC, NVME]).distance).toBe(4);
    const bad = t.distanceMany(NVME, [NIC, '0000:00:05.0']);
    expect(bad.distance).toBe(-1);
    expect(bad.results.map((r) => r.mapType)).toEqual(['bus-addr', 'not-supported']);
    expect(t.distanceMany(NVME, []).distance).toBe(-1);
    expect(() => t.distanceMany(NVME, 'x' as unknown as string[])).toThrow(TypeError);
  });

  test('malformed identity attributes are reported, not fatal', () => {
    const t = topo(guestLike({ [NIC]: { files: { vendor: 'zzz', class: null, numa_node: 'x' } } }));
    const dev = t.pci.get(NIC);
    expect(dev.vendor).toBeNull();
    expect(dev.class).toBeNull();
    expect(dev.problems).toEqual([
      expect.stringMatching(/vendor is not a hex number: 'zzz'/),
      expect.stringMatching(/class is missing/),
      expect.stringMatching(/numa_node is not an integer: 'x'/),
    ]);
    expect(t.distance(NVME, NIC).mapType).toBe('bus-addr');
  });

  test('options are checked', () => {
    expect(() => new P2pTopology({ sysfsRoot: 1 as unknown as string })).toThrow(TypeError);
    expect(() => new P2pTopology({ hostBridgeWhitelist: {} as unknown as [] })).toThrow(/hostBridgeWhitelist must be an array/);
  });
});
