/**
 * Admission before exposure (docs/protocol.md §3.4): the server's authorize
 * hook sees every connect request before anything is allocated, registered
 * or keyed for it. A refused peer gets reject code EACCES and leaves the
 * server's PDs, MRs and memory as they were; the shared-secret pattern of
 * docs/api.md ("Admission") admits the holder of the secret only.
 */
import { spawnSync } from 'child_process';
import { createHmac, timingSafeEqual } from 'crypto';
import * as path from 'path';
import { transport } from '../../lib';

const { TransportServer, TransportClient, connect } = transport;
type PeerInfo = transport.PeerInfo;

const HOST0 = '10.99.1.1';
let port = 21000 + (process.pid % 500) * 8;

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

  test('a refused client gets EACCES; no session, PD, MR or pinned pool exists for it; the hook saw who it was', () => {
    // in a process of its own: this one holds objects of earlier tests that
    // its GC reclaims at any moment, which would move the counts
    const lib = JSON.stringify(path.resolve(__dirname, '..', '..', 'lib'));
    const p = port++;
    const script = `
      const { execFileSync } = require('child_process');
      const { transport } = require(${lib});
      const count = (what) => JSON.parse(execFileSync('rdma', ['-j', 'resource', 'show', what], { encoding: 'utf8' }) || '[]')
        .filter((r) => r.ifname === 'rxe0' && r.pid === process.pid).length;
      const res = () => ({ pd: count('pd'), mr: count('mr'), qp: count('qp') });
      const rss = () => process.memoryUsage().rss / 2 ** 20;
      (async () => {
        const seen = [];
        const logs = [];
        const POOL = { queueDepth: 8, chunkSize: 4 << 20, maxHeaderSize: 512 };
        let before, rss0, pending;
        // the hook answers late and looks meanwhile: what exists while a
        // connect waits for admission (the client's own PD is there already)
        const server = new transport.TransportServer({ ...POOL, handler: () => ({}), log: (l) => logs.push(l),
          authorize: async (peer) => {
            seen.push({ ...peer, credentials: peer.credentials.toString() });
            await new Promise((r) => setTimeout(r, 300));
            pending = { res: res(), sessions: server.sessionCount };
            return false;
          } });
        server.listen([{ host: '${HOST0}', port: ${p} }]);
        before = res(); rss0 = rss();
        const client = new transport.TransportClient({ paths: [{ host: '${HOST0}', port: ${p} }], credentials: Buffer.from('not-a-token'), reconnect: { maxAttempts: 0 } });
        client.on('error', () => undefined);
        const err = await client.start().then(() => null, (e) => ({ name: e.name, code: e.code }));
        const after = res(); const rss1 = rss(); const sessions = server.sessionCount;
        await server.close();
        // the control: the same pool admitted costs PDs and MRs on the server
        const ok = new transport.TransportServer({ ...POOL, handler: () => ({}), authorize: () => true });
        ok.listen([{ host: '${HOST0}', port: ${p + 1} }]);
        const c = await transport.connect({ paths: [{ host: '${HOST0}', port: ${p + 1} }] });
        const admitted = res(); const rss2 = rss();
        await c.close(); await ok.close();
        console.log(JSON.stringify({ err, before, pending, after, admitted, rssGrowth: rss1 - rss0, rssAdmitted: rss2 - rss0, sessions, seen, logs }));
      })().catch((e) => { console.error(e); process.exit(1); });`;
    port++;
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 90_000 });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const o = JSON.parse(r.stdout.trim().split('\n').pop()!);
    expect(o.err).toEqual({ name: 'TransportError', code: 'EACCES' });
    expect(o.sessions).toBe(0);
    // while the hook decided: no session, and nothing on the device beyond the client's own
    // PD and QP (its connect's) - in particular no pool MR and no server PD
    expect(o.pending.sessions).toBe(0);
    expect(o.pending.res.mr).toBe(o.before.mr);
    expect(o.pending.res.pd).toBeLessThanOrEqual(o.before.pd + 1);
    // the refused client's own objects are gone too (start() closed it): nothing is left at all
    expect(o.after).toEqual(o.before);
    expect(o.rssGrowth).toBeLessThan(16);
    expect(o.seen).toHaveLength(1);
    expect(o.seen[0]).toMatchObject({ address: HOST0, device: 'rxe0', pathIndex: 0, pathCount: 1, newSession: true, credentials: 'not-a-token' });
    expect(o.seen[0].sessionId).toMatch(/^[0-9a-f-]{36}$/);
    expect(o.logs.join('\n')).toMatch(/reject 10\.99\.1\.1: EACCES: not authorized/);
    // the control shows the counts can see a session: the server's PD and the client's, the pool's MR, and the 32 MiB pinned
    expect(o.admitted.pd).toBeGreaterThanOrEqual(o.before.pd + 2);
    expect(o.admitted.mr).toBeGreaterThan(o.before.mr);
    expect(o.rssAdmitted).toBeGreaterThan(24);
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

  test("principals: a session belongs to whom the hook admitted; another principal's valid token cannot join it; a refusal is final (the client does not retry)", async () => {
    const p = port++;
    const secrets: Record<string, string> = { alice: 'alice-secret', bob: 'bob-secret' };
    const calls = new Map<string, number>();
    server = new TransportServer({
      ...POOL, handler: () => ({}),
      authorize: (peer) => {
        calls.set(peer.sessionId, (calls.get(peer.sessionId) ?? 0) + 1);
        return Object.keys(secrets).find((who) => checkToken(secrets[who], peer)) ?? false;
      },
    });
    server.listen([{ host: HOST0, port: p }]);
    const sessionId = transport.randomSessionId();
    const alice = await connect({ paths: [{ host: HOST0, port: p }], sessionId, credentials: ({ sessionId: sid }) => token(secrets.alice, sid) });
    try {
      // bob holds a valid token of his own for alice's session id: admitted as bob, refused as a joiner
      const bob = new TransportClient({ paths: [{ host: HOST0, port: p }], sessionId, credentials: token(secrets.bob, sessionId), reconnect: { maxAttempts: 0 } });
      bob.on('error', () => undefined);
      await expect(bob.start()).rejects.toMatchObject({ code: 'EACCES' });
      expect(server.sessionCount).toBe(1);
      expect((await alice.write(Buffer.alloc(0), Buffer.alloc(5))).status).toBe(0);
      // a refused client with the default reconnect policy: EACCES is final, the hook ran once
      const stranger = transport.randomSessionId();
      const c = new TransportClient({ paths: [{ host: HOST0, port: p }], sessionId: stranger, credentials: token('guess', stranger) });
      c.on('error', () => undefined);
      await expect(c.start()).rejects.toMatchObject({ code: 'EACCES' });
      await new Promise((r) => setTimeout(r, 2500)); // past the first reconnect delay (1 s + jitter)
      expect(calls.get(stranger)).toBe(1);
    } finally {
      await alice.close();
    }
  });

  test('an async hook: a slow yes admits; no answer within authorizeTimeoutMs, a rejection and a throw refuse with EBUSY + RETRY (the backend may come back)', async () => {
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
      await expect(c.start()).rejects.toMatchObject({ code: 'EBUSY', retry: true });
      expect(server.sessionCount).toBe(0);
    }
    const all = logs.join('\n');
    expect(all).toMatch(/EBUSY: authorize did not answer within 1500 ms/);
    expect(all).toMatch(/EBUSY: authorize rejected: denied by policy/);
    expect(all).toMatch(/EBUSY: authorize threw: directory unavailable/);
  });
});
