/**
 * A hostile peer against a live server, while an honest session keeps doing
 * IOs: a flood of connects with garbage, wrong versions and unknown
 * sessions; a raw client naming a chunk id beyond the queue depth; and the
 * server closed under load, after which every pending client IO settles
 * with a clear error (none hangs); a server replaying a read key after
 * the IO (S1: it fails, whether the server invalidated it or not); a peer
 * that connects and stays silent on either side. Complements
 * transport.test.ts's S1-S3.
 */
import { CmId, CompletionQueue, Device, MemoryRegion, openDevice, QueuePair, RdmaError, WorkCompletion, transport } from '../../lib';

const { TransportServer, connect } = transport;
const P = transport.protocol;
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

interface RawPath { id: CmId; dev: Device; cq: CompletionQueue; qp: QueuePair; mr: MemoryRegion; buf: Buffer; keys: transport.protocol.ChunkKey[]; acc: transport.protocol.AcceptData; disconnected: Promise<void>; close(): void }

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
    let keys: transport.protocol.ChunkKey[] | undefined;
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
  // writes and reads (staged and zero-copy) in flight together
  const zc = client.allocBuffer(1024 * 20);
  const ios = Array.from({ length: 40 }, (_, i) => {
    const io = i % 2 === 0
      ? client.write(Buffer.from(`k${i}`), Buffer.alloc(1024, i))
      : client.read(Buffer.from(`k${i}`), i % 4 === 1 ? Buffer.alloc(1024) : zc.subarray((i >> 1) * 1024, ((i >> 1) + 1) * 1024));
    return io.then(
      (r) => ({ ok: true as const, status: r.status }),
      (e: RdmaError) => ({ ok: false as const, code: e.code, message: e.message }),
    );
  });
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
    // each failure says the connection went away, in so many words
    for (const f of failed) {
      expect(['ECONNABORTED', 'ECONNRESET', 'ETIMEDOUT', 'ESTALE']).toContain(f.code);
      expect(f.message).toMatch(/^(ECONNABORTED|ECONNRESET|ETIMEDOUT|ESTALE): .*(path|session|server|connection)/);
    }
  } finally {
    await client.close({ drain: false });
  }
});

// (server invalidates: true, the IO_RSP in a SEND_WITH_INV, is what a 1.1
// client on rxe forbids with LOCAL_READ_INVALIDATE: its type 1 window cannot
// be invalidated remotely, and the kernel fails the connection that tries;
// test/isolated/hostile-invalidate-client.test.ts plays that server)
test.each([false])("S1: a client's read buffer is writable only during its IO: the server's replay of the read key afterwards fails (server invalidates: %s)", async (serverInvalidates) => {
  // a hand-made relaxed server: answers one read (data written through the
  // client's window, then the IO_RSP in a plain SEND that leaves the key to
  // the client), then replays the same key, as a malicious or buggy server
  // might
  const p = port++;
  const params = { queueDepth: 4, chunkSize: 8192, maxHeaderSize: 128, strict: false };
  const accept = P.encodeAccept({ ...params, sessionCreated: true, hbIntervalMs: P.MAX_HB_INTERVAL_MS, hbMissedMax: 1 });
  const listener = CmId.create();
  const opened: Array<() => void> = [];
  const replay = new Promise<string>((resolve, reject) => {
    listener.on('connection', (id) => {
      void (async () => {
        const dev = openDevice(id.info().device!);
        opened.push(() => { id.close(); dev.close(); });
        const pd = dev.allocPd();
        const cq = dev.createCompletionQueue({ cqe: 64 });
        const qp = id.createQueuePair(pd, { sendCq: cq, recvCq: cq, maxSendWr: 16, maxRecvWr: 16 });
        const mem = pd.allocate(65536);
        const mr = pd.registerMemory(mem, 1 | 2); // LOCAL_WRITE | REMOTE_WRITE: chunks + scratch
        const buf = Buffer.from(mem);
        const got: WorkCompletion[] = [];
        let wake: (() => void) | undefined;
        cq.ref();
        opened.push(() => cq.unref());
        cq.on('completions', (wcs) => { got.push(...wcs); wake?.(); });
        const next = async (pred: (w: WorkCompletion) => boolean) => {
          for (const until = Date.now() + 30_000; Date.now() < until;) {
            const i = got.findIndex(pred);
            if (i >= 0) return got.splice(i, 1)[0];
            await new Promise<void>((r) => { wake = r; setTimeout(r, 50); });
          }
          throw new Error('raw server: no matching completion');
        };
        qp.postRecv(Array.from({ length: 8 }, (_, i) => ({ wrId: i, sge: [mr.sge(40960 + i * 2048, 2048)] })));
        await id.accept({ privateData: accept });
        await next((w) => w.opcodeName === 'RECV'); // INFO_REQ
        const [info] = P.encodeInfoRsp([{ addr: BigInt(mr.addr), rkey: mr.rkey, len: params.queueDepth * params.chunkSize }]);
        info.copy(buf, 36864);
        qp.postSend([{ wrId: 1, opcode: 'SEND', sge: [mr.sge(36864, info.length)] }]);
        // the client's READ_REQ (heartbeats are not expected: interval at its maximum)
        const req = await next((w) => w.opcodeName === 'RECV_RDMA_WITH_IMM');
        const imm = P.decodeImm(req.imm!, req.byteLen, 'server', params);
        if (imm.type !== 'read-req') throw new Error(`raw server: expected a read request, got ${imm.type}`);
        const at = imm.chunk * params.chunkSize + imm.trailerOffset;
        const t = P.decodeReadTrailer(buf.subarray(at, at + 32), imm.trailerOffset, req.byteLen, params);
        buf.fill(0x5c, 32768, 32768 + t.len);
        const rsp = P.encodeIoRsp({ chunk: imm.chunk, status: 0, seq: t.seq, read: true, dataLen: t.len });
        rsp.copy(buf, 34816);
        qp.postSend([
          { wrId: 2, opcode: 'RDMA_WRITE', sge: [mr.sge(32768, t.len)], remoteAddr: Number(t.addr), rkey: t.rkey, signaled: false },
          serverInvalidates
            ? { wrId: 3, opcode: 'SEND_WITH_INV', invalidateRkey: t.rkey, sge: [mr.sge(34816, rsp.length)] }
            : { wrId: 3, opcode: 'SEND', sge: [mr.sge(34816, rsp.length)] },
        ]);
        const sent = await next((w) => w.wrId === 3);
        if (!sent.ok) throw new Error(`raw server: response ${sent.statusName}`);
        await new Promise((r) => setTimeout(r, 100)); // the client has its data
        // the replay: same address, same key
        buf.fill(0xee, 32768, 32768 + t.len);
        qp.postSend([{ wrId: 4, opcode: 'RDMA_WRITE', sge: [mr.sge(32768, t.len)], remoteAddr: Number(t.addr), rkey: t.rkey }]);
        resolve((await next((w) => w.wrId === 4)).statusName);
      })().catch(reject);
    });
  });
  listener.listen(HOST, p);
  const client = await connect({ paths: [{ host: HOST, port: p }] });
  try {
    const into = Buffer.alloc(1000);
    const r = await client.read(Buffer.from('k'), into);
    expect(r).toMatchObject({ status: 0, length: 1000 });
    expect(into.every((b) => b === 0x5c)).toBe(true);
    expect(await replay).toBe('REM_ACCESS_ERR');
    expect(into.every((b) => b === 0x5c)).toBe(true); // untouched by the replay
  } finally {
    await client.close({ drain: false });
    for (const c of opened.reverse()) c();
    listener.close();
  }
});

test('a path that connects and never sends INFO_REQ is closed after infoTimeoutMs; an honest session is untouched', async () => {
  const p = port++;
  const logs: string[] = [];
  const s = new TransportServer({ queueDepth: 4, chunkSize: 8192, handler: () => ({ status: 0 }), infoTimeoutMs: 600, log: (l) => logs.push(l) });
  s.listen([{ host: HOST, port: p }]);
  const good = await connect({ paths: [{ host: HOST, port: p }] });
  const io = steadyIo(good);
  const id = CmId.create();
  const dev = openDevice('rxe0');
  try {
    await id.resolveAddr(HOST, p);
    await id.resolveRoute();
    const pd = dev.allocPd();
    const cq = dev.createCompletionQueue({ cqe: 8 });
    id.createQueuePair(pd, { sendCq: cq, recvCq: cq, maxSendWr: 2, maxRecvWr: 2 });
    const disconnected = new Promise<void>((r) => id.once('disconnected', () => r()));
    await id.connect({ privateData: P.encodeConnectRequest({ newSession: true, pathIndex: 0, pathCount: 1, reconnectCount: 0, sessionId: P.randomSessionId() }) });
    expect(Object.keys(s.stats())).toHaveLength(2);
    const t0 = Date.now();
    await disconnected;
    expect(Date.now() - t0).toBeGreaterThanOrEqual(400);
    expect(logs.some((l) => /closed: no INFO_REQ within 600 ms/.test(l))).toBe(true);
    expect(io.stats()).toMatchObject({ failure: undefined });
    expect(io.stats().ok).toBeGreaterThan(0);
  } finally {
    await io.stop();
    id.close();
    dev.close();
    await good.close();
    await s.close();
  }
});

test('a server that accepts and never answers INFO_REQ: the client gives up after connectTimeoutMs (ETIMEDOUT)', async () => {
  const p = port++;
  const listener = CmId.create();
  const opened: Array<() => void> = [];
  listener.on('connection', (id) => {
    const dev = openDevice(id.info().device!);
    opened.push(() => { id.close(); dev.close(); });
    const pd = dev.allocPd();
    const cq = dev.createCompletionQueue({ cqe: 16 });
    id.createQueuePair(pd, { sendCq: cq, recvCq: cq, maxSendWr: 4, maxRecvWr: 4 });
    const params = { queueDepth: 4, chunkSize: 8192, maxHeaderSize: 128, strict: false };
    void id.accept({ privateData: P.encodeAccept({ ...params, sessionCreated: true, hbIntervalMs: P.MAX_HB_INTERVAL_MS, hbMissedMax: 1 }) });
  });
  listener.listen(HOST, p);
  try {
    const t0 = Date.now();
    const err = await connect({ paths: [{ host: HOST, port: p }], connectTimeoutMs: 800, reconnect: { maxAttempts: 0 } }).then(() => undefined, (e: Error) => e);
    expect(err?.message).toMatch(/ETIMEDOUT: no INFO_RSP within 800 ms/);
    expect(Date.now() - t0).toBeLessThan(10_000);
  } finally {
    for (const c of opened) c();
    listener.close();
  }
});
