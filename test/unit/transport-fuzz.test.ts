/**
 * Property-based tests of every decoder in lib/transport/protocol.ts:
 * - valid values round-trip (decode(encode(x)) equals x);
 * - random and mutated inputs never make a decoder throw anything but a
 *   ProtocolError;
 * - whatever a decoder accepts is canonical: encoding the decoded value
 *   gives back the same bytes (so no field is silently ignored).
 * The run counts add up to well over 100,000 cases; the last test checks that.
 */
import { strict as assert } from 'assert';
import fc from 'fast-check';
import * as P from '../../lib/transport/protocol';
import { ProtocolError } from '../../lib/transport/protocol';

let cases = 0;
const SEED = Number(process.env.FC_SEED ?? 0x5eed);

function run<T>(arb: fc.Arbitrary<T>, numRuns: number, check: (v: T) => void): void {
  fc.assert(
    fc.property(arb, (v) => {
      cases++;
      check(v);
    }),
    { numRuns, seed: SEED },
  );
}

/** Runs a decoder: its result, or undefined when it threw a ProtocolError; anything else fails. */
function tryDecode<T>(fn: () => T): T | undefined {
  try {
    return fn();
  } catch (e) {
    if (e instanceof ProtocolError) {
      if (typeof e.reason !== 'string' || e.reason.length === 0) throw new Error('ProtocolError without reason');
      if (e.code !== 'EPROTO' && e.code !== 'EPROTONOSUPPORT') throw new Error(`bad code ${e.code}`);
      return undefined;
    }
    throw e;
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): void {
  if (!Buffer.from(a).equals(Buffer.from(b))) {
    throw new Error(`bytes differ:\n ${Buffer.from(a).toString('hex')}\n ${Buffer.from(b).toString('hex')}`);
  }
}

// ------------------------------------------------------------ arbitraries

const paramsUpTo = (maxQueueDepth: number): fc.Arbitrary<P.SessionParams> => fc
  .integer({ min: 1, max: maxQueueDepth })
  .chain((queueDepth) =>
    fc.integer({ min: 12, max: 28 - P.chunkBits(queueDepth) }).chain((log2) => {
      const chunkSize = 2 ** log2;
      return fc.record({
        queueDepth: fc.constant(queueDepth),
        chunkSize: fc.constant(chunkSize),
        maxHeaderSize: fc.integer({ min: 0, max: Math.min(P.MAX_HEADER_SIZE, chunkSize - P.READ_TRAILER_SIZE - 1) }),
        strict: fc.boolean(),
      });
    }),
  );
const arbParams = paramsUpTo(P.MAX_QUEUE_DEPTH);

const arbU64 = fc.bigInt({ min: 0n, max: (1n << 64n) - 1n });
const arbSeq = fc.bigInt({ min: 1n, max: (1n << 64n) - 1n });
const arbU32 = fc.integer({ min: 0, max: 0xffffffff });

interface Mutation {
  edits: Array<{ pos: number; val: number }>;
  cut: number | null;
  extra: Uint8Array | null;
}
const arbMutation: fc.Arbitrary<Mutation> = fc.record({
  edits: fc.array(fc.record({ pos: fc.nat(), val: fc.integer({ min: 0, max: 255 }) }), { minLength: 0, maxLength: 4 }),
  cut: fc.option(fc.nat(), { freq: 5 }),
  extra: fc.option(fc.uint8Array({ minLength: 1, maxLength: 16 }), { freq: 5 }),
});

function mutate(src: Uint8Array, m: Mutation): Buffer {
  let b = Buffer.from(src);
  for (const e of m.edits) if (b.length) b[e.pos % b.length] = e.val;
  if (m.cut !== null) b = b.subarray(0, m.cut % (b.length + 1));
  if (m.extra !== null) b = Buffer.concat([b, m.extra]);
  return b;
}

const arbConnect = fc.record({
  newSession: fc.boolean(),
  pathCount: fc.integer({ min: 1, max: P.MAX_PATHS }),
  reconnectCount: arbU32,
  sessionId: fc.uuid().filter((u) => u !== P.NIL_UUID),
  localReadInvalidate: fc.boolean(),
  credentials: fc.uint8Array({ maxLength: P.MAX_CREDENTIALS_SIZE }).map((a) => Buffer.from(a)),
}).chain((r) => fc.record({ ...Object.fromEntries(Object.entries(r).map(([k, v]) => [k, fc.constant(v)])), pathIndex: fc.integer({ min: 0, max: r.pathCount - 1 }) }) as fc.Arbitrary<Omit<P.ConnectRequest, 'version'>>);

const arbAccept = fc.record({
  params: arbParams,
  sessionCreated: fc.boolean(),
  hbIntervalMs: fc.integer({ min: P.MIN_HB_INTERVAL_MS, max: P.MAX_HB_INTERVAL_MS }),
  hbMissedMax: fc.integer({ min: 1, max: P.MAX_HB_MISSED }),
}).map(({ params, ...rest }) => ({ ...params, ...rest }));

const arbReject = fc.record({
  code: fc.constantFrom(...(Object.keys(P.RejectReason) as P.RejectCode[])),
  retry: fc.boolean(),
  detail: arbU32,
});

/** A chunk size, header limit and a valid write trailer with its offset. */
const arbWrite = arbParams.chain((p) => {
  const maxIo = P.maxIoSize(p.chunkSize, p.maxHeaderSize);
  return fc.record({
    p: fc.constant(p),
    t: fc.record({
      hdrLen: fc.integer({ min: 0, max: p.maxHeaderSize }),
      dataLen: fc.integer({ min: 0, max: maxIo }),
      seq: arbSeq,
    }),
  });
});

const arbRead = arbParams.chain((p) => {
  const maxIo = P.maxIoSize(p.chunkSize, p.maxHeaderSize);
  return fc
    .record({
      hdrLen: fc.integer({ min: 0, max: p.maxHeaderSize }),
      len: fc.integer({ min: 0, max: maxIo }),
      seq: arbSeq,
      addr: arbU64,
      rkey: fc.integer({ min: 1, max: 0xffffffff }),
    })
    .map((t) => {
      const addr = t.addr + BigInt(t.len) > 1n << 64n ? 0n : t.addr;
      return { p, t: { ...t, addr, rkey: t.len === 0 ? 0 : t.rkey, addr2: undefined } };
    })
    .map(({ p, t }) => ({ p, t: { hdrLen: t.hdrLen, len: t.len, seq: t.seq, addr: t.addr, rkey: t.rkey } }));
});

/** Client message context with a consistent path index. */
const arbClientCtx: fc.Arbitrary<P.ClientMsgContext> = fc
  .record({ p: arbParams, pathCount: fc.integer({ min: 1, max: P.MAX_PATHS }) })
  .chain(({ p, pathCount }) => fc.integer({ min: 0, max: pathCount - 1 }).map((pathIndex) => ({ ...p, pathCount, pathIndex })));

const arbIoRsp = arbClientCtx.chain((ctx) => {
  const otherPaths = fc.uniqueArray(fc.integer({ min: 0, max: ctx.pathCount - 1 }), { maxLength: Math.min(ctx.pathCount, 8) });
  return fc.record({
    ctx: fc.constant(ctx),
    m: fc.record({
      chunk: fc.integer({ min: 0, max: ctx.queueDepth - 1 }),
      status: fc.integer({ min: 0, max: P.MAX_STATUS }),
      seq: arbSeq,
      read: fc.boolean(),
      replay: fc.boolean(),
      dataLen: fc.integer({ min: 0, max: P.maxIoSize(ctx.chunkSize, ctx.maxHeaderSize) }),
      keyPaths: otherPaths,
      rkeys: fc.array(fc.integer({ min: 1, max: 0xffffffff }), { minLength: 9, maxLength: 9 }),
      gens: fc.array(fc.integer({ min: 0, max: 0xffff }), { minLength: 9, maxLength: 9 }),
      header: fc.uint8Array({ maxLength: Math.min(ctx.maxHeaderSize, 64) }),
    }),
  }).map(({ ctx, m }) => {
    let paths: number[] = [];
    if (ctx.strict) paths = [ctx.pathIndex, ...m.keyPaths.filter((i) => i !== ctx.pathIndex)];
    const keys = paths.map((pathIndex, i) => ({ pathIndex, generation: m.gens[i], rkey: m.rkeys[i] }));
    const fields: P.IoRspFields = {
      chunk: m.chunk,
      status: m.status,
      seq: m.seq,
      read: m.read,
      replay: m.replay,
      dataLen: m.read ? m.dataLen : 0,
      keys,
      header: m.header,
    };
    return { ctx, fields };
  });
});

/** Random bytes that carry a plausible message header (type and length right) half the time. */
function arbMessageBytes(maxLen: number): fc.Arbitrary<Uint8Array> {
  return fc
    .tuple(fc.uint8Array({ maxLength: maxLen }), fc.integer({ min: 0, max: 8 }), fc.boolean(), fc.boolean())
    .map(([bytes, type, fixHeader, clearFlags]) => {
      const b = Buffer.from(bytes);
      if (fixHeader && b.length >= 8) {
        b.writeUInt16LE(type, 0);
        b.writeUInt32LE(b.length, 4);
        if (clearFlags) b.writeUInt16LE(0, 2);
      }
      return b;
    });
}

// ------------------------------------------------------------- properties

describe('connect request decoder', () => {
  test('valid requests round-trip', () => {
    run(arbConnect, 3000, (r) => {
      assert.deepStrictEqual(P.decodeConnectRequest(P.encodeConnectRequest(r)), { ...r, version: P.VERSION });
    });
  });

  test('random bytes: ProtocolError or a canonical request', () => {
    run(fc.uint8Array({ minLength: 0, maxLength: 96 }), 6000, (b) => {
      const d = tryDecode(() => P.decodeConnectRequest(b));
      if (d && P.versionMinor(d.version) <= P.VERSION_MINOR) sameBytes(P.encodeConnectRequest(d), b.subarray(0, 56));
    });
  });

  test('mutated requests: ProtocolError or a canonical request', () => {
    run(fc.tuple(arbConnect, arbMutation), 8000, ([r, m]) => {
      const b = mutate(P.encodeConnectRequest(r), m);
      const d = tryDecode(() => P.decodeConnectRequest(b));
      if (d && P.versionMinor(d.version) <= P.VERSION_MINOR) sameBytes(P.encodeConnectRequest(d), b.subarray(0, 56));
    });
  });
});

describe('accept decoder', () => {
  test('valid accepts round-trip', () => {
    run(arbAccept, 3000, (a) => {
      const d = P.decodeAccept(P.encodeAccept(a));
      assert.deepStrictEqual(d, { ...a, version: P.VERSION, maxIoSize: P.maxIoSize(a.chunkSize, a.maxHeaderSize) });
    });
  });

  test('random bytes: ProtocolError or a canonical accept', () => {
    run(fc.uint8Array({ minLength: 0, maxLength: 80 }), 5000, (b) => {
      const d = tryDecode(() => P.decodeAccept(b));
      if (d && P.versionMinor(d.version) <= P.VERSION_MINOR) sameBytes(P.encodeAccept(d), b.subarray(0, 56));
    });
  });

  test('mutated accepts: ProtocolError or a canonical accept with valid pool parameters', () => {
    run(fc.tuple(arbAccept, arbMutation), 8000, ([a, m]) => {
      const b = mutate(P.encodeAccept(a), m);
      const d = tryDecode(() => P.decodeAccept(b));
      if (d) {
        assert.strictEqual(P.sessionParamsProblem(d), undefined);
        if (P.versionMinor(d.version) <= P.VERSION_MINOR) sameBytes(P.encodeAccept(d), b.subarray(0, 56));
      }
    });
  });
});

describe('reject decoder', () => {
  test('valid rejects round-trip', () => {
    run(arbReject, 2000, (r) => {
      assert.deepStrictEqual(P.decodeReject(P.encodeReject(r)), { ...r, version: P.VERSION, reason: P.RejectReason[r.code] });
    });
  });

  test('random and mutated bytes: ProtocolError or a canonical reject', () => {
    const arb = fc.oneof(
      fc.uint8Array({ maxLength: 148 }),
      fc.tuple(arbReject, arbMutation).map(([r, m]) => new Uint8Array(mutate(P.encodeReject(r), m))),
    );
    run(arb, 8000, (b) => {
      const d = tryDecode(() => P.decodeReject(b));
      if (d && P.versionMajor(d.version) === P.VERSION_MAJOR && P.versionMinor(d.version) <= P.VERSION_MINOR) {
        sameBytes(P.encodeReject({ ...d, version: d.version }), b.subarray(0, 16));
      }
    });
  });
});

describe('imm decoder', () => {
  test('valid imms round-trip', () => {
    const arb = arbParams.chain((p) =>
      fc.record({
        p: fc.constant(p),
        chunk: fc.integer({ min: 0, max: p.queueDepth - 1 }),
        wOff: fc.integer({ min: 0, max: p.chunkSize - P.WRITE_TRAILER_SIZE }),
        rOff: fc.integer({ min: 0, max: p.chunkSize - P.READ_TRAILER_SIZE }),
        rHdr: fc.integer({ min: 0, max: 100 }),
        status: fc.integer({ min: 0, max: P.MAX_STATUS }),
        hb: fc.integer({ min: 0, max: P.IMM_PAYLOAD_MASK }),
      }),
    );
    run(arb, 6000, ({ p, chunk, wOff, rOff, rHdr, status, hb }) => {
      assert.deepStrictEqual(P.decodeImm(P.encodeRequestImm('write', chunk, wOff, p), wOff + 16, 'server', p), { type: 'write-req', chunk, trailerOffset: wOff });
      const hdr = Math.min(rHdr, rOff);
      assert.deepStrictEqual(P.decodeImm(P.encodeRequestImm('read', chunk, rOff, p), hdr + 32, 'server', p), { type: 'read-req', chunk, trailerOffset: rOff });
      assert.deepStrictEqual(P.decodeImm(P.encodeIoRspImm(chunk, status), 0, 'client', p), { type: 'io-rsp', chunk, status });
      assert.deepStrictEqual(P.decodeImm(P.encodeHbImm(hb), 0, 'client', p), { type: 'hb', id: hb });
      assert.deepStrictEqual(P.decodeImm(P.encodeHbImm(hb, true), 0, 'server', p), { type: 'hb-ack', id: hb });
    });
  });

  test('random imm and byte_len: ProtocolError or a canonical imm', () => {
    const arb = fc.record({
      p: arbParams,
      imm: fc.oneof(arbU32, fc.integer({ min: -10, max: 2 ** 33 }), fc.double()),
      byteLen: fc.oneof(fc.integer({ min: 0, max: 64 }), arbU32, fc.double()),
      side: fc.constantFrom<P.Side>('server', 'client'),
    });
    run(arb, 14000, ({ p, imm, byteLen, side }) => {
      const d = tryDecode(() => P.decodeImm(imm, byteLen, side, p));
      if (!d) return;
      switch (d.type) {
        case 'write-req':
          assert.ok(P.encodeRequestImm('write', d.chunk, d.trailerOffset, p) === imm);
          assert.strictEqual(byteLen, d.trailerOffset + 16);
          break;
        case 'read-req':
          assert.ok(P.encodeRequestImm('read', d.chunk, d.trailerOffset, p) === imm);
          break;
        case 'io-rsp':
          assert.strictEqual(side, 'client');
          assert.ok(P.encodeIoRspImm(d.chunk, d.status) === imm);
          break;
        case 'hb':
        case 'hb-ack':
          assert.ok(P.encodeHbImm(d.id, d.type === 'hb-ack') === imm);
          break;
      }
    });
  });
});

describe('trailer decoders', () => {
  test('valid write trailers round-trip', () => {
    run(arbWrite, 3000, ({ p, t }) => {
      assert.deepStrictEqual(P.decodeWriteTrailer(P.encodeWriteTrailer(t), t.hdrLen + t.dataLen, p), { ...t });
    });
  });

  test('mutated and random write trailers: ProtocolError or a canonical trailer within limits', () => {
    const arb = fc.tuple(arbWrite, arbMutation, fc.integer({ min: -2, max: 2 }), fc.uint8Array({ minLength: 16, maxLength: 16 }), fc.boolean());
    run(arb, 8000, ([{ p, t }, m, skew, random, useRandom]) => {
      const b = useRandom ? random : mutate(P.encodeWriteTrailer(t), m);
      const off = t.hdrLen + t.dataLen + skew;
      const d = tryDecode(() => P.decodeWriteTrailer(b, off, p));
      if (d) {
        sameBytes(P.encodeWriteTrailer(d), b);
        assert.strictEqual(d.hdrLen + d.dataLen, off);
        assert.ok(d.hdrLen <= p.maxHeaderSize);
      }
    });
  });

  test('valid read trailers round-trip', () => {
    run(arbRead, 3000, ({ p, t }) => {
      const off = p.chunkSize - P.READ_TRAILER_SIZE;
      assert.deepStrictEqual(P.decodeReadTrailer(P.encodeReadTrailer(t), off, t.hdrLen + 32, p), { ...t });
    });
  });

  test('mutated and random read trailers: ProtocolError or a canonical trailer within limits', () => {
    const arb = fc.tuple(arbRead, arbMutation, fc.integer({ min: -2, max: 2 }), fc.uint8Array({ minLength: 32, maxLength: 32 }), fc.boolean());
    run(arb, 8000, ([{ p, t }, m, skew, random, useRandom]) => {
      const b = useRandom ? random : mutate(P.encodeReadTrailer(t), m);
      const off = p.chunkSize - P.READ_TRAILER_SIZE;
      const byteLen = t.hdrLen + 32 + skew;
      const d = tryDecode(() => P.decodeReadTrailer(b, off, byteLen, p));
      if (d) {
        sameBytes(P.encodeReadTrailer(d), b);
        assert.ok(d.len + d.hdrLen <= off);
        assert.ok(d.addr + BigInt(d.len) <= 1n << 64n);
      }
    });
  });
});

describe('server message decoder', () => {
  const arbCtx = arbParams.map((p) => ({ queueDepth: p.queueDepth, strict: p.strict, minRecvSize: P.clientRecvSize(p, 2) }));
  const arbMsg = fc.oneof(
    fc.record({ recvSize: arbU32, name: fc.string({ maxLength: 20 }).filter((s) => !/[\u0000-\u001f\u007f]/.test(s) && Buffer.byteLength(s) <= 64) }).map((m) => ({ kind: 'info' as const, m })),
    fc.record({ chunk: fc.integer({ min: 0, max: 65534 }), seq: arbSeq }).map((m) => ({ kind: 'resume' as const, m })),
    fc.constant({ kind: 'close' as const, m: null }),
  );
  const encode = (x: { kind: 'info' | 'resume' | 'close'; m: any }): Buffer =>
    x.kind === 'info' ? P.encodeInfoReq(x.m) : x.kind === 'resume' ? P.encodeResumeReq(x.m) : P.encodeSessionClose();
  const reencode = (d: P.ServerInbound): Buffer =>
    d.type === 'info-req' ? P.encodeInfoReq(d) : d.type === 'resume-req' ? P.encodeResumeReq(d) : P.encodeSessionClose();

  test('valid messages decode to what was encoded (or to the violation the context implies)', () => {
    run(fc.tuple(arbCtx, arbMsg), 3000, ([ctx, x]) => {
      const b = encode(x);
      const d = tryDecode(() => P.decodeServerMessage(b, ctx));
      const expectOk =
        x.kind === 'close' ||
        (x.kind === 'info' && x.m.recvSize >= ctx.minRecvSize) ||
        (x.kind === 'resume' && x.m.chunk < ctx.queueDepth);
      assert.strictEqual(d !== undefined, expectOk);
      if (d) sameBytes(reencode(d), b);
    });
  });

  test('random and mutated messages: ProtocolError or a canonical message', () => {
    const arb = fc.tuple(arbCtx, fc.oneof(arbMessageBytes(120), fc.tuple(arbMsg, arbMutation).map(([x, m]) => new Uint8Array(mutate(encode(x), m)))));
    run(arb, 10000, ([ctx, b]) => {
      const d = tryDecode(() => P.decodeServerMessage(b, ctx));
      if (d) sameBytes(reencode(d), b);
    });
  });
});

describe('client message decoder', () => {
  test('valid IO_RSP round-trips', () => {
    run(arbIoRsp, 4000, ({ ctx, fields }) => {
      const d = P.decodeClientMessage(P.encodeIoRsp(fields), ctx) as P.IoRsp;
      assert.strictEqual(d.type, 'io-rsp');
      assert.deepStrictEqual({ ...d, header: Buffer.from(d.header) }, {
        type: 'io-rsp',
        chunk: fields.chunk,
        status: fields.status,
        seq: fields.seq,
        dataLen: fields.dataLen,
        read: fields.read,
        replay: fields.replay,
        keys: fields.keys,
        header: Buffer.from(fields.header!),
      });
    });
  });

  test('mutated IO_RSP and RESUME_RSP: ProtocolError or a canonical message', () => {
    const arb = fc.tuple(
      arbIoRsp,
      arbMutation,
      fc.record({ chunk: fc.integer({ min: 0, max: 65534 }), rkey: fc.integer({ min: 1, max: 0xffffffff }), seq: arbSeq }),
      fc.boolean(),
    );
    run(arb, 12000, ([{ ctx, fields }, m, resume, useResume]) => {
      const b = mutate(useResume ? P.encodeResumeRsp(resume) : P.encodeIoRsp(fields), m);
      const d = tryDecode(() => P.decodeClientMessage(b, ctx));
      if (!d) return;
      if (d.type === 'io-rsp') {
        sameBytes(P.encodeIoRsp(d), b);
        assert.ok(d.chunk < ctx.queueDepth);
        if (ctx.strict) assert.ok(d.keys.some((k) => k.pathIndex === ctx.pathIndex));
        else assert.strictEqual(d.keys.length, 0);
      } else if (d.type === 'resume-rsp') {
        sameBytes(P.encodeResumeRsp(d), b);
      } else {
        assert.ok(d.descs.length > 0);
      }
    });
  });

  test('random messages: only ProtocolError, and accepted INFO_RSP descriptors obey the pool rules', () => {
    run(fc.tuple(arbClientCtx, arbMessageBytes(200)), 10000, ([ctx, b]) => {
      const d = tryDecode(() => P.decodeClientMessage(b, ctx));
      if (d?.type === 'info-rsp') {
        for (const desc of d.descs) {
          assert.strictEqual(desc.len % ctx.chunkSize, 0);
          assert.ok(desc.len > 0);
        }
      }
    });
  });

  test('INFO_RSP sequences: valid ones assemble into queueDepth chunk keys, mutated ones fail only with ProtocolError', () => {
    const arb = fc
      .record({ p: paramsUpTo(600), pathCount: fc.constant(1), pathIndex: fc.constant(0) })
      .chain(({ p, pathCount, pathIndex }) =>
        fc.record({
          ctx: fc.constant<P.ClientMsgContext>({ ...p, pathCount, pathIndex }),
          groups: fc.array(fc.integer({ min: 1, max: 4 }), { maxLength: 8 }),
          base: fc.bigInt({ min: 0n, max: 1n << 48n }),
          mutation: fc.option(fc.tuple(fc.nat(), arbMutation), { freq: 2 }),
        }),
      );
    run(arb, 1500, ({ ctx, groups, base, mutation }) => {
      // strict: one descriptor per chunk; relaxed: chunks grouped into descriptors
      const descs: P.InfoDesc[] = [];
      let chunk = 0;
      let g = 0;
      while (chunk < ctx.queueDepth) {
        const n = ctx.strict ? 1 : Math.min(groups[g++ % Math.max(groups.length, 1)] ?? 1, ctx.queueDepth - chunk);
        descs.push({ addr: base + BigInt(chunk * ctx.chunkSize), rkey: 1 + (chunk % 1000), len: n * ctx.chunkSize });
        chunk += n;
      }
      let msgs: Uint8Array[] = P.encodeInfoRsp(descs);
      if (mutation) {
        const [which, m] = mutation;
        msgs = msgs.map((x, i) => (i === which % msgs.length ? mutate(x, m) : x));
      }
      const asm = new P.InfoAssembler(ctx);
      let keys: P.ChunkKey[] | undefined;
      const ok = tryDecode(() => {
        for (const x of msgs) {
          const d = P.decodeClientMessage(x, ctx);
          if (d.type !== 'info-rsp') return false; // the client's state machine rejects it
          keys = asm.add(d);
        }
        return true;
      });
      if (!mutation) {
        assert.strictEqual(ok, true);
        assert.strictEqual(keys!.length, ctx.queueDepth);
        assert.strictEqual(keys![ctx.queueDepth - 1].addr, base + BigInt((ctx.queueDepth - 1) * ctx.chunkSize));
      } else if (ok === true && keys) {
        assert.strictEqual(keys!.length, ctx.queueDepth);
      }
    });
  });
});

test('the decoders saw at least 100,000 generated cases', () => {
  expect(cases).toBeGreaterThanOrEqual(100_000);
});
