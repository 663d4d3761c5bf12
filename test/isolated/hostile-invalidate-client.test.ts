/**
 * A hostile server against the real client's read windows (docs/protocol.md
 * §1.1, §6.2), in a SoftRoCE guest of its own. On rxe the client exposes a
 * read destination through a type 1 window, tells the server so
 * (LOCAL_READ_INVALIDATE) and takes the window away itself: a SEND_WITH_INV
 * of its key, in a burst, chained after a correct answer or long after the
 * read resolved, is refused by the kernel and costs the server its path. The
 * client's kernel and process stay up, and another session of the same
 * client process keeps doing verified IOs.
 */
import { connect, TransportClient, TransportServer } from '../../lib/transport';
import * as P from '../../lib/transport/protocol';
import { Raw, rawServer } from '../softroce/transport-raw';

const HOST1 = '10.99.2.1';
let port = 24000 + (process.pid % 500) * 8;

const params = { queueDepth: 4, chunkSize: 8192, maxHeaderSize: 128, strict: false };

/** The hostile server's view of the client's read request: chunk, seq, and the window over the destination. */
async function nextRead(r: Raw): Promise<{ chunk: number; seq: bigint; addr: bigint; rkey: number; len: number }> {
  const w = await r.wcs.next((x) => x.opcodeName === 'RECV_RDMA_WITH_IMM', 60_000);
  const imm = P.decodeImm(w.imm ?? 0, w.byteLen, 'server', params);
  if (imm.type !== 'read-req') throw new Error(`expected a read request, got ${imm.type}`);
  const at = imm.chunk * params.chunkSize + imm.trailerOffset;
  const t = P.decodeReadTrailer(Buffer.from(r.buf.subarray(at, at + P.READ_TRAILER_SIZE)), imm.trailerOffset, w.byteLen, params);
  return { chunk: imm.chunk, seq: t.seq, addr: t.addr, rkey: t.rkey, len: t.len };
}

/** Answers a read correctly: its data by RDMA WRITE through the window, then the IO_RSP; plus `extra` WRs in the same post. */
function answer(r: Raw, q: { chunk: number; seq: bigint; addr: bigint; rkey: number; len: number }, fill: number, extra: 'none' | 'inv-after' = 'none'): void {
  r.buf.fill(fill, 16384, 16384 + q.len);
  const rsp = P.encodeIoRsp({ chunk: q.chunk, status: 0, seq: q.seq, dataLen: q.len, read: true, replay: false, keys: [], header: Buffer.alloc(0) });
  rsp.copy(r.buf, 24576);
  const wrs: Parameters<typeof r.qp.postSend>[0] = [
    { wrId: 10, opcode: 'RDMA_WRITE', sge: [r.mr.sge(16384, q.len)], remoteAddr: q.addr, rkey: q.rkey },
    { wrId: 11, opcode: 'SEND', sge: [r.mr.sge(24576, rsp.length)] },
  ];
  if (extra === 'inv-after') for (let i = 0; i < 3; i++) wrs.push({ wrId: 12 + i, opcode: 'SEND_WITH_INV', invalidateRkey: q.rkey, sge: [r.mr.sge(24576, rsp.length)] });
  r.qp.postSend(wrs);
}

function burst(r: Raw, rkey: number, n: number): void {
  r.qp.postSend(Array.from({ length: n }, (_, i) => ({ wrId: 20 + i, opcode: 'SEND_WITH_INV' as const, invalidateRkey: rkey, sge: [r.mr.sge(24576, 32)] })));
}

describe('a hostile server and the client read window', () => {
  // the honest session of the same client process, against an honest server
  let honestServer: TransportServer;
  let honest: TransportClient;
  let stopped = false;
  let ios = 0;
  const failures: string[] = [];
  let load: Promise<void>;
  beforeAll(async () => {
    const p = port++;
    honestServer = new TransportServer({ queueDepth: 8, chunkSize: 16384, handler: (req) => (req.kind === 'read' ? (req.data.fill(req.header[0]), {}) : {}) });
    honestServer.listen([{ host: HOST1, port: p }]);
    honest = await connect({ paths: [{ host: HOST1, port: p }] });
    load = (async () => {
      for (let i = 0; !stopped; i++) {
        const into = Buffer.alloc(2048);
        try {
          const r = await honest.read(Buffer.from([i & 0xff]), into);
          if (r.length !== 2048 || !into.every((b) => b === (i & 0xff))) failures.push(`read ${i}: wrong data`);
          ios++;
        } catch (err) {
          failures.push(`read ${i}: ${(err as Error).message}`);
        }
      }
    })();
  });
  afterAll(async () => {
    stopped = true;
    await load;
    await honest.close();
    await honestServer.close();
    expect(failures).toEqual([]);
    expect(ios).toBeGreaterThan(0);
  });

  async function victim(): Promise<{ srv: Awaited<ReturnType<typeof rawServer>>; client: TransportClient; path: Raw; logs: string[] }> {
    const srv = await rawServer(port++, { hbIntervalMs: 60_000, hbMissedMax: 5 });
    const logs: string[] = [];
    const client = await connect({ paths: [{ host: '10.99.1.1', port: srv.port }], log: (l) => logs.push(l), reconnect: { maxAttempts: 0 }, reconnectWaitMs: 1000 });
    client.on('error', () => undefined);
    const path = await srv.paths;
    return { srv, client, path, logs };
  }

  test('the client says it invalidates its read windows itself (1.1 LOCAL_READ_INVALIDATE) and exposes a type 1 key', async () => {
    const v = await victim();
    try {
      expect(v.path.request).toMatchObject({ version: P.VERSION, localReadInvalidate: true });
      const read = v.client.read(Buffer.alloc(0), Buffer.alloc(1000));
      const q = await nextRead(v.path);
      answer(v.path, q, 7);
      expect((await read).length).toBe(1000);
    } finally {
      await v.client.close({ drain: false });
      v.srv.close();
    }
  });

  test.each(['burst before the answer', 'chained after a correct answer', 'one, 300 ms after the read resolved'] as const)('SEND_WITH_INV of the read window key, %s: the kernel refuses it, the client drops the path with a logged reason', async (how) => {
    const v = await victim();
    try {
      const into = Buffer.alloc(3000);
      const read = v.client.read(Buffer.alloc(0), into);
      read.catch(() => undefined);
      const q = await nextRead(v.path);
      expect(q.len).toBe(3000);
      if (how === 'burst before the answer') {
        burst(v.path, q.rkey, 4);
        await expect(read).rejects.toMatchObject({ name: 'TransportError' });
      } else if (how === 'chained after a correct answer') {
        answer(v.path, q, 9, 'inv-after');
        const r = await read.catch((e: Error) => e);
        // the answer may win the race with the connection's failure: if the read resolved, its data is right
        if (!(r instanceof Error)) expect(into.every((b) => b === 9)).toBe(true);
      } else {
        answer(v.path, q, 5);
        expect((await read).length).toBe(3000);
        expect(into.every((b) => b === 5)).toBe(true);
        await new Promise((res) => setTimeout(res, 300));
        burst(v.path, q.rkey, 1);
      }
      const deadline = Date.now() + 60_000;
      while (!v.logs.some((l) => /down|connect failed|dead/.test(l)) && Date.now() < deadline) await new Promise((res) => setTimeout(res, 100));
      expect(v.logs.join('\n')).toMatch(/path 0 .*: down: .*(REM_INV_REQ_ERR|LOC_|REM_|completed with|disconnected|closed)/);
      // after the attack the window's memory is the client's again: nothing more lands in it
      into.fill(0);
      await new Promise((res) => setTimeout(res, 100));
      expect(into.every((b) => b === 0)).toBe(true);
    } finally {
      await v.client.close({ drain: false });
      v.srv.close();
    }
  });
});
