/**
 * The addon loads and fails cleanly where there is no RDMA at all (CI hosts,
 * laptops): listing gives [] (ENOSYS when the kernel has no verbs interface),
 * opening throws an RdmaError with a code, and bad arguments throw
 * TypeError, never a crash.
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

/** The kernel's RDMA verbs interface (ib_uverbs): CI hosts have none. */
const hasVerbs = fs.existsSync('/sys/class/infiniband_verbs');

describe('native addon without RDMA devices', () => {
  test(`listDevices(): an array of device infos where the kernel has the verbs interface, RdmaError ENOSYS naming ib_uverbs where it has none (this host: ${hasVerbs ? 'has it' : 'none'})`, () => {
    if (hasVerbs) {
      const devs = listDevices();
      expect(Array.isArray(devs)).toBe(true);
      for (const d of devs) expect(typeof d.name).toBe('string');
      if (noRdma) expect(devs).toEqual([]);
      return;
    }
    let err: unknown;
    try {
      listDevices();
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(RdmaError);
    expect(err).toMatchObject({ code: 'ENOSYS', errno: 38, syscall: 'ibv_get_device_list' });
    expect((err as Error).message).toMatch(/no RDMA verbs interface .*ib_uverbs module is not loaded.*modprobe ib_uverbs/);
  });

  onHostWithoutRdma(`openDevice('rxe0') throws an RdmaError with a code (ENOSYS without the verbs interface)${why}`, () => {
    let err: unknown;
    try {
      openDevice('rxe0').close();
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(RdmaError);
    expect((err as RdmaError).code).toBe(hasVerbs ? 'ENODEV' : 'ENOSYS');
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
