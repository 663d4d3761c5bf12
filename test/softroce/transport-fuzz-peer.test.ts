/**
 * A fuzzing peer against a live server (S3): hand-made clients that pass
 * the info exchange and then send seeded random messages (immediates,
 * requests with random trailers, random and half-valid SENDs, valid writes
 * in between), while an honest client keeps doing verified IOs. Whatever a
 * peer sends, it may lose its own path and nothing else: the server never
 * throws, never leaves a rejection unhandled, and keeps serving the honest
 * session.
 */
import { transport } from '../../lib';
import { captureEscapes, raw, Raw, rawWrite, seededRandom } from './transport-raw';

const { TransportServer, connect } = transport;
const P = transport.protocol;
const HOST0 = '10.99.1.1';
const PORT = 21000 + (process.pid % 500) * 4;

// fixed, so CI runs the same messages every time; NODE_RDMA_FUZZ_SEED explores others
const SEED = Number(process.env.NODE_RDMA_FUZZ_SEED ?? 0x5eed2026);
const PEERS = 30;
const MESSAGES = 12;
const DATA = 8192; // the raw client's scratch area for outgoing data
const CHUNK = 16384;

/** One random message from a raw peer; returns what it sent, for the failure message. */
function sendOne(r: Raw, rnd: () => number, seq: { n: bigint }): string {
  const int = (n: number) => Math.floor(rnd() * n);
  const c = int(8);
  const key = r.keys[c];
  const kind = int(6);
  switch (kind) {
    case 0: { // a zero-length WRITE_WITH_IMM with any immediate
      const imm = int(2 ** 32);
      r.qp.postSend([{ wrId: 10, opcode: 'RDMA_WRITE_WITH_IMM', sge: [], remoteAddr: key.addr, rkey: key.rkey, imm }]);
      return `imm 0x${imm.toString(16)}`;
    }
    case 1: { // a request immediate over random bytes: the trailer is garbage
      const len = int(CHUNK - P.READ_TRAILER_SIZE);
      const size = len + P.READ_TRAILER_SIZE;
      for (let i = 0; i < size; i++) r.buf[DATA + i] = int(256);
      const type = rnd() < 0.5 ? 'write' : 'read';
      r.qp.postSend([{
        wrId: 11, opcode: 'RDMA_WRITE_WITH_IMM', sge: [r.mr.sge(DATA, size)], remoteAddr: key.addr, rkey: key.rkey,
        imm: P.encodeRequestImm(type, c, len, r.acc),
      }]);
      return `${type} request on chunk ${c}, ${size} random bytes`;
    }
    case 2: { // a SEND of random bytes
      const size = 1 + int(512);
      for (let i = 0; i < size; i++) r.buf[DATA + i] = int(256);
      r.qp.postSend([{ wrId: 12, opcode: 'SEND', sge: [r.mr.sge(DATA, size)] }]);
      return `SEND of ${size} random bytes`;
    }
    case 3: { // a SEND with a valid message header and a random body and length field
      const size = P.MSG_HEADER_SIZE + int(64);
      for (let i = 0; i < size; i++) r.buf[DATA + i] = int(256);
      const type = 1 + int(6); // header: type u16, flags u16, length u32 (docs/protocol.md)
      r.buf.writeUInt16LE(type, DATA);
      r.buf.writeUInt32LE(int(2) ? size : int(2 ** 32), DATA + 4);
      r.qp.postSend([{ wrId: 13, opcode: 'SEND', sge: [r.mr.sge(DATA, size)] }]);
      return `SEND type ${type} of ${size} bytes`;
    }
    case 4: { // a RESUME_REQ for any chunk and seq
      const m = P.encodeResumeReq({ chunk: int(16), seq: BigInt(1 + int(4)) });
      m.copy(r.buf, DATA);
      r.qp.postSend([{ wrId: 14, opcode: 'SEND', sge: [r.mr.sge(DATA, m.length)] }]);
      return 'RESUME_REQ';
    }
    default: { // a valid write between the garbage
      seq.n += 1n;
      rawWrite(r, c, Buffer.alloc(1 + int(1024), 0x33), seq.n);
      return `valid write on chunk ${c}`;
    }
  }
}

test.each([true, false])(`${PEERS} fuzzing peers x ${MESSAGES} random messages (seed 0x${SEED.toString(16)}, strict=%s): each can only lose its own path; an honest session's IOs all verify`, async (strict) => {
  const logs: string[] = [];
  const escapes = captureEscapes();
  const server = new TransportServer({
    queueDepth: 8, chunkSize: CHUNK, maxHeaderSize: 512, sessionLingerMs: 200, strict,
    handler: (req) => (req.kind === 'write' ? { status: 0 } : (req.data.fill(0x5a), { length: req.data.length })),
    log: (l) => logs.push(l),
  });
  let violations = 0;
  const reasons: Record<string, number> = {};
  server.on('violation', (v: { reason: string }) => {
    violations++;
    reasons[v.reason] = (reasons[v.reason] ?? 0) + 1;
  });
  const port = PORT + (strict ? 0 : 1);
  server.listen([{ host: HOST0, port }]);
  const honest = await connect({ paths: [{ host: HOST0, port }], name: 'honest' });
  let stop = false;
  let honestLoop: Promise<void> = Promise.resolve();
  try {
    // the honest session: writes and verified reads all along
    let ios = 0;
    const into = honest.allocBuffer(4096);
    honestLoop = (async () => {
      while (!stop) {
        const w = await honest.write(Buffer.from('k'), Buffer.alloc(4096, ios & 0xff));
        expect(w.status).toBe(0);
        const r = await honest.read(Buffer.from('k'), into);
        expect(r).toMatchObject({ status: 0, length: 4096 });
        expect(into.every((b) => b === 0x5a)).toBe(true);
        ios += 2;
      }
    })();

    const rnd = seededRandom(SEED);
    let lost = 0;
    const sent: string[] = [];
    for (let p = 0; p < PEERS; p++) {
      const r = await raw(port);
      let down = false;
      void r.disconnected.then(() => (down = true));
      const seq = { n: 0n };
      try {
        for (let m = 0; m < MESSAGES && !down; m++) {
          sent.push(`peer ${p}: ${sendOne(r, rnd, seq)}`);
          await new Promise((res) => setTimeout(res, 5));
        }
        // a path that broke the protocol is closed promptly; one that did not stays up
        await Promise.race([r.disconnected, new Promise((res) => setTimeout(res, 1500))]);
        if (down) lost++;
      } finally {
        r.close();
      }
    }
    stop = true;
    await honestLoop;
    expect(escapes.problems).toEqual([]);
    // the seed makes most peers break the protocol (or use a key the server
    // took away, which fails their connection): their paths were closed,
    // each with a logged reason; the honest session's path never was
    expect(lost).toBeGreaterThanOrEqual(PEERS / 2);
    expect(violations).toBeGreaterThan(0);
    expect(logs.filter((l) => /protocol violation/.test(l) && !/closed:/.test(l)).length).toBe(violations);
    const closed = logs.filter((l) => /: closed: /.test(l));
    expect(closed.filter((l) => !l.includes(honest.sessionId)).length).toBeGreaterThanOrEqual(lost);
    expect(closed.filter((l) => l.includes(honest.sessionId))).toEqual([]);
    expect(ios).toBeGreaterThan(0);
    // the honest session still works, and the fuzzing sessions are gone
    const after = await honest.write(Buffer.from('k'), Buffer.alloc(100, 1));
    expect(after.status).toBe(0);
    await new Promise((res) => setTimeout(res, 1000));
    expect(Object.keys(server.stats())).toEqual([honest.sessionId]);
    console.log(`fuzz: ${sent.length} messages from ${PEERS} peers, ${lost} paths closed, violations ${JSON.stringify(reasons)}, ${ios} honest IOs verified`);
  } finally {
    stop = true;
    await honestLoop.catch(() => undefined); // its failure, if any, failed the test above
    escapes.stop();
    await honest.close();
    await server.close();
  }
});
