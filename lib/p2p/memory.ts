/**
 * p2pmem in the process: allocation (mmap of p2pmem/allocate, Linux 6.2+
 * with CONFIG_PCI_P2PDMA), O_DIRECT IO between it and a file or block device
 * (the block layer pins the pages with FOLL_PCI_P2PDMA, so an NVMe reads or
 * writes the provider's memory directly: real peer-to-peer DMA), and the
 * RDMA registration probe.
 *
 * The mapping is an external ArrayBuffer over the device memory. close()
 * detaches it before unmapping, so no view can reach unmapped memory; a
 * mapping that is never closed is unmapped when its ArrayBuffer is
 * garbage-collected. The provider's `available` drops by the size while
 * mapped and comes back after close().
 */
import * as fs from 'fs';
import * as path from 'path';
import { isArrayBuffer } from 'util/types';
import { RdmaError, closedError } from '../errors';
import { native } from '../native';
import { getProvider, P2pProvider } from './providers';
import { P2pOptions } from './sysfs';

/** The page size: allocations are rounded up to it. */
export function p2pPageSize(): number {
  return native().p2pmemPageSize;
}

export interface P2pIoOptions {
  /** Byte offset in the p2pmem buffer (default 0). */
  offset?: number;
  /** Bytes to transfer (default: the rest of the buffer). */
  length?: number;
}

function rewrap(err: unknown, extra: string): never {
  const e = err as RdmaError;
  if (e && typeof e.code === 'string' && e.name === 'RdmaError')
    throw new RdmaError(`${e.message}: ${extra}`, e.code, e.errno, e.syscall);
  throw err;
}

function logicalBlockSize(file: string): number {
  // /dev/nvme0n1 -> /sys/class/block/nvme0n1/queue/logical_block_size
  try {
    const t = fs.readFileSync(path.join('/sys/class/block', path.basename(file), 'queue/logical_block_size'), 'latin1');
    const n = Number(t.trim());
    if (Number.isSafeInteger(n) && n > 0) return n;
  } catch {
    /* not a block device (or no sysfs): the common minimum */
  }
  return 512;
}

/** A p2pmem allocation mapped into this process. */
export class P2pMemory {
  /** BDF of the provider. */
  readonly provider: string;
  /** Mapped size in bytes (a multiple of the page size). */
  readonly byteLength: number;
  #ab: ArrayBuffer | null;
  #inflight = 0;

  /** Use allocateP2pmem(). */
  constructor(provider: string, ab: ArrayBuffer) {
    if (typeof provider !== 'string') throw new TypeError('provider must be a BDF');
    if (!isArrayBuffer(ab) || !native().p2pmemIsMapped(ab))
      throw new TypeError('arrayBuffer must be a live p2pmem mapping (use allocateP2pmem())');
    this.provider = provider;
    this.byteLength = ab.byteLength;
    this.#ab = ab;
  }

  get closed(): boolean {
    return this.#ab === null;
  }

  /** The mapping. Views of it become zero-length on close(). */
  get buffer(): ArrayBuffer {
    if (!this.#ab) throw closedError('P2pMemory');
    return this.#ab;
  }

  /** A Buffer over [offset, offset+length) of the mapping (no copy). */
  bytes(offset = 0, length?: number): Buffer {
    const { offset: o, length: l } = this.#range({ offset, length }, 1);
    return Buffer.from(this.buffer, o, l);
  }

  #range(opts: P2pIoOptions, align: number): { offset: number; length: number } {
    if (opts === null || typeof opts !== 'object') throw new TypeError('options must be an object');
    const offset = opts.offset ?? 0;
    if (typeof offset !== 'number' || !Number.isSafeInteger(offset) || offset < 0 || offset > this.byteLength)
      throw new RangeError(`offset must be an integer from 0 to ${this.byteLength}, got ${String(opts.offset)}`);
    const length = opts.length ?? this.byteLength - offset;
    if (typeof length !== 'number' || !Number.isSafeInteger(length) || length < 0 || offset + length > this.byteLength)
      throw new RangeError(`length must be an integer with offset + length <= ${this.byteLength}, got ${String(opts.length)}`);
    if (offset % align || length % align)
      throw new RangeError(
        `offset (${offset}) and length (${length}) must be multiples of the device's logical block size (${align}) for O_DIRECT`,
      );
    return { offset, length };
  }

  async #direct(kind: 'read' | 'write', file: string, position: number, opts: P2pIoOptions): Promise<number> {
    if (typeof file !== 'string' || file === '') throw new TypeError('file must be a path');
    const align = logicalBlockSize(file);
    if (typeof position !== 'number' || !Number.isSafeInteger(position) || position < 0)
      throw new RangeError(`position must be a non-negative integer, got ${String(position)}`);
    if (position % align)
      throw new RangeError(`position (${position}) must be a multiple of the logical block size (${align}) for O_DIRECT`);
    const { offset, length } = this.#range(opts, align);
    const buf = Buffer.from(this.buffer, offset, length);
    const flags = fs.constants.O_DIRECT | (kind === 'read' ? fs.constants.O_RDONLY : fs.constants.O_WRONLY);
    this.#inflight++;
    try {
      const fh = await fs.promises.open(file, flags);
      try {
        let done = 0;
        while (done < length) {
          const n =
            kind === 'read'
              ? (await fh.read(buf, done, length - done, position + done)).bytesRead
              : (await fh.write(buf, done, length - done, position + done)).bytesWritten;
          if (n === 0) break; // end of file/device
          done += n;
        }
        return done;
      } finally {
        await fh.close();
      }
    } finally {
      this.#inflight--;
    }
  }

  /**
   * O_DIRECT write of the buffer's bytes to `file` (e.g. /dev/nvme0n1) at
   * `position`: the device DMAs straight from the provider's memory.
   * Resolves to the bytes written.
   */
  writeTo(file: string, position: number, opts: P2pIoOptions = {}): Promise<number> {
    return this.#direct('write', file, position, opts);
  }

  /** O_DIRECT read from `file` at `position` into the buffer. Resolves to the bytes read. */
  readFrom(file: string, position: number, opts: P2pIoOptions = {}): Promise<number> {
    return this.#direct('read', file, position, opts);
  }

  /**
   * Tries ibv_reg_mr on this memory with the named RDMA device (LOCAL_WRITE |
   * REMOTE_READ | REMOTE_WRITE) and deregisters at once. Returns true when
   * the kernel accepts it; mainline kernels refuse (EFAULT), which throws an
   * RdmaError (syscall 'ibv_reg_mr') explaining that RDMA registration of
   * p2pmem is not supported.
   */
  tryRegister(rdmaDevice: string): boolean {
    if (typeof rdmaDevice !== 'string' || rdmaDevice === '') throw new TypeError('rdmaDevice must be a device name');
    return native().tryRegisterP2pmem(rdmaDevice, this.buffer);
  }

  /** Unmaps (detaching the ArrayBuffer first); idempotent. Throws EBUSY during IO. */
  close(): void {
    if (!this.#ab) return;
    if (this.#inflight > 0)
      throw new RdmaError(`P2pMemory is busy: ${this.#inflight} O_DIRECT IO(s) in flight`, 'EBUSY', 16);
    const ab = this.#ab;
    this.#ab = null;
    native().p2pmemUnmap(ab);
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * Allocates `size` bytes (rounded up to the page size) of a provider's
 * p2pmem by mapping its p2pmem/allocate. Needs write access to that file
 * (mode 0660, root), Linux 6.2+ and CONFIG_PCI_P2PDMA.
 * Throws RdmaError: ENODEV (no p2pmem), EOPNOTSUPP (no `allocate`: kernel
 * older than 6.2), EACCES (not root), ENOMEM (not enough free).
 */
export function allocateP2pmem(provider: string | P2pProvider, size: number, opts: P2pOptions = {}): P2pMemory {
  const p = typeof provider === 'string' ? getProvider(provider, opts) : provider;
  if (p === null || typeof p !== 'object' || typeof p.bdf !== 'string')
    throw new TypeError('provider must be a BDF or a P2pProvider');
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size <= 0)
    throw new RangeError(`size must be a positive integer, got ${String(size)}`);
  if (!p.allocatable)
    throw new RdmaError(
      `${p.bdf} has p2pmem but no p2pmem/allocate: mapping p2pmem into a process needs Linux 6.2 or newer`,
      'EOPNOTSUPP',
      95,
      'mmap',
    );
  const ps = p2pPageSize();
  const length = Math.ceil(size / ps) * ps;
  let ab: ArrayBuffer;
  try {
    ab = native().p2pmemMap(p.allocatePath, length);
  } catch (err) {
    const code = (err as RdmaError).code;
    if (code === 'ENOMEM') {
      let avail = '';
      try {
        avail = `, ${getProvider(p.bdf, opts).available} bytes are available`;
      } catch {
        /* provider gone */
      }
      rewrap(err, `${p.bdf} cannot provide ${length} contiguous bytes of p2pmem${avail}`);
    }
    if (code === 'EACCES' || code === 'EPERM')
      rewrap(err, `allocating p2pmem needs write access to ${p.allocatePath} (mode 0660, normally root only)`);
    throw err;
  }
  return new P2pMemory(p.bdf, ab);
}
