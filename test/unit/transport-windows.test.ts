/**
 * The window type that exposes memory (lib/transport/windows.ts): type 1 on
 * rxe, whose SEND_WITH_INV handling of type 2 windows can crash the kernel;
 * type 2 where the device enforces the IBTA rules; 2 on rxe is refused.
 */
import { checkWindowType, remoteInvalidateUnsafe, windowTypeFor } from '../../lib/transport/windows';

const dev = (name: string, vendorId: number) => ({ name, attributes: { vendorId } }) as never;
const rxe = dev('rxe0', 0xffffff);
const renamedRxe = dev('roce_a', 0xffffff); // rdma link add <any name> type rxe
const mlx5 = dev('mlx5_0', 0x02c9);

test('rxe is told apart by its name or by its vendor id (0xffffff), whatever the link is called', () => {
  expect([rxe, renamedRxe, mlx5].map(remoteInvalidateUnsafe)).toEqual([true, true, false]);
});

test("'auto' picks type 1 on rxe and type 2 elsewhere; 1 is taken as asked everywhere", () => {
  expect(windowTypeFor(rxe, 'auto')).toBe(1);
  expect(windowTypeFor(renamedRxe, 'auto')).toBe(1);
  expect(windowTypeFor(mlx5, 'auto')).toBe(2);
  expect(windowTypeFor(mlx5, 1)).toBe(1);
  expect(windowTypeFor(mlx5, 2)).toBe(2);
  expect(windowTypeFor(rxe, 1)).toBe(1);
});

test('windowType 2 on rxe is an EOPNOTSUPP TransportError that says why and what to use', () => {
  let err: unknown;
  try {
    windowTypeFor(renamedRxe, 2);
  } catch (e) {
    err = e;
  }
  expect(err).toMatchObject({ name: 'TransportError', code: 'EOPNOTSUPP' });
  expect((err as Error).message).toMatch(/roce_a.*crash the kernel.*rxe_invalidate_mw.*windowType 1 or 'auto'/);
});

test('option check: undefined is auto; anything but auto, 1 or 2 is a RangeError', () => {
  expect(checkWindowType(undefined)).toBe('auto');
  for (const ok of ['auto', 1, 2] as const) expect(checkWindowType(ok)).toBe(ok);
  for (const bad of [0, 3, '1', 'type1', null, 1.5]) expect(() => checkWindowType(bad)).toThrow(RangeError);
});
