/**
 * Errors from node-rdma. A failing verb throws an RdmaError with the POSIX
 * `code` ('EINVAL', 'EOPNOTSUPP', ...), the `errno` and the verb's name in
 * `syscall` ('ibv_reg_mr'), like Node's own system errors. Use of a closed
 * object throws code 'ECLOSED'. Bad arguments throw TypeError / RangeError.
 */
export class RdmaError extends Error {
  code: string;
  errno?: number;
  syscall?: string;
  /**
   * A failed post (ibv_post_send / ibv_post_recv / ibv_post_srq_recv): how
   * many work requests of the list were posted, those before the one that
   * failed. They execute and complete as usual.
   */
  posted?: number;

  constructor(message: string, code?: string, errno?: number, syscall?: string) {
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
