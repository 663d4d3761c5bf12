/**
 * Hand-made transport peers for the guest tests ("raw"): a client that
 * connects with the private data it is given, does the info exchange and
 * then sends only what the test posts, and a server that accepts, answers
 * INFO_REQ and then does the same; so tests can play a malicious or broken
 * peer on either side.
 */
import { Access, CmId, CompletionQueue, Device, MemoryRegion, openDevice, ProtectionDomain, QueuePair, WorkCompletion, transport } from '../../lib';

const P = transport.protocol;
const HOST0 = '10.99.1.1';

export function later<T = void>(): { promise: Promise<T>; resolve: (v: T) => void } {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

/** Collects every completion of a CQ; waits for ones matching a predicate. */
export class Collector {
  readonly wcs: WorkCompletion[] = [];
  #waiters: Array<{ pred: (w: WorkCompletion) => boolean; resolve: (w: WorkCompletion) => void }> = [];

  constructor(cq: CompletionQueue) {
    cq.ref();
    cq.on('completions', (ws) => {
      for (const w of ws) {
        const i = this.#waiters.findIndex((x) => x.pred(w));
        if (i >= 0) this.#waiters.splice(i, 1)[0].resolve(w);
        else this.wcs.push(w); // kept for a later next()
      }
    });
  }

  next(pred: (w: WorkCompletion) => boolean, ms = 30000): Promise<WorkCompletion> {
    const done = this.wcs.find(pred);
    if (done) {
      this.wcs.splice(this.wcs.indexOf(done), 1);
      return Promise.resolve(done);
    }
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`no matching completion within ${ms} ms (have ${this.wcs.map((w) => `${w.opcodeName}/${w.statusName}`).join(', ')})`)), ms);
      this.#waiters.push({ pred, resolve: (w) => { clearTimeout(t); resolve(w); } });
    });
  }
}

export interface Raw {
  id: CmId;
  dev: Device;
  pd: ProtectionDomain;
  cq: CompletionQueue;
  qp: QueuePair;
  buf: Buffer;
  mr: MemoryRegion;
  acc: transport.protocol.AcceptData;
  keys: transport.protocol.ChunkKey[];
  wcs: Collector;
  disconnected: Promise<void>;
  /** raw server: the client's connect request (decoded) */
  request?: transport.protocol.ConnectRequest;
  close(): void;
}

/**
 * One end on a CM id: its device, PD, CQ, QP and 64 KiB of registered memory
 * (receives posted in its upper half: `recvs` of `recvSize` bytes from 32768).
 */
function end(id: CmId, access: number, recvs: number, recvSize: number): Omit<Raw, 'acc' | 'keys'> {
  const dev = openDevice(id.info().device!);
  const pd = dev.allocPd();
  const cq = dev.createCompletionQueue({ cqe: 256 });
  const qp = id.createQueuePair(pd, { sendCq: cq, recvCq: cq, maxSendWr: 64, maxRecvWr: 64 });
  const mem = pd.allocate(65536);
  const mr = pd.registerMemory(mem, access);
  const buf = Buffer.from(mem);
  const wcs = new Collector(cq);
  qp.postRecv(Array.from({ length: recvs }, (_, i) => ({ wrId: 100 + i, sge: [mr.sge(32768 + i * recvSize, recvSize)] })));
  const disc = later();
  id.on('disconnected', () => disc.resolve());
  const close = (): void => {
    cq.unref();
    id.close();
    dev.close();
  };
  return { id, dev, pd, cq, qp, buf, mr, wcs, disconnected: disc.promise, close };
}

/** A hand-made client: connect with our private data, info exchange, then whatever the test posts. */
export async function raw(p: number, opts: { sessionId?: string; privateData?: Buffer; host?: string; pathIndex?: number; pathCount?: number } = {}): Promise<Raw> {
  const pathIndex = opts.pathIndex ?? 0;
  const pathCount = opts.pathCount ?? 1;
  const id = CmId.create();
  await id.resolveAddr(opts.host ?? HOST0, p);
  await id.resolveRoute();
  const e = end(id, Access.LOCAL_WRITE, 8, 4096);
  const { qp, buf, mr, wcs, close } = e;
  try {
    const pdata = opts.privateData ?? P.encodeConnectRequest({ newSession: pathIndex === 0, pathIndex, pathCount, reconnectCount: 0, sessionId: opts.sessionId ?? P.randomSessionId() });
    const { privateData } = await id.connect({ privateData: pdata });
    const acc = P.decodeAccept(privateData);
    const req = P.encodeInfoReq({ recvSize: 4096, name: 'raw' });
    req.copy(buf, 0);
    qp.postSend([{ wrId: 1, opcode: 'SEND', sge: [mr.sge(0, req.length)] }]);
    const asm = new P.InfoAssembler(acc);
    let keys: transport.protocol.ChunkKey[] | undefined;
    while (!keys) {
      const w = await wcs.next((x) => x.opcodeName === 'RECV');
      const slot = w.wrId - 100;
      const m = P.decodeClientMessage(buf.subarray(32768 + slot * 4096, 32768 + slot * 4096 + w.byteLen), { ...acc, pathCount, pathIndex });
      qp.postRecv([{ wrId: w.wrId, sge: [mr.sge(slot * 4096 + 32768, 4096)] }]);
      if (m.type === 'info-rsp') keys = asm.add(m);
    }
    return { ...e, acc, keys };
  } catch (err) {
    close();
    throw err;
  }
}

/** The raw client sends a write request for chunk c: [data | trailer], seq 1. */
export function rawWrite(r: Raw, c: number, data: Buffer, seq = 1n): void {
  data.copy(r.buf, 8192);
  P.writeWriteTrailer(r.buf, 8192 + data.length, { hdrLen: 0, dataLen: data.length, seq });
  const k = r.keys[c];
  r.qp.postSend([{
    wrId: 2, opcode: 'RDMA_WRITE_WITH_IMM', sge: [r.mr.sge(8192, data.length + 16)], remoteAddr: k.addr, rkey: k.rkey,
    imm: P.encodeRequestImm('write', c, data.length, r.acc),
  }]);
}

/**
 * A hand-made relaxed-mode server: accepts, answers INFO_REQ with one
 * descriptor over a plain MR, and then only does what the test posts (it
 * never answers heartbeats).
 */
export async function rawServer(p: number, hb = { hbIntervalMs: 200, hbMissedMax: 3 }, strict = false): Promise<{ port: number; paths: Promise<Raw>; close(): void }> {
  const listener = CmId.create();
  const params = { queueDepth: 4, chunkSize: 8192, maxHeaderSize: 128, strict };
  let resolvePath!: (r: Raw) => void;
  const paths = new Promise<Raw>((r) => (resolvePath = r));
  const opened: Array<() => void> = [];
  listener.on('connection', (id, pdata) => {
    void (async () => {
      const request = P.decodeConnectRequest(pdata);
      const e = end(id, Access.LOCAL_WRITE | Access.REMOTE_WRITE, 16, 2048);
      const { qp, buf, mr, wcs } = e;
      opened.push(e.close);
      await id.accept({ privateData: P.encodeAccept({ ...params, sessionCreated: true, ...hb }) });
      await wcs.next((w) => w.opcodeName === 'RECV'); // INFO_REQ
      // relaxed: one descriptor over the pool; strict: one per chunk
      const descs = strict
        ? Array.from({ length: 4 }, (_, c) => ({ addr: BigInt(mr.addr + c * 8192), rkey: mr.rkey, len: 8192 }))
        : [{ addr: BigInt(mr.addr), rkey: mr.rkey, len: 4 * 8192 }];
      const [info] = P.encodeInfoRsp(descs);
      info.copy(buf, 40000);
      qp.postSend([{ wrId: 1, opcode: 'SEND', sge: [mr.sge(40000, info.length)] }]);
      const acc = P.decodeAccept(P.encodeAccept({ ...params, sessionCreated: true, ...hb }));
      resolvePath({ ...e, acc, keys: [], request });
    })();
  });
  listener.listen(HOST0, p);
  return { port: p, paths, close: () => { for (const c of opened) c(); listener.close(); } };
}

/** mulberry32: a small seeded PRNG (uniform in [0, 1)), so a fuzzing run can be replayed. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Collects what escapes while a fuzzing test runs (unhandled rejections and
 * uncaught exceptions) instead of letting jest report it elsewhere; stop()
 * removes the listeners.
 */
export function captureEscapes(): { problems: string[]; stop(): void } {
  const problems: string[] = [];
  const onProblem = (e: unknown) => problems.push(String((e as Error)?.stack ?? e));
  process.on('unhandledRejection', onProblem);
  process.on('uncaughtException', onProblem);
  return {
    problems,
    stop: () => {
      process.off('unhandledRejection', onProblem);
      process.off('uncaughtException', onProblem);
    },
  };
}
