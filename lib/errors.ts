import { constants as osConstants } from 'os';

/** Errno names the addon gives that Node's os.constants.errno lacks (EREMOTEIO: p2pmem registration). */
export const EXTRA_ERRNO_CODES = ['EREMOTEIO'] as const;

/** An errno name ('EINVAL', 'ENOSYS', ...), as Node's os.constants.errno names them, and EXTRA_ERRNO_CODES. */
export type ErrnoCode = keyof typeof osConstants.errno | (typeof EXTRA_ERRNO_CODES)[number];

/**
 * Every `code` an RdmaError can have: the errno name of a failing verb
 * (`ERRNO_<n>` for an errno without a name), and node-rdma's own: ECLOSED
 * (use of a closed object), ENOADDON (no native addon for this platform),
 * ENOLIB (rdma-core's runtime libraries are missing), ERDMA (no code given).
 */
export type RdmaErrorCode = ErrnoCode | `ERRNO_${number}` | 'ECLOSED' | 'ENOADDON' | 'ENOLIB' | 'ERDMA' | 'EODPBROKEN' | 'EODPUNVERIFIED';

/**
 * Errors from node-rdma. A failing verb throws an RdmaError with the POSIX
 * `code` ('EINVAL', 'EOPNOTSUPP', ...), the `errno` and the verb's name in
 * `syscall` ('ibv_reg_mr'), like Node's own system errors. Use of a closed
 * object throws code 'ECLOSED'. Bad arguments throw TypeError / RangeError.
 */
export class RdmaError extends Error {
  code: RdmaErrorCode;
  errno?: number;
  syscall?: string;
  /**
   * A failed post (ibv_post_send / ibv_post_recv / ibv_post_srq_recv): how
   * many work requests of the list were posted, those before the one that
   * failed. They execute and complete as usual.
   */
  posted?: number;
  /**
   * postSend(wrs, recvFirst): true when it was a receive of `recvFirst` that
   * could not be posted (then no send was: `posted` is 0), with
   * `recvPosted` the receives posted before it.
   */
  recv?: boolean;
  recvPosted?: number;

  constructor(message: string, code?: RdmaErrorCode, errno?: number, syscall?: string) {
    super(message);
    this.name = 'RdmaError';
    this.code = code ?? 'ERDMA';
    if (errno !== undefined) this.errno = errno;
    if (syscall !== undefined) this.syscall = syscall;
  }
}

/** An RdmaError for a capability the device lacks (checked before the verb). */
export function unsupported(syscall: string, what: string): RdmaError {
  return new RdmaError(`${syscall} failed: EOPNOTSUPP: ${what}`, 'EOPNOTSUPP', 95, syscall);
}

export function closedError(what: string): RdmaError {
  return new RdmaError(`${what} is closed`, 'ECLOSED');
}
