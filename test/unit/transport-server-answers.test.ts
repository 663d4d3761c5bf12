/**
 * The server's answers as the device would send them (lib/transport/server-session.ts
 * #respond, Conn.postSoon): a real ServerSession and ServerPath over fake
 * verbs objects that record every native post, whose SEND bytes are read at
 * the end, as a device reads them when it sends (rxe: in a kernel task,
 * after the post returned). The case: a stale RESUME_REQ for a chunk (the
 * client asked it on two paths; the other one's replay settled it) and the
 * chunk's next IO arrive in one completion batch. The replay must go out as
 * the replay of the old seq, and the new IO's answer once, after its read
 * data. (Found by an adversarial review of the postSoon change: both answers
 * went out as the new IO's, the first ahead of its data.)
 */
import * as P from '../../lib/transport/protocol';
import { ServerPath, ServerSession } from '../../lib/transport/server-session';

/* eslint-disable @typescript-eslint/no-explicit-any */

interface PostedWr { op: string; wrId: number; rkey?: number; len?: number; imm?: number; read: () => Buffer | undefined }

function world(handler: (req: any) => any) {
  const qd = 4;
  const chunkSize = 4096;
  const calls: PostedWr[][] = [];
  const handlers: Record<string, (b: unknown) => void> = {};
  /** completions the device holds that no poll has taken yet (the fake CQ's poll() delivers them) */
  const inCq: unknown[] = [];
  const cmHandlers: Record<string, () => void> = {};
  const mrs = new Map<number, { addr: number; mem: ArrayBuffer }>();
  let nextAddr = 0x100000;
  let lk = 10;
  const device: any = {
    name: 'mlx5_0', attributes: { vendorId: 0x15b3 }, closed: false,
    createCompletionQueue: () => ({
      on: (ev: string, fn: (b: unknown) => void) => void (handlers[ev] = fn), ref() {}, unref() {}, close() {}, closed: false,
      poll: () => {
        const wcs = inCq.splice(0);
        if (wcs.length) handlers.batch({ length: wcs.length, fill: (i: number, o: any) => Object.assign(o, wcs[i]) });
        return wcs;
      },
    }),
  };
  const pd: any = {
    device, closed: false,
    allocate: (n: number) => new ArrayBuffer(n),
    registerMemory: (mem: ArrayBuffer) => {
      const addr = nextAddr;
      nextAddr += mem.byteLength + 0x1000;
      const lkey = ++lk;
      mrs.set(lkey, { addr, mem });
      return { lkey, rkey: lkey, addr, sge: (off: number, len: number) => ({ addr: addr + off, length: len, lkey }), close() {} };
    },
    allocMemoryWindow: () => ({ rkey: 0x500, close() {} }),
    close() {},
  };
  device.allocPd = () => pd;
  const qp = {
    maxSendWr: qd * 4 + 64 + 16, qpNum: 7,
    postSend(wrs: any[]) {
      calls.push(wrs.map((w) => {
        // the WR is copied now (as the native post packs it); the bytes it
        // names are read later, when the device sends them
        const s = w.sge?.[0] ? { ...w.sge[0] } : undefined;
        const m = s ? mrs.get(s.lkey) : undefined;
        const read = () => (m && s && s.length ? Buffer.from(Buffer.from(m.mem, s.addr - m.addr, s.length)) : undefined);
        return { op: w.opcode, wrId: w.wrId, rkey: w.rkey, len: s?.length, imm: w.imm, read };
      }));
    },
    postRecv() {},
  };
  const id: any = {
    createQueuePair: () => qp, info: () => ({ portNum: 0 }), disconnect() {}, close() {},
    on: (ev: string, fn: () => void) => {
      const before = cmHandlers[ev];
      cmHandlers[ev] = before ? () => (before(), fn()) : fn;
    },
  };
  const logs: string[] = [];
  const server: any = {
    params: { queueDepth: qd, chunkSize, maxHeaderSize: 64, strict: false }, log: (l: string) => logs.push(l), windowType: 'auto', invalidation: 'local',
    lingerMs: 1000, handler, hbIntervalMs: 1e6, hbMissedMax: 3, infoTimeoutMs: 1e6, busyPoll: false, emit: () => undefined, forget() {},
  };
  const session = new ServerSession(server, 'sess', 2, '');
  const dev = session.devState({ get: () => device } as any, 'mlx5_0');
  // relaxed: one pool key
  dev.windows = { type: 1, key: () => 0x777, invalidate() {}, rekey() {}, forget() {}, exposed: () => false, ready: async () => 0x777, close() {} } as any;
  const path = new ServerPath(session, 0, 0, id, dev, false);
  session.attach(path);
  const conn = path.conn;
  const p = server.params;
  let slot = 0;
  const completion = (opcode: number, opcodeName: string, byteLen: number, imm?: number) => ({
    wrId: 0, ok: true, status: 0, statusName: 'SUCCESS', opcode, opcodeName, byteLen, imm, invalidatedRkey: undefined,
  });
  const recvMsg = (buf: Buffer) => {
    const s = slot++ % (qd + P.RECV_SLACK);
    buf.copy(conn.recv!.buf, s * conn.recvSize);
    conn.onRecv(completion(128, 'RECV', buf.length) as any, s);
  };
  const recvImm = (imm: number, byteLen: number) => conn.onRecv(completion(129, 'RECV_RDMA_WITH_IMM', byteLen, imm) as any, slot++ % (qd + P.RECV_SLACK));
  const ctx = { ...p, pathCount: 2, pathIndex: 0 };
  return {
    calls, logs, session,
    /** the peer's SESSION_CLOSE reached the device (no poll has taken it yet), then the CM says the peer disconnected */
    closeThenDisconnect() {
      const s = slot++ % (qd + P.RECV_SLACK);
      P.encodeSessionClose().copy(conn.recv!.buf, s * conn.recvSize);
      inCq.push({ ...completion(128, 'RECV', P.SESSION_CLOSE_SIZE), wrId: 2 ** 32 + s });
      cmHandlers.disconnected();
    },
    async info() {
      recvMsg(P.encodeInfoReq({ recvSize: P.clientRecvSize(p, 2), name: 'x' }));
      for (let i = 0; i < 5; i++) {
        await new Promise((r) => setImmediate(r));
        // complete every signaled WR posted so far (the info exchange's binds and answer)
        for (const call of calls) for (const w of call as Array<PostedWr & { done?: boolean }>) if (!w.done) {
          w.done = true;
          handlers.batch({ length: 1, fill: (_: number, o: any) => Object.assign(o, completion(0, 'SEND', 0), { wrId: w.wrId }) });
        }
      }
    },
    writeReq(c: number, seq: number) {
      const data = Buffer.alloc(8, 1);
      data.copy(session.buf, c * chunkSize);
      P.writeWriteTrailer(session.buf, c * chunkSize + data.length, { hdrLen: 0, dataLen: data.length, seq: BigInt(seq) });
      recvImm(P.encodeRequestImm('write', c, data.length, p), data.length + P.WRITE_TRAILER_SIZE);
    },
    readReq(c: number, seq: number, len: number, addr: number, rkey: number) {
      const reqAt = chunkSize - P.READ_TRAILER_SIZE;
      P.writeReadTrailer(session.buf, c * chunkSize + reqAt, { hdrLen: 0, len, seq: BigInt(seq), addr: BigInt(addr), rkey });
      recvImm(P.encodeRequestImm('read', c, reqAt, p), P.READ_TRAILER_SIZE);
    },
    resumeReq(c: number, seq: number) {
      recvMsg(P.encodeResumeReq({ chunk: c, seq: BigInt(seq) }));
    },
    /** what the device sends, in order: each message decoded from its bytes as they are now */
    sent(from: number) {
      return calls.slice(from).flat().map((w) => {
        if (w.op === 'RDMA_WRITE') return { op: w.op, rkey: w.rkey, len: w.len };
        if (w.op === 'RDMA_WRITE_WITH_IMM') return { op: w.op, imm: w.imm };
        const m = P.decodeClientMessage(w.read()!, ctx) as P.IoRsp;
        return { op: w.op, type: m.type, chunk: m.chunk, seq: Number(m.seq), replay: m.replay, read: m.read, dataLen: m.dataLen };
      });
    },
  };
}

test('a stale RESUME_REQ and the chunk\'s next read in one batch: the replay goes out as the old seq\'s, the read\'s answer once, after its data', async () => {
  const w = world((req) => (req.kind === 'read' ? (req.data.fill(9, 0, 100), { length: 100 }) : { header: Buffer.from('h') }));
  await w.info();
  // seq 5 on chunk 1, a write with a response header (an IO_RSP message), answered in its own turn
  w.writeReq(1, 5);
  await Promise.resolve();
  const mark = w.calls.length;
  // one batch: the stale ask for seq 5, then the chunk's next IO, a read (seq 9)
  w.resumeReq(1, 5);
  w.readReq(1, 9, 100, 0xabc000, 0x4242);
  await Promise.resolve();
  await Promise.resolve();
  expect(w.logs.filter((l) => /violation|closed/.test(l))).toEqual([]);
  expect(w.sent(mark)).toEqual([
    { op: 'SEND', type: 'io-rsp', chunk: 1, seq: 5, replay: true, read: false, dataLen: 0 },
    { op: 'RDMA_WRITE', rkey: 0x4242, len: 100 },
    { op: 'SEND_WITH_INV', type: 'io-rsp', chunk: 1, seq: 9, replay: false, read: true, dataLen: 100 },
  ]);
});

test('the answers to one batch of requests on different chunks go out in one native call', async () => {
  const w = world(() => ({ header: Buffer.from('h') }));
  await w.info();
  const mark = w.calls.length;
  for (let c = 0; c < 4; c++) w.writeReq(c, 1);
  await Promise.resolve();
  expect(w.calls.length - mark).toBe(1);
  expect(w.sent(mark).map((m) => [m.chunk, m.seq])).toEqual([[0, 1], [1, 1], [2, 1], [3, 1]]);
});

test('a SESSION_CLOSE already in the CQ when the CM reports the disconnect is still read: the session ends at once instead of lingering', async () => {
  const w = world(() => ({}));
  await w.info();
  w.closeThenDisconnect();
  expect(w.logs).toContain('session sess closed: client closed the session');
  expect(w.session.closing).toBe(true);
});
