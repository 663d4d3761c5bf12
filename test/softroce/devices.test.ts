/**
 * The guest's SoftRoCE devices as node-rdma sees them. scripts/vm-run makes
 * eth<i> = 10.99.<i+1>.1/24 and rxe<i> on it, so these facts are fixed.
 */
import { listDevices, openDevice, RdmaError } from '../../lib';

const EXPECTED = [
  { name: 'rxe0', netdev: 'eth0', gid: '::ffff:10.99.1.1' },
  { name: 'rxe1', netdev: 'eth1', gid: '::ffff:10.99.2.1' },
];

test('listDevices() includes rxe0 and rxe1', () => {
  const names = listDevices().map((d) => d.name);
  expect(names).toEqual(expect.arrayContaining(['rxe0', 'rxe1']));
});

describe.each(EXPECTED)('$name', ({ name, netdev, gid }) => {
  test('port 1 is ACTIVE, link layer Ethernet, MTU 1024, with a speed and width', () => {
    const dev = openDevice(name);
    try {
      const port = dev.queryPort(1);
      expect(port.state).toBe('ACTIVE');
      expect(port.linkLayer).toBe('Ethernet');
      // a 1500-byte netdev MTU leaves 1024 for RoCE; speed and width are reported
      expect(port.activeMtu).toBe(1024);
      expect(port.maxMtu).toBeGreaterThanOrEqual(port.activeMtu);
      expect(port.activeWidth).toBeGreaterThan(0);
      expect(port.activeSpeed).toBeGreaterThan(0);
      expect(port.gidTblLen).toBeGreaterThan(1);
    } finally {
      dev.close();
    }
  });

  test(`gids() has RoCEv2 ${gid} on ${netdev}`, () => {
    const dev = openDevice(name);
    try {
      expect(dev.gids()).toContainEqual(expect.objectContaining({ port: 1, gid, type: 'RoCEv2', netdev }));
    } finally {
      dev.close();
    }
  });

  test("query() reports capabilities including 'MEM_WINDOW', the atomic capability and the max sizes", () => {
    const dev = openDevice(name);
    try {
      const attrs = dev.query();
      expect(attrs.capabilities).toContain('MEM_WINDOW');
      expect(attrs.physPortCnt).toBe(1);
      // rxe's fixed parameters (drivers/infiniband/sw/rxe/rxe_param.h): the
      // atomic capability, the max sizes; explicit on-demand paging since 6.15
      // (rxe_odp.c), implicit never
      expect(attrs.atomicCap).toBe('HCA');
      expect(attrs.vendorId).toBe(0xffffff);
      for (const k of ['maxQp', 'maxQpWr', 'maxSge', 'maxCq', 'maxCqe', 'maxMr', 'maxPd', 'maxMw', 'maxSrq', 'maxAh'] as const) expect(attrs[k]).toBeGreaterThan(0);
      expect(attrs.maxMrSize).toBeGreaterThan(0n);
      expect(attrs.odpCaps.general).toEqual(['SUPPORT']);
      expect(attrs.odpCaps.rc).toEqual(expect.arrayContaining(['SEND', 'RECV', 'WRITE', 'READ', 'ATOMIC', 'SRQ_RECV']));
      expect(attrs.odpCaps.ud).toEqual(expect.arrayContaining(['SEND', 'RECV']));
    } finally {
      dev.close();
    }
  });

  test('close() is idempotent and use after close throws ECLOSED', () => {
    const dev = openDevice(name);
    dev.close();
    expect(() => dev.close()).not.toThrow();
    expect(dev.closed).toBe(true);
    let err: unknown;
    try {
      dev.query();
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(RdmaError);
    expect((err as RdmaError).code).toBe('ECLOSED');
  });
});
