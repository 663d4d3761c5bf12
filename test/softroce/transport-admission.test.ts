/**
 * Admission before exposure (docs/protocol.md §3.4): the server's authorize
 * hook sees every connect request before anything is allocated, registered
 * or keyed for it. A refused peer gets reject code EACCES and leaves the
 * server's PDs, MRs and memory as they were; the shared-secret pattern of
 * docs/api.md ("Admission") admits the holder of the secret only.
 */
import { execFileSync } from 'child_process';
import { createHmac, timingSafeEqual } from 'crypto';
import { transport } from '../../lib';

const { TransportServer, TransportClient, connect } = transport;
type PeerInfo = transport.PeerInfo;

const HOST0 = '10.99.1.1';
let port = 21000 + (process.pid % 500) * 8;

/**
 * The PDs, MRs and QPs this process holds on rxe0, from the kernel's resource
 * tracking (`rdma -j resource show pd|mr|qp`, entries carry the owner's pid).
 */
function resources(): { pd: number; mr: number; qp: number } {
  const count = (what: string): number => {
    const rows = JSON.parse(execFileSync('rdma', ['-j', 'resource', 'show', what], { encoding: 'utf8' }) || '[]') as Array<{ ifname?: string; pid?: number }>;
    return rows.filter((r) => r.ifname === 'rxe0' && r.pid === process.pid).length;
  };
  return { pd: count('pd'), mr: count('mr'), qp: count('qp') };
}

const rssMiB = (): number => process.memoryUsage().rss / 2 ** 20;

/** The shared-secret pattern (docs/api.md, "Admission"): 4 bytes of time, 16 of HMAC-SHA256(secret, session id | time). */
function token(secret: string, sessionId: string, at = Math.floor(Date.now() / 1000)): Buffer {
  const t = Buffer.alloc(4);
  t.writeUInt32BE(at);
  const mac = createHmac('sha256', secret).update(sessionId).update(t).digest().subarray(0, 16);
  return Buffer.concat([t, mac]);
}

function checkToken(secret: string, peer: PeerInfo, maxAgeS = 60): boolean {
  const c = peer.credentials;
  if (c.length !== 20) return false;
  const at = c.readUInt32BE(0);
  if (Math.abs(Date.now() / 1000 - at) > maxAgeS) return false;
  const want = token(secret, peer.sessionId, at);
  return timingSafeEqual(want, c);
}

describe('admission', () => {
  // a pool big enough to see: 8 x 4 MiB = 32 MiB pinned per admitted session
  const POOL = { queueDepth: 8, chunkSize: 4 << 20, maxHeaderSize: 512 };
  let server: InstanceType<typeof TransportServer> | undefined;
  afterEach(async () => {
    await server?.close();
    server = undefined;
  });

  test('a refused client gets EACCES; no session, PD, MR or pinned pool exists for it; the hook saw who it was', async () => {
    const seen: PeerInfo[] = [];
    const logs: string[] = [];
    const p = port++;
    server = new TransportServer({ ...POOL, handler: () => ({}), log: (l) => logs.push(l), authorize: (peer) => (seen.push(peer), false) });
    server.listen([{ host: HOST0, port: p }]);
    const before = resources();
    const rss0 = rssMiB();
    const client = new TransportClient({ paths: [{ host: HOST0, port: p }], credentials: Buffer.from('not-a-token'), reconnect: { maxAttempts: 0 } });
    client.on('error', () => undefined);
    let err: unknown;
    try {
      await client.start();
    } catch (e) {
      err = e;
    }
    expect(err).toMatchObject({ name: 'TransportError', code: 'EACCES' });
    expect(server.sessionCount).toBe(0);
    // the client's own side is closed by now (start() failed): what is left is the server's
    expect(resources()).toEqual(before);
    expect(rssMiB() - rss0).toBeLessThan(16);
    expect(seen).toHaveLength(1);
    expect(seen[0]).toMatchObject({ address: HOST0, device: 'rxe0', pathIndex: 0, pathCount: 1, newSession: true, credentials: Buffer.from('not-a-token') });
    expect(seen[0].sessionId).toMatch(/^[0-9a-f-]{36}$/);
    expect(logs.join('\n')).toMatch(/reject 10\.99\.1\.1: EACCES: not authorized/);
    // the control: the same client admitted costs a PD and the pool's MR on the server
    await server.close();
    const p2 = port++;
    server = new TransportServer({ ...POOL, handler: () => ({}), authorize: () => true });
    server.listen([{ host: HOST0, port: p2 }]);
    const pre = resources();
    const ok = await connect({ paths: [{ host: HOST0, port: p2 }] });
    try {
      const during = resources();
      expect(during.pd).toBeGreaterThanOrEqual(pre.pd + 2); // the server's session PD and the client's
      expect(during.mr).toBeGreaterThan(pre.mr);
      expect(server.sessionCount).toBe(1);
    } finally {
      await ok.close();
    }
  });

  test('shared secret: the holder of the secret is admitted and served; a wrong secret, a stale token and no token are refused', async () => {
    const secret = 'correct horse battery staple';
    const p = port++;
    server = new TransportServer({ ...POOL, handler: (req) => ({ status: req.data.length & 0xff }), authorize: (peer) => checkToken(secret, peer) });
    server.listen([{ host: HOST0, port: p }]);
    const sessionId = transport.randomSessionId();
    // a token made for each connect, naming the session it is for
    const good = await connect({ paths: [{ host: HOST0, port: p }], sessionId, credentials: ({ sessionId: sid }) => token(secret, sid) });
    try {
      expect((await good.write(Buffer.alloc(0), Buffer.alloc(7))).status).toBe(7);
      const tries: Array<[string, Buffer | undefined]> = [
        ['wrong secret', token('guess', sessionId)],
        ['stale token', token(secret, sessionId, Math.floor(Date.now() / 1000) - 3600)],
        ['no token', undefined],
      ];
      for (const [, credentials] of tries) {
        // joining the admitted session by its id is refused too: admission is per connect
        const c = new TransportClient({ paths: [{ host: HOST0, port: p }], sessionId: transport.randomSessionId(), credentials, reconnect: { maxAttempts: 0 } });
        c.on('error', () => undefined);
        await expect(c.start()).rejects.toMatchObject({ code: 'EACCES' });
        const intruder = new TransportClient({ paths: [{ host: HOST0, port: p }], sessionId, credentials, reconnect: { maxAttempts: 0 } });
        intruder.on('error', () => undefined);
        await expect(intruder.start()).rejects.toMatchObject({ code: 'EACCES' });
        expect(server.sessionCount).toBe(1);
        expect((await good.write(Buffer.alloc(0), Buffer.alloc(3))).status).toBe(3);
      }
    } finally {
      await good.close();
    }
  });

  test('an async hook: a late answer is refused after authorizeTimeoutMs, a rejection and a throw are refusals; a slow yes admits', async () => {
    const p = port++;
    const mode = { v: 'slow-yes' as 'slow-yes' | 'never' | 'reject' | 'throw' };
    const logs: string[] = [];
    server = new TransportServer({
      ...POOL, handler: () => ({}), authorizeTimeoutMs: 1500, log: (l) => logs.push(l),
      authorize: (): Promise<boolean> => {
        if (mode.v === 'throw') throw new Error('directory unavailable');
        if (mode.v === 'reject') return Promise.reject(new Error('denied by policy'));
        if (mode.v === 'never') return new Promise(() => undefined);
        return new Promise((resolve) => setTimeout(() => resolve(true), 300));
      },
    });
    server.listen([{ host: HOST0, port: p }]);
    const ok = await connect({ paths: [{ host: HOST0, port: p }] });
    await ok.close();
    for (const v of ['never', 'reject', 'throw'] as const) {
      mode.v = v;
      const c = new TransportClient({ paths: [{ host: HOST0, port: p }], reconnect: { maxAttempts: 0 } });
      c.on('error', () => undefined);
      await expect(c.start()).rejects.toMatchObject({ code: 'EACCES' });
    }
    const all = logs.join('\n');
    expect(all).toMatch(/EACCES: authorize did not answer within 1500 ms/);
    expect(all).toMatch(/EACCES: authorize rejected: denied by policy/);
    expect(all).toMatch(/EACCES: authorize threw: directory unavailable/);
  });
});
