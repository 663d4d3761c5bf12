/**
 * The verbs surface on a host without RDMA devices (this CI host): listing
 * works and is empty, opening fails with an RdmaError, and arguments are
 * checked before anything reaches the kernel.
 */
import * as fs from 'fs';
import { allocate, CmId, forkSafety, listDevices, openDevice, pageSize, RdmaError, Udmabuf } from '../../lib';

const hasVerbs = fs.existsSync('/sys/class/infiniband_verbs');

test(`no devices: listDevices() is [] and openDevice() ENODEV with the verbs interface; without it (ib_uverbs not loaded) both throw ENOSYS (this host: ${hasVerbs ? 'has it' : 'none'})`, () => {
  if (hasVerbs) expect(listDevices()).toEqual([]);
  else expect(() => listDevices()).toThrow(expect.objectContaining({ name: 'RdmaError', code: 'ENOSYS', syscall: 'ibv_get_device_list' }));
  let err: unknown;
  try {
    openDevice('rxe0');
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(RdmaError);
  if (hasVerbs) {
    expect(err).toMatchObject({ code: 'ENODEV', syscall: 'rdma_get_devices' });
    expect((err as Error).message).toMatch(/no RDMA device named 'rxe0'/);
  } else {
    expect(err).toMatchObject({ code: 'ENOSYS', syscall: 'ibv_get_device_list' });
    expect((err as Error).message).toMatch(/no RDMA verbs interface/);
  }
});

test('openDevice and CmId.create check their arguments first', () => {
  expect(() => openDevice('')).toThrow(TypeError);
  expect(() => openDevice(1 as never)).toThrow(/name must be a non-empty string/);
  expect(() => CmId.create('SDP' as never)).toThrow(TypeError);
});

test('allocate(): page-aligned zeroed memory; bad sizes are RangeError/TypeError', () => {
  const b = allocate(10_000);
  expect(b.byteLength).toBe(10_000);
  expect(new Uint8Array(b).every((x) => x === 0)).toBe(true);
  expect(pageSize()).toBeGreaterThanOrEqual(4096);
  expect(() => allocate(0)).toThrow(expect.objectContaining({ name: 'RangeError', message: expect.stringMatching(/size/) }));
  expect(() => allocate('1' as never)).toThrow(expect.objectContaining({ name: 'TypeError', message: expect.stringMatching(/size/) }));
});

test('Udmabuf checks its size before opening /dev/udmabuf', () => {
  expect(() => new Udmabuf(123)).toThrow(expect.objectContaining({ name: 'RangeError', message: expect.stringMatching(/page size/) }));
  expect(() => new Udmabuf(-4096)).toThrow(expect.objectContaining({ name: 'RangeError' }));
});

test("forkSafety() reports rdma-core's fork mode as one of three words", () => {
  expect(['disabled', 'enabled', 'unneeded']).toContain(forkSafety());
});
