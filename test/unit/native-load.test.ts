/**
 * The addon loads and fails cleanly where there is no RDMA at all (CI hosts,
 * laptops): listing gives [], opening throws an RdmaError with a code, and
 * bad arguments throw TypeError, never a crash.
 */
import * as fs from 'fs';
import { listDevices, openDevice, RdmaError } from '../../lib';

// this tier also runs on machines with RDMA (an mlx5 box); only the "no
// devices" expectations depend on it
function hostHasRdma(): boolean {
  try {
    return fs.readdirSync('/sys/class/infiniband').length > 0;
  } catch {
    return false;
  }
}
const noRdma = !hostHasRdma();
const onHostWithoutRdma = noRdma ? test : test.skip;
const why = noRdma ? '' : ' [skipped: this host has RDMA devices]';

describe('native addon without RDMA devices', () => {
  test('listDevices() returns an array of device infos', () => {
    const devs = listDevices();
    expect(Array.isArray(devs)).toBe(true);
    for (const d of devs) expect(typeof d.name).toBe('string');
  });

  onHostWithoutRdma(`listDevices() returns [] on a host without RDMA${why}`, () => {
    expect(listDevices()).toEqual([]);
  });

  onHostWithoutRdma(`openDevice('rxe0') throws an RdmaError with a code${why}`, () => {
    let err: unknown;
    try {
      openDevice('rxe0').close();
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(RdmaError);
    expect((err as RdmaError).code).toMatch(/^E[A-Z0-9]+$/);
    expect((err as RdmaError).message).toMatch(/\S/);
  });

  test('openDevice of an unknown name throws an RdmaError with a code', () => {
    expect(() => openDevice('no-such-rdma-device')).toThrow(RdmaError);
    try {
      openDevice('no-such-rdma-device');
    } catch (e) {
      expect((e as RdmaError).code).toMatch(/^E[A-Z0-9]+$/);
      // the verb that failed (ibv_* or rdma_*), like Node's own system errors
      expect((e as RdmaError).syscall).toMatch(/^(ibv|rdma)_/);
    }
  });

  test("openDevice('') throws TypeError", () => {
    expect(() => openDevice('')).toThrow(TypeError);
    expect(() => openDevice(undefined as unknown as string)).toThrow(TypeError);
  });
});
