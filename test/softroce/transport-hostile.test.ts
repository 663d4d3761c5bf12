/**
 * A hostile peer against a live server, while an honest session keeps doing
 * IOs: a flood of connects with garbage, wrong versions and unknown
 * sessions; a raw client naming a chunk id beyond the queue depth; and the
 * server closed under load, after which every pending client IO settles
 * with a clear error (none hangs). Complements transport.test.ts's S1-S3.
 */
import { CmId, CompletionQueue, Device, MemoryRegion, openDevice, QueuePair, RdmaError, WorkCompletion, transport } from '../../lib';

const { TransportServer, connect } = transport;
const P = transport;
const HOST = '10.99.1.1';
let port = 21000 + (process.pid % 500) * 4;

function server(handler: ConstructorParameters<typeof TransportServer>[0]['handler'], queueDepth = 6) {
  const p = port++;
  const logs: string[] = [];
  const s = new TransportServer({ queueDepth, chunkSize: 16384, maxHeaderSize: 512, handler, log: (l) => logs.push(l) });
  s.listen([{ host: HOST, port: p }]);
  return { s, port: p, logs };
}

/** The honest session's steady IO stream: counts, and the first failure. */
function steadyIo(client: Awaited<ReturnType<typeof connect>>) {
  let stop = false;
  let ok = 0;
  let failure: unknown;
  const loop = (async () => {
    for (let i = 0; !stop; i++) {
      try {
        const w = await client.write(Buffer.from(`h${i % 4}`), Buffer.alloc(512, i & 0xff));
        if (w.status !== 0) throw new Error(`status ${w.status}`);
        ok++;
      } catch (err) {
        failure ??= err;
        return;
      }
    }
  })();
  return { stats: () => ({ ok, failure }), stop: async () => { stop = true; await loop; } };
}

interface RawPath { id: CmId; dev: Device; cq: CompletionQueue; qp: QueuePair; mr: MemoryRegion; buf: Buffer; keys: transport.ChunkKey[]; acc: transport.AcceptData; disconnected: Promise<void>; close(): void }

/** A hand-made client path: connect, info exchange, nothing else. */
async function rawPath(p: number): Promise<RawPath> {
  const id = CmId.create();
  await id.resolveAddr(HOST, p);
  await id.resolveRoute();
  const dev = openDevice(id.info().device!);
  const pd = dev.allocPd();
  const cq = dev.createCompletionQueue({ cqe: 64 });
  const qp = id.createQueuePair(pd, { sendCq: cq, recvCq: cq, maxSendWr: 16, maxRecvWr: 16 });
  const mem = pd.allocate(65536);
  const mr = pd.registerMemory(mem);
  const buf = Buffer.from(mem);
  const recvs: WorkCompletion[] = [];
  let wake: (() => void) | undefined;
  cq.ref();
  cq.on('completions', (wcs) => {
    for (const w of wcs) if (w.opcodeName === 'RECV') recvs.push(w);
    wake?.();
  });
  qp.postRecv(Array.from({ length: 4 }, (_, i) => ({ wrId: i, sge: [mr.sge(32768 + i * 4096, 4096)] })));
  let disconnect!: () => void;
  const disconnected = new Promise<void>((r) => (disconnect = r));
  id.on('disconnected', () => disconnect());
  const close = () => { cq.unref(); id.close(); dev.close(); };
  try {
    const acc = P.decodeAccept((await id.connect({
      privateData: P.encodeConnectRequest({ newSession: true, pathIndex: 0, pathCount: 1, reconnectCount: 0, sessionId: P.randomSessionId() }),
    })).privateData);
    const req = P.encodeInfoReq({ recvSize: 4096, name: 'hostile' });
    req.copy(buf, 0);
    qp.postSend([{ wrId: 100, opcode: 'SEND', sge: [mr.sge(0, req.length)] }]);
    const asm = new P.InfoAssembler(acc);
    let keys: transport.ChunkKey[] | undefined;
    const deadline = Date.now() + 30_000;
    while (!keys) {
      if (!recvs.length) {
        if (Date.now() > deadline) throw new Error('no info response');
        await new Promise<void>((r) => { wake = r; setTimeout(r, 100); });
        continue;
      }
      const w = recvs.shift()!;
      const at = 32768 + w.wrId * 4096;
      const m = P.decodeClientMessage(buf.subarray(at, at + w.byteLen), { ...acc, pathCount: 1, pathIndex: 0 });
      qp.postRecv([{ wrId: w.wrId, sge: [mr.sge(at, 4096)] }]);
      if (m.type === 'info-rsp') keys = asm.add(m);
    }
    return { id, dev, cq, qp, mr, buf, keys, acc, disconnected, close };
  } catch (err) {
    close();
    throw err;
  }
}

test('a flood of bad connects is refused while an honest session keeps doing IOs', async () => {
  const srv = server(() => ({ status: 0 }));
  const good = await connect({ paths: [{ host: HOST, port: srv.port }] });
  const io = steadyIo(good);
  try {
    const bad: Buffer[] = [];
    for (let i = 0; i < 30; i++) {
      const b = Buffer.from(P.encodeConnectRequest({ newSession: i % 3 !== 2, pathIndex: 0, pathCount: 1, reconnectCount: 0, sessionId: P.randomSessionId() }));
      if (i % 3 === 0) b.fill(0xff, 0, 8);             // garbage magic/version
      else if (i % 3 === 1) b.writeUInt16LE(0x0900, 4); // a version we do not speak
      bad.push(b);                                      // i % 3 == 2: a session the server never made
    }
    const attempts = bad.map(async (pdata) => {
      const id = CmId.create();
      try {
        await id.resolveAddr(HOST, srv.port);
        await id.resolveRoute();
        const dev = openDevice(id.info().device!);
        const pd = dev.allocPd();
        const cq = dev.createCompletionQueue({ cqe: 4 });
        id.createQueuePair(pd, { sendCq: cq, recvCq: cq, maxSendWr: 2, maxRecvWr: 2 });
        return await id.connect({ privateData: pdata }).then(() => 'accepted', (e: RdmaError & { privateData?: Buffer }) =>
          (e.code === 'ECONNREFUSED' && e.privateData ? P.decodeReject(e.privateData).code : `unexpected ${e.code}`));
      } finally {
        id.close();
      }
    });
    const codes = await Promise.all(attempts);
    expect(codes.filter((c) => c === 'accepted')).toEqual([]);
    expect(new Set(codes)).toEqual(new Set(['EPROTO', 'EPROTONOSUPPORT', 'ESTALE']));
    // the honest session went on throughout
    const before = io.stats().ok;
    await new Promise((r) => setTimeout(r, 300));
    expect(io.stats().failure).toBeUndefined();
    expect(io.stats().ok).toBeGreaterThan(before);
  } finally {
    await io.stop();
    await good.close();
    await srv.s.close();
  }
});

test('a chunk id beyond the queue depth closes that path with a logged reason; the honest session is untouched', async () => {
  const srv = server(() => ({ status: 0 }), 6); // 6 chunks: ids 6 and 7 still fit the imm's 3 bits
  const good = await connect({ paths: [{ host: HOST, port: srv.port }] });
  const io = steadyIo(good);
  const bad = await rawPath(srv.port);
  try {
    P.writeWriteTrailer(bad.buf, 8192, { hdrLen: 0, dataLen: 0, seq: 1n });
    bad.qp.postSend([{
      wrId: 1, opcode: 'RDMA_WRITE_WITH_IMM', sge: [bad.mr.sge(8192, P.WRITE_TRAILER_SIZE)],
      remoteAddr: bad.keys[0].addr, rkey: bad.keys[0].rkey,
      imm: P.encodeRequestImm('write', 7, 0, { queueDepth: 8, chunkSize: 16384 }),
    }]);
    await bad.disconnected;
    expect(srv.logs.some((l) => /protocol violation/.test(l) && /chunk/.test(l))).toBe(true);
    const before = io.stats().ok;
    await new Promise((r) => setTimeout(r, 300));
    expect(io.stats().failure).toBeUndefined();
    expect(io.stats().ok).toBeGreaterThan(before);
    expect((await good.write(Buffer.alloc(0), Buffer.alloc(9))).status).toBe(0);
  } finally {
    bad.close();
    await io.stop();
    await good.close();
    await srv.s.close();
  }
});

test('the server closed under load: every pending client IO settles with a clear error, none hangs', async () => {
  const srv = server(async () => {
    await new Promise((r) => setTimeout(r, 20)); // keep IOs in flight
    return { status: 0 };
  });
  const client = await connect({ paths: [{ host: HOST, port: srv.port }], reconnect: { maxAttempts: 0 }, reconnectWaitMs: 2000 });
  const ios = Array.from({ length: 40 }, (_, i) => client.write(Buffer.from(`k${i}`), Buffer.alloc(1024, i)).then(
    (r) => ({ ok: true as const, status: r.status }),
    (e: RdmaError) => ({ ok: false as const, code: e.code, message: e.message }),
  ));
  await new Promise((r) => setTimeout(r, 30));
  await srv.s.close();
  let timer: NodeJS.Timeout | undefined;
  const settled = await Promise.race([
    Promise.all(ios),
    new Promise<'hung'>((r) => { timer = setTimeout(() => r('hung'), 60_000); }),
  ]);
  clearTimeout(timer);
  try {
    expect(settled).not.toBe('hung');
    const results = settled as Array<{ ok: boolean; code?: string; message?: string }>;
    expect(results).toHaveLength(40);
    const failed = results.filter((r) => !r.ok);
    expect(failed.length).toBeGreaterThan(0); // the close cut some off
    for (const f of failed) {
      expect(typeof f.code).toBe('string');
      expect(f.message!.length).toBeGreaterThan(10);
    }
  } finally {
    await client.close({ drain: false });
  }
});
