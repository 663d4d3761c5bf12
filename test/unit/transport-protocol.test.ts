/**
 * docs/protocol.md, pinned: every message round-trips through its encoder
 * and decoder, the byte layout matches the spec tables, and every rule of
 * §8 rejects a malformed input with a ProtocolError naming the reason.
 */
import * as P from '../../lib/transport/protocol';
import { ProtocolError } from '../../lib/transport/protocol';

const SID = '0f8c2a4e-1b3d-4c5e-8f90-a1b2c3d4e5f6';

function expectReject(fn: () => unknown, reason: string, code: P.ProtocolErrorCode = 'EPROTO'): void {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(ProtocolError);
  expect((err as ProtocolError).reason).toBe(reason);
  expect((err as ProtocolError).code).toBe(code);
  expect((err as ProtocolError).message).toContain(reason);
}

/** A copy of `buf` with the little-endian field at `off` set. */
function patch(buf: Uint8Array, off: number, bytes: 1 | 2 | 4 | 8, value: number | bigint): Buffer {
  const b = Buffer.from(buf);
  if (bytes === 1) b.writeUInt8(Number(value), off);
  else if (bytes === 2) b.writeUInt16LE(Number(value), off);
  else if (bytes === 4) b.writeUInt32LE(Number(value), off);
  else b.writeBigUInt64LE(BigInt(value), off);
  return b;
}

const strictParams: P.SessionParams = { queueDepth: 512, chunkSize: 128 * 1024, maxHeaderSize: 4096, strict: true };
const relaxedParams: P.SessionParams = { ...strictParams, strict: false };

describe('ProtocolError', () => {
  test('is an Error with code, reason and a message naming both', () => {
    const e = new ProtocolError('bad-magic', 'magic 0x1', 'EPROTO');
    expect(e).toBeInstanceOf(Error);
    expect(e.name).toBe('ProtocolError');
    expect(e.code).toBe('EPROTO');
    expect(e.reason).toBe('bad-magic');
    expect(e.message).toBe('EPROTO: bad-magic: magic 0x1');
    expect(e.detail).toBe('magic 0x1');
  });

  test('decoders reject non-byte input with ProtocolError, not TypeError', () => {
    expectReject(() => P.decodeConnectRequest('x' as unknown as Uint8Array), 'not-bytes');
    expectReject(() => P.decodeAccept(undefined as unknown as Uint8Array), 'not-bytes');
    expectReject(() => P.decodeServerMessage([1, 2] as unknown as Uint8Array, { queueDepth: 1, strict: true, minRecvSize: 0 }), 'not-bytes');
  });
});

describe('session parameters (§2)', () => {
  test('chunkBits', () => {
    expect(P.chunkBits(1)).toBe(0);
    expect(P.chunkBits(2)).toBe(1);
    expect(P.chunkBits(3)).toBe(2);
    expect(P.chunkBits(512)).toBe(9);
    expect(P.chunkBits(513)).toBe(10);
    expect(P.chunkBits(65535)).toBe(16);
  });

  test('limits', () => {
    const ok = { queueDepth: 512, chunkSize: 512 * 1024, maxHeaderSize: 4096 };
    expect(P.sessionParamsProblem(ok)).toBeUndefined();
    expect(P.sessionParamsProblem({ ...ok, chunkSize: 1024 * 1024 })).toMatch(/imm bits/);
    expect(P.sessionParamsProblem({ ...ok, queueDepth: 0 })).toMatch(/queueDepth/);
    expect(P.sessionParamsProblem({ ...ok, queueDepth: 65536 })).toMatch(/queueDepth/);
    expect(P.sessionParamsProblem({ ...ok, chunkSize: 2048 })).toMatch(/chunkSize/);
    expect(P.sessionParamsProblem({ ...ok, chunkSize: 6000 })).toMatch(/power of 2/);
    expect(P.sessionParamsProblem({ ...ok, maxHeaderSize: 32769 })).toMatch(/maxHeaderSize/);
    expect(P.sessionParamsProblem({ queueDepth: 1, chunkSize: 4096, maxHeaderSize: 4096 - 32 })).toMatch(/no room/);
    expect(P.sessionParamsProblem({ queueDepth: 1, chunkSize: 4096, maxHeaderSize: 4096 - 33 })).toBeUndefined();
    expect(P.sessionParamsProblem({ queueDepth: 1, chunkSize: 2 ** 28, maxHeaderSize: 0 })).toBeUndefined();
    expect(P.sessionParamsProblem({ queueDepth: 65535, chunkSize: 4096, maxHeaderSize: 0 })).toBeUndefined();
    expect(P.sessionParamsProblem({ queueDepth: 65535, chunkSize: 8192, maxHeaderSize: 0 })).toMatch(/imm bits/);
  });

  test('derived sizes', () => {
    expect(P.maxIoSize(131072, 4096)).toBe(131072 - 4096 - 32);
    expect(P.clientRecvSize({ maxHeaderSize: 0 }, 1)).toBe(4096);
    expect(P.clientRecvSize({ maxHeaderSize: 8192 }, 2)).toBe(32 + 16 + 8192);
    expect(P.MAX_INFO_DESCS).toBe(254);
  });
});

describe('connect request (§3.1)', () => {
  const req = { newSession: true, pathIndex: 1, pathCount: 2, reconnectCount: 7, sessionId: SID };

  test('layout and round trip', () => {
    const b = P.encodeConnectRequest(req);
    expect(b.length).toBe(56);
    expect([...b.subarray(0, 16)]).toEqual([0, 0, 0x4e, 0x52, 0x01, 0x01, 1, 0, 1, 0, 2, 0, 7, 0, 0, 0]);
    expect(b.subarray(16, 32).toString('hex')).toBe(SID.replace(/-/g, ''));
    expect(b.subarray(32).every((x) => x === 0)).toBe(true);
    const none = { localReadInvalidate: false, credentials: Buffer.alloc(0) };
    expect(P.decodeConnectRequest(b)).toEqual({ ...req, ...none, version: P.VERSION });
    expect(P.decodeConnectRequest(P.encodeConnectRequest({ ...req, newSession: false }))).toEqual({ ...req, ...none, newSession: false, version: P.VERSION });
  });

  test('1.1: LOCAL_READ_INVALIDATE is flag bit 1; credentials are a length byte at 32 and up to 23 bytes from 33', () => {
    const cred = Buffer.from('0123456789abcdefghijklm'); // 23 bytes
    const b = P.encodeConnectRequest({ ...req, localReadInvalidate: true, credentials: cred });
    expect(b.readUInt16LE(6)).toBe(P.CONN_FLAG_NEW_SESSION | P.CONN_FLAG_LOCAL_READ_INVALIDATE);
    expect(b[32]).toBe(23);
    expect(b.subarray(33, 56).toString()).toBe(cred.toString());
    const d = P.decodeConnectRequest(b);
    expect(d).toMatchObject({ localReadInvalidate: true, credentials: cred });
    // a copy: the CM reuses its event's private data
    b.fill(0, 33);
    expect(d.credentials!.toString()).toBe(cred.toString());
    expect(() => P.encodeConnectRequest({ ...req, credentials: Buffer.alloc(24) })).toThrow(RangeError);
    expect(() => P.encodeConnectRequest({ ...req, credentials: 'secret' as never })).toThrow(TypeError);
  });

  test('1.1: a credentials length over 23 is refused; bytes after the credentials are reserved', () => {
    const b = P.encodeConnectRequest({ ...req, credentials: Buffer.from('abc') });
    expectReject(() => P.decodeConnectRequest(patch(b, 32, 1, 24)), 'credentials');
    expectReject(() => P.decodeConnectRequest(patch(b, 36, 1, 1)), 'reserved-nonzero');
    // inside the credentials any byte goes
    expect(P.decodeConnectRequest(patch(b, 35, 1, 0xff)).credentials).toEqual(Buffer.from('ab\xff', 'latin1'));
  });

  test('a 1.0 client (zeros from byte 32) reads as no credentials and server-side read invalidation', () => {
    const b = patch(P.encodeConnectRequest(req), 4, 2, 0x0100);
    expect(P.decodeConnectRequest(b)).toMatchObject({ version: 0x0100, localReadInvalidate: false, credentials: Buffer.alloc(0) });
  });

  test('CM padding beyond 56 bytes is ignored, even if nonzero', () => {
    const b = Buffer.concat([P.encodeConnectRequest(req), Buffer.alloc(36, 0xff)]);
    expect(P.decodeConnectRequest(b).pathIndex).toBe(1);
  });

  test('a newer minor version may use reserved bytes; an older or equal one may not', () => {
    const b = P.encodeConnectRequest(req);
    expectReject(() => P.decodeConnectRequest(patch(b, 40, 1, 1)), 'reserved-nonzero');
    expectReject(() => P.decodeConnectRequest(patch(b, 6, 2, 0x8001)), 'reserved-flags');
    const newer = patch(patch(b, 4, 2, 0x0105), 40, 1, 1);
    expect(P.decodeConnectRequest(patch(newer, 6, 2, 0x8001)).version).toBe(0x0105);
  });

  test.each([
    ['short', (b: Buffer) => b.subarray(0, 55), 'short'],
    ['magic', (b: Buffer) => patch(b, 2, 2, 0x1bbd), 'bad-magic'],
    ['cma version byte', (b: Buffer) => patch(b, 0, 1, 1), 'reserved-nonzero'],
    ['ip version byte', (b: Buffer) => patch(b, 1, 1, 4), 'reserved-nonzero'],
    ['pathCount 0', (b: Buffer) => patch(patch(b, 10, 2, 0), 8, 2, 0), 'path-count'],
    ['pathCount 129', (b: Buffer) => patch(b, 10, 2, 129), 'path-count'],
    ['pathIndex == pathCount', (b: Buffer) => patch(b, 8, 2, 2), 'path-index'],
    ['nil uuid', (b: Buffer) => Buffer.concat([b.subarray(0, 16), Buffer.alloc(40)]), 'session-id'],
  ])('rejects %s', (_n, mutate, reason) => {
    expectReject(() => P.decodeConnectRequest(mutate(P.encodeConnectRequest(req))), reason);
  });

  test('rejects another major version with EPROTONOSUPPORT', () => {
    expectReject(() => P.decodeConnectRequest(patch(P.encodeConnectRequest(req), 4, 2, 0x0200)), 'version', 'EPROTONOSUPPORT');
    expectReject(() => P.decodeConnectRequest(patch(P.encodeConnectRequest(req), 4, 2, 0x0001)), 'version', 'EPROTONOSUPPORT');
  });

  test('encoder refuses what the protocol cannot express', () => {
    expect(() => P.encodeConnectRequest({ ...req, pathIndex: 2 })).toThrow(RangeError);
    expect(() => P.encodeConnectRequest({ ...req, pathCount: 200, pathIndex: 0 })).toThrow(RangeError);
    expect(() => P.encodeConnectRequest({ ...req, reconnectCount: -1 })).toThrow(RangeError);
    expect(() => P.encodeConnectRequest({ ...req, sessionId: P.NIL_UUID })).toThrow(TypeError);
    expect(() => P.encodeConnectRequest({ ...req, sessionId: SID.toUpperCase() })).toThrow(TypeError);
  });

  test('random session ids are valid', () => {
    for (let i = 0; i < 10; i++) expect(P.isSessionId(P.randomSessionId())).toBe(true);
  });
});

describe('accept (§3.2)', () => {
  const acc = { ...strictParams, sessionCreated: true, hbIntervalMs: 5000, hbMissedMax: 5 };

  test('layout and round trip', () => {
    const b = P.encodeAccept(acc);
    expect(b.length).toBe(56);
    expect(b.readUInt16LE(0)).toBe(P.MAGIC);
    expect(b.readUInt16LE(2)).toBe(0x0101);
    expect(b.readUInt32LE(4)).toBe(3);
    expect(b.readUInt16LE(8)).toBe(512);
    expect(b.readUInt32LE(12)).toBe(131072);
    expect(b.readUInt32LE(16)).toBe(4096);
    expect(b.readUInt32LE(20)).toBe(131072 - 4096 - 32);
    expect(b.readUInt32LE(24)).toBe(5000);
    expect(b.readUInt16LE(28)).toBe(5);
    expect(P.decodeAccept(b)).toEqual({ ...acc, version: P.VERSION, maxIoSize: 131072 - 4096 - 32 });
    const relaxed = P.decodeAccept(P.encodeAccept({ ...acc, strict: false, sessionCreated: false }));
    expect(relaxed.strict).toBe(false);
    expect(relaxed.sessionCreated).toBe(false);
  });

  test.each([
    ['short', (b: Buffer) => b.subarray(0, 40), 'short'],
    ['magic', (b: Buffer) => patch(b, 0, 2, 0), 'bad-magic'],
    ['unknown flag', (b: Buffer) => patch(b, 4, 4, 4), 'reserved-flags'],
    ['reserved after queueDepth', (b: Buffer) => patch(b, 10, 2, 1), 'reserved-nonzero'],
    ['reserved tail', (b: Buffer) => patch(b, 55, 1, 1), 'reserved-nonzero'],
    ['queueDepth 0', (b: Buffer) => patch(b, 8, 2, 0), 'pool-params'],
    ['chunk not a power of 2', (b: Buffer) => patch(b, 12, 4, 100000), 'pool-params'],
    ['chunk too small', (b: Buffer) => patch(b, 12, 4, 2048), 'pool-params'],
    ['imm bits exceeded', (b: Buffer) => patch(b, 12, 4, 1 << 20), 'pool-params'],
    ['maxHeaderSize too big', (b: Buffer) => patch(b, 16, 4, 40000), 'pool-params'],
    ['maxIoSize inconsistent', (b: Buffer) => patch(b, 20, 4, 131072), 'max-io-size'],
    ['hb interval too small', (b: Buffer) => patch(b, 24, 4, 99), 'hb-interval'],
    ['hb interval too big', (b: Buffer) => patch(b, 24, 4, 600001), 'hb-interval'],
    ['hb missed 0', (b: Buffer) => patch(b, 28, 2, 0), 'hb-missed'],
    ['hb missed 256', (b: Buffer) => patch(b, 28, 2, 256), 'hb-missed'],
  ])('rejects %s', (_n, mutate, reason) => {
    expectReject(() => P.decodeAccept(mutate(P.encodeAccept(acc))), reason);
  });

  test('rejects another major version', () => {
    expectReject(() => P.decodeAccept(patch(P.encodeAccept(acc), 2, 2, 0x0300)), 'version', 'EPROTONOSUPPORT');
  });

  test('encoder checks the pool and heartbeat ranges', () => {
    expect(() => P.encodeAccept({ ...acc, chunkSize: 1000 })).toThrow(RangeError);
    expect(() => P.encodeAccept({ ...acc, hbIntervalMs: 10 })).toThrow(RangeError);
    expect(() => P.encodeAccept({ ...acc, hbMissedMax: 0 })).toThrow(RangeError);
  });
});

describe('reject (§3.3)', () => {
  test('every reason round-trips', () => {
    for (const code of Object.keys(P.RejectReason) as P.RejectCode[]) {
      const b = P.encodeReject({ code, retry: code === 'EBUSY', detail: 42 });
      expect(b.length).toBe(16);
      expect(P.decodeReject(b)).toEqual({ version: P.VERSION, reason: P.RejectReason[code], code, retry: code === 'EBUSY', detail: 42 });
    }
  });

  test('a reject from another major version is still readable', () => {
    const b = patch(P.encodeReject({ code: 'EPROTONOSUPPORT' }), 2, 2, 0x0200);
    expect(P.decodeReject(b).code).toBe('EPROTONOSUPPORT');
  });

  test.each([
    ['empty (CM-generated reject)', () => new Uint8Array(0), 'short'],
    ['foreign private data', () => Buffer.alloc(148, 0xab), 'bad-magic'],
    ['unknown reason', () => patch(P.encodeReject({ code: 'EBUSY' }), 4, 2, 999), 'reject-reason'],
    ['unknown flag', () => patch(P.encodeReject({ code: 'EBUSY' }), 6, 2, 2), 'reserved-flags'],
    ['reserved', () => patch(P.encodeReject({ code: 'EBUSY' }), 12, 4, 1), 'reserved-nonzero'],
  ])('rejects %s', (_n, make, reason) => {
    expectReject(() => P.decodeReject(make()), reason);
  });
});

describe('immediate data (§5)', () => {
  test('request imm packs chunk above the trailer offset', () => {
    const p = { queueDepth: 512, chunkSize: 131072 };
    const imm = P.encodeRequestImm('write', 5, 1000, p);
    expect(imm).toBe((5 << 19) | 1000);
    expect(P.decodeImm(imm, 1016, 'server', p)).toEqual({ type: 'write-req', chunk: 5, trailerOffset: 1000 });
    const rimm = P.encodeRequestImm('read', 511, 131072 - 32, p);
    expect(rimm >>> 28).toBe(1);
    expect(P.decodeImm(rimm, 32 + 100, 'server', p)).toEqual({ type: 'read-req', chunk: 511, trailerOffset: 131072 - 32 });
  });

  test('queue depth 1 uses all 28 bits for the offset', () => {
    const p = { queueDepth: 1, chunkSize: 2 ** 28 };
    const imm = P.encodeRequestImm('write', 0, 2 ** 28 - 16, p);
    expect(P.decodeImm(imm, 2 ** 28, 'server', p)).toEqual({ type: 'write-req', chunk: 0, trailerOffset: 2 ** 28 - 16 });
  });

  test('queue depth 65535 with 4 KiB chunks', () => {
    const p = { queueDepth: 65535, chunkSize: 4096 };
    const imm = P.encodeRequestImm('write', 65534, 4080, p);
    expect(P.decodeImm(imm, 4096, 'server', p)).toEqual({ type: 'write-req', chunk: 65534, trailerOffset: 4080 });
  });

  test('response, heartbeat and ack', () => {
    const p = { queueDepth: 512, chunkSize: 131072 };
    const r = P.encodeIoRspImm(300, 4095);
    expect(r >>> 28).toBe(2);
    expect(P.decodeImm(r, 0, 'client', p)).toEqual({ type: 'io-rsp', chunk: 300, status: 4095 });
    const hb = P.encodeHbImm(P.IMM_PAYLOAD_MASK);
    expect(hb).toBe(0x8fffffff);
    expect(P.decodeImm(hb, 0, 'server', p)).toEqual({ type: 'hb', id: P.IMM_PAYLOAD_MASK });
    expect(P.decodeImm(P.encodeHbImm(7, true), 0, 'client', p)).toEqual({ type: 'hb-ack', id: 7 });
  });

  const p = { queueDepth: 100, chunkSize: 8192 };
  test.each([
    ['unknown type 0x3', 0x30000000, 0, 'server', 'imm-type'],
    ['unknown type 0xf', 0xf0000000, 0, 'client', 'imm-type'],
    ['write request at the client', P.encodeRequestImm('write', 1, 0, p), 16, 'client', 'imm-direction'],
    ['response at the server', P.encodeIoRspImm(1, 0), 0, 'server', 'imm-direction'],
    ['chunk >= queueDepth', (100 << 21) | 0, 16, 'server', 'chunk'],
    ['response chunk >= queueDepth', P.encodeIoRspImm(100, 0), 0, 'client', 'chunk'],
    ['trailer past the chunk end', P.encodeRequestImm('write', 0, 8176, p) + 1, 8193, 'server', 'trailer-offset'],
    ['read trailer past the chunk end', P.encodeRequestImm('read', 0, 8160, p) + 1, 32, 'server', 'trailer-offset'],
    ['write byte_len mismatch', P.encodeRequestImm('write', 0, 100, p), 117, 'server', 'byte-len'],
    ['read byte_len too small', P.encodeRequestImm('read', 0, 100, p), 31, 'server', 'byte-len'],
    ['read byte_len past the trailer', P.encodeRequestImm('read', 0, 100, p), 133, 'server', 'byte-len'],
    ['response with data', P.encodeIoRspImm(1, 0), 1, 'client', 'byte-len'],
    ['heartbeat with data', P.encodeHbImm(1), 8, 'client', 'byte-len'],
    ['ack with data', P.encodeHbImm(1, true), 8, 'server', 'byte-len'],
    ['negative imm', -1, 0, 'server', 'imm'],
    ['imm above u32', 2 ** 32, 0, 'server', 'imm'],
    ['fractional byte_len', 0x80000000, 0.5, 'server', 'byte-len'],
  ])('rejects %s', (_n, imm, byteLen, side, reason) => {
    expectReject(() => P.decodeImm(imm as number, byteLen as number, side as P.Side, p), reason as string);
  });

  test('encoders refuse out-of-range values', () => {
    expect(() => P.encodeRequestImm('write', 100, 0, p)).toThrow(RangeError);
    expect(() => P.encodeRequestImm('write', 0, 8177, p)).toThrow(RangeError);
    expect(() => P.encodeRequestImm('read', 0, 8161, p)).toThrow(RangeError);
    expect(() => P.encodeIoRspImm(0, 4096)).toThrow(RangeError);
    expect(() => P.encodeHbImm(2 ** 28)).toThrow(RangeError);
  });
});

describe('write trailer (§6.1)', () => {
  const lim = { chunkSize: 8192, maxHeaderSize: 100 };

  test('layout and round trip', () => {
    const t = { hdrLen: 20, dataLen: 1000, seq: 0x0102030405060708n };
    const b = P.encodeWriteTrailer(t);
    expect(b.toString('hex')).toBe('01001400e8030000' + '0807060504030201');
    expect(P.decodeWriteTrailer(b, 1020, lim)).toEqual(t);
  });

  test('writes in place into a chunk staging buffer', () => {
    const chunk = Buffer.alloc(64, 0xee);
    P.writeWriteTrailer(chunk, 40, { hdrLen: 4, dataLen: 36, seq: 9n });
    expect(P.decodeWriteTrailer(chunk.subarray(40, 56), 40, lim)).toEqual({ hdrLen: 4, dataLen: 36, seq: 9n });
    expect(chunk[39]).toBe(0xee);
    expect(chunk[56]).toBe(0xee);
    expect(() => P.writeWriteTrailer(chunk, 50, { hdrLen: 0, dataLen: 0, seq: 1n })).toThrow(RangeError);
  });

  const good = P.encodeWriteTrailer({ hdrLen: 20, dataLen: 1000, seq: 5n });
  test.each([
    ['short', good.subarray(0, 15), 1020, 'bad-length'],
    ['long', Buffer.concat([good, Buffer.alloc(1)]), 1020, 'bad-length'],
    ['type', patch(good, 0, 1, 2), 1020, 'trailer-type'],
    ['flags', patch(good, 1, 1, 1), 1020, 'reserved-nonzero'],
    ['hdrLen > max', patch(good, 2, 2, 101), 1101, 'hdr-len'],
    ['dataLen > maxIoSize', patch(good, 4, 4, 8192 - 100 - 32 + 1), 8192 - 100 - 32 + 21, 'data-len'],
    ['lengths disagree with the imm offset', good, 1021, 'trailer-offset'],
    ['seq 0', patch(good, 8, 8, 0n), 1020, 'seq'],
  ])('rejects %s', (_n, bytes, off, reason) => {
    expectReject(() => P.decodeWriteTrailer(bytes, off, lim), reason);
  });

  test('encoder refuses seq 0 and non-bigint seq', () => {
    expect(() => P.encodeWriteTrailer({ hdrLen: 0, dataLen: 0, seq: 0n })).toThrow(RangeError);
    expect(() => P.encodeWriteTrailer({ hdrLen: 0, dataLen: 0, seq: 1 as unknown as bigint })).toThrow(TypeError);
  });
});

describe('read trailer (§6.2)', () => {
  const lim = { chunkSize: 8192, maxHeaderSize: 100 };
  const t = { hdrLen: 10, len: 4000, seq: 77n, addr: 0x7f0000001000n, rkey: 0x1234 };
  const off = 8192 - 32;

  test('layout and round trip', () => {
    const b = P.encodeReadTrailer(t);
    expect(b.length).toBe(32);
    expect(b[0]).toBe(2);
    expect(b.readUInt16LE(2)).toBe(10);
    expect(b.readUInt32LE(4)).toBe(4000);
    expect(b.readBigUInt64LE(8)).toBe(77n);
    expect(b.readBigUInt64LE(16)).toBe(0x7f0000001000n);
    expect(b.readUInt32LE(24)).toBe(0x1234);
    expect(P.decodeReadTrailer(b, off, 42, lim)).toEqual(t);
    const empty = { hdrLen: 0, len: 0, seq: 1n, addr: 0n, rkey: 0 };
    expect(P.decodeReadTrailer(P.encodeReadTrailer(empty), 32, 32, lim)).toEqual(empty);
  });

  const good = P.encodeReadTrailer(t);
  test.each([
    ['short', good.subarray(0, 31), 42, off, 'bad-length'],
    ['type', patch(good, 0, 1, 1), 42, off, 'trailer-type'],
    ['flags', patch(good, 1, 1, 0x80), 42, off, 'reserved-nonzero'],
    ['reserved', patch(good, 28, 4, 1), 42, off, 'reserved-nonzero'],
    ['hdrLen > max', patch(good, 2, 2, 101), 133, off, 'hdr-len'],
    ['hdrLen != byte_len - 32', good, 43, off, 'byte-len'],
    ['len > maxIoSize', patch(good, 4, 4, 8061), 42, off, 'data-len'],
    ['data area overlaps the request', good, 42, 4009, 'trailer-offset'],
    ['seq 0', patch(good, 8, 8, 0n), 42, off, 'seq'],
    ['addr + len overflows', patch(good, 16, 8, 0xffffffffffffff00n), 42, off, 'addr'],
    ['rkey 0 with data', patch(good, 24, 4, 0), 42, off, 'rkey'],
    ['rkey without data', patch(patch(good, 4, 4, 0), 24, 4, 5), 42, off, 'rkey'],
  ])('rejects %s', (_n, bytes, byteLen, toff, reason) => {
    expectReject(() => P.decodeReadTrailer(bytes, toff, byteLen, lim), reason);
  });

  test('encoder enforces the rkey/len pairing and address overflow', () => {
    expect(() => P.encodeReadTrailer({ ...t, rkey: 0 })).toThrow(RangeError);
    expect(() => P.encodeReadTrailer({ ...t, len: 0 })).toThrow(RangeError);
    expect(() => P.encodeReadTrailer({ ...t, addr: (1n << 64n) - 1n })).toThrow(RangeError);
  });
});

const serverCtx: P.ServerMsgContext = { queueDepth: 512, strict: true, minRecvSize: P.clientRecvSize(strictParams, 2) };
const clientCtx: P.ClientMsgContext = { ...strictParams, pathCount: 2, pathIndex: 1 };

describe('INFO_REQ (§4.1)', () => {
  test('round trip with a UTF-8 name', () => {
    const b = P.encodeInfoReq({ recvSize: 5000, name: 'host-ä:rxe0>10.99.1.1' });
    expect(b.readUInt16LE(0)).toBe(P.MsgType.INFO_REQ);
    expect(b.readUInt32LE(4)).toBe(b.length);
    expect(P.decodeServerMessage(b, serverCtx)).toEqual({ type: 'info-req', recvSize: 5000, name: 'host-ä:rxe0>10.99.1.1' });
    expect(P.decodeServerMessage(P.encodeInfoReq({ recvSize: 5000 }), serverCtx)).toEqual({ type: 'info-req', recvSize: 5000, name: '' });
  });

  const good = P.encodeInfoReq({ recvSize: 5000, name: 'abc' });
  test.each([
    ['header only', good.subarray(0, 8), 'bad-length'],
    ['length field != received', patch(good, 4, 4, 18), 'bad-length'],
    ['flags', patch(good, 2, 2, 1), 'reserved-flags'],
    ['receive buffer too small', patch(good, 8, 4, 4096), 'recv-size'],
    ['reserved', patch(good, 13, 1, 1), 'reserved-nonzero'],
    ['nameLen > 64', patch(good, 12, 1, 65), 'name'],
    ['nameLen disagrees with length', patch(good, 12, 1, 4), 'bad-length'],
    ['invalid UTF-8', patch(good, 16, 1, 0xff), 'name'],
    ['control character', patch(good, 17, 1, 0x0a), 'name'],
    ['unknown type', patch(good, 0, 2, 99), 'msg-type'],
    ['client-bound type', patch(good, 0, 2, P.MsgType.IO_RSP), 'msg-type'],
    ['shorter than a header', good.subarray(0, 7), 'short'],
    ['longer than a control message', Buffer.alloc(4097), 'too-long'],
  ])('rejects %s', (_n, bytes, reason) => {
    expectReject(() => P.decodeServerMessage(bytes, serverCtx), reason);
  });

  test('encoder refuses long names and control characters', () => {
    expect(() => P.encodeInfoReq({ recvSize: 1, name: 'x'.repeat(65) })).toThrow(RangeError);
    expect(() => P.encodeInfoReq({ recvSize: 1, name: 'a\nb' })).toThrow(RangeError);
  });
});

describe('INFO_RSP (§4.2) and InfoAssembler', () => {
  const base = 0x10000000n;
  const strictDescs = Array.from({ length: 512 }, (_, i) => ({ addr: base + BigInt(i * 131072), rkey: 0x100 + i, len: 131072 }));

  test('strict: 512 descriptors in 3 messages reassemble into chunk keys', () => {
    const msgs = P.encodeInfoRsp(strictDescs);
    expect(msgs.map((m) => m.length)).toEqual([24 + 254 * 16, 24 + 254 * 16, 24 + 4 * 16]);
    const asm = new P.InfoAssembler(strictParams);
    const decoded = msgs.map((m) => P.decodeClientMessage(m, clientCtx) as P.InfoRsp);
    expect(decoded.map((d) => [d.first, d.descs.length, d.last, d.total])).toEqual([
      [0, 254, false, 512],
      [254, 254, false, 512],
      [508, 4, true, 512],
    ]);
    expect(asm.add(decoded[0])).toBeUndefined();
    expect(asm.add(decoded[1])).toBeUndefined();
    const keys = asm.add(decoded[2]);
    expect(asm.done).toBe(true);
    expect(keys).toHaveLength(512);
    expect(keys![511]).toEqual({ addr: base + 511n * 131072n, rkey: 0x100 + 511 });
    expectReject(() => asm.add(decoded[2]), 'info-extra');
  });

  test('strict: rkey 0 marks a chunk without a key on this path', () => {
    const descs = strictDescs.map((d, i) => (i === 3 ? { ...d, rkey: 0 } : d));
    const asm = new P.InfoAssembler(strictParams);
    let keys: P.ChunkKey[] | undefined;
    for (const m of P.encodeInfoRsp(descs)) keys = asm.add(P.decodeClientMessage(m, clientCtx) as P.InfoRsp);
    expect(keys![3].rkey).toBe(0);
  });

  test('relaxed: one descriptor for the whole pool is sliced into chunks', () => {
    const ctx = { ...clientCtx, strict: false };
    const [m] = P.encodeInfoRsp([{ addr: base, rkey: 77, len: 512 * 131072 }]);
    const keys = new P.InfoAssembler(relaxedParams).add(P.decodeClientMessage(m, ctx) as P.InfoRsp);
    expect(keys).toHaveLength(512);
    expect(keys![1]).toEqual({ addr: base + 131072n, rkey: 77 });
  });

  test('assembler rejects reordering, changed totals and wrong pool sizes', () => {
    const msgs = P.encodeInfoRsp(strictDescs).map((m) => P.decodeClientMessage(m, clientCtx) as P.InfoRsp);
    expectReject(() => new P.InfoAssembler(strictParams).add(msgs[1]), 'info-order');
    const a = new P.InfoAssembler(strictParams);
    a.add(msgs[0]);
    expectReject(() => a.add({ ...msgs[1], total: 511 }), 'info-total');
    const relaxed = { ...clientCtx, strict: false };
    const short = P.decodeClientMessage(P.encodeInfoRsp([{ addr: base, rkey: 1, len: 131072 }])[0], relaxed) as P.InfoRsp;
    expectReject(() => new P.InfoAssembler(relaxedParams).add(short), 'info-size');
    const a2 = new P.InfoAssembler(relaxedParams);
    const twoMsgs = P.encodeInfoRsp([{ addr: base, rkey: 1, len: 256 * 131072 }, { addr: base, rkey: 1, len: 256 * 131072 }]);
    expect(a2.add(P.decodeClientMessage(twoMsgs[0], relaxed) as P.InfoRsp)).toHaveLength(512);
    const over = { type: 'info-rsp' as const, last: true, total: 2, first: 0, descs: [{ addr: base, rkey: 1, len: 512 * 131072 }, { addr: base, rkey: 1, len: 131072 }] };
    expectReject(() => new P.InfoAssembler(relaxedParams).add(over), 'info-size');
  });

  const good = P.encodeInfoRsp(strictDescs)[2];
  test.each([
    ['flags', patch(good, 2, 2, 3), 'reserved-flags'],
    ['reserved', patch(good, 20, 1, 1), 'reserved-nonzero'],
    ['total 0', patch(good, 8, 4, 0), 'info-total'],
    ['total > queueDepth', patch(good, 8, 4, 513), 'info-total'],
    ['strict total != queueDepth', patch(patch(good, 8, 4, 511), 12, 4, 507), 'info-total'],
    ['count 0', patch(good, 16, 2, 0), 'info-count'],
    ['count > 254', patch(good, 16, 2, 255), 'info-count'],
    ['first + count > total', patch(good, 12, 4, 509), 'info-count'],
    ['count disagrees with length', patch(good, 16, 2, 3), 'bad-length'],
    ['LAST missing', patch(good, 2, 2, 0), 'info-last'],
    ['LAST early', patch(P.encodeInfoRsp(strictDescs)[0], 2, 2, 1), 'info-last'],
    ['desc len 0', patch(good, 24 + 12, 4, 0), 'desc-len'],
    ['desc len not a chunk multiple', patch(good, 24 + 12, 4, 131073), 'desc-len'],
    ['strict desc spans two chunks', patch(good, 24 + 12, 4, 262144), 'desc-len'],
    ['desc overflows 2^64', patch(good, 24, 8, 0xfffffffffffff000n), 'addr'],
  ])('rejects %s', (_n, bytes, reason) => {
    expectReject(() => P.decodeClientMessage(bytes, clientCtx), reason);
  });

  test('relaxed rejects rkey 0', () => {
    const [m] = P.encodeInfoRsp([{ addr: base, rkey: 0, len: 512 * 131072 }]);
    expectReject(() => P.decodeClientMessage(m, { ...clientCtx, strict: false }), 'rkey');
  });
});

describe('IO_RSP (§7.4)', () => {
  const hdr = Buffer.from('response header');
  const m = { chunk: 9, status: 0, seq: 1234n, keys: [{ pathIndex: 1, generation: 3, rkey: 0xabcd01 }, { pathIndex: 0, generation: 0xffff, rkey: 0x99 }], header: hdr };

  test('layout and round trip (write, strict)', () => {
    const b = P.encodeIoRsp(m);
    expect(b.length).toBe(32 + 16 + hdr.length);
    expect(b.readUInt16LE(0)).toBe(3);
    expect(b.readUInt32LE(4)).toBe(b.length);
    expect(b.readUInt16LE(8)).toBe(9);
    expect(b.readUInt16LE(12)).toBe(2);
    expect(b.readUInt16LE(14)).toBe(hdr.length);
    expect(b.readBigUInt64LE(16)).toBe(1234n);
    expect(b.readUInt16LE(32)).toBe(1);
    expect(b.readUInt16LE(34)).toBe(3);
    expect(b.readUInt32LE(36)).toBe(0xabcd01);
    const d = P.decodeClientMessage(b, clientCtx) as P.IoRsp;
    expect(d).toMatchObject({ type: 'io-rsp', chunk: 9, status: 0, seq: 1234n, dataLen: 0, read: false, replay: false, keys: m.keys });
    expect(Buffer.from(d.header).equals(hdr)).toBe(true);
  });

  test('read, replay, relaxed, no header', () => {
    const b = P.encodeIoRsp({ chunk: 0, status: 61, seq: 1n, read: true, replay: true, dataLen: 4000 });
    const d = P.decodeClientMessage(b, { ...clientCtx, strict: false }) as P.IoRsp;
    expect(d).toMatchObject({ chunk: 0, status: 61, read: true, replay: true, dataLen: 4000, keys: [] });
    expect(d.header.length).toBe(0);
  });

  test('writes in place at an offset of a send buffer', () => {
    const buf = Buffer.alloc(200, 0xcc);
    const n = P.writeIoRsp(buf, 10, m);
    expect(n).toBe(32 + 16 + hdr.length);
    expect(P.decodeClientMessage(buf.subarray(10, 10 + n), clientCtx)).toMatchObject({ chunk: 9, seq: 1234n });
    expect(buf[9]).toBe(0xcc);
  });

  const good = P.encodeIoRsp(m);
  test.each([
    ['short', good.subarray(0, 31), 'bad-length'],
    ['unknown flag', patch(good, 2, 2, 4), 'reserved-flags'],
    ['reserved', patch(good, 28, 4, 1), 'reserved-nonzero'],
    ['chunk >= queueDepth', patch(good, 8, 2, 512), 'chunk'],
    ['status > 4095', patch(good, 10, 2, 4096), 'status'],
    ['hdrLen > max', patch(good, 14, 2, 4097), 'hdr-len'],
    ['seq 0', patch(good, 16, 8, 0n), 'seq'],
    ['write with dataLen', patch(good, 24, 4, 1), 'data-len'],
    ['read dataLen > maxIoSize', patch(patch(good, 2, 2, 2), 24, 4, 131072), 'data-len'],
    ['no keys in strict mode', patch(good, 12, 2, 0), 'keys'],
    ['more keys than paths', patch(good, 12, 2, 3), 'keys'],
    ['keyCount disagrees with length', patch(good, 12, 2, 1), 'bad-length'],
    ['key for an unknown path', patch(good, 32, 2, 2), 'keys'],
    ['duplicate path key', patch(good, 40, 2, 1), 'keys'],
    ['rkey 0', patch(good, 36, 4, 0), 'keys'],
    ['no key for the arrival path', patch(good, 32, 2, 0), 'keys'],
    ['server-bound type', patch(good, 0, 2, P.MsgType.RESUME_REQ), 'msg-type'],
  ])('rejects %s', (_n, bytes, reason) => {
    expectReject(() => P.decodeClientMessage(bytes, clientCtx), reason);
  });

  test('relaxed rejects keys', () => {
    expectReject(() => P.decodeClientMessage(good, { ...clientCtx, strict: false }), 'keys');
  });

  test('a message longer than the client receive size is rejected before parsing', () => {
    const big = Buffer.alloc(P.clientRecvSize(clientCtx, 2) + 1);
    expectReject(() => P.decodeClientMessage(big, clientCtx), 'too-long');
  });

  test('encoder refuses impossible values', () => {
    expect(() => P.encodeIoRsp({ ...m, status: 4096 })).toThrow(RangeError);
    expect(() => P.encodeIoRsp({ ...m, dataLen: 5 })).toThrow(RangeError);
    expect(() => P.encodeIoRsp({ ...m, keys: [{ pathIndex: 0, generation: 0, rkey: 0 }] })).toThrow(RangeError);
    expect(() => P.encodeIoRsp({ ...m, keys: [{ pathIndex: 0, generation: 65536, rkey: 1 }] })).toThrow(RangeError);
    expect(() => P.encodeIoRsp({ ...m, header: Buffer.alloc(32769) })).toThrow(RangeError);
  });
});

describe('RESUME_REQ / RESUME_RSP / SESSION_CLOSE (§7.5, §7.6)', () => {
  test('round trips', () => {
    expect(P.decodeServerMessage(P.encodeResumeReq({ chunk: 3, seq: 99n }), serverCtx)).toEqual({ type: 'resume-req', chunk: 3, seq: 99n });
    expect(P.decodeClientMessage(P.encodeResumeRsp({ chunk: 3, rkey: 0x55, seq: 99n }), clientCtx)).toEqual({ type: 'resume-rsp', chunk: 3, rkey: 0x55, seq: 99n });
    expect(P.decodeServerMessage(P.encodeSessionClose(), serverCtx)).toEqual({ type: 'session-close' });
    // relaxed mode uses RESUME too, to settle chunks whose IO was cut off
    expect(P.decodeServerMessage(P.encodeResumeReq({ chunk: 3, seq: 99n }), { ...serverCtx, strict: false }).type).toBe('resume-req');
    expect(P.decodeClientMessage(P.encodeResumeRsp({ chunk: 3, rkey: 0x55, seq: 99n }), { ...clientCtx, strict: false }).type).toBe('resume-rsp');
    expect(P.encodeSessionClose().length).toBe(8);
  });

  const req = P.encodeResumeReq({ chunk: 3, seq: 99n });
  const rsp = P.encodeResumeRsp({ chunk: 3, rkey: 0x55, seq: 99n });
  test.each([
    ['req chunk >= queueDepth', () => P.decodeServerMessage(patch(req, 8, 2, 512), serverCtx), 'chunk'],
    ['req seq 0', () => P.decodeServerMessage(patch(req, 16, 8, 0n), serverCtx), 'seq'],
    ['req reserved', () => P.decodeServerMessage(patch(req, 12, 1, 1), serverCtx), 'reserved-nonzero'],
    ['req flags', () => P.decodeServerMessage(patch(req, 2, 2, 1), serverCtx), 'reserved-flags'],
    ['req long', () => P.decodeServerMessage(patch(Buffer.concat([req, Buffer.alloc(8)]), 4, 4, 32), serverCtx), 'bad-length'],
    ['rsp rkey 0', () => P.decodeClientMessage(patch(rsp, 12, 4, 0), clientCtx), 'rkey'],
    ['rsp reserved', () => P.decodeClientMessage(patch(rsp, 10, 2, 1), clientCtx), 'reserved-nonzero'],
    ['close with flags', () => P.decodeServerMessage(patch(P.encodeSessionClose(), 2, 2, 1), serverCtx), 'reserved-flags'],
    ['close with a body', () => P.decodeServerMessage(patch(Buffer.alloc(12), 0, 2, 6).fill(12, 4, 5), serverCtx), 'bad-length'],
  ])('rejects %s', (_n, fn, reason) => {
    expectReject(fn, reason);
  });
});
