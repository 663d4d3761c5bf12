/**
 * A hostile client against the real server (docs/protocol.md §1.1, §12), in a
 * SoftRoCE guest of its own: on rxe a second SEND_WITH_INV of a type 2
 * window's key, or one of a fresh window's, runs rxe_invalidate_mw() on a
 * window with no QP and panics the kernel. The server exposes type 1 windows
 * on rxe, which the kernel refuses to invalidate remotely; so here the
 * attacker sends SEND_WITH_INV with every key it holds, with another
 * session's keys and with guessed ones, and each attempt may cost it only
 * its own connection: the guest stays up (a panic fails this file), an
 * honest session's verified IOs all succeed, and the keys stay usable.
 */
import { connect, randomSessionId, TransportServer } from '../../lib/transport';
import * as P from '../../lib/transport/protocol';
import { Raw, raw, rawWrite } from '../softroce/transport-raw';

const HOST0 = '10.99.1.1';
const HOST1 = '10.99.2.1';
let port = 23000 + (process.pid % 500) * 8;

/**
 * Posts SEND_WITH_INVs of `rkeys` in one postSend and waits until the server
 * has closed the connection. (The sender's first completion may well say
 * SUCCESS: rxe acknowledges the packet although its responder then fails the
 * invalidation and the QP. What counts is what the server saw: a failed
 * receive, never a successful invalidation, which it would report as the
 * 'send-with-inv' violation.)
 */
async function sendWithInv(r: Raw, rkeys: number[]): Promise<void> {
  r.buf.fill(0, 0, 64);
  r.qp.postSend(rkeys.map((rkey, i) => ({ wrId: 1000 + i, opcode: 'SEND_WITH_INV' as const, invalidateRkey: rkey, sge: [r.mr.sge(0, 64)] })));
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([r.disconnected, new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error('the server did not close the attacker\'s connection within 60 s')), 60_000);
    })]);
  } finally {
    clearTimeout(timer);
  }
}

/** The server's log line closing session `sid`'s path 0 (its reason), if any. */
function closedBecause(logs: string[], sid: string): string | undefined {
  return logs.find((l) => l.startsWith(`path ${sid}/0: closed: `))?.slice(`path ${sid}/0: closed: `.length);
}

/** An honest two-path session doing verified writes and reads until stopped. */
async function honestLoad(p: number): Promise<{ stop(): Promise<{ ios: number; failures: string[] }> }> {
  const client = await connect({ paths: [{ host: HOST0, port: p }, { host: HOST1, port: p }], name: 'honest' });
  let stopped = false;
  let ios = 0;
  const failures: string[] = [];
  const run = (async () => {
    for (let i = 0; !stopped; i++) {
      const key = Buffer.from(`key-${i % 16}`);
      const data = Buffer.alloc(3000 + (i % 7) * 100, (i * 37) & 0xff);
      try {
        const w = await client.write(key, data);
        const into = Buffer.alloc(data.length);
        const r = await client.read(key, into);
        if (w.status !== 0 || r.status !== 0 || r.length !== data.length || !into.equals(data)) failures.push(`IO ${i}: status ${w.status}/${r.status}, ${r.length} bytes, data ${into.equals(data) ? 'ok' : 'WRONG'}`);
        ios += 2;
      } catch (err) {
        failures.push(`IO ${i}: ${(err as Error).message}`);
      }
    }
  })();
  return {
    stop: async () => {
      stopped = true;
      await run;
      await client.close();
      return { ios, failures };
    },
  };
}

describe.each([true, false])('strict=%s', (strict) => {
  let server: TransportServer;
  let p: number;
  const logs: string[] = [];
  beforeAll(() => {
    p = port++;
    const store = new Map<string, Buffer>();
    server = new TransportServer({
      queueDepth: 4, chunkSize: 16384, maxHeaderSize: 256, strict, log: (l) => logs.push(l),
      // hundreds of attackers' sessions: gone with their path
      sessionLingerMs: 0, maxSessions: 4096,
      handler: (req) => {
        const k = req.header.toString();
        if (req.kind === 'write') {
          store.set(k, Buffer.from(req.data));
          return {};
        }
        const v = store.get(k);
        if (!v) return { status: 2 };
        v.copy(req.data);
        return { length: v.length };
      },
    });
    server.listen([{ host: HOST0, port: p }, { host: HOST1, port: p }]);
  });
  afterAll(async () => {
    await server.close();
  });

  test('SEND_WITH_INV of its own keys, repeated in one post: only the attacker loses its path (logged), the honest session is served, the kernel lives', async () => {
    const honest = await honestLoad(p);
    try {
      for (let round = 0; round < 3; round++) {
        const sid = randomSessionId();
        const a = await raw(p, { sessionId: sid });
        try {
          const keys = [...new Set(a.keys.map((k) => k.rkey))];
          // every key twice, then once more: the second of each was the panic
          await sendWithInv(a, [...keys, ...keys, ...keys]);
          const why = closedBecause(logs, sid);
          console.log(`strict=${strict}: attacker ${round}: the server closed its path: ${why}`);
          expect(why).toMatch(/REM_INV_REQ_ERR|completed with/);
        } finally {
          a.close();
        }
      }
    } finally {
      const { ios, failures } = await honest.stop();
      expect(failures).toEqual([]);
      expect(ios).toBeGreaterThan(0);
    }
    expect(logs.filter((l) => /send-with-inv/.test(l))).toEqual([]);
  });

  test("another session's keys: the attacker's SEND_WITH_INV cannot take them away; the victim keeps using them", async () => {
    const vsid = randomSessionId();
    const victim = await raw(p, { sessionId: vsid });
    try {
      for (let round = 0; round < 2; round++) {
        const sid = randomSessionId();
        const a = await raw(p, { sessionId: sid });
        try {
          await sendWithInv(a, [victim.keys[0].rkey, victim.keys[0].rkey, victim.keys[victim.keys.length - 1].rkey]);
          expect(closedBecause(logs, sid)).toMatch(/REM_INV_REQ_ERR|completed with/);
        } finally {
          a.close();
        }
      }
      expect(logs.filter((l) => /send-with-inv/.test(l))).toEqual([]);
      // the victim's key still works: its IO runs and is answered
      rawWrite(victim, 0, Buffer.from('still mine'));
      const w = await victim.wcs.next((x) => x.wrId === 2).catch((err: Error) => {
        throw new Error(`${err.message}; the server's log of the victim: ${logs.filter((l) => l.includes(vsid)).join(' | ')}`);
      });
      expect(w.statusName).toBe('SUCCESS');
      // the response: a SEND (strict) or an immediate-only WRITE_WITH_IMM (relaxed, no header)
      const isRsp = (x: { opcodeName: string; imm?: number; byteLen: number }): boolean => x.opcodeName === 'RECV' ||
        (x.opcodeName === 'RECV_RDMA_WITH_IMM' && P.decodeImm(x.imm ?? 0, x.byteLen, 'client', victim.acc).type === 'io-rsp');
      expect((await victim.wcs.next(isRsp)).statusName).toBe('SUCCESS');
    } finally {
      victim.close();
    }
  });

  test('guessed keys: the windows next to its own, every one of the 256 key bytes, one connection each: every SEND_WITH_INV fails in the kernel, none invalidates', async () => {
    const honest = await honestLoad(p);
    const probe = await raw(p);
    const indexes = probe.keys.map((k) => k.rkey >>> 8);
    probe.close();
    // the neighbours of the attacker's own windows: other sessions' windows
    // and the server's spare ones (allocated next)
    const targets = [Math.min(...indexes) - 1, Math.max(...indexes) + 1].filter((i) => i > 0);
    const guesses = targets.flatMap((index) => Array.from({ length: 256 }, (_, b) => ((index << 8) | b) >>> 0));
    const reasons = new Map<string, number>();
    const t0 = Date.now();
    try {
      let next = 0;
      const worker = async (): Promise<void> => {
        while (next < guesses.length) {
          const g = guesses[next++];
          const sid = randomSessionId();
          const a = await raw(p, { sessionId: sid });
          try {
            await sendWithInv(a, [g, g]);
            const why = closedBecause(logs, sid) ?? 'no log line';
            reasons.set(why, (reasons.get(why) ?? 0) + 1);
          } finally {
            a.close();
          }
        }
      };
      await Promise.all(Array.from({ length: 6 }, worker));
    } finally {
      const { ios, failures } = await honest.stop();
      expect(failures).toEqual([]);
      expect(ios).toBeGreaterThan(0);
    }
    console.log(`strict=${strict}: ${guesses.length} guessed keys (windows ${targets.join(', ')}) in ${Date.now() - t0} ms: the server closed the paths because ${JSON.stringify(Object.fromEntries(reasons))}`);
    // every guess failed in the kernel's responder: none invalidated anything
    expect([...reasons.values()].reduce((a, b) => a + b, 0)).toBe(guesses.length);
    expect([...reasons.keys()].every((r) => /REM_INV_REQ_ERR|completed with/.test(r))).toBe(true);
    expect(logs.filter((l) => /send-with-inv/.test(l))).toEqual([]);
  }, 600_000);
});
