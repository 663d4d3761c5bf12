/**
 * The client's memory for IOs and the requests it posts (docs/protocol.md §6):
 * each device's PD, staging registration and memory windows, the staging
 * slots (one per chunk), the caller's registered buffers (allocBuffer), and
 * the work requests of one IO's request on one path.
 */
import { allocate, MemoryRegion, MemoryWindow, SendWorkRequest } from '../verbs';
import { Access } from '../verbs/constants';
import type { DevState } from './client-path';
import { Conn, DeviceCache, wrId, WrKind } from './conn';
import * as P from './protocol';
import { windowTypeFor, WindowTypeOption } from './windows';

const EMPTY = Buffer.alloc(0);

/** Type 1 windows kept allocated ahead per device (reads in flight beyond this allocate their own) */
const SPARE_WINDOWS = 32;

/** What a request needs of its IO. */
export interface IoRequest {
  kind: 'write' | 'read';
  header: Uint8Array;
  data: Uint8Array;
  /** read: requested length */
  len: number;
  /** the ledger's chunk and seq; -1 / 0 while queued */
  chunk: number;
  seq: number;
  /** data/into lies in an allocBuffer() buffer: sent from / read into it directly */
  zeroCopy: boolean;
  /** a read's window over its destination, and its device */
  mw?: MemoryWindow;
  mwDev?: DevState;
}

export class ClientMemory {
  readonly devices = new DeviceCache();
  readonly #windowType: WindowTypeOption;
  readonly #devs = new Map<string, DevState>();
  readonly #userBufs = new Map<ArrayBuffer, Map<string, MemoryRegion>>();
  #staging: ArrayBuffer | undefined;
  #stagingBuf: Buffer = EMPTY;
  #chunkSize = 0;
  #closed = false;
  readonly #refilling = new Set<DevState>();

  constructor(windowType: WindowTypeOption) {
    this.#windowType = windowType;
  }

  /** The device's PD and windows, opened on first use. */
  devState(name: string): DevState {
    let d = this.#devs.get(name);
    if (d) return d;
    const device = this.devices.get(name);
    const windowType = windowTypeFor(device, this.#windowType);
    d = { pd: device.allocPd(), staging: undefined, windowType, freeMws: [] };
    this.#devs.set(name, d);
    return d;
  }

  /** One staging slot per chunk (after the first accept). */
  allocStaging(chunks: number, chunkSize: number): void {
    this.#chunkSize = chunkSize;
    this.#staging = allocate(chunks * chunkSize);
    this.#stagingBuf = Buffer.from(this.#staging);
  }

  /** The device's registration of the staging slots. */
  staged(d: DevState): MemoryRegion {
    d.staging ??= d.pd.registerMemory(this.#staging!, Access.LOCAL_WRITE | Access.MW_BIND);
    return d.staging;
  }

  /** Registered memory for zero-copy IO, registered lazily on each device used. */
  allocBuffer(size: number): Buffer {
    const mem = allocate(size);
    this.#userBufs.set(mem, new Map());
    return Buffer.from(mem, 0, size);
  }

  /** The MR covering `view` on `dev`, when view lies in an allocBuffer() buffer. */
  #userMr(view: Uint8Array, devName: string, dev: DevState): MemoryRegion | undefined {
    const regs = this.#userBufs.get(view.buffer as ArrayBuffer);
    if (!regs) return undefined;
    let mr = regs.get(devName);
    if (!mr) {
      mr = dev.pd.registerMemory(view.buffer as ArrayBuffer, Access.LOCAL_WRITE | Access.MW_BIND);
      regs.set(devName, mr);
    }
    return mr;
  }

  /** Puts the request into the chunk's staging slot (once: a failover posts it again as is). */
  stage(io: IoRequest): void {
    const base = io.chunk * this.#chunkSize;
    const st = this.#stagingBuf;
    io.zeroCopy = this.#userBufs.has(io.data.buffer as ArrayBuffer);
    if (io.kind === 'write') {
      // zero-copy: [header | trailer] at the slot start, sent after the user's data
      const hdrAt = io.zeroCopy ? base : base + io.data.length;
      if (!io.zeroCopy) st.set(io.data, base);
      st.set(io.header, hdrAt);
      P.writeWriteTrailer(st, hdrAt + io.header.length, { hdrLen: io.header.length, dataLen: io.data.length, seq: BigInt(io.seq) });
    } else {
      const reqAt = base + this.#chunkSize - io.header.length - P.READ_TRAILER_SIZE;
      st.set(io.header, reqAt);
      // the trailer (with the window's rkey) is written when posted
    }
  }

  /**
   * A window for a read's destination on `dev`; throws when none can be
   * had. Type 2: an unbound one from the pool, or a new one. Type 1: a spare
   * allocated ahead (never reused: each is deallocated once its read is
   * answered, which is how the client takes the key away), so the
   * allocation's syscall is off the IO's path; spares are refilled after
   * the current batch of completions.
   */
  takeWindow(dev: DevState): MemoryWindow {
    // a pooled window may have been closed with a dead connection's QP
    let free = dev.freeMws.pop();
    while (free && free.closed) free = dev.freeMws.pop();
    if (dev.windowType === 1) this.#refillSoon(dev);
    return free ?? dev.pd.allocMemoryWindow(dev.windowType);
  }

  #refillSoon(dev: DevState): void {
    if (this.#refilling.has(dev)) return;
    this.#refilling.add(dev);
    setImmediate(() => {
      this.#refilling.delete(dev);
      try {
        while (!this.#closed && dev.freeMws.length < SPARE_WINDOWS) dev.freeMws.push(dev.pd.allocMemoryWindow(1));
      } catch {
        // out of windows: the next read allocates its own, and fails cleanly if it cannot
      }
    });
  }

  /**
   * Posts io's request on `conn` (device `devName`) to the chunk's key (keyAddr, keyRkey):
   * a write's WRITE_WITH_IMM; a read's window bind over its destination
   * (with `mw`) and its WRITE_WITH_IMM, unsignaled: the IO completes on its
   * answer, which can only come after the server got the request (so the
   * NIC is done reading it), and a bind ahead of it on the send queue took
   * effect before (RTRS does the same). Through Conn.postSoon: the
   * requests started in one microtask checkpoint (the IOs a batch of
   * answers lets start) go out in one native call.
   */
  postRequest(io: IoRequest, conn: Conn, devName: string, dev: DevState, keyAddr: bigint, keyRkey: number, p: P.SessionParams, mw: MemoryWindow | undefined): void {
    const c = io.chunk;
    const base = c * p.chunkSize;
    const staged = this.staged(dev);
    if (io.kind === 'write') {
      const dataLen = io.data.length;
      const hdrLen = io.header.length;
      let sge;
      if (io.zeroCopy) {
        const mr = this.#userMr(io.data, devName, dev)!;
        sge = dataLen ? [mr.sge(io.data.byteOffset, dataLen), staged.sge(base, hdrLen + P.WRITE_TRAILER_SIZE)] : [staged.sge(base, hdrLen + P.WRITE_TRAILER_SIZE)];
      } else {
        sge = [staged.sge(base, dataLen + hdrLen + P.WRITE_TRAILER_SIZE)];
      }
      conn.postSoon([{
        opcode: 'RDMA_WRITE_WITH_IMM', wrId: wrId(WrKind.SEND, c), sge, remoteAddr: keyAddr, rkey: keyRkey,
        imm: P.encodeRequestImm('write', c, dataLen + hdrLen, p),
      }]);
      return;
    }
    // read: a window over the destination, bound on this path's QP
    const hdrLen = io.header.length;
    const reqAt = p.chunkSize - hdrLen - P.READ_TRAILER_SIZE;
    const wrs: SendWorkRequest[] = [];
    let rkey = 0;
    let addr = 0n;
    if (mw) {
      io.mw = mw;
      io.mwDev = dev;
      const mr = io.zeroCopy ? this.#userMr(io.data, devName, dev)! : staged;
      const at = io.zeroCopy ? mr.addr + io.data.byteOffset : staged.addr + base;
      if (dev.windowType === 1) {
        // type 1 (rxe): ibv_bind_mw posts the bind ahead of the request
        rkey = conn.bindWindow(mw, mr, at, io.len, Access.REMOTE_WRITE, wrId(WrKind.SEND, c));
        if (rkey === 0) return; // the connection failed: the path fails the IO over
      } else {
        // the bind's new key is chosen here (the next key byte), so the request
        // can carry it and both go out in one post (one doorbell)
        const keyByte = (mw.rkey + 1) & 0xff;
        wrs.push({ opcode: 'BIND_MW', wrId: wrId(WrKind.SEND, c), bind: { mw, mr, addr: at, length: io.len, access: Access.REMOTE_WRITE, keyByte } });
        rkey = ((mw.rkey & 0xffffff00) | keyByte) >>> 0;
      }
      addr = BigInt(at);
    }
    P.writeReadTrailer(this.#stagingBuf, base + reqAt + hdrLen, { hdrLen, len: io.len, seq: BigInt(io.seq), addr, rkey });
    wrs.push({
      opcode: 'RDMA_WRITE_WITH_IMM', wrId: wrId(WrKind.SEND, c), sge: [staged.sge(base + reqAt, hdrLen + P.READ_TRAILER_SIZE)],
      remoteAddr: keyAddr + BigInt(reqAt), rkey: keyRkey, imm: P.encodeRequestImm('read', c, reqAt + hdrLen, p),
    });
    conn.postSoon(wrs);
  }

  /** A staged read's data, from the chunk's slot into the caller's `into`. */
  copyRead(io: IoRequest, length: number): void {
    const base = io.chunk * this.#chunkSize;
    io.data.set(this.#stagingBuf.subarray(base, base + length));
  }

  /** Deregisters the caller's buffers, closes the PDs and devices. */
  close(): void {
    this.#closed = true;
    for (const d of this.#devs.values()) for (const mw of d.freeMws.splice(0)) mw.close();
    for (const regs of this.#userBufs.values()) for (const mr of regs.values()) mr.close();
    this.#userBufs.clear();
    for (const d of this.#devs.values()) d.pd.close();
    this.#devs.clear();
    this.devices.close();
  }
}
