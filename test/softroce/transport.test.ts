/**
 * The transport on real rxe devices (client and server in one process):
 * write/read round trips in strict and relaxed mode, permits and FIFO order,
 * abort and close, zero-copy buffers, multipath with failover and
 * exactly-once, and the security properties against a hand-made "raw"
 * client: S1 (a key works only on its own session's connection), S2 (strict
 * mode invalidates a chunk's key while the handler runs) and S3 (malformed
 * input closes that path only).
 */
import { CmId, openDevice, QueuePair, RdmaError, transport } from '../../lib';
import { later, raw, rawServer, rawWrite } from './transport-raw';

const { TransportServer, TransportClient, connect } = transport;
const P = transport.protocol;
type TransportServer = InstanceType<typeof TransportServer>;

const HOST0 = '10.99.1.1';
const HOST1 = '10.99.2.1';
let port = 19000 + (process.pid % 500) * 8;


function serverWith(opts: Partial<ConstructorParameters<typeof TransportServer>[0]> & { hosts?: string[] }): { server: TransportServer; port: number; logs: string[] } {
  const p = port++;
  const logs: string[] = [];
  const server = new TransportServer({
    queueDepth: 8, chunkSize: 16384, maxHeaderSize: 512,
    handler: opts.handler ?? (() => ({ status: 0 })),
    log: (l) => logs.push(l),
    ...opts,
  });
  server.listen((opts.hosts ?? [HOST0]).map((host) => ({ host, port: p })));
  return { server, port: p, logs };
}


// ------------------------------------------------------------------ tests

let srvForDrop: ReturnType<typeof serverWith>;

describe('single path', () => {
  let srv: ReturnType<typeof serverWith>;
  afterEach(async () => {
    await srv?.server.close();
  });

  test.each([true, false])('write and read round trips (strict=%s)', async (strict) => {
    const store = new Map<string, Buffer>();
    srv = serverWith({
      strict,
      handler: (req) => {
        const key = req.header.toString();
        if (req.kind === 'write') {
          store.set(key, Buffer.from(req.data));
          return { status: 0, header: Buffer.from(`stored ${req.data.length}`) };
        }
        const v = store.get(key);
        if (!v) return { status: 2 }; // ENOENT
        v.copy(req.data);
        return { length: v.length, header: strict ? Buffer.from('hit') : undefined };
      },
    });
    const client = await connect({ paths: [{ host: HOST0, port: srv.port }] });
    try {
      expect(client.params).toMatchObject({ queueDepth: 8, chunkSize: 16384, maxHeaderSize: 512, strict });
      const data = Buffer.alloc(10000);
      for (let i = 0; i < data.length; i++) data[i] = (i * 7) & 0xff;
      const w = await client.write(Buffer.from('k1'), data);
      expect(w.status).toBe(0);
      expect(w.header.toString()).toBe('stored 10000');
      const into = Buffer.alloc(12000);
      const r = await client.read(Buffer.from('k1'), into);
      expect(r.status).toBe(0);
      expect(r.length).toBe(10000);
      expect(into.subarray(0, 10000).equals(data)).toBe(true);
      expect(r.header.toString()).toBe(strict ? 'hit' : '');
      const miss = await client.read(Buffer.from('nope'), Buffer.alloc(10));
      expect(miss).toMatchObject({ status: 2, length: 0 });
      // relaxed mode answers an empty-header write with the imm fast path
      const empty = await client.write(Buffer.alloc(0), Buffer.alloc(0));
      expect(empty.status).toBe(0);
      // many IOs: every chunk is reused with new keys (strict) many times
      const results = await Promise.all(Array.from({ length: 64 }, (_, i) => client.write(Buffer.from(`k${i}`), Buffer.alloc(100, i))));
      expect(results.every((x) => x.status === 0)).toBe(true);
      const back = Buffer.alloc(100);
      expect((await client.read(Buffer.from('k63'), back)).length).toBe(100);
      expect(back.every((b) => b === 63)).toBe(true);
      expect(client.stats().paths[0]).toMatchObject({ state: 'connected', writes: 66, reads: 3, inflight: 0 });
      expect(client.prometheus()).toMatch(/^node_rdma_transport_writes_total\{role="client",session="[0-9a-f-]+",path="0",peer="10.99.1.1:\d+"\} 66$/m);
      expect(srv.server.prometheus()).toMatch(/^node_rdma_transport_writes_total\{role="server",session="[0-9a-f-]+",path="0",device="rxe0"\} 66$/m);
    } finally {
      await client.close();
    }
  });

  test.each([true, false])('an IO is two messages on the wire, one each way; window work is counted apart (strict=%s)', async (strict) => {
    srv = serverWith({ strict, handler: (req) => (req.kind === 'read' ? (req.data.fill(9), {}) : { header: req.header.length ? Buffer.from('ok') : undefined }) });
    const client = await connect({ paths: [{ host: HOST0, port: srv.port }] });
    try {
      const wireOf = () => ({ c: client.stats().paths[0].wire, s: Object.values(srv.server.stats())[0].paths[0].wire });
      const before = wireOf();
      const W = 12;
      const R = 10;
      // writes with and without a header (relaxed answers the latter with a bare immediate), reads with data
      await Promise.all(Array.from({ length: W }, (_, i) => client.write(i % 2 ? Buffer.from(`h${i}`) : Buffer.alloc(0), Buffer.alloc(4096, i))));
      const reads = await Promise.all(Array.from({ length: R }, () => client.read(Buffer.from('r'), Buffer.alloc(4096))));
      expect(reads.every((r) => r.length === 4096)).toBe(true);
      const after = wireOf();
      const d = (side: 'c' | 's', k: keyof typeof before.c): number => after[side][k] - before[side][k];
      // one request each way per IO: client -> server, then server -> client
      expect([d('c', 'messagesSent'), d('s', 'messagesReceived')]).toEqual([W + R, W + R]);
      expect([d('s', 'messagesSent'), d('c', 'messagesReceived')]).toEqual([W + R, W + R]);
      expect((d('c', 'messagesSent') + d('s', 'messagesSent')) / (W + R)).toBe(2);
      // a read's data is placed by one RDMA WRITE ahead of its response
      expect([d('s', 'rdmaWrites'), d('c', 'rdmaWrites')]).toEqual([R, 0]);
      // local work: the client binds a window over each read's buffer; strict
      // mode invalidates and re-keys the chunk once per IO, relaxed never
      expect(d('c', 'binds')).toBe(R);
      expect([d('s', 'binds'), d('s', 'invalidations')]).toEqual(strict ? [W + R, W + R] : [0, 0]);
      expect(client.prometheus()).toMatch(/^node_rdma_transport_messages_sent_total\{role="client",[^}]*\} \d+$/m);
    } finally {
      await client.close();
    }
  });

  test.each([true, false])('at QD1 each receive an IO consumed is replaced in the same post as the next message, on both ends: no call of its own (strict=%s)', async (strict) => {
    srv = serverWith({ strict, handler: (req) => (req.kind === 'read' ? (req.data.fill(3), { length: 64 }) : {}) });
    const client = await connect({ paths: [{ host: HOST0, port: srv.port }] });
    const proto = QueuePair.prototype as unknown as Record<string, (...a: unknown[]) => unknown>;
    const orig = { send: proto.postSend, recv: proto.postRecv };
    const counted = { recvOnly: 0, carried: 0 };
    try {
      for (let i = 0; i < 20; i++) await client.write(Buffer.alloc(0), Buffer.alloc(512, i));
      proto.postRecv = function (this: unknown, ...a: unknown[]) { counted.recvOnly++; return orig.recv.apply(this, a); };
      proto.postSend = function (this: unknown, ...a: unknown[]) { counted.carried += (a[1] as unknown[] | undefined)?.length ?? 0; return orig.send.apply(this, a); };
      const N = 200;
      for (let i = 0; i < N; i++) {
        if (i % 2) expect((await client.read(Buffer.from('k'), Buffer.alloc(64))).length).toBe(64);
        else expect((await client.write(Buffer.alloc(0), Buffer.alloc(512, i))).status).toBe(0);
      }
      proto.postRecv = orig.recv;
      proto.postSend = orig.send;
      process.stdout.write(`QD1, ${N} IOs (strict=${strict}): ${JSON.stringify(counted)}\n`);
      // two receives per IO (one at each end), replaced in posts of their own at most once in ten IOs
      expect(counted.recvOnly).toBeLessThan(N / 10);
      expect(counted.carried + counted.recvOnly).toBeGreaterThanOrEqual(2 * N - 4);
    } finally {
      proto.postRecv = orig.recv;
      proto.postSend = orig.send;
      await client.close();
    }
  });

  test.each([true, false])('16 IOs started in one turn go out in one native call from the client, and the server answers them in at most two (strict=%s)', async (strict) => {
    srv = serverWith({ strict, queueDepth: 16, handler: (req) => (req.kind === 'read' ? (req.data.fill(5), { length: 256 }) : {}) });
    const client = await connect({ paths: [{ host: HOST0, port: srv.port }], maxQueueDepth: 16 });
    const proto = QueuePair.prototype as unknown as Record<string, (...a: unknown[]) => unknown>;
    const orig = proto.postSend;
    try {
      // warm: every chunk keyed and every read window pool filled
      for (let r = 0; r < 3; r++) await Promise.all(Array.from({ length: 16 }, (_, i) => (i % 2 ? client.read(Buffer.from('k'), Buffer.alloc(256)) : client.write(Buffer.alloc(0), Buffer.alloc(512, i)))));
      const calls: Array<{ qp: unknown; wrs: number }> = [];
      proto.postSend = function (this: unknown, ...a: unknown[]) {
        // heartbeats (wrId index 0xffffffff) and receive-only flushes aside
        const wrs = (a[0] as Array<{ wrId?: number }>).filter((w) => (w.wrId ?? 0) % 2 ** 32 !== 0xffffffff).length;
        if (wrs) calls.push({ qp: this, wrs });
        return orig.apply(this, a);
      };
      const ios = Array.from({ length: 16 }, (_, i) => (i % 2
        ? client.read(Buffer.from('k'), Buffer.alloc(256)).then((r) => r.length)
        : client.write(Buffer.alloc(0), Buffer.alloc(512, i)).then((r) => r.status)));
      await Promise.resolve(); // (the client's flush was queued by the first IO, before this continuation)
      // the client's requests are out; the server's CQ sees them all once this
      // turn lets it poll (rxe delivers them meanwhile, in the kernel)
      const clientQp = calls[0]?.qp;
      const until = Date.now() + 300;
      while (Date.now() < until) { /* hold the event loop */ }
      expect(await Promise.all(ios)).toEqual(Array.from({ length: 16 }, (_, i) => (i % 2 ? 256 : 0)));
      proto.postSend = orig;
      const mine = calls.filter((c) => c.qp === clientQp);
      const server = calls.filter((c) => c.qp !== clientQp);
      process.stdout.write(`16 IOs in one turn (strict=${strict}): client posts ${JSON.stringify(mine.map((c) => c.wrs))}, server posts ${JSON.stringify(server.map((c) => c.wrs))}\n`);
      // one call for the 16 requests (8 reads' windows are bound by calls of their own on rxe)
      expect(mine.length).toBe(1);
      expect(mine[0].wrs).toBe(16);
      // (strict on rxe re-keys with type 1 binds, calls of their own ahead of
      // the answers; a type 2 bind would go in each answer's own post)
      expect(server.length).toBeLessThanOrEqual(2);
    } finally {
      proto.postSend = orig;
      await client.close();
    }
  });

  test.each([true, false])('two sessions at once: each reads back what it wrote, with IOs interleaved (strict=%s)', async (strict) => {
    const store = new Map<string, Buffer>();
    srv = serverWith({
      strict,
      handler: (req) => {
        const key = `${req.sessionId}/${req.header.toString()}`;
        if (req.kind === 'write') {
          store.set(key, Buffer.from(req.data));
          return {};
        }
        const v = store.get(key);
        if (!v) return { status: 2 };
        v.copy(req.data);
        return { length: v.length };
      },
    });
    const [a, b] = await Promise.all([connect({ paths: [{ host: HOST0, port: srv.port }] }), connect({ paths: [{ host: HOST0, port: srv.port }] })]);
    try {
      expect(a.sessionId).not.toBe(b.sessionId);
      const run = async (c: typeof a, fill: number): Promise<number> => {
        let checked = 0;
        for (let round = 0; round < 5; round++) {
          await Promise.all(Array.from({ length: 8 }, (_, i) => c.write(Buffer.from(`k${i}`), Buffer.alloc(3000, fill + round + i))));
          const got = await Promise.all(Array.from({ length: 8 }, async (_, i) => {
            const into = Buffer.alloc(3000);
            const r = await c.read(Buffer.from(`k${i}`), into);
            return r.length === 3000 && into.every((x) => x === fill + round + i);
          }));
          checked += got.filter(Boolean).length;
        }
        return checked;
      };
      expect(await Promise.all([run(a, 10), run(b, 100)])).toEqual([40, 40]);
      expect(Object.keys(srv.server.stats())).toHaveLength(2);
    } finally {
      await a.close();
      await b.close();
    }
  });

  test("windowType 2 on rxe is refused on both sides: the server's listen() and the client's path say why (EOPNOTSUPP)", async () => {
    const server = new TransportServer({ handler: () => ({}), windowType: 2 });
    let err: unknown;
    try {
      server.listen([{ host: HOST0, port: port++ }]);
    } catch (e) {
      err = e;
    } finally {
      await server.close();
    }
    expect(err).toMatchObject({ code: 'EOPNOTSUPP', message: expect.stringMatching(/windowType 2 on rxe0: .*crash the kernel/) });
    srv = serverWith({});
    const client = new TransportClient({ paths: [{ host: HOST0, port: srv.port }], windowType: 2, reconnect: { maxAttempts: 0 } });
    client.on('error', () => undefined);
    try {
      await expect(client.start()).rejects.toMatchObject({ code: expect.stringMatching(/EOPNOTSUPP|ECONNABORTED/) });
      expect(srv.server.sessionCount).toBe(0);
    } finally {
      await client.close();
    }
  });

  test('zero-copy buffers from allocBuffer(); limits give EMSGSIZE', async () => {
    srv = serverWith({
      handler: (req) => {
        if (req.kind === 'read') req.data.fill(0x5a);
        return { status: req.kind === 'write' ? req.data[0] : 0 };
      },
    });
    const client = await connect({ paths: [{ host: HOST0, port: srv.port }] });
    try {
      const buf = client.allocBuffer(8192);
      buf.fill(9);
      expect((await client.write(Buffer.from('h'), buf.subarray(100, 4100))).status).toBe(9);
      const r = await client.read(Buffer.alloc(0), buf.subarray(0, 2048));
      expect(r.length).toBe(2048);
      expect(buf.subarray(0, 2048).every((b) => b === 0x5a)).toBe(true);
      expect(buf[2048]).toBe(9);
      await expect(client.write(Buffer.alloc(513), Buffer.alloc(1))).rejects.toMatchObject({ code: 'EMSGSIZE' });
      await expect(client.write(Buffer.alloc(0), Buffer.alloc(client.maxIoSize + 1))).rejects.toMatchObject({ code: 'EMSGSIZE' });
      expect(client.maxIoSize).toBe(16384 - 512 - 32);
    } finally {
      await client.close();
    }
  });

  test('permits bound the queue depth and IOs start in submission order; abort and close', async () => {
    const order: number[] = [];
    let running = 0;
    let maxRunning = 0;
    const gate = later();
    srv = serverWith({
      queueDepth: 4,
      handler: async (req) => {
        order.push(req.header.readUInt32LE(0));
        running++;
        maxRunning = Math.max(maxRunning, running);
        await gate.promise;
        running--;
        return { status: 0 };
      },
    });
    const client = await connect({ paths: [{ host: HOST0, port: srv.port }] });
    try {
      const hdr = (i: number): Buffer => {
        const b = Buffer.alloc(4);
        b.writeUInt32LE(i);
        return b;
      };
      const posted = new AbortController();
      const ios = Array.from({ length: 12 }, (_, i) => client.write(hdr(i), Buffer.alloc(10), i === 0 ? { signal: posted.signal } : {}));
      // an IO queued behind the permits can be aborted; the handler never sees it
      const ac = new AbortController();
      const aborted = client.write(hdr(99), Buffer.alloc(1), { signal: ac.signal });
      const pre = new AbortController();
      pre.abort();
      await expect(client.write(hdr(98), Buffer.alloc(1), { signal: pre.signal })).rejects.toMatchObject({ name: 'AbortError' });
      for (let i = 0; running < 4; i++) {
        if (i > 500) throw new Error(`only ${running} handlers running after 10 s; stats ${JSON.stringify(client.stats())}`);
        await new Promise((r) => setTimeout(r, 20));
      }
      expect(client.stats().waiting).toBe(9);
      // a posted IO's abort rejects at once, but the IO stays in flight (its
      // chunk busy) until the server answers it
      posted.abort();
      await expect(ios[0]).rejects.toMatchObject({ name: 'AbortError' });
      expect(client.stats()).toMatchObject({ inflight: 4, waiting: 9 });
      ac.abort();
      await expect(aborted).rejects.toMatchObject({ name: 'AbortError', code: 'ABORT_ERR' });
      gate.resolve();
      expect((await Promise.all(ios.slice(1))).every((x) => x.status === 0)).toBe(true);
      expect(client.stats().inflight).toBe(0);
      expect(maxRunning).toBe(4);
      expect(order).toEqual(Array.from({ length: 12 }, (_, i) => i));
      // close drains: an IO in flight completes before close() resolves
      const last = client.write(hdr(50), Buffer.alloc(1));
      await client.close();
      await expect(last).resolves.toMatchObject({ status: 0 });
      await expect(client.write(hdr(51), Buffer.alloc(1))).rejects.toMatchObject({ code: 'ECLOSED' });
    } finally {
      gate.resolve();
      await client.close();
    }
  });

  test('queue depth 300 (info in 2 messages): every chunk carries IOs; a client can use fewer permits', async () => {
    srv = serverWith({ queueDepth: 300, chunkSize: 4096, maxHeaderSize: 64, handler: (req) => ({ status: req.data[0] }) });
    const client = await connect({ paths: [{ host: HOST0, port: srv.port }] });
    try {
      expect(client.queueDepth).toBe(300);
      const res = await Promise.all(Array.from({ length: 600 }, (_, i) => client.write(Buffer.alloc(0), Buffer.alloc(16, i & 0xff))));
      expect(res.map((r) => r.status)).toEqual(Array.from({ length: 600 }, (_, i) => i & 0xff));
    } finally {
      await client.close();
    }
    const small = await connect({ paths: [{ host: HOST0, port: srv.port }], maxQueueDepth: 5 });
    try {
      expect(small.queueDepth).toBe(5);
      const res = await Promise.all(Array.from({ length: 20 }, (_, i) => small.write(Buffer.alloc(0), Buffer.alloc(1, i))));
      expect(res.map((r) => r.status)).toEqual(Array.from({ length: 20 }, (_, i) => i));
    } finally {
      await small.close();
    }
  });

  test('connect fails cleanly: no listener, a relaxed server when strict is required', async () => {
    const nobody = port++;
    await expect(connect({ paths: [{ host: HOST0, port: nobody }], reconnect: { maxAttempts: 0 } })).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    srv = serverWith({ strict: false });
    await expect(connect({ paths: [{ host: HOST0, port: srv.port }], requireStrict: true })).rejects.toMatchObject({ code: 'EPERM' });
    const ok = await connect({ paths: [{ host: HOST0, port: srv.port }] });
    expect(ok.params?.strict).toBe(false);
    await ok.close();
  });

  test('close({ drain: false }) fails queued IOs with ECLOSED', async () => {
    const gate = later();
    srv = serverWith({ queueDepth: 1, handler: async () => { await gate.promise; return {}; } });
    const client = await connect({ paths: [{ host: HOST0, port: srv.port }] });
    const a = client.write(Buffer.alloc(0), Buffer.alloc(1));
    const b = client.write(Buffer.alloc(0), Buffer.alloc(1));
    await new Promise((r) => setTimeout(r, 200));
    const closing = client.close({ drain: false });
    await expect(b).rejects.toMatchObject({ code: 'ECLOSED' });
    await expect(a).rejects.toMatchObject({ code: 'ECLOSED' });
    await closing;
    gate.resolve();
  });
});

describe('multipath (rxe0 + rxe1)', () => {
  let srv: ReturnType<typeof serverWith>;
  afterEach(async () => {
    await srv?.server.close();
  });

  test.each([true, false])('IOs use both paths; a path cut mid-IO fails over and the handler runs once (strict=%s)', async (strict) => {
    const calls = new Map<string, number>();
    const entered = later<{ pathIndex: number; sessionId: string }>();
    const release = later();
    srv = serverWith({
      strict,
      hosts: [HOST0, HOST1],
      handler: async (req) => {
        const k = req.header.toString();
        calls.set(k, (calls.get(k) ?? 0) + 1);
        if (k === 'cut') {
          entered.resolve({ pathIndex: req.pathIndex, sessionId: req.sessionId });
          await release.promise;
        }
        if (req.kind === 'read') req.data.fill(7);
        return { header: Buffer.from(`ok ${k}`) };
      },
    });
    const client = await connect({
      paths: [{ host: HOST0, port: srv.port }, { host: HOST1, port: srv.port }],
      policy: 'round-robin',
      reconnect: { initialDelayMs: 200, jitter: 0 },
    });
    try {
      const st = client.stats().paths;
      expect(st.map((p) => [p.state, p.device])).toEqual([['connected', 'rxe0'], ['connected', 'rxe1']]);
      await Promise.all(Array.from({ length: 20 }, (_, i) => client.write(Buffer.from(`w${i}`), Buffer.alloc(64, i))));
      const spread = client.stats().paths.map((p) => p.writes);
      expect(spread[0]).toBeGreaterThan(0);
      expect(spread[1]).toBeGreaterThan(0);
      expect(spread[0] + spread[1]).toBe(20);

      for (const kind of ['write', 'read'] as const) {
        calls.delete('cut');
        const io = kind === 'write' ? client.write(Buffer.from('cut'), Buffer.alloc(32)) : client.read(Buffer.from('cut'), Buffer.alloc(32));
        const where = await entered.promise;
        expect(srv.server.disconnectPath(where.sessionId, where.pathIndex)).toBe(true);
        await new Promise((r) => setTimeout(r, 300));
        release.resolve();
        const res = await io;
        expect(res.header.toString()).toBe('ok cut');
        expect(calls.get('cut')).toBe(1); // exactly once, though the IO went over two paths
        if (kind === 'read') expect(res.length).toBe(32);
        // the cut path reconnects
        for (let i = 0; i < 100 && client.stats().paths.some((p) => p.state !== 'connected'); i++) await new Promise((r) => setTimeout(r, 100));
        expect(client.stats().paths.map((p) => p.state)).toEqual(['connected', 'connected']);
        Object.assign(entered, later<{ pathIndex: number; sessionId: string }>());
      }
      const fo = client.stats().paths.reduce((n, p) => n + p.failovers, 0);
      expect(fo).toBe(2);
      // still fully usable on both paths
      await Promise.all(Array.from({ length: 10 }, (_, i) => client.write(Buffer.from(`x${i}`), Buffer.alloc(8))));
    } finally {
      release.resolve();
      await client.close();
    }
  });
  test('relaxed: a write aborted while its handler runs, whose path then drops, is asked for on the other path and answered with its seq; that healthy path stays up', async () => {
    // the client holds the chunk unsettled and asks for it with RESUME_REQ
    // on the other path; an immediate-only answer (no seq) there would be a
    // protocol violation for the client, which would close that path. The
    // ledger's fast-check model did answer so (its server has no chunk
    // locks); the real server queues the RESUME_REQ behind the running IO
    // (the chunk's lock) and answers it as a replay, with its seq, and
    // records.ts's `asked` keeps it so if a RESUME_REQ ever meets a running IO
    const entered = later<{ pathIndex: number; sessionId: string }>();
    const release = later();
    let runs = 0;
    srv = serverWith({
      hosts: [HOST0, HOST1],
      handler: async (req) => {
        if (req.header.toString() === 'hold') {
          runs++;
          entered.resolve({ pathIndex: req.pathIndex, sessionId: req.sessionId });
          await release.promise;
        }
        return { status: 0 }; // no header: a relaxed write's answer would be the immediate fast path
      },
    });
    const logs: string[] = [];
    const client = await connect({
      paths: [{ host: HOST0, port: srv.port }, { host: HOST1, port: srv.port }], policy: 'round-robin',
      reconnect: { initialDelayMs: 200, jitter: 0 }, log: (l) => logs.push(l),
    });
    try {
      const ac = new AbortController();
      const io = client.write(Buffer.from('hold'), Buffer.alloc(32), { signal: ac.signal });
      const where = await entered.promise;
      ac.abort();
      await expect(io).rejects.toMatchObject({ name: 'AbortError', executed: 'unknown' });
      const other = 1 - where.pathIndex;
      const downsBefore = client.stats().paths[other].downs;
      expect(srv.server.disconnectPath(where.sessionId, where.pathIndex)).toBe(true);
      // the cut path is down on the client and the chunk is asked for on the other
      for (let i = 0; i < 100 && client.stats().paths[where.pathIndex].state === 'connected'; i++) await new Promise((r) => setTimeout(r, 50));
      await new Promise((r) => setTimeout(r, 300));
      release.resolve();
      await new Promise((r) => setTimeout(r, 500));
      expect(logs.filter((l) => /violation|unexpected-response/.test(l))).toEqual([]);
      expect(client.stats().paths[other]).toMatchObject({ state: 'connected', downs: downsBefore });
      expect(runs).toBe(1);
      // every permit is back: a full queue of IOs completes
      const rs = await Promise.all(Array.from({ length: 8 }, (_, i) => client.write(Buffer.from(`after${i}`), Buffer.alloc(16))));
      expect(rs.every((r) => r.status === 0)).toBe(true);
    } finally {
      release.resolve();
      await client.close();
    }
  });

  test("close(): the server's disconnects that answer SESSION_CLOSE are not reported as paths going down", async () => {
    // the demo saw this at the end of each run: the server's disconnect of
    // the path that carried SESSION_CLOSE raced the SEND's own completion
    srv = serverWith({ hosts: [HOST0, HOST1], handler: (req) => ({ header: req.header }) });
    const events: string[] = [];
    for (let round = 0; round < 6; round++) {
      const client = await connect({ paths: [{ host: HOST0, port: srv.port }, { host: HOST1, port: srv.port }], policy: 'round-robin' });
      client.on('path', (i: number, what: string, err?: Error) => events.push(`round ${round}: path${i} ${what}${err ? `: ${err.message}` : ''}`));
      client.on('path-down', (i: number) => events.push(`round ${round}: path-down ${i}`));
      client.on('session-down', () => events.push(`round ${round}: session-down`));
      await Promise.all(Array.from({ length: 32 }, (_, i) => client.write(Buffer.from(`w${i}`), Buffer.alloc(4096, i))));
      await client.close();
      expect(client.stats().paths.map((p) => [p.state, p.downs])).toEqual([['closed', 0], ['closed', 0]]);
    }
    expect(events).toEqual([]);
    for (let i = 0; i < 50 && srv.server.sessionCount > 0; i++) await new Promise((r) => setTimeout(r, 20));
    expect(srv.server.sessionCount).toBe(0);
  });

  test('strict over two paths: one re-key per IO whatever the path count, the policy still spreads the IOs', async () => {
    srv = serverWith({ hosts: [HOST0, HOST1] });
    const client = await connect({ paths: [{ host: HOST0, port: srv.port }, { host: HOST1, port: srv.port }], policy: 'round-robin' });
    try {
      const wire = () => Object.values(srv.server.stats())[0].paths.map((p) => p.wire);
      const writes = (n: number) => Promise.all(Array.from({ length: n }, (_, j) => client.write(Buffer.from(`k${j}`), Buffer.alloc(512, j))));
      // the first IO on a chunk takes away the keys the info exchange gave it on both paths
      for (let i = 0; i < 4; i++) await writes(4);
      const before = wire();
      const writesBefore = client.stats().paths.map((p) => p.writes);
      const N = 48;
      for (let i = 0; i < N; i += 4) await writes(4);
      const after = wire();
      const sum = (k: 'binds' | 'invalidations' | 'messagesReceived') => after.reduce((n, w, i) => n + w[k] - before[i][k], 0);
      expect(sum('messagesReceived')).toBe(N);
      // the chunk's key is taken away on every path that has one and given back on the response path only
      expect(sum('invalidations')).toBe(N);
      expect(sum('binds')).toBe(N);
      const spread = client.stats().paths.map((p, i) => p.writes - writesBefore[i]);
      expect(spread[0] + spread[1]).toBe(N);
      expect(Math.min(...spread)).toBeGreaterThanOrEqual(N / 4);
    } finally {
      await client.close();
    }
  });

  test('strict: a path that reconnects under load gets chunks again and carries IOs', async () => {
    srv = serverWith({ hosts: [HOST0, HOST1] });
    const client = await connect({
      paths: [{ host: HOST0, port: srv.port }, { host: HOST1, port: srv.port }], reconnect: { initialDelayMs: 200, jitter: 0 },
    });
    let stop = false;
    let failed = 0;
    const load = Promise.all(Array.from({ length: 6 }, async (_, w) => {
      while (!stop) {
        const r = await client.write(Buffer.from(`w${w}`), Buffer.alloc(256)).catch(() => undefined);
        if (!r || r.status !== 0) failed++;
      }
    }));
    try {
      await new Promise((r) => setTimeout(r, 300));
      expect(srv.server.disconnectPath(client.sessionId, 0)).toBe(true);
      await new Promise((r) => setTimeout(r, 100));
      for (let i = 0; i < 100 && client.stats().paths[0].state !== 'connected'; i++) await new Promise((r) => setTimeout(r, 100));
      expect(client.stats().paths[0].state).toBe('connected');
      // its info exchange ran while path 1 carried IOs on every chunk
      const before = client.stats().paths[0].writes;
      await new Promise((r) => setTimeout(r, 1000));
      expect(client.stats().paths[0].writes - before).toBeGreaterThan(10);
      stop = true;
      await load;
      expect(failed).toBe(0);
      expect(client.stats()).toMatchObject({ unsettled: 0, inflight: 0 });
    } finally {
      stop = true;
      await load;
      await client.close();
    }
  });

  test('strict: chunks whose only key was on a dead path are asked for on the other one, and no permit is lost', async () => {
    let holding = 0;
    const allIn = later();
    const release = later();
    srv = serverWith({
      hosts: [HOST0, HOST1],
      handler: async (req) => {
        if (req.header.toString() === 'hold') {
          if (++holding === 8) allIn.resolve();
          await release.promise;
        }
        return {};
      },
    });
    const client = await connect({
      paths: [{ host: HOST0, port: srv.port }, { host: HOST1, port: srv.port }], policy: 'round-robin', reconnect: { maxAttempts: 0 },
    });
    try {
      expect(client.params?.queueDepth).toBe(8);
      // every chunk carries IOs on both paths: afterwards each is keyed on one of them
      for (let i = 0; i < 4; i++) await Promise.all(Array.from({ length: 8 }, (_, j) => client.write(Buffer.from(`w${j}`), Buffer.alloc(64))));
      expect(client.stats().paths.every((p) => p.writes > 0)).toBe(true);
      expect(srv.server.disconnectPath(client.sessionId, 0)).toBe(true);
      for (let i = 0; i < 100 && client.stats().paths[0].state !== 'dead'; i++) await new Promise((r) => setTimeout(r, 50));
      expect(client.stats().paths.map((p) => p.state)).toEqual(['dead', 'connected']);
      // all 8 permits run at once on path 1: the handler holds each until all are in
      const ios = Array.from({ length: 8 }, () => client.write(Buffer.from('hold'), Buffer.alloc(64)));
      await Promise.race([allIn.promise, new Promise((_, reject) => setTimeout(() => reject(new Error(`only ${holding} of 8 IOs reached the handler`)), 10000))]);
      release.resolve();
      expect((await Promise.all(ios)).every((r) => r.status === 0)).toBe(true);
      expect(client.stats()).toMatchObject({ unsettled: 0, inflight: 0, waiting: 0 });
    } finally {
      release.resolve();
      await client.close();
    }
  });
});

describe('heartbeats and session lifetime', () => {
  let srv: ReturnType<typeof serverWith> | undefined;
  afterEach(async () => {
    await srv?.server.close();
    srv = undefined;
  });

  test('the server drops a path that stays silent for hbMissedMax intervals', async () => {
    srv = serverWith({ hbIntervalMs: 200, hbMissedMax: 3 });
    const r = await raw(srv.port);
    try {
      expect(r.acc).toMatchObject({ hbIntervalMs: 200, hbMissedMax: 3 });
      const t0 = Date.now();
      await r.disconnected; // the raw client never answers heartbeats
      expect(Date.now() - t0).toBeLessThan(20000);
      expect(srv.logs.some((l) => /closed: heartbeats missed/.test(l))).toBe(true);
      // it did send heartbeats before giving up
      expect(r.wcs.wcs.some((w) => w.opcodeName === 'RECV_RDMA_WITH_IMM' && w.imm !== undefined && w.imm >>> 28 === 0x8)).toBe(true);
    } finally {
      r.close();
    }
  });

  test('heartbeat acks give each path an RTT; min-latency selects by it', async () => {
    srv = serverWith({ hbIntervalMs: 200, hbMissedMax: 50, hosts: [HOST0, HOST1] });
    const client = await connect({ paths: [{ host: HOST0, port: srv.port }, { host: HOST1, port: srv.port }], policy: 'min-latency' });
    try {
      for (let i = 0; i < 100 && client.stats().paths.some((p) => p.latencyNs === undefined); i++) await new Promise((r) => setTimeout(r, 100));
      for (const p of client.stats().paths) expect(p.latencyNs).toBeGreaterThan(0);
      expect((await client.write(Buffer.from('x'), Buffer.alloc(10))).status).toBe(0);
      expect(client.policy).toBe('min-latency');
    } finally {
      await client.close();
    }
  });

  test('sessions end on SESSION_CLOSE at once, or sessionLingerMs after their last path; an ended session cannot be rejoined', async () => {
    srv = serverWith({ sessionLingerMs: 300 });
    const client = await connect({ paths: [{ host: HOST0, port: srv.port }] });
    expect(srv.server.sessionCount).toBe(1);
    await client.close();
    for (let i = 0; i < 50 && srv.server.sessionCount > 0; i++) await new Promise((r) => setTimeout(r, 20));
    expect(srv.server.sessionCount).toBe(0);
    expect(srv.logs.some((l) => /closed: client closed the session/.test(l))).toBe(true);

    const sessionId = P.randomSessionId();
    const r = await raw(srv.port, { sessionId });
    expect(srv.server.sessionCount).toBe(1);
    r.close(); // no SESSION_CLOSE: the session lingers
    await new Promise((res) => setTimeout(res, 100));
    expect(srv.server.sessionCount).toBe(1);
    for (let i = 0; i < 100 && srv.server.sessionCount > 0; i++) await new Promise((res) => setTimeout(res, 50));
    expect(srv.server.sessionCount).toBe(0);
    const again = P.encodeConnectRequest({ newSession: true, pathIndex: 0, pathCount: 1, reconnectCount: 1, sessionId });
    const err = await raw(srv.port, { privateData: again }).then(() => undefined, (e) => e);
    expect(P.decodeReject(err.privateData).code).toBe('ESTALE');
  });

  test('a restarted server does not know the session: the client fails with ESTALE instead of silently starting over', async () => {
    srv = serverWith({});
    const p = srv.port;
    const client = await connect({ paths: [{ host: HOST0, port: p }], reconnect: { initialDelayMs: 100, jitter: 0 } });
    const errors: Error[] = [];
    client.on('error', (e) => errors.push(e));
    try {
      expect((await client.write(Buffer.alloc(0), Buffer.alloc(1))).status).toBe(0);
      await srv.server.close();
      const again = new TransportServer({ queueDepth: 8, chunkSize: 16384, maxHeaderSize: 512, handler: () => ({}) });
      again.listen([{ host: HOST0, port: p }]);
      srv = { server: again, port: p, logs: [] };
      for (let i = 0; i < 100 && errors.length === 0; i++) await new Promise((r) => setTimeout(r, 100));
      expect(errors[0]).toMatchObject({ code: 'ESTALE' });
      await expect(client.write(Buffer.alloc(0), Buffer.alloc(1))).rejects.toMatchObject({ code: 'ESTALE' });
    } finally {
      await client.close();
    }
  });
});

describe('cut-off IOs', () => {
  let srv: ReturnType<typeof serverWith> | undefined;
  afterEach(async () => {
    await srv?.server.close();
    srv = undefined;
  });

  /** A one-chunk server whose handler holds the IO with header 'cut' until released. */
  function holdCut(strict: boolean): { entered: Promise<{ pathIndex: number; sessionId: string }>; release: { resolve: () => void }; calls: () => number } {
    const entered = later<{ pathIndex: number; sessionId: string }>();
    const release = later();
    let cutCalls = 0;
    srv = serverWith({
      strict,
      queueDepth: 1,
      handler: async (req) => {
        if (req.header.toString() === 'cut') {
          cutCalls++;
          entered.resolve({ pathIndex: req.pathIndex, sessionId: req.sessionId });
          await release.promise;
        }
        return { status: 7 };
      },
    });
    return { entered: entered.promise, release, calls: () => cutCalls };
  }

  test.each([true, false])('the only path dies mid-IO: the IO waits for the path and settles with its real outcome, the handler ran once (strict=%s)', async (strict) => {
    const { entered, release, calls } = holdCut(strict);
    const client = await connect({ paths: [{ host: HOST0, port: srv!.port }], reconnect: { initialDelayMs: 300, jitter: 0 } });
    try {
      const io = client.write(Buffer.from('cut'), Buffer.alloc(8));
      const where = await entered;
      const down = new Promise((r) => client.once('session-down', r));
      srv!.server.disconnectPath(where.sessionId, where.pathIndex);
      await down;
      expect(client.stats().inflight).toBe(1); // parked, not failed
      release.resolve();
      // the reconnected path's RESUME finds it run (or running): answered from the record
      expect((await io).status).toBe(7);
      expect(calls()).toBe(1);
      expect(client.stats()).toMatchObject({ unsettled: 0, inflight: 0 });
      expect(client.stats().paths[0].reconnects.ok).toBe(1);
      const next = await client.write(Buffer.from('next'), Buffer.alloc(8));
      expect(next.status).toBe(7);
    } finally {
      release.resolve();
      await client.close();
    }
  });

  test.each([true, false])('the path stays away longer than reconnectWaitMs: ETIMEDOUT with executed "unknown"; the chunk stays out of the pool until RESUME settles it (strict=%s)', async (strict) => {
    const { entered, release, calls } = holdCut(strict);
    // the reconnect comes after reconnectWaitMs ran out
    const client = await connect({ paths: [{ host: HOST0, port: srv!.port }], reconnectWaitMs: 300, reconnect: { initialDelayMs: 1500, jitter: 0 } });
    try {
      const io = client.write(Buffer.from('cut'), Buffer.alloc(8));
      const queued = client.write(Buffer.from('queued'), Buffer.alloc(8)).catch((e: Error) => e);
      const where = await entered;
      srv!.server.disconnectPath(where.sessionId, where.pathIndex);
      await expect(io).rejects.toMatchObject({ code: 'ETIMEDOUT', executed: 'unknown' });
      expect(await queued).toMatchObject({ code: 'ETIMEDOUT', executed: false });
      expect(client.stats().unsettled).toBe(1);
      release.resolve();
      // the path is back after its 1.5 s reconnect delay (an IO queued before would wait 300 ms at most)
      for (let i = 0; i < 200 && !client.sessionUp; i++) await new Promise((r) => setTimeout(r, 50));
      // queue depth 1: this IO can only run once the reconnected path's RESUME settled the chunk
      const next = await client.write(Buffer.from('next'), Buffer.alloc(8));
      expect(next.status).toBe(7);
      expect(client.stats().unsettled).toBe(0);
      expect(calls()).toBe(1);
    } finally {
      release.resolve();
      await client.close();
    }
  });
});

describe('client against a raw server', () => {
  test('a path whose server accepts and then disconnects: each failed attempt counts once and backs off once', async () => {
    // path 0: a real server; path 1: a listener that accepts with the same pool and disconnects at once
    srvForDrop = serverWith({ strict: false });
    const p1 = port++;
    const listener = CmId.create();
    let attempts = 0;
    listener.on('connection', (id) => {
      attempts++;
      id.accept({ privateData: P.encodeAccept({ queueDepth: 8, chunkSize: 16384, maxHeaderSize: 512, strict: false, sessionCreated: false, hbIntervalMs: 5000, hbMissedMax: 5 }) })
        // (unless the client ended the connection first: then the
        // 'disconnected' handler below has closed the id already)
        .then(() => setTimeout(() => { if (!id.closed) id.disconnect(); }, 20), () => undefined);
      id.on('disconnected', () => id.close());
    });
    listener.listen(HOST1, p1);
    const logs: string[] = [];
    const client = await connect({
      paths: [{ host: HOST0, port: srvForDrop.port }, { host: HOST1, port: p1 }], log: (l) => logs.push(l),
      reconnect: { initialDelayMs: 200, maxDelayMs: 200, jitter: 0 },
    });
    try {
      await new Promise((r) => setTimeout(r, 2500));
      const fails = client.stats().paths[1].reconnects.fail;
      const logged = logs.filter((l) => /^path 1 .*connect failed/.test(l)).length;
      // before: the disconnect and the connect's rejection each counted (and each backed off)
      expect(attempts).toBeGreaterThanOrEqual(3);
      expect(fails).toBeGreaterThanOrEqual(attempts - 2);
      expect(fails).toBeLessThanOrEqual(attempts);
      expect(logged).toBeLessThanOrEqual(attempts);
      expect((await client.write(Buffer.alloc(0), Buffer.alloc(8))).status).toBe(0); // path 0 carries on
    } finally {
      await client.close({ drain: false });
      listener.close();
      await srvForDrop.server.close();
    }
  });

  test('a server that never answers heartbeats: the client declares the path down and schedules a reconnect', async () => {
    const rs = await rawServer(port++);
    const events: string[] = [];
    const client = await connect({ paths: [{ host: HOST0, port: rs.port }], reconnect: { initialDelayMs: 5000 } });
    client.on('path', (_i: number, what: string) => events.push(what));
    try {
      await rs.paths;
      for (let i = 0; i < 200 && !events.includes('down'); i++) await new Promise((r) => setTimeout(r, 50));
      expect(events).toContain('down');
      expect(client.stats().paths[0].state).toBe('reconnecting');
    } finally {
      await client.close({ drain: false });
      rs.close();
    }
  });

  test('S3 on the client: in strict mode an immediate-only response (no new key) closes the path; the IO fails cleanly', async () => {
    const rs = await rawServer(port++, { hbIntervalMs: 60000, hbMissedMax: 10 }, true);
    const client = await connect({ paths: [{ host: HOST0, port: rs.port }], reconnect: { initialDelayMs: 5000 }, reconnectWaitMs: 500 });
    const violations: Array<{ reason: string }> = [];
    client.on('violation', (v) => violations.push(v));
    try {
      expect(client.params?.strict).toBe(true);
      const sp = await rs.paths;
      const io = client.write(Buffer.alloc(0), Buffer.alloc(100));
      const req = await sp.wcs.next((w) => w.opcodeName === 'RECV_RDMA_WITH_IMM');
      const imm = P.decodeImm(req.imm!, req.byteLen, 'server', sp.acc);
      if (imm.type !== 'write-req') throw new Error(`expected a write request, got ${imm.type}`);
      sp.qp.postSend([{ wrId: 2, opcode: 'RDMA_WRITE_WITH_IMM', imm: P.encodeIoRspImm(imm.chunk, 0), sge: [], remoteAddr: 0, rkey: 0 }]);
      // the path is closed; the IO waits for it, and gives up after reconnectWaitMs saying it may have run
      await expect(io).rejects.toMatchObject({ code: 'ETIMEDOUT', executed: 'unknown' });
      expect(violations[0]).toMatchObject({ reason: 'imm-rsp-strict' });
    } finally {
      await client.close({ drain: false });
      rs.close();
    }
  });

  test('S3 on the client: a response for an IO that is not in flight closes the path with a logged reason', async () => {
    const rs = await rawServer(port++, { hbIntervalMs: 60000, hbMissedMax: 10 });
    const logs: string[] = [];
    const client = await connect({ paths: [{ host: HOST0, port: rs.port }], log: (l) => logs.push(l), reconnect: { initialDelayMs: 5000 } });
    const violations: Array<{ reason: string }> = [];
    client.on('violation', (v) => violations.push(v));
    try {
      const sp = await rs.paths;
      const rsp = P.encodeIoRsp({ chunk: 2, status: 0, seq: 99n });
      rsp.copy(sp.buf, 41000);
      sp.qp.postSend([{ wrId: 2, opcode: 'SEND', sge: [sp.mr.sge(41000, rsp.length)] }]);
      await sp.disconnected;
      expect(violations[0]).toMatchObject({ reason: 'unexpected-response' });
      expect(logs.some((l) => /protocol violation: unexpected-response/.test(l))).toBe(true);
    } finally {
      await client.close({ drain: false });
      rs.close();
    }
  });
});

describe('security', () => {
  let srv: ReturnType<typeof serverWith>;
  afterEach(async () => {
    await srv?.server.close();
  });

  test.each(['auto', 1] as const)('S2 strict: the chunk key dies when the request arrives; the handler sees the bytes as sent (windowType %s)', async (windowType) => {
    const entered = later<Buffer>();
    const release = later();
    let seen = '';
    srv = serverWith({
      windowType,
      handler: async (req) => {
        entered.resolve(req.data);
        await release.promise;
        seen = req.data.toString();
        return {};
      },
    });
    const r = await raw(srv.port);
    try {
      expect(r.acc.strict).toBe(true);
      rawWrite(r, 0, Buffer.from('A'.repeat(64)));
      await entered.promise;
      // the client tries to change the data under the handler with the same key
      Buffer.from('B'.repeat(64)).copy(r.buf, 16384);
      r.qp.postSend([{ wrId: 3, opcode: 'RDMA_WRITE', sge: [r.mr.sge(16384, 64)], remoteAddr: r.keys[0].addr, rkey: r.keys[0].rkey }]);
      const w = await r.wcs.next((x) => x.wrId === 3);
      expect(w.statusName).toBe('REM_ACCESS_ERR');
      release.resolve();
      await new Promise((res) => setTimeout(res, 100));
      expect(seen).toBe('A'.repeat(64));
    } finally {
      r.close();
    }
  });

  test("S2 strict over two paths: a request on one path takes the chunk's key away on the other path too", async () => {
    const entered = later();
    const release = later();
    let seen = '';
    srv = serverWith({
      hosts: [HOST0, HOST1],
      handler: async (req) => {
        entered.resolve();
        await release.promise;
        seen = req.data.toString();
        return {};
      },
    });
    const sessionId = P.randomSessionId();
    const a = await raw(srv.port, { sessionId, pathIndex: 0, pathCount: 2 });
    const b = await raw(srv.port, { sessionId, pathIndex: 1, pathCount: 2, host: HOST1 });
    try {
      // both paths hold a key for chunk 0 from their info exchange
      expect(a.keys[0].rkey).not.toBe(0);
      expect(b.keys[0].rkey).not.toBe(0);
      rawWrite(a, 0, Buffer.from('A'.repeat(64)));
      await entered.promise;
      // the client tries to change the data under the handler through the other path
      Buffer.from('B'.repeat(64)).copy(b.buf, 16384);
      b.qp.postSend([{ wrId: 3, opcode: 'RDMA_WRITE', sge: [b.mr.sge(16384, 64)], remoteAddr: b.keys[0].addr, rkey: b.keys[0].rkey }]);
      expect((await b.wcs.next((x) => x.wrId === 3)).statusName).toBe('REM_ACCESS_ERR');
      release.resolve();
      await new Promise((res) => setTimeout(res, 100));
      expect(seen).toBe('A'.repeat(64));
    } finally {
      release.resolve();
      a.close();
      b.close();
    }
  });

  test("strict on rxe: each IO leaves a new type 1 key; the old one is dead, and another session's QP cannot use the live one", async () => {
    srv = serverWith({});
    const r = await raw(srv.port);
    const other = await raw(srv.port);
    try {
      const keys = [r.keys[0].rkey];
      for (let seq = 1n; seq <= 4n; seq++) {
        rawWrite(r, 0, Buffer.from('k'), seq);
        const w = await r.wcs.next((x) => x.opcodeName === 'RECV');
        const at = 32768 + (w.wrId - 100) * 4096;
        const m = P.decodeClientMessage(r.buf.subarray(at, at + w.byteLen), { ...r.acc, pathCount: 1, pathIndex: 0 });
        r.qp.postRecv([{ wrId: w.wrId, sge: [r.mr.sge(at, 4096)] }]);
        if (m.type !== 'io-rsp') throw new Error(`expected an IO_RSP, got ${m.type}`);
        r.keys[0].rkey = m.keys[0].rkey;
        keys.push(m.keys[0].rkey);
      }
      expect(new Set(keys).size).toBe(keys.length);
      // the live key, from a QP of another session (another PD): refused
      other.buf.write('X', 16384);
      other.qp.postSend([{ wrId: 7, opcode: 'RDMA_WRITE', sge: [other.mr.sge(16384, 1)], remoteAddr: r.keys[0].addr, rkey: r.keys[0].rkey }]);
      expect((await other.wcs.next((x) => x.wrId === 7)).statusName).toBe('REM_ACCESS_ERR');
      // the live key from its own session works; the first one (taken away) does not
      r.qp.postSend([{ wrId: 8, opcode: 'RDMA_WRITE', sge: [r.mr.sge(16384, 1)], remoteAddr: r.keys[0].addr, rkey: r.keys[0].rkey }]);
      expect((await r.wcs.next((x) => x.wrId === 8)).statusName).toBe('SUCCESS');
      r.qp.postSend([{ wrId: 9, opcode: 'RDMA_WRITE', sge: [r.mr.sge(16384, 1)], remoteAddr: r.keys[0].addr, rkey: keys[0] }]);
      expect((await r.wcs.next((x) => x.wrId === 9)).statusName).toBe('REM_ACCESS_ERR');
    } finally {
      r.close();
      other.close();
    }
  });

  test('relaxed mode leaves the key valid (trusted peers)', async () => {
    const entered = later();
    const release = later();
    srv = serverWith({ strict: false, handler: async () => { entered.resolve(); await release.promise; return {}; } });
    const r = await raw(srv.port);
    try {
      rawWrite(r, 0, Buffer.from('A'.repeat(64)));
      await entered.promise;
      r.qp.postSend([{ wrId: 3, opcode: 'RDMA_WRITE', sge: [r.mr.sge(16384, 64)], remoteAddr: r.keys[0].addr, rkey: r.keys[0].rkey }]);
      expect((await r.wcs.next((x) => x.wrId === 3)).statusName).toBe('SUCCESS');
      release.resolve();
    } finally {
      r.close();
    }
  });

  test.each([true, false])("S1: a session's key is refused on another session's connection (strict=%s)", async (strict) => {
    srv = serverWith({ strict });
    const a = await raw(srv.port);
    const b = await raw(srv.port);
    try {
      // b writes into a's chunk 0 with a's key: the window is bound to a's QP
      Buffer.from('evil').copy(b.buf, 16384);
      b.qp.postSend([{ wrId: 5, opcode: 'RDMA_WRITE', sge: [b.mr.sge(16384, 4)], remoteAddr: a.keys[0].addr, rkey: a.keys[0].rkey }]);
      expect((await b.wcs.next((x) => x.wrId === 5)).statusName).toBe('REM_ACCESS_ERR');
      // and a's own key works for a
      a.qp.postSend([{ wrId: 6, opcode: 'RDMA_WRITE', sge: [a.mr.sge(16384, 4)], remoteAddr: a.keys[0].addr, rkey: a.keys[0].rkey }]);
      expect((await a.wcs.next((x) => x.wrId === 6)).statusName).toBe('SUCCESS');
    } finally {
      a.close();
      b.close();
    }
  });

  test('admission: a higher reconnect count supersedes a live path; equal is EBUSY; another pathCount is EINVAL', async () => {
    srv = serverWith({});
    const sessionId = P.randomSessionId();
    const req = (reconnectCount: number, newSession: boolean, pathCount = 2) => P.encodeConnectRequest({ newSession, pathIndex: 0, pathCount, reconnectCount, sessionId });
    const first = await raw(srv.port, { sessionId, privateData: req(0, true) });
    const busy = await raw(srv.port, { privateData: req(0, false) }).then(() => undefined, (e) => e);
    expect(P.decodeReject(busy.privateData)).toMatchObject({ code: 'EBUSY', retry: true });
    const wrongCount = await raw(srv.port, { privateData: req(1, false, 3) }).then(() => undefined, (e) => e);
    expect(P.decodeReject(wrongCount.privateData)).toMatchObject({ code: 'EINVAL', detail: 2 });
    const second = await raw(srv.port, { privateData: req(1, false) });
    await first.disconnected; // superseded
    expect(srv.logs.some((l) => /superseded by reconnect 1/.test(l))).toBe(true);
    const stale = await raw(srv.port, { privateData: req(0, false) }).then(() => undefined, (e) => e);
    expect(P.decodeReject(stale.privateData).code).toBe('EBUSY');
    first.close();
    second.close();
  });

  test('S3: a seq that goes backwards on a chunk is a violation', async () => {
    const release = later();
    srv = serverWith({ handler: async () => { await release.promise; return {}; } });
    const r = await raw(srv.port);
    try {
      rawWrite(r, 0, Buffer.from('one'), 5n);
      await new Promise((res) => setTimeout(res, 200));
      release.resolve();
      const rsp = await r.wcs.next((w) => w.opcodeName === 'RECV');
      expect(rsp.ok).toBe(true);
      // chunk 0 now has record seq 5: seq 4 on it goes backwards
      const slot = rsp.wrId - 100;
      const m = P.decodeClientMessage(r.buf.subarray(32768 + slot * 4096, 32768 + slot * 4096 + rsp.byteLen), { ...r.acc, pathCount: 1, pathIndex: 0 }) as transport.protocol.IoRsp;
      expect(m).toMatchObject({ type: 'io-rsp', chunk: 0, seq: 5n });
      r.keys[0].rkey = m.keys[0].rkey; // strict: the new key for chunk 0
      rawWrite(r, 0, Buffer.from('two'), 4n);
      await r.disconnected;
      expect(srv.logs.some((l) => /protocol violation: seq: chunk 0: seq 4 < recorded 5/.test(l))).toBe(true);
    } finally {
      release.resolve();
      r.close();
    }
  });

  test('S3: malformed connect private data is rejected with EPROTO; an unknown imm, lying or oversized lengths close that path only', async () => {
    srv = serverWith({ handler: (req) => ({ status: req.data.length }) });
    const err = await raw(srv.port, { privateData: Buffer.from('GET / HTTP/1.1') }).then(() => undefined, (e) => e);
    expect(err).toBeInstanceOf(RdmaError);
    expect(P.decodeReject(err.privateData)).toMatchObject({ code: 'EPROTO', retry: false });
    const wrongMajor = Buffer.from(P.encodeConnectRequest({ newSession: true, pathIndex: 0, pathCount: 1, reconnectCount: 0, sessionId: P.randomSessionId() }));
    wrongMajor.writeUInt16LE(0x0200, 4);
    const err2 = await raw(srv.port, { privateData: wrongMajor }).then(() => undefined, (e) => e);
    expect(P.decodeReject(err2.privateData).code).toBe('EPROTONOSUPPORT');
    const unknown = Buffer.from(P.encodeConnectRequest({ newSession: false, pathIndex: 0, pathCount: 1, reconnectCount: 0, sessionId: P.randomSessionId() }));
    const err3 = await raw(srv.port, { privateData: unknown }).then(() => undefined, (e) => e);
    expect(P.decodeReject(err3.privateData).code).toBe('ESTALE');

    const good = await connect({ paths: [{ host: HOST0, port: srv.port }] });
    const bad = await raw(srv.port);
    try {
      bad.qp.postSend([{ wrId: 7, opcode: 'RDMA_WRITE_WITH_IMM', sge: [], remoteAddr: 0, rkey: 0, imm: 0x30000000 }]);
      await bad.disconnected;
      expect(srv.logs.some((l) => /protocol violation: imm-type/.test(l))).toBe(true);
      // a raw session's write request whose trailer (at `offset`) says `t`: the server closes that path
      const badWrite = async (t: { hdrLen: number; dataLen: number }, offset: number, reason: RegExp): Promise<void> => {
        const r = await raw(srv.port);
        try {
          P.writeWriteTrailer(r.buf, 8192 + offset, { ...t, seq: 1n });
          r.qp.postSend([{
            wrId: 8, opcode: 'RDMA_WRITE_WITH_IMM', sge: [r.mr.sge(8192, offset + P.WRITE_TRAILER_SIZE)], remoteAddr: r.keys[0].addr, rkey: r.keys[0].rkey,
            imm: P.encodeRequestImm('write', 0, offset, r.acc),
          }]);
          await r.disconnected;
          expect(srv.logs.some((l) => reason.test(l))).toBe(true);
        } finally {
          r.close();
        }
      };
      await badWrite({ hdrLen: 0, dataLen: 11 }, 10, /protocol violation: trailer-offset/); // lies about its lengths
      // oversized lengths: a write header beyond maxHeaderSize, a read beyond maxIoSize
      await badWrite({ hdrLen: 600, dataLen: 0 }, 600, /protocol violation: hdr-len: .*hdrLen 600 > maxHeaderSize 512/);
      const bad4 = await raw(srv.port);
      const reqAt = 16384 - P.READ_TRAILER_SIZE;
      P.writeReadTrailer(bad4.buf, 8192, { hdrLen: 0, len: 16384, seq: 1n, addr: BigInt(bad4.mr.addr), rkey: bad4.mr.rkey });
      bad4.qp.postSend([{
        wrId: 10, opcode: 'RDMA_WRITE_WITH_IMM', sge: [bad4.mr.sge(8192, P.READ_TRAILER_SIZE)], remoteAddr: bad4.keys[0].addr + BigInt(reqAt), rkey: bad4.keys[0].rkey,
        imm: P.encodeRequestImm('read', 0, reqAt, bad4.acc),
      }]);
      await bad4.disconnected;
      expect(srv.logs.some((l) => /protocol violation: data-len: .*len 16384 > maxIoSize/.test(l))).toBe(true);
      bad4.close();
      // the other session never noticed
      expect((await good.write(Buffer.alloc(0), Buffer.alloc(5))).status).toBe(5);
    } finally {
      bad.close();
      await good.close();
    }
  });
});
