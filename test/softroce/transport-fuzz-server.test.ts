/**
 * A fuzzing server against the real client (S3 on the client side): a
 * hand-made server passes the info exchange, lets IOs arrive and answers
 * them with seeded random messages (any immediate, responses for any chunk,
 * random and half-valid SENDs). The client may lose that path, and its IOs
 * may fail, but each IO settles with a clear error or a result, nothing
 * hangs, nothing escapes, and close() completes.
 */
import { transport } from '../../lib';
import { captureEscapes, rawServer, Raw, seededRandom } from './transport-raw';

const { connect, TransportError } = transport;
const P = transport.protocol;
const HOST0 = '10.99.1.1';
let port = 22000 + (process.pid % 500) * 16;

// fixed, so CI runs the same messages every time; NODE_RDMA_FUZZ_SEED explores others
const SEED = Number(process.env.NODE_RDMA_FUZZ_SEED ?? 0x5eed2026) ^ 0xc11e47;
const ROUNDS = 16;
const MESSAGES = 8;
const OUT = 40000 + 4096; // the raw server's scratch area for outgoing messages

/** One random message from the raw server to the client. */
function sendOne(s: Raw, rnd: () => number): string {
  const int = (n: number) => Math.floor(rnd() * n);
  switch (int(5)) {
    case 0: { // a zero-length WRITE_WITH_IMM with any immediate
      const imm = int(2 ** 32);
      s.qp.postSend([{ wrId: 10, opcode: 'RDMA_WRITE_WITH_IMM', sge: [], remoteAddr: 0, rkey: 0, imm }]);
      return `imm 0x${imm.toString(16)}`;
    }
    case 1: { // an immediate-only response for any chunk, any status
      const chunk = int(6);
      s.qp.postSend([{ wrId: 11, opcode: 'RDMA_WRITE_WITH_IMM', sge: [], remoteAddr: 0, rkey: 0, imm: P.encodeIoRspImm(chunk % 4, int(P.MAX_STATUS + 1)) }]);
      return `IO_RSP imm for chunk ${chunk % 4}`;
    }
    case 2: { // a SEND of random bytes
      const size = 1 + int(512);
      for (let i = 0; i < size; i++) s.buf[OUT + i] = int(256);
      s.qp.postSend([{ wrId: 12, opcode: 'SEND', sge: [s.mr.sge(OUT, size)] }]);
      return `SEND of ${size} random bytes`;
    }
    case 3: { // a valid message header (type u16, flags u16, length u32) over a random body
      const size = P.MSG_HEADER_SIZE + int(96);
      for (let i = 0; i < size; i++) s.buf[OUT + i] = int(256);
      const type = 1 + int(6);
      s.buf.writeUInt16LE(type, OUT);
      s.buf.writeUInt32LE(int(2) ? size : int(2 ** 32), OUT + 4);
      s.qp.postSend([{ wrId: 13, opcode: 'SEND', sge: [s.mr.sge(OUT, size)] }]);
      return `SEND type ${type} of ${size} bytes`;
    }
    default: { // a well-formed IO_RSP with random fields, one byte of it flipped half the time
      const read = int(2) === 1;
      const m = P.encodeIoRsp({
        chunk: int(4), status: int(P.MAX_STATUS + 1), seq: BigInt(1 + int(3)), dataLen: read ? int(8192) : 0, read, replay: int(2) === 1,
        keys: int(2) ? [] : [{ pathIndex: 0, generation: int(3), rkey: int(2 ** 32) }], header: Buffer.alloc(int(16), 7),
      });
      if (int(2)) m[P.MSG_HEADER_SIZE + int(m.length - P.MSG_HEADER_SIZE)] ^= 1 << int(8);
      m.copy(s.buf, OUT);
      s.qp.postSend([{ wrId: 14, opcode: 'SEND', sge: [s.mr.sge(OUT, m.length)] }]);
      return 'IO_RSP SEND';
    }
  }
}

test(`${ROUNDS} fuzzing servers x ${MESSAGES} random messages (seed 0x${SEED.toString(16)}): every client IO settles, nothing escapes`, async () => {
  const escapes = captureEscapes();
  const rnd = seededRandom(SEED);
  const reasons: Record<string, number> = {};
  const outcomes: Record<string, number> = {};
  try {
    for (let round = 0; round < ROUNDS; round++) {
      const strict = round % 2 === 0;
      const rs = await rawServer(port++, { hbIntervalMs: 60000, hbMissedMax: 10 }, strict);
      const client = await connect({ paths: [{ host: HOST0, port: rs.port }], reconnect: { maxAttempts: 0 } });
      client.on('violation', (v: { reason: string }) => (reasons[v.reason] = (reasons[v.reason] ?? 0) + 1));
      try {
        const s = await rs.paths;
        const into = client.allocBuffer(4096);
        const ios = [
          client.write(Buffer.from('a'), Buffer.alloc(100, 1)),
          client.read(Buffer.from('b'), into),
          client.write(Buffer.alloc(0), Buffer.alloc(3000, 2)),
        ].map((io) => io.then(
          (r) => `ok status ${r.status}`,
          (e: unknown) => {
            // a clear error: a TransportError with a code
            expect(e).toBeInstanceOf(TransportError);
            return `${(e as { code: string }).code}`;
          },
        ));
        // the requests reach the raw server before it answers anything
        for (let n = 0; n < 3; n++) await s.wcs.next((w) => w.opcodeName === 'RECV_RDMA_WITH_IMM', 10_000);
        for (let m = 0; m < MESSAGES; m++) {
          sendOne(s, rnd);
          await new Promise((r) => setTimeout(r, 5));
        }
        // the path is dead or alive; either way the IOs settle: cut what is left
        await Promise.race([s.disconnected, new Promise((r) => setTimeout(r, 1500))]);
        rs.close();
        const settled = await Promise.race([
          Promise.all(ios),
          new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`round ${round}: an IO did not settle within 20 s`)), 20_000)),
        ]);
        for (const o of settled) outcomes[o] = (outcomes[o] ?? 0) + 1;
      } finally {
        await client.close({ drain: false });
        rs.close();
      }
    }
    expect(escapes.problems).toEqual([]);
    // the client saw malformed input and said what it was
    expect(Object.values(reasons).reduce((a, b) => a + b, 0)).toBeGreaterThan(0);
    console.log(`fuzz (client side): ${ROUNDS} servers x ${MESSAGES} messages; violations ${JSON.stringify(reasons)}; IO outcomes ${JSON.stringify(outcomes)}`);
  } finally {
    escapes.stop();
  }
});
