/**
 * Which memory window type exposes memory to a peer (docs/protocol.md §1.1).
 *
 * Type 2 windows are QP-scoped (a key works only on the connection it was
 * bound for) and a peer may invalidate them with SEND_WITH_INV. On rxe that
 * is not safe: rxe_invalidate_mw() looks a key up in the whole device's
 * window pool, whatever the PD, and invalidating a type 2 window that is
 * FREE (a second SEND_WITH_INV of a key, or a fresh unbound window)
 * dereferences its NULL QP in the kernel's responder: one connected peer
 * panics the host (6.12 through 7.3.4). The kernel refuses remote
 * invalidation of type 1 windows before it looks at the QP
 * (rxe_check_invalidate_mw), so on rxe only type 1 windows are exposed.
 * A type 1 window is PD-scoped, and the server's PD belongs to one session,
 * so a type 1 key still works only for that session's own connections.
 */
import type { Device } from '../verbs';
import { TransportError } from './errors';

export type WindowTypeOption = 'auto' | 1 | 2;

export function checkWindowType(v: unknown): WindowTypeOption {
  if (v === undefined) return 'auto';
  if (v !== 'auto' && v !== 1 && v !== 2) throw new RangeError(`windowType must be 'auto', 1 or 2, got ${String(v)}`);
  return v;
}

/** Whether remote invalidation of type 2 windows can crash this device's kernel driver (rxe). */
export function remoteInvalidateUnsafe(dev: Device): boolean {
  return dev.name.startsWith('rxe') || dev.attributes.vendorId === 0xffffff;
}

/**
 * The window type to use on `dev`: 'auto' is 1 where remote invalidation is
 * unsafe (rxe) and 2 elsewhere (hardware enforcing the IBTA rules: mlx5).
 * Asking for 2 on rxe is refused: it would hand every peer a way to crash
 * the kernel.
 */
export function windowTypeFor(dev: Device, opt: WindowTypeOption): 1 | 2 {
  const unsafe = remoteInvalidateUnsafe(dev);
  if (opt === 2 && unsafe) {
    throw new TransportError('EOPNOTSUPP',
      `windowType 2 on ${dev.name}: rxe's handling of SEND_WITH_INV lets any peer crash the kernel through a type 2 window ` +
      "(rxe_invalidate_mw); use windowType 1 or 'auto' (docs/protocol.md §1.1)");
  }
  return opt === 'auto' ? (unsafe ? 1 : 2) : opt;
}
