/**
 * Exactly-once for every IO (issue 17, docs/protocol.md §7.5, §10.4): when
 * every path of a session drops at once, the IOs in flight wait for a path
 * and then settle with their real outcome; none rejects while the session
 * can come back. Only when the outcome cannot be known (a server that lost
 * the session, reconnectWaitMs run out) does an IO reject, and its
 * `executed` says whether a retry is safe: checked against the handler's
 * own counts.
 */
import { transport } from '../../lib';
import {
  countingServer, eth1, HOST0, HOST1, later, log, nextPort, pattern, restoreEth1, sleep, TransportClient, TransportServer, twoPaths, until,
} from './transport-world';

const { TransportServer, connect } = transport;
type IoError = Error & { code?: string; executed?: false | 'unknown' };

interface Run { failures: string[]; settled: number[]; rejected: Map<string, IoError> }

/**
 * `total` IOs (every third a 4 KiB read, the rest 4 KiB writes, each with a
 * unique id), `window` in flight; `cut(k)` is called every `everyIos` settled
 * IOs. Reads are checked against the handler's pattern, writes against
 * the response header.
 */
async function workload(client: TransportClient, total: number, window: number, everyIos: number, cut: (k: number) => void): Promise<Run> {
  const SIZE = 4096;
  const run: Run = { failures: [], settled: new Array<number>(total).fill(0), rejected: new Map() };
  let done = 0;
  let cuts = 0;
  const one = async (i: number): Promise<void> => {
    const id = `${i % 3 === 0 ? 'r' : 'w'}:${i}`;
    try {
      if (id[0] === 'w') {
        const r = await client.write(Buffer.from(id), pattern(i + 1, SIZE));
        if (r.status !== 0 || r.header.toString() !== `w${id}`) run.failures.push(`${id}: status ${r.status} header ${r.header}`);
      } else {
        const into = Buffer.alloc(SIZE);
        const r = await client.read(Buffer.from(id), into);
        if (r.status !== 0 || r.length !== SIZE || !into.equals(pattern(i, SIZE)) || r.header.toString() !== `r${id}`) run.failures.push(`${id}: bad read`);
      }
    } catch (err) {
      run.rejected.set(id, err as IoError);
      run.failures.push(`${id}: ${(err as Error).message}`);
    } finally {
      run.settled[i]++;
      if (++done % everyIos === 0 && done < total) cut(++cuts);
    }
  };
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < total) await one(next++);
  };
  await Promise.all(Array.from({ length: window }, lane));
  return run;
}

function expectExactlyOnce(run: Run, srv: ReturnType<typeof countingServer>, total: number): void {
  expect(run.failures.slice(0, 5)).toEqual([]);
  expect(run.settled.every((n) => n === 1)).toBe(true);
  expect(srv.calls.size).toBe(total);
  const twice = [...srv.calls].filter(([, n]) => n !== 1);
  expect(twice).toEqual([]);
  for (let i = 0; i < total; i++) if (i % 3 !== 0) expect(srv.stored.get(`w:${i}`)?.equals(pattern(i + 1, 4096))).toBe(true);
}

describe('every path drops at once under load: no IO rejects, each runs once', () => {
  test.each([true, false])('both paths disconnected by the server, 5,000 IOs, a cut every 1,000 (strict=%s)', async (strict) => {
    const srv = countingServer({ strict, chunkSize: 16384 });
    const client = await connect({ log, paths: twoPaths(srv.port), reconnect: { initialDelayMs: 100, maxDelayMs: 400, jitter: 0 } });
    let downs = 0;
    client.on('session-down', () => downs++);
    try {
      const TOTAL = 5000;
      const run = await workload(client, TOTAL, 16, 1000, () => {
        // both at once, from the server side: every IO in flight loses its path
        srv.server.disconnectPath(client.sessionId, 0);
        srv.server.disconnectPath(client.sessionId, 1);
      });
      expectExactlyOnce(run, srv, TOTAL);
      expect(downs).toBeGreaterThanOrEqual(3); // the cuts really took the session down
      await until('both paths back', () => client.stats().paths.every((p) => p.state === 'connected'));
      expect(client.stats()).toMatchObject({ unsettled: 0, inflight: 0, waiting: 0 });
      console.log(`strict=${strict}: ${TOTAL} IOs, ${downs} session-downs, replays ${Object.values(srv.server.stats())[0].paths.reduce((n, p) => n + p.replays, 0)}`);
    } finally {
      await client.close({ drainTimeoutMs: 5000 });
      await srv.server.close();
    }
  }, 240000);

  test.each([true, false])('a link cut (eth1 down) and a server disconnect of the other path at once, twice or more under load (strict=%s)', async (strict) => {
    const srv = countingServer({ strict, chunkSize: 16384 });
    const client = await connect({ log, paths: twoPaths(srv.port), reconnect: { initialDelayMs: 100, maxDelayMs: 400, jitter: 0 } });
    let downs = 0;
    client.on('session-down', () => downs++);
    const restores: Promise<void>[] = [];
    let restoring = false;
    let cuts = 0;
    try {
      // a link restore takes seconds under TCG, and since requests and
      // answers go out in one post per batch (Conn.postSoon) 5,000 IOs
      // could finish before the first restore: enough IOs for two cuts
      const TOTAL = strict ? 12000 : 15000;
      const run = await workload(client, TOTAL, 16, 500, () => {
        if (restoring || cuts >= 3) return; // a link restore takes seconds under TCG: one cut at a time
        restoring = true;
        cuts++;
        eth1('down');
        srv.server.disconnectPath(client.sessionId, 0);
        restores.push(sleep(1500).then(restoreEth1).finally(() => (restoring = false)));
      });
      await Promise.all(restores);
      expectExactlyOnce(run, srv, TOTAL);
      expect(cuts).toBeGreaterThanOrEqual(2);
      expect(downs).toBeGreaterThanOrEqual(1);
      await until('path 1 back', () => client.stats().paths[1].state === 'connected', 60000);
      expect(client.stats()).toMatchObject({ unsettled: 0, inflight: 0, waiting: 0 });
    } finally {
      await restoreEth1();
      await client.close({ drainTimeoutMs: 5000 });
      await srv.server.close();
    }
  }, 300000);
});

describe('when the outcome cannot be known, the rejection says whether the IO ran', () => {
  test('a server killed and restarted: in-flight IOs fail ESTALE with executed "unknown", queued ones never ran and say executed false (or go to the new session)', async () => {
    const p = nextPort();
    const calls = new Map<string, number>();
    let entered = later();
    let holding = 0;
    const mk = (hang: boolean): TransportServer => {
      const s = new TransportServer({
        queueDepth: 4, chunkSize: 8192, maxHeaderSize: 64, log,
        handler: async (req) => {
          const id = req.header.toString();
          calls.set(id, (calls.get(id) ?? 0) + 1);
          if (hang) {
            if (++holding === 4) entered.resolve();
            await new Promise(() => undefined); // the server dies with these running
          }
          return { status: 0 };
        },
      });
      s.listen([{ host: HOST0, port: p }, { host: HOST1, port: p }]);
      return s;
    };
    let server = mk(true);
    for (const rejoin of [false, true]) {
      calls.clear();
      holding = 0;
      entered = later();
      const client = await connect({
        log, paths: twoPaths(p), rejoinOnServerRestart: rejoin, reconnect: { initialDelayMs: 100, maxDelayMs: 300, jitter: 0 },
      });
      client.on('error', () => undefined); // without rejoin the session fails with ESTALE
      try {
        // 4 permits: 4 IOs run (and hang), 8 wait in the queue, never sent
        const ios = Array.from({ length: 12 }, (_, i) => client.write(Buffer.from(`${rejoin ? 'j' : 'n'}${i}`), Buffer.alloc(64)).then(
          (r) => ({ id: `${rejoin ? 'j' : 'n'}${i}`, ok: r.status === 0, err: undefined as IoError | undefined }),
          (e: IoError) => ({ id: `${rejoin ? 'j' : 'n'}${i}`, ok: false, err: e }),
        ));
        await entered.promise;
        await server.close(); // records lost with it
        server = mk(false);
        const out = await Promise.all(ios);
        const rejected = out.filter((o) => o.err);
        for (const o of rejected) {
          expect(o.err!.code).toBe('ESTALE');
          // a rejected IO that ran says 'unknown'; one that says false never ran, on either server
          if (calls.get(o.id)) expect(o.err!.executed).toBe('unknown');
          if (o.err!.executed === false) expect(calls.get(o.id) ?? 0).toBe(0);
        }
        const ran = out.filter((o) => calls.get(o.id));
        if (rejoin) {
          // the 4 that ran on the dead server fail; the 8 never sent go to the new session and run once
          expect(rejected.map((o) => o.err!.executed)).toEqual(['unknown', 'unknown', 'unknown', 'unknown']);
          expect(out.filter((o) => o.ok)).toHaveLength(8);
          expect(ran.every((o) => calls.get(o.id) === 1)).toBe(true);
        } else {
          expect(rejected).toHaveLength(12);
          expect(rejected.filter((o) => o.err!.executed === false)).toHaveLength(8);
        }
      } finally {
        await client.close({ drain: false });
      }
      if (!rejoin) {
        await server.close();
        server = mk(true);
      }
    }
    await server.close();
  }, 120000);

  test('reconnectWaitMs runs out during a link outage: sent IOs fail ETIMEDOUT with executed "unknown", queued ones with false; after the link is back the RESUMEs settle the chunks and the counts agree', async () => {
    const srv = countingServer({ queueDepth: 4, hold: () => sleep(300) });
    const client = await connect({
      log, paths: [{ host: HOST1, port: srv.port }], reconnectWaitMs: 2000, reconnect: { initialDelayMs: 200, maxDelayMs: 500, jitter: 0 },
    });
    try {
      const ios = Array.from({ length: 10 }, (_, i) => client.write(Buffer.from(`t:${i}`), Buffer.alloc(64)).then(() => undefined, (e: IoError) => e));
      await until('IOs running', () => srv.calls.size >= 2, 10000);
      eth1('down');
      const errs = await Promise.all(ios);
      const byId = errs.map((e, i) => ({ id: `t:${i}`, e }));
      const failed = byId.filter((x) => x.e);
      expect(failed.length).toBeGreaterThan(0);
      for (const { e } of failed) expect(e!.code).toBe('ETIMEDOUT');
      expect(failed.some(({ e }) => e!.executed === 'unknown')).toBe(true);
      expect(failed.some(({ e }) => e!.executed === false)).toBe(true);
      await restoreEth1();
      await until('path back and chunks settled', () => client.stats().paths[0].state === 'connected' && client.stats().unsettled === 0, 60000);
      // every message has arrived: an IO called not executed never ran
      for (const { id, e } of failed) if (e!.executed === false) expect(srv.calls.get(id) ?? 0).toBe(0);
      for (const { id, e } of byId) if (!e) expect(srv.calls.get(id)).toBe(1);
      const after = await Promise.all(Array.from({ length: 8 }, (_, i) => client.write(Buffer.from(`a:${i}`), Buffer.alloc(64))));
      expect(after.every((r) => r.status === 0)).toBe(true);
    } finally {
      await restoreEth1();
      await client.close({ drain: false });
      await srv.server.close();
    }
  }, 180000);
});
