/**
 * The transport's wire format, version 1.0: encoders and decoders for every
 * structure in docs/protocol.md (section numbers below refer to it).
 *
 * Decoders take the received bytes exactly as long as the completion's
 * byte_len (or the CM private data) and throw nothing but ProtocolError.
 * Encoders throw RangeError/TypeError for values the protocol cannot carry
 * (programmer errors). Integers are little-endian; u64 values are bigints.
 */
import { randomUUID } from 'crypto';

// ---------------------------------------------------------------- constants

export const MAGIC = 0x524e; // bytes 4E 52 = "NR"
export const VERSION_MAJOR = 1;
export const VERSION_MINOR = 1;
export const VERSION = (VERSION_MAJOR << 8) | VERSION_MINOR;

export const MAX_PATHS = 128;
export const MIN_QUEUE_DEPTH = 1;
export const MAX_QUEUE_DEPTH = 65535;
export const MIN_CHUNK_SIZE = 4096;
export const MAX_CHUNK_SIZE = 2 ** 28;
export const IMM_TYPE_BITS = 4;
export const IMM_PAYLOAD_BITS = 28;
export const IMM_PAYLOAD_MASK = 2 ** IMM_PAYLOAD_BITS - 1;
export const MAX_HEADER_SIZE = 32768;
export const MAX_STATUS = 4095;
export const WRITE_TRAILER_SIZE = 16;
export const READ_TRAILER_SIZE = 32;
export const CTRL_MSG_SIZE = 4096;
export const MSG_HEADER_SIZE = 8;
export const IO_RSP_FIXED_SIZE = 32;
export const RSP_KEY_SIZE = 8;
export const INFO_REQ_FIXED_SIZE = 16;
export const MAX_NAME_LEN = 64;
export const INFO_RSP_FIXED_SIZE = 24;
export const INFO_DESC_SIZE = 16;
export const MAX_INFO_DESCS = Math.floor((CTRL_MSG_SIZE - INFO_RSP_FIXED_SIZE) / INFO_DESC_SIZE); // 254
export const RESUME_SIZE = 24;
export const SESSION_CLOSE_SIZE = MSG_HEADER_SIZE;
export const CONNECT_REQUEST_SIZE = 56;
export const ACCEPT_SIZE = 56;
export const REJECT_SIZE = 16;
/** Receives posted per path beyond queueDepth (info, resume, heartbeats). */
export const RECV_SLACK = 8;

export const DEFAULT_QUEUE_DEPTH = 512;
export const DEFAULT_CHUNK_SIZE = 128 * 1024;
export const DEFAULT_MAX_HEADER_SIZE = 4096;
export const DEFAULT_HB_INTERVAL_MS = 5000;
export const DEFAULT_HB_MISSED_MAX = 5;
export const MIN_HB_INTERVAL_MS = 100;
export const MAX_HB_INTERVAL_MS = 600000;
export const MAX_HB_MISSED = 255;

/** Connect request flags (§3.1). */
export const CONN_FLAG_NEW_SESSION = 1 << 0;
/**
 * 1.1: the client takes its read windows away itself (type 1 windows, which
 * SEND_WITH_INV cannot invalidate): the server answers reads with SEND (§7.4).
 */
export const CONN_FLAG_LOCAL_READ_INVALIDATE = 1 << 1;
/** 1.1: bytes of client credentials the connect request carries (§3.1). */
export const MAX_CREDENTIALS_SIZE = 23;
/** Accept flags (§3.2). */
export const ACCEPT_FLAG_STRICT = 1 << 0;
export const ACCEPT_FLAG_SESSION_CREATED = 1 << 1;
/** Reject flags (§3.3). */
export const REJECT_FLAG_RETRY = 1 << 0;

/** SEND message types (§4). */
export const MsgType = {
  INFO_REQ: 1,
  INFO_RSP: 2,
  IO_RSP: 3,
  RESUME_REQ: 4,
  RESUME_RSP: 5,
  SESSION_CLOSE: 6,
} as const;
export const INFO_RSP_FLAG_LAST = 1 << 0;
export const IO_RSP_FLAG_REPLAY = 1 << 0;
export const IO_RSP_FLAG_READ = 1 << 1;

/** Immediate data types (§5). */
export const ImmType = {
  WRITE_REQ: 0x0,
  READ_REQ: 0x1,
  IO_RSP: 0x2,
  HB: 0x8,
  HB_ACK: 0x9,
} as const;

/** Trailer types (§6). */
export const TRAILER_WRITE = 1;
export const TRAILER_READ = 2;

/** Reject reasons (§3.3): Linux errno values. */
export const RejectReason = {
  EPROTO: 71,
  EPROTONOSUPPORT: 93,
  ESTALE: 116,
  EINVAL: 22,
  EBUSY: 16,
  ENOMEM: 12,
  EUSERS: 87,
  ESHUTDOWN: 108,
  EACCES: 13,
  EOPNOTSUPP: 95,
} as const;
export type RejectCode = keyof typeof RejectReason;
const REJECT_CODE_BY_ERRNO = new Map<number, RejectCode>(
  Object.entries(RejectReason).map(([k, v]) => [v, k as RejectCode]),
);
/** Errno value of EIO: the status of an IO whose handler threw (§7.2). */
export const STATUS_EIO = 5;

const U64_LIMIT = 1n << 64n;

// ------------------------------------------------------------------- errors

export type ProtocolErrorCode = 'EPROTO' | 'EPROTONOSUPPORT';

/**
 * A peer sent something this protocol forbids. `reason` is a short
 * machine-readable tag ('bad-magic', 'short', 'reserved-nonzero', ...) used in
 * the "protocol violation: <reason>" log line; `message` says what and why.
 */
export class ProtocolError extends Error {
  readonly code: ProtocolErrorCode;
  readonly reason: string;
  /** what was wrong, without the code and reason prefix */
  readonly detail: string;

  constructor(reason: string, detail: string, code: ProtocolErrorCode = 'EPROTO') {
    super(`${code}: ${reason}: ${detail}`);
    this.name = 'ProtocolError';
    this.code = code;
    this.reason = reason;
    this.detail = detail;
  }
}

function fail(reason: string, message: string, code?: ProtocolErrorCode): never {
  throw new ProtocolError(reason, message, code);
}

// ------------------------------------------------------------ byte helpers

function view(buf: unknown, what: string): DataView {
  if (!(buf instanceof Uint8Array)) fail('not-bytes', `${what}: expected a Uint8Array, got ${typeof buf}`);
  return new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
}

function needLength(dv: DataView, min: number, what: string): void {
  if (dv.byteLength < min) fail('short', `${what}: ${dv.byteLength} bytes, need at least ${min}`);
}

function exactLength(dv: DataView, len: number, what: string): void {
  if (dv.byteLength !== len) fail('bad-length', `${what}: ${dv.byteLength} bytes, expected ${len}`);
}

function checkZero(dv: DataView, from: number, to: number, what: string): void {
  for (let i = from; i < to; i++) {
    if (dv.getUint8(i) !== 0) fail('reserved-nonzero', `${what}: reserved byte ${i} is ${dv.getUint8(i)}`);
  }
}

function checkFlags(flags: number, known: number, what: string): void {
  if ((flags & ~known) !== 0) fail('reserved-flags', `${what}: unknown flag bits 0x${(flags & ~known).toString(16)}`);
}

function isUint(v: unknown, max: number): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= max;
}

function argUint(v: unknown, max: number, name: string, min = 0): number {
  if (typeof v !== 'number' || !Number.isInteger(v)) throw new TypeError(`${name} must be an integer`);
  if (v < min || v > max) throw new RangeError(`${name} must be in ${min}..${max} (got ${v})`);
  return v;
}

function argU64(v: unknown, name: string, min = 0n): bigint {
  if (typeof v !== 'bigint') throw new TypeError(`${name} must be a bigint`);
  if (v < min || v >= U64_LIMIT) throw new RangeError(`${name} must be in ${min}..2^64-1 (got ${v})`);
  return v;
}

function argBytes(v: unknown, max: number, name: string): Uint8Array {
  if (!(v instanceof Uint8Array)) throw new TypeError(`${name} must be a Uint8Array`);
  if (v.byteLength > max) throw new RangeError(`${name} is ${v.byteLength} bytes, the limit is ${max}`);
  return v;
}

function writable(target: Uint8Array, offset: number, len: number, what: string): DataView {
  if (!(target instanceof Uint8Array)) throw new TypeError(`${what}: target must be a Uint8Array`);
  if (!Number.isInteger(offset) || offset < 0 || offset + len > target.byteLength) {
    throw new RangeError(`${what}: ${len} bytes at offset ${offset} do not fit a ${target.byteLength}-byte target`);
  }
  const dv = new DataView(target.buffer, target.byteOffset + offset, len);
  for (let i = 0; i < len; i++) dv.setUint8(i, 0);
  return dv;
}

// ---------------------------------------------------------------- versions

export function versionMajor(v: number): number {
  return v >>> 8;
}
export function versionMinor(v: number): number {
  return v & 0xff;
}
export function formatVersion(v: number): string {
  return `${versionMajor(v)}.${versionMinor(v)}`;
}

/** Checks a peer version (§3): same major; returns whether reserved bytes are checked. */
function checkPeerVersion(version: number, what: string): boolean {
  if (versionMajor(version) !== VERSION_MAJOR) {
    fail(
      'version',
      `${what}: peer speaks ${formatVersion(version)}, this side ${formatVersion(VERSION)}`,
      'EPROTONOSUPPORT',
    );
  }
  return versionMinor(version) <= VERSION_MINOR;
}

// ------------------------------------------------------------------- UUIDs

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
export const NIL_UUID = '00000000-0000-0000-0000-000000000000';

export function randomSessionId(): string {
  return randomUUID();
}

export function isSessionId(v: unknown): v is string {
  return typeof v === 'string' && UUID_RE.test(v) && v !== NIL_UUID;
}

function writeUuid(dv: DataView, off: number, id: string): void {
  const hex = id.replace(/-/g, '');
  for (let i = 0; i < 16; i++) dv.setUint8(off + i, parseInt(hex.slice(2 * i, 2 * i + 2), 16));
}

function readUuid(dv: DataView, off: number): string {
  let hex = '';
  for (let i = 0; i < 16; i++) hex += dv.getUint8(off + i).toString(16).padStart(2, '0');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

// ------------------------------------------------------- session parameters

/** The pool parameters a server announces in its accept (§3.2). */
export interface SessionParams {
  queueDepth: number;
  chunkSize: number;
  maxHeaderSize: number;
  strict: boolean;
}

/** Bits of the chunk id in a request imm: 0 for queueDepth 1, else ceil(log2(qd)). */
export function chunkBits(queueDepth: number): number {
  return queueDepth <= 1 ? 0 : 32 - Math.clz32(queueDepth - 1);
}

export function maxIoSize(chunkSize: number, maxHeaderSize: number): number {
  return chunkSize - maxHeaderSize - READ_TRAILER_SIZE;
}

function isPow2(n: number): boolean {
  return Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;
}

/** Why these pool parameters are not allowed, or undefined when they are. */
export function sessionParamsProblem(p: { queueDepth: number; chunkSize: number; maxHeaderSize: number }): string | undefined {
  if (!isUint(p.queueDepth, MAX_QUEUE_DEPTH) || p.queueDepth < MIN_QUEUE_DEPTH) {
    return `queueDepth ${p.queueDepth} is outside ${MIN_QUEUE_DEPTH}..${MAX_QUEUE_DEPTH}`;
  }
  if (!isUint(p.chunkSize, MAX_CHUNK_SIZE) || p.chunkSize < MIN_CHUNK_SIZE || !isPow2(p.chunkSize)) {
    return `chunkSize ${p.chunkSize} is not a power of 2 in ${MIN_CHUNK_SIZE}..${MAX_CHUNK_SIZE}`;
  }
  const log2Chunk = 31 - Math.clz32(p.chunkSize);
  if (chunkBits(p.queueDepth) + log2Chunk > IMM_PAYLOAD_BITS) {
    return `queueDepth ${p.queueDepth} x chunkSize ${p.chunkSize} needs ${chunkBits(p.queueDepth)} + ${log2Chunk} imm bits, more than ${IMM_PAYLOAD_BITS}`;
  }
  if (!isUint(p.maxHeaderSize, MAX_HEADER_SIZE)) {
    return `maxHeaderSize ${p.maxHeaderSize} is outside 0..${MAX_HEADER_SIZE}`;
  }
  if (maxIoSize(p.chunkSize, p.maxHeaderSize) < 1) {
    return `chunkSize ${p.chunkSize} leaves no room for data after maxHeaderSize ${p.maxHeaderSize} and the read trailer`;
  }
  return undefined;
}

/** Size of every receive buffer the client posts (§2). */
export function clientRecvSize(p: { maxHeaderSize: number }, pathCount: number): number {
  return Math.max(CTRL_MSG_SIZE, IO_RSP_FIXED_SIZE + RSP_KEY_SIZE * pathCount + p.maxHeaderSize);
}

// ---------------------------------------------------- connect private data

export interface ConnectRequest {
  version: number;
  newSession: boolean;
  pathIndex: number;
  pathCount: number;
  reconnectCount: number;
  sessionId: string;
  /** 1.1: the client invalidates its read windows itself (answer reads with SEND) */
  localReadInvalidate?: boolean;
  /** 1.1: what the client offers the server's authorize hook (at most MAX_CREDENTIALS_SIZE bytes) */
  credentials?: Uint8Array;
}

/** Client credentials as the connect request can carry them (§3.1): a Uint8Array of at most MAX_CREDENTIALS_SIZE bytes. */
export function checkCredentials(c: unknown): Uint8Array {
  if (!(c instanceof Uint8Array)) throw new TypeError('credentials must be a Uint8Array');
  if (c.length > MAX_CREDENTIALS_SIZE) {
    throw new RangeError(`credentials must be at most ${MAX_CREDENTIALS_SIZE} bytes (they travel in the CM connect request), got ${c.length}`);
  }
  return c;
}

export function encodeConnectRequest(req: Omit<ConnectRequest, 'version'> & { version?: number }): Buffer {
  const version = argUint(req.version ?? VERSION, 0xffff, 'version');
  const pathCount = argUint(req.pathCount, MAX_PATHS, 'pathCount', 1);
  const pathIndex = argUint(req.pathIndex, pathCount - 1, 'pathIndex');
  const reconnectCount = argUint(req.reconnectCount, 0xffffffff, 'reconnectCount');
  if (!isSessionId(req.sessionId)) throw new TypeError(`sessionId must be a lowercase non-nil UUID (got ${String(req.sessionId)})`);
  const cred = req.credentials === undefined ? new Uint8Array(0) : checkCredentials(req.credentials);
  const buf = Buffer.alloc(CONNECT_REQUEST_SIZE);
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  dv.setUint16(2, MAGIC, true);
  dv.setUint16(4, version, true);
  dv.setUint16(6, (req.newSession ? CONN_FLAG_NEW_SESSION : 0) | (req.localReadInvalidate ? CONN_FLAG_LOCAL_READ_INVALIDATE : 0), true);
  dv.setUint8(32, cred.length);
  buf.set(cred, 33);
  dv.setUint16(8, pathIndex, true);
  dv.setUint16(10, pathCount, true);
  dv.setUint32(12, reconnectCount, true);
  writeUuid(dv, 16, req.sessionId);
  return buf;
}

export function decodeConnectRequest(data: Uint8Array): ConnectRequest {
  const what = 'connect request';
  const dv = view(data, what);
  needLength(dv, CONNECT_REQUEST_SIZE, what);
  if (dv.getUint16(2, true) !== MAGIC) fail('bad-magic', `${what}: magic 0x${dv.getUint16(2, true).toString(16)}`);
  const version = dv.getUint16(4, true);
  const checkReserved = checkPeerVersion(version, what);
  if (dv.getUint8(0) !== 0 || dv.getUint8(1) !== 0) fail('reserved-nonzero', `${what}: cma/ip version bytes must be 0`);
  const flags = dv.getUint16(6, true);
  // 1.0 peers send zeros at 32..55, which read as "no credentials"
  const credLen = dv.getUint8(32);
  if (credLen > MAX_CREDENTIALS_SIZE) fail('credentials', `${what}: credentials length ${credLen} > ${MAX_CREDENTIALS_SIZE}`);
  if (checkReserved) {
    checkFlags(flags, CONN_FLAG_NEW_SESSION | CONN_FLAG_LOCAL_READ_INVALIDATE, what);
    checkZero(dv, 33 + credLen, CONNECT_REQUEST_SIZE, what);
  }
  const pathIndex = dv.getUint16(8, true);
  const pathCount = dv.getUint16(10, true);
  if (pathCount < 1 || pathCount > MAX_PATHS) fail('path-count', `${what}: pathCount ${pathCount} outside 1..${MAX_PATHS}`);
  if (pathIndex >= pathCount) fail('path-index', `${what}: pathIndex ${pathIndex} >= pathCount ${pathCount}`);
  const sessionId = readUuid(dv, 16);
  if (sessionId === NIL_UUID) fail('session-id', `${what}: nil session UUID`);
  return {
    version,
    newSession: (flags & CONN_FLAG_NEW_SESSION) !== 0,
    pathIndex,
    pathCount,
    reconnectCount: dv.getUint32(12, true),
    sessionId,
    localReadInvalidate: (flags & CONN_FLAG_LOCAL_READ_INVALIDATE) !== 0,
    credentials: Buffer.from(data.subarray(33, 33 + credLen)), // a copy: CM private data is reused
  };
}

// ----------------------------------------------------- accept private data

export interface AcceptData extends SessionParams {
  version: number;
  sessionCreated: boolean;
  maxIoSize: number;
  hbIntervalMs: number;
  hbMissedMax: number;
}

export function encodeAccept(a: Omit<AcceptData, 'version' | 'maxIoSize'> & { version?: number }): Buffer {
  const version = argUint(a.version ?? VERSION, 0xffff, 'version');
  const problem = sessionParamsProblem(a);
  if (problem) throw new RangeError(problem);
  const hbIntervalMs = argUint(a.hbIntervalMs, MAX_HB_INTERVAL_MS, 'hbIntervalMs', MIN_HB_INTERVAL_MS);
  const hbMissedMax = argUint(a.hbMissedMax, MAX_HB_MISSED, 'hbMissedMax', 1);
  const buf = Buffer.alloc(ACCEPT_SIZE);
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  dv.setUint16(0, MAGIC, true);
  dv.setUint16(2, version, true);
  dv.setUint32(4, (a.strict ? ACCEPT_FLAG_STRICT : 0) | (a.sessionCreated ? ACCEPT_FLAG_SESSION_CREATED : 0), true);
  dv.setUint16(8, a.queueDepth, true);
  dv.setUint32(12, a.chunkSize, true);
  dv.setUint32(16, a.maxHeaderSize, true);
  dv.setUint32(20, maxIoSize(a.chunkSize, a.maxHeaderSize), true);
  dv.setUint32(24, hbIntervalMs, true);
  dv.setUint16(28, hbMissedMax, true);
  return buf;
}

export function decodeAccept(data: Uint8Array): AcceptData {
  const what = 'accept';
  const dv = view(data, what);
  needLength(dv, ACCEPT_SIZE, what);
  if (dv.getUint16(0, true) !== MAGIC) fail('bad-magic', `${what}: magic 0x${dv.getUint16(0, true).toString(16)}`);
  const version = dv.getUint16(2, true);
  const checkReserved = checkPeerVersion(version, what);
  const flags = dv.getUint32(4, true);
  if (checkReserved) {
    checkFlags(flags, ACCEPT_FLAG_STRICT | ACCEPT_FLAG_SESSION_CREATED, what);
    checkZero(dv, 10, 12, what);
    checkZero(dv, 30, ACCEPT_SIZE, what);
  }
  const params = {
    queueDepth: dv.getUint16(8, true),
    chunkSize: dv.getUint32(12, true),
    maxHeaderSize: dv.getUint32(16, true),
  };
  const problem = sessionParamsProblem(params);
  if (problem) fail('pool-params', `${what}: ${problem}`);
  const io = dv.getUint32(20, true);
  if (io !== maxIoSize(params.chunkSize, params.maxHeaderSize)) {
    fail('max-io-size', `${what}: maxIoSize ${io} != chunkSize - maxHeaderSize - ${READ_TRAILER_SIZE}`);
  }
  const hbIntervalMs = dv.getUint32(24, true);
  if (hbIntervalMs < MIN_HB_INTERVAL_MS || hbIntervalMs > MAX_HB_INTERVAL_MS) {
    fail('hb-interval', `${what}: hbIntervalMs ${hbIntervalMs} outside ${MIN_HB_INTERVAL_MS}..${MAX_HB_INTERVAL_MS}`);
  }
  const hbMissedMax = dv.getUint16(28, true);
  if (hbMissedMax < 1 || hbMissedMax > MAX_HB_MISSED) fail('hb-missed', `${what}: hbMissedMax ${hbMissedMax} outside 1..${MAX_HB_MISSED}`);
  return {
    version,
    strict: (flags & ACCEPT_FLAG_STRICT) !== 0,
    sessionCreated: (flags & ACCEPT_FLAG_SESSION_CREATED) !== 0,
    ...params,
    maxIoSize: io,
    hbIntervalMs,
    hbMissedMax,
  };
}

// ----------------------------------------------------- reject private data

export interface RejectData {
  version: number;
  /** errno value */
  reason: number;
  code: RejectCode;
  retry: boolean;
  detail: number;
}

export function encodeReject(r: { code: RejectCode; retry?: boolean; detail?: number; version?: number }): Buffer {
  const reason = RejectReason[r.code];
  if (reason === undefined) throw new RangeError(`unknown reject code ${String(r.code)}`);
  const buf = Buffer.alloc(REJECT_SIZE);
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  dv.setUint16(0, MAGIC, true);
  dv.setUint16(2, argUint(r.version ?? VERSION, 0xffff, 'version'), true);
  dv.setUint16(4, reason, true);
  dv.setUint16(6, r.retry ? REJECT_FLAG_RETRY : 0, true);
  dv.setUint32(8, argUint(r.detail ?? 0, 0xffffffff, 'detail'), true);
  return buf;
}

/**
 * Decodes our reject private data. Throws ProtocolError when the bytes are
 * not ours (another consumer, a CM-generated reject): report ECONNREFUSED.
 */
export function decodeReject(data: Uint8Array): RejectData {
  const what = 'reject';
  const dv = view(data, what);
  needLength(dv, REJECT_SIZE, what);
  if (dv.getUint16(0, true) !== MAGIC) fail('bad-magic', `${what}: magic 0x${dv.getUint16(0, true).toString(16)}`);
  const version = dv.getUint16(2, true);
  // a reject from another major version is still readable: the layout of
  // magic/version/reason is fixed across versions.
  const sameMajor = versionMajor(version) === VERSION_MAJOR;
  const checkReserved = sameMajor && versionMinor(version) <= VERSION_MINOR;
  const flags = dv.getUint16(6, true);
  if (checkReserved) {
    checkFlags(flags, REJECT_FLAG_RETRY, what);
    checkZero(dv, 12, REJECT_SIZE, what);
  }
  const reason = dv.getUint16(4, true);
  const code = REJECT_CODE_BY_ERRNO.get(reason);
  if (code === undefined) fail('reject-reason', `${what}: unknown reason ${reason}`);
  return { version, reason, code, retry: (flags & REJECT_FLAG_RETRY) !== 0, detail: dv.getUint32(8, true) };
}

// ------------------------------------------------------------- immediates

export type Imm =
  | { type: 'write-req'; chunk: number; trailerOffset: number }
  | { type: 'read-req'; chunk: number; trailerOffset: number }
  | { type: 'io-rsp'; chunk: number; status: number }
  | { type: 'hb'; id: number }
  | { type: 'hb-ack'; id: number };

function immWord(type: number, payload: number): number {
  return ((type << IMM_PAYLOAD_BITS) | payload) >>> 0;
}

/** The request imm (§5): chunk id above, trailer offset below. */
export function encodeRequestImm(
  kind: 'write' | 'read',
  chunk: number,
  trailerOffset: number,
  p: { queueDepth: number; chunkSize: number },
): number {
  argUint(chunk, p.queueDepth - 1, 'chunk');
  const trailer = kind === 'write' ? WRITE_TRAILER_SIZE : READ_TRAILER_SIZE;
  argUint(trailerOffset, p.chunkSize - trailer, 'trailerOffset');
  const offBits = IMM_PAYLOAD_BITS - chunkBits(p.queueDepth);
  const payload = chunk * 2 ** offBits + trailerOffset;
  return immWord(kind === 'write' ? ImmType.WRITE_REQ : ImmType.READ_REQ, payload);
}

export function encodeIoRspImm(chunk: number, status: number): number {
  argUint(chunk, MAX_QUEUE_DEPTH - 1, 'chunk');
  argUint(status, MAX_STATUS, 'status');
  return immWord(ImmType.IO_RSP, (status << 16) | chunk);
}

export function encodeHbImm(id: number, ack = false): number {
  argUint(id, IMM_PAYLOAD_MASK, 'heartbeat id');
  return immWord(ack ? ImmType.HB_ACK : ImmType.HB, id);
}

/** What the receiving side expects; used to reject imm types that flow the wrong way. */
export type Side = 'server' | 'client';

/**
 * Decodes and checks an imm received with `byteLen` bytes of RDMA WRITE
 * data (§5). `side` is the receiver. For READ_REQ the header length is only
 * known from byteLen, which decodeReadTrailer checks.
 */
export function decodeImm(imm: number, byteLen: number, side: Side, p: { queueDepth: number; chunkSize: number }): Imm {
  if (!isUint(imm, 0xffffffff)) fail('imm', `imm ${String(imm)} is not a u32`);
  if (!isUint(byteLen, 0xffffffff)) fail('byte-len', `byte_len ${String(byteLen)} is not a u32`);
  const type = imm >>> IMM_PAYLOAD_BITS;
  const payload = imm & IMM_PAYLOAD_MASK;
  const zeroLength = (name: string): void => {
    if (byteLen !== 0) fail('byte-len', `${name} imm with ${byteLen} bytes of data`);
  };
  switch (type) {
    case ImmType.WRITE_REQ:
    case ImmType.READ_REQ: {
      const write = type === ImmType.WRITE_REQ;
      const name = write ? 'WRITE_REQ' : 'READ_REQ';
      if (side !== 'server') fail('imm-direction', `${name} imm received by the client`);
      const offBits = IMM_PAYLOAD_BITS - chunkBits(p.queueDepth);
      const chunk = Math.floor(payload / 2 ** offBits);
      const trailerOffset = payload % 2 ** offBits;
      if (chunk >= p.queueDepth) fail('chunk', `${name} for chunk ${chunk}, queueDepth ${p.queueDepth}`);
      const trailer = write ? WRITE_TRAILER_SIZE : READ_TRAILER_SIZE;
      if (trailerOffset + trailer > p.chunkSize) {
        fail('trailer-offset', `${name} trailer at ${trailerOffset} + ${trailer} exceeds chunkSize ${p.chunkSize}`);
      }
      if (write && byteLen !== trailerOffset + WRITE_TRAILER_SIZE) {
        fail('byte-len', `WRITE_REQ wrote ${byteLen} bytes, trailer offset ${trailerOffset} implies ${trailerOffset + WRITE_TRAILER_SIZE}`);
      }
      if (!write && (byteLen < READ_TRAILER_SIZE || byteLen > trailerOffset + READ_TRAILER_SIZE)) {
        fail('byte-len', `READ_REQ wrote ${byteLen} bytes, trailer offset ${trailerOffset}`);
      }
      return { type: write ? 'write-req' : 'read-req', chunk, trailerOffset };
    }
    case ImmType.IO_RSP: {
      if (side !== 'client') fail('imm-direction', 'IO_RSP imm received by the server');
      zeroLength('IO_RSP');
      const chunk = payload & 0xffff;
      if (chunk >= p.queueDepth) fail('chunk', `IO_RSP for chunk ${chunk}, queueDepth ${p.queueDepth}`);
      return { type: 'io-rsp', chunk, status: payload >>> 16 };
    }
    case ImmType.HB:
      zeroLength('HB');
      return { type: 'hb', id: payload };
    case ImmType.HB_ACK:
      zeroLength('HB_ACK');
      return { type: 'hb-ack', id: payload };
    default:
      return fail('imm-type', `unknown imm type 0x${type.toString(16)}`);
  }
}

// ----------------------------------------------------------------- trailers

export interface WriteTrailer {
  hdrLen: number;
  dataLen: number;
  seq: bigint;
}

export interface ReadTrailer {
  hdrLen: number;
  len: number;
  seq: bigint;
  addr: bigint;
  rkey: number;
}

/** Writes the 16-byte write trailer at `offset` of `target` (a chunk staging buffer). */
export function writeWriteTrailer(target: Uint8Array, offset: number, t: WriteTrailer): void {
  const dv = writable(target, offset, WRITE_TRAILER_SIZE, 'write trailer');
  dv.setUint8(0, TRAILER_WRITE);
  dv.setUint16(2, argUint(t.hdrLen, MAX_HEADER_SIZE, 'hdrLen'), true);
  dv.setUint32(4, argUint(t.dataLen, MAX_CHUNK_SIZE, 'dataLen'), true);
  dv.setBigUint64(8, argU64(t.seq, 'seq', 1n), true);
}

export function encodeWriteTrailer(t: WriteTrailer): Buffer {
  const buf = Buffer.alloc(WRITE_TRAILER_SIZE);
  writeWriteTrailer(buf, 0, t);
  return buf;
}

/**
 * Decodes a write trailer (the 16 bytes at trailerOffset of the chunk) and
 * checks it against the imm's trailerOffset and the session limits (§6.1).
 */
export function decodeWriteTrailer(
  bytes: Uint8Array,
  trailerOffset: number,
  p: { chunkSize: number; maxHeaderSize: number },
): WriteTrailer {
  const what = 'write trailer';
  const dv = view(bytes, what);
  exactLength(dv, WRITE_TRAILER_SIZE, what);
  if (dv.getUint8(0) !== TRAILER_WRITE) fail('trailer-type', `${what}: type ${dv.getUint8(0)}, expected ${TRAILER_WRITE}`);
  checkZero(dv, 1, 2, what);
  const hdrLen = dv.getUint16(2, true);
  const dataLen = dv.getUint32(4, true);
  const seq = dv.getBigUint64(8, true);
  if (hdrLen > p.maxHeaderSize) fail('hdr-len', `${what}: hdrLen ${hdrLen} > maxHeaderSize ${p.maxHeaderSize}`);
  const maxIo = maxIoSize(p.chunkSize, p.maxHeaderSize);
  if (dataLen > maxIo) fail('data-len', `${what}: dataLen ${dataLen} > maxIoSize ${maxIo}`);
  if (hdrLen + dataLen !== trailerOffset) {
    fail('trailer-offset', `${what}: hdrLen ${hdrLen} + dataLen ${dataLen} != trailer offset ${trailerOffset}`);
  }
  if (seq === 0n) fail('seq', `${what}: seq 0`);
  return { hdrLen, dataLen, seq };
}

export function writeReadTrailer(target: Uint8Array, offset: number, t: ReadTrailer): void {
  const dv = writable(target, offset, READ_TRAILER_SIZE, 'read trailer');
  const len = argUint(t.len, MAX_CHUNK_SIZE, 'len');
  const addr = argU64(t.addr, 'addr');
  if (addr + BigInt(len) > U64_LIMIT) throw new RangeError('addr + len exceeds 2^64');
  const rkey = argUint(t.rkey, 0xffffffff, 'rkey');
  if ((len === 0) !== (rkey === 0)) throw new RangeError('rkey must be nonzero exactly when len > 0');
  dv.setUint8(0, TRAILER_READ);
  dv.setUint16(2, argUint(t.hdrLen, MAX_HEADER_SIZE, 'hdrLen'), true);
  dv.setUint32(4, len, true);
  dv.setBigUint64(8, argU64(t.seq, 'seq', 1n), true);
  dv.setBigUint64(16, addr, true);
  dv.setUint32(24, rkey, true);
}

export function encodeReadTrailer(t: ReadTrailer): Buffer {
  const buf = Buffer.alloc(READ_TRAILER_SIZE);
  writeReadTrailer(buf, 0, t);
  return buf;
}

/**
 * Decodes a read trailer (the 32 bytes at trailerOffset) of a READ_REQ that
 * wrote byteLen bytes, so hdrLen must be byteLen - 32 (§6.2).
 */
export function decodeReadTrailer(
  bytes: Uint8Array,
  trailerOffset: number,
  byteLen: number,
  p: { chunkSize: number; maxHeaderSize: number },
): ReadTrailer {
  const what = 'read trailer';
  const dv = view(bytes, what);
  exactLength(dv, READ_TRAILER_SIZE, what);
  if (dv.getUint8(0) !== TRAILER_READ) fail('trailer-type', `${what}: type ${dv.getUint8(0)}, expected ${TRAILER_READ}`);
  checkZero(dv, 1, 2, what);
  checkZero(dv, 28, 32, what);
  const hdrLen = dv.getUint16(2, true);
  const len = dv.getUint32(4, true);
  const seq = dv.getBigUint64(8, true);
  const addr = dv.getBigUint64(16, true);
  const rkey = dv.getUint32(24, true);
  if (hdrLen > p.maxHeaderSize) fail('hdr-len', `${what}: hdrLen ${hdrLen} > maxHeaderSize ${p.maxHeaderSize}`);
  if (hdrLen + READ_TRAILER_SIZE !== byteLen) {
    fail('byte-len', `${what}: hdrLen ${hdrLen} + ${READ_TRAILER_SIZE} != written length ${byteLen}`);
  }
  const maxIo = maxIoSize(p.chunkSize, p.maxHeaderSize);
  if (len > maxIo) fail('data-len', `${what}: len ${len} > maxIoSize ${maxIo}`);
  if (len + hdrLen > trailerOffset) {
    fail('trailer-offset', `${what}: data area ${len} + header ${hdrLen} overlaps the request at ${trailerOffset}`);
  }
  if (seq === 0n) fail('seq', `${what}: seq 0`);
  if (addr + BigInt(len) > U64_LIMIT) fail('addr', `${what}: addr 0x${addr.toString(16)} + len ${len} overflows`);
  if (len > 0 && rkey === 0) fail('rkey', `${what}: rkey 0 for a ${len}-byte read`);
  if (len === 0 && rkey !== 0) fail('rkey', `${what}: rkey 0x${rkey.toString(16)} for an empty read`);
  return { hdrLen, len, seq, addr, rkey };
}

// -------------------------------------------------------- SEND messages (§4)

function writeMsgHeader(dv: DataView, type: number, flags: number, length: number): void {
  dv.setUint16(0, type, true);
  dv.setUint16(2, flags, true);
  dv.setUint32(4, length, true);
}

/** Reads and checks the common 8-byte header; returns [type, flags]. */
function readMsgHeader(dv: DataView, what: string, maxSize: number): [number, number] {
  needLength(dv, MSG_HEADER_SIZE, what);
  if (dv.byteLength > maxSize) fail('too-long', `${what}: ${dv.byteLength} bytes, limit ${maxSize}`);
  const length = dv.getUint32(4, true);
  if (length !== dv.byteLength) fail('bad-length', `${what}: length field ${length} != received ${dv.byteLength}`);
  return [dv.getUint16(0, true), dv.getUint16(2, true)];
}

export interface InfoReq {
  type: 'info-req';
  recvSize: number;
  name: string;
}

export interface InfoDesc {
  addr: bigint;
  rkey: number;
  len: number;
}

export interface InfoRsp {
  type: 'info-rsp';
  last: boolean;
  total: number;
  first: number;
  descs: InfoDesc[];
}

export interface IoRspKey {
  pathIndex: number;
  /** the path's reconnectCount & 0xffff when the key was bound: keys of an older connection are ignored */
  generation: number;
  rkey: number;
}

export interface IoRsp {
  type: 'io-rsp';
  chunk: number;
  status: number;
  seq: bigint;
  dataLen: number;
  read: boolean;
  replay: boolean;
  keys: IoRspKey[];
  /** A view into the received bytes: copy it before the buffer is reposted. */
  header: Uint8Array;
}

export interface ResumeReq {
  type: 'resume-req';
  chunk: number;
  seq: bigint;
}

export interface ResumeRsp {
  type: 'resume-rsp';
  chunk: number;
  rkey: number;
  seq: bigint;
}

export interface SessionClose {
  type: 'session-close';
}

export type ServerInbound = InfoReq | ResumeReq | SessionClose;
export type ClientInbound = InfoRsp | IoRsp | ResumeRsp;

const utf8 = new TextDecoder('utf-8', { fatal: true });
// eslint-disable-next-line no-control-regex
const CONTROL_RE = /[\u0000-\u001f\u007f]/;

export function encodeInfoReq(m: { recvSize: number; name?: string }): Buffer {
  const name = Buffer.from(m.name ?? '', 'utf8');
  if (name.byteLength > MAX_NAME_LEN) throw new RangeError(`name is ${name.byteLength} bytes, limit ${MAX_NAME_LEN}`);
  if (CONTROL_RE.test(m.name ?? '')) throw new RangeError('name must not contain control characters');
  const buf = Buffer.alloc(INFO_REQ_FIXED_SIZE + name.byteLength);
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  writeMsgHeader(dv, MsgType.INFO_REQ, 0, buf.byteLength);
  dv.setUint32(8, argUint(m.recvSize, 0xffffffff, 'recvSize'), true);
  dv.setUint8(12, name.byteLength);
  name.copy(buf, INFO_REQ_FIXED_SIZE);
  return buf;
}

function decodeInfoReqBody(dv: DataView, flags: number, minRecvSize: number): InfoReq {
  const what = 'INFO_REQ';
  checkFlags(flags, 0, what);
  needLength(dv, INFO_REQ_FIXED_SIZE, what);
  checkZero(dv, 13, 16, what);
  const recvSize = dv.getUint32(8, true);
  if (recvSize < minRecvSize) fail('recv-size', `${what}: client receive size ${recvSize} < required ${minRecvSize}`);
  const nameLen = dv.getUint8(12);
  if (nameLen > MAX_NAME_LEN) fail('name', `${what}: name length ${nameLen} > ${MAX_NAME_LEN}`);
  exactLength(dv, INFO_REQ_FIXED_SIZE + nameLen, what);
  let name: string;
  try {
    name = utf8.decode(new Uint8Array(dv.buffer, dv.byteOffset + INFO_REQ_FIXED_SIZE, nameLen));
  } catch {
    return fail('name', `${what}: name is not valid UTF-8`);
  }
  if (CONTROL_RE.test(name)) fail('name', `${what}: name contains control characters`);
  return { type: 'info-req', recvSize, name };
}

/**
 * Encodes the descriptors of one path as INFO_RSP messages of at most
 * MAX_INFO_DESCS descriptors each (§4.2).
 */
export function encodeInfoRsp(descs: readonly InfoDesc[]): Buffer[] {
  if (descs.length < 1 || descs.length > MAX_QUEUE_DEPTH) throw new RangeError(`descriptor count ${descs.length} outside 1..${MAX_QUEUE_DEPTH}`);
  const out: Buffer[] = [];
  for (let first = 0; first < descs.length; first += MAX_INFO_DESCS) {
    const count = Math.min(MAX_INFO_DESCS, descs.length - first);
    const buf = Buffer.alloc(INFO_RSP_FIXED_SIZE + INFO_DESC_SIZE * count);
    const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    const last = first + count === descs.length;
    writeMsgHeader(dv, MsgType.INFO_RSP, last ? INFO_RSP_FLAG_LAST : 0, buf.byteLength);
    dv.setUint32(8, descs.length, true);
    dv.setUint32(12, first, true);
    dv.setUint16(16, count, true);
    for (let i = 0; i < count; i++) {
      const d = descs[first + i];
      const off = INFO_RSP_FIXED_SIZE + i * INFO_DESC_SIZE;
      const addr = argU64(d.addr, 'desc.addr');
      const len = argUint(d.len, 0xffffffff, 'desc.len', 1);
      if (addr + BigInt(len) > U64_LIMIT) throw new RangeError('desc addr + len exceeds 2^64');
      dv.setBigUint64(off, addr, true);
      dv.setUint32(off + 8, argUint(d.rkey, 0xffffffff, 'desc.rkey'), true);
      dv.setUint32(off + 12, len, true);
    }
    out.push(buf);
  }
  return out;
}

function decodeInfoRspBody(dv: DataView, flags: number, p: SessionParams): InfoRsp {
  const what = 'INFO_RSP';
  checkFlags(flags, INFO_RSP_FLAG_LAST, what);
  needLength(dv, INFO_RSP_FIXED_SIZE, what);
  checkZero(dv, 18, 24, what);
  const total = dv.getUint32(8, true);
  const first = dv.getUint32(12, true);
  const count = dv.getUint16(16, true);
  if (total < 1 || total > p.queueDepth) fail('info-total', `${what}: total ${total} outside 1..${p.queueDepth}`);
  if (p.strict && total !== p.queueDepth) fail('info-total', `${what}: strict mode needs ${p.queueDepth} descriptors, got total ${total}`);
  if (count < 1 || count > MAX_INFO_DESCS) fail('info-count', `${what}: count ${count} outside 1..${MAX_INFO_DESCS}`);
  if (first + count > total) fail('info-count', `${what}: descriptors ${first}..${first + count} exceed total ${total}`);
  exactLength(dv, INFO_RSP_FIXED_SIZE + INFO_DESC_SIZE * count, what);
  const last = (flags & INFO_RSP_FLAG_LAST) !== 0;
  if (last !== (first + count === total)) fail('info-last', `${what}: LAST flag ${last} with ${first}+${count} of ${total}`);
  const descs: InfoDesc[] = [];
  for (let i = 0; i < count; i++) {
    const off = INFO_RSP_FIXED_SIZE + i * INFO_DESC_SIZE;
    const addr = dv.getBigUint64(off, true);
    const rkey = dv.getUint32(off + 8, true);
    const len = dv.getUint32(off + 12, true);
    if (len === 0 || len % p.chunkSize !== 0) fail('desc-len', `${what}: descriptor ${first + i} length ${len} is not a positive multiple of chunkSize ${p.chunkSize}`);
    if (p.strict && len !== p.chunkSize) fail('desc-len', `${what}: strict descriptor ${first + i} length ${len} != chunkSize ${p.chunkSize}`);
    if (addr + BigInt(len) > U64_LIMIT) fail('addr', `${what}: descriptor ${first + i} overflows 2^64`);
    if (!p.strict && rkey === 0) fail('rkey', `${what}: descriptor ${first + i} has rkey 0 in relaxed mode`);
    descs.push({ addr, rkey, len });
  }
  return { type: 'info-rsp', last, total, first, descs };
}

export interface IoRspFields {
  chunk: number;
  status: number;
  seq: bigint;
  dataLen?: number;
  read?: boolean;
  replay?: boolean;
  keys?: readonly IoRspKey[];
  header?: Uint8Array;
}

export function ioRspSize(keyCount: number, hdrLen: number): number {
  return IO_RSP_FIXED_SIZE + RSP_KEY_SIZE * keyCount + hdrLen;
}

/** Writes an IO_RSP at `offset` of `target` (a registered send buffer); returns its length. */
export function writeIoRsp(target: Uint8Array, offset: number, m: IoRspFields): number {
  const keys = m.keys ?? [];
  const header = argBytes(m.header ?? new Uint8Array(0), MAX_HEADER_SIZE, 'header');
  if (keys.length > MAX_PATHS) throw new RangeError(`${keys.length} keys, limit ${MAX_PATHS}`);
  const size = ioRspSize(keys.length, header.byteLength);
  const dv = writable(target, offset, size, 'IO_RSP');
  const flags = (m.replay ? IO_RSP_FLAG_REPLAY : 0) | (m.read ? IO_RSP_FLAG_READ : 0);
  writeMsgHeader(dv, MsgType.IO_RSP, flags, size);
  dv.setUint16(8, argUint(m.chunk, MAX_QUEUE_DEPTH - 1, 'chunk'), true);
  dv.setUint16(10, argUint(m.status, MAX_STATUS, 'status'), true);
  dv.setUint16(12, keys.length, true);
  dv.setUint16(14, header.byteLength, true);
  dv.setBigUint64(16, argU64(m.seq, 'seq', 1n), true);
  const dataLen = argUint(m.dataLen ?? 0, MAX_CHUNK_SIZE, 'dataLen');
  if (!m.read && dataLen !== 0) throw new RangeError('dataLen must be 0 for a write response');
  dv.setUint32(24, dataLen, true);
  keys.forEach((k, i) => {
    const off = IO_RSP_FIXED_SIZE + i * RSP_KEY_SIZE;
    dv.setUint16(off, argUint(k.pathIndex, MAX_PATHS - 1, 'key.pathIndex'), true);
    dv.setUint16(off + 2, argUint(k.generation, 0xffff, 'key.generation'), true);
    dv.setUint32(off + 4, argUint(k.rkey, 0xffffffff, 'key.rkey', 1), true);
  });
  target.set(header, offset + IO_RSP_FIXED_SIZE + RSP_KEY_SIZE * keys.length);
  return size;
}

export function encodeIoRsp(m: IoRspFields): Buffer {
  const buf = Buffer.alloc(ioRspSize(m.keys?.length ?? 0, m.header?.byteLength ?? 0));
  writeIoRsp(buf, 0, m);
  return buf;
}

/** What the client knows when it decodes a message on one of its paths. */
export interface ClientMsgContext extends SessionParams {
  pathCount: number;
  /** the path the message arrived on */
  pathIndex: number;
}

function decodeIoRspBody(dv: DataView, flags: number, ctx: ClientMsgContext): IoRsp {
  const what = 'IO_RSP';
  checkFlags(flags, IO_RSP_FLAG_REPLAY | IO_RSP_FLAG_READ, what);
  needLength(dv, IO_RSP_FIXED_SIZE, what);
  checkZero(dv, 28, 32, what);
  const chunk = dv.getUint16(8, true);
  const status = dv.getUint16(10, true);
  const keyCount = dv.getUint16(12, true);
  const hdrLen = dv.getUint16(14, true);
  const seq = dv.getBigUint64(16, true);
  const dataLen = dv.getUint32(24, true);
  const read = (flags & IO_RSP_FLAG_READ) !== 0;
  if (chunk >= ctx.queueDepth) fail('chunk', `${what}: chunk ${chunk}, queueDepth ${ctx.queueDepth}`);
  if (status > MAX_STATUS) fail('status', `${what}: status ${status} > ${MAX_STATUS}`);
  if (hdrLen > ctx.maxHeaderSize) fail('hdr-len', `${what}: hdrLen ${hdrLen} > maxHeaderSize ${ctx.maxHeaderSize}`);
  if (seq === 0n) fail('seq', `${what}: seq 0`);
  if (!read && dataLen !== 0) fail('data-len', `${what}: write response with dataLen ${dataLen}`);
  const maxIo = maxIoSize(ctx.chunkSize, ctx.maxHeaderSize);
  if (dataLen > maxIo) fail('data-len', `${what}: dataLen ${dataLen} > maxIoSize ${maxIo}`);
  if (!ctx.strict && keyCount !== 0) fail('keys', `${what}: ${keyCount} keys in relaxed mode`);
  if (ctx.strict && (keyCount < 1 || keyCount > ctx.pathCount)) fail('keys', `${what}: ${keyCount} keys, expected 1..${ctx.pathCount}`);
  exactLength(dv, ioRspSize(keyCount, hdrLen), what);
  const keys: IoRspKey[] = [];
  let arrival = false;
  for (let i = 0; i < keyCount; i++) {
    const off = IO_RSP_FIXED_SIZE + i * RSP_KEY_SIZE;
    const pathIndex = dv.getUint16(off, true);
    const generation = dv.getUint16(off + 2, true);
    const rkey = dv.getUint32(off + 4, true);
    if (pathIndex >= ctx.pathCount) fail('keys', `${what}: key for path ${pathIndex}, pathCount ${ctx.pathCount}`);
    // (a linear search: one key per IO is the common case, a Set per message cost more)
    for (let j = 0; j < i; j++) if (keys[j].pathIndex === pathIndex) fail('keys', `${what}: two keys for path ${pathIndex}`);
    if (rkey === 0) fail('keys', `${what}: rkey 0 for path ${pathIndex}`);
    if (pathIndex === ctx.pathIndex) arrival = true;
    keys.push({ pathIndex, generation, rkey });
  }
  if (ctx.strict && !arrival) fail('keys', `${what}: no key for the arrival path ${ctx.pathIndex}`);
  const hdrOff = IO_RSP_FIXED_SIZE + RSP_KEY_SIZE * keyCount;
  return {
    type: 'io-rsp',
    chunk,
    status,
    seq,
    dataLen,
    read,
    replay: (flags & IO_RSP_FLAG_REPLAY) !== 0,
    keys,
    header: new Uint8Array(dv.buffer, dv.byteOffset + hdrOff, hdrLen),
  };
}

export function encodeResumeReq(m: { chunk: number; seq: bigint }): Buffer {
  const buf = Buffer.alloc(RESUME_SIZE);
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  writeMsgHeader(dv, MsgType.RESUME_REQ, 0, RESUME_SIZE);
  dv.setUint16(8, argUint(m.chunk, MAX_QUEUE_DEPTH - 1, 'chunk'), true);
  dv.setBigUint64(16, argU64(m.seq, 'seq', 1n), true);
  return buf;
}

export function encodeResumeRsp(m: { chunk: number; rkey: number; seq: bigint }): Buffer {
  const buf = Buffer.alloc(RESUME_SIZE);
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  writeMsgHeader(dv, MsgType.RESUME_RSP, 0, RESUME_SIZE);
  dv.setUint16(8, argUint(m.chunk, MAX_QUEUE_DEPTH - 1, 'chunk'), true);
  dv.setUint32(12, argUint(m.rkey, 0xffffffff, 'rkey', 1), true);
  dv.setBigUint64(16, argU64(m.seq, 'seq', 1n), true);
  return buf;
}

function decodeResumeBody(dv: DataView, flags: number, rsp: boolean, p: { queueDepth: number }): ResumeReq | ResumeRsp {
  const what = rsp ? 'RESUME_RSP' : 'RESUME_REQ';
  checkFlags(flags, 0, what);
  exactLength(dv, RESUME_SIZE, what);
  const chunk = dv.getUint16(8, true);
  if (chunk >= p.queueDepth) fail('chunk', `${what}: chunk ${chunk}, queueDepth ${p.queueDepth}`);
  const seq = dv.getBigUint64(16, true);
  if (seq === 0n) fail('seq', `${what}: seq 0`);
  if (!rsp) {
    checkZero(dv, 10, 16, what);
    return { type: 'resume-req', chunk, seq };
  }
  checkZero(dv, 10, 12, what);
  const rkey = dv.getUint32(12, true);
  if (rkey === 0) fail('rkey', `${what}: rkey 0`);
  return { type: 'resume-rsp', chunk, rkey, seq };
}

export function encodeSessionClose(): Buffer {
  const buf = Buffer.alloc(SESSION_CLOSE_SIZE);
  writeMsgHeader(new DataView(buf.buffer, buf.byteOffset, buf.byteLength), MsgType.SESSION_CLOSE, 0, SESSION_CLOSE_SIZE);
  return buf;
}

/** What the server knows when it decodes a SEND from a client path. */
export interface ServerMsgContext {
  queueDepth: number;
  strict: boolean;
  /** the client receive size the session needs (clientRecvSize) */
  minRecvSize: number;
}

/** Decodes a SEND received by the server (§4.1, §7.5, §7.6). */
export function decodeServerMessage(data: Uint8Array, ctx: ServerMsgContext): ServerInbound {
  const dv = view(data, 'message');
  const [type, flags] = readMsgHeader(dv, 'message', CTRL_MSG_SIZE);
  switch (type) {
    case MsgType.INFO_REQ:
      return decodeInfoReqBody(dv, flags, ctx.minRecvSize);
    case MsgType.RESUME_REQ:
      return decodeResumeBody(dv, flags, false, ctx) as ResumeReq;
    case MsgType.SESSION_CLOSE:
      checkFlags(flags, 0, 'SESSION_CLOSE');
      exactLength(dv, SESSION_CLOSE_SIZE, 'SESSION_CLOSE');
      return { type: 'session-close' };
    default:
      return fail('msg-type', `message type ${type} is not one a server receives`);
  }
}

/** Decodes a SEND received by the client (§4.2, §7.4, §7.5). */
export function decodeClientMessage(data: Uint8Array, ctx: ClientMsgContext): ClientInbound {
  const dv = view(data, 'message');
  const [type, flags] = readMsgHeader(dv, 'message', clientRecvSize(ctx, ctx.pathCount));
  switch (type) {
    case MsgType.INFO_RSP:
      return decodeInfoRspBody(dv, flags, ctx);
    case MsgType.IO_RSP:
      return decodeIoRspBody(dv, flags, ctx);
    case MsgType.RESUME_RSP:
      return decodeResumeBody(dv, flags, true, ctx) as ResumeRsp;
    default:
      return fail('msg-type', `message type ${type} is not one a client receives`);
  }
}

// ------------------------------------------------------ info reassembly (§4.2)

/** A chunk's remote location on one path: rkey 0 = no key yet (strict). */
export interface ChunkKey {
  addr: bigint;
  rkey: number;
}

/**
 * Collects one path's INFO_RSP messages, checks their sequence and totals
 * and slices the descriptors into per-chunk keys.
 */
export class InfoAssembler {
  readonly #p: SessionParams;
  #total = -1;
  #received = 0;
  #bytes = 0n;
  #chunks: ChunkKey[] = [];
  #done = false;

  constructor(p: SessionParams) {
    this.#p = p;
  }

  get done(): boolean {
    return this.#done;
  }

  /** Adds one decoded INFO_RSP; returns the chunk keys after the LAST one, else undefined. */
  add(m: InfoRsp): ChunkKey[] | undefined {
    if (this.#done) fail('info-extra', 'INFO_RSP after the exchange finished');
    if (this.#total === -1) this.#total = m.total;
    else if (m.total !== this.#total) fail('info-total', `INFO_RSP total changed from ${this.#total} to ${m.total}`);
    if (m.first !== this.#received) fail('info-order', `INFO_RSP starts at ${m.first}, expected ${this.#received}`);
    const poolBytes = BigInt(this.#p.queueDepth) * BigInt(this.#p.chunkSize);
    for (const d of m.descs) {
      this.#bytes += BigInt(d.len);
      if (this.#bytes > poolBytes) fail('info-size', `INFO_RSP descriptors exceed the pool of ${poolBytes} bytes`);
      for (let off = 0; off < d.len; off += this.#p.chunkSize) {
        this.#chunks.push({ addr: d.addr + BigInt(off), rkey: d.rkey });
      }
    }
    this.#received += m.descs.length;
    if (!m.last) return undefined;
    if (this.#bytes !== poolBytes) fail('info-size', `INFO_RSP descriptors cover ${this.#bytes} bytes, the pool is ${poolBytes}`);
    this.#done = true;
    return this.#chunks;
  }
}
