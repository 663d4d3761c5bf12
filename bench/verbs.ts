/**
 * Verbs benchmarks, driven from JS, to compare with perftest on the same
 * device in the same run (scripts/bench does both and prints the ratios):
 *
 *   latency   RDMA WRITE_WITH_IMM ping-pong between two processes connected
 *             by rdma_cm; reported like ib_write_lat: one-way latency =
 *             round trip / 2 (typical = median, plus average and p99), usec
 *   rate      RDMA WRITE (--op write, like ib_write_bw) or SEND (--op send,
 *             like ib_send_bw: the receiver reposts its receives in batches)
 *             message rate from one QP with a window of outstanding work
 *             requests (one signaled per `signal` WRs); Mpps and MB/s
 *
 *   node dist/bench/verbs.js latency --server --device rxe0 --host 10.99.1.1 --port 18515 --iters 1000 --size 2
 *   node dist/bench/verbs.js latency --client ...same...
 *   node dist/bench/verbs.js rate --device rxe0 --size 4096 --iters 20000 --depth 64 [--op write|send]
 *   (--no-busy-poll: wait on the completion channel; --spin-us N: busy-poll spin budget;
 *    --warmup N: unmeasured round trips / WRITEs first, default 1000; latency only:
 *    --loop event|sync: reply from the 'completions' listener with work request
 *    objects, or from a synchronous cq.pollBatch() loop with prepared sends;
 *    --signal-every N: one signaled send in N, 1 to 8; --recv-batch N: replace
 *    receives N at a time, in one post, 1 to 32)
 * Each prints one JSON line with its figures on stdout.
 */
import { Access, CmId, openDevice, WC_OPCODE, WC_STATUS, WcOpcode, WorkCompletion } from '../lib';

interface Args {
  mode: string;
  server: boolean;
  device: string;
  host: string;
  port: number;
  iters: number;
  size: number;
  depth: number;
  busyPoll: boolean;
  spinUs: number;
  loop: 'event' | 'sync';
  warmup: number;
  signalEvery: number;
  recvBatch: number;
  /** rate: RDMA WRITEs (ib_write_bw) or SENDs into posted receives (ib_send_bw) */
  op: 'write' | 'send';
}

function parseArgs(argv: string[]): Args {
  const a: Args = { mode: argv[0] ?? '', server: false, device: 'rxe0', host: '10.99.1.1', port: 18515, iters: 1000, size: 2, depth: 64, busyPoll: true, spinUs: 0, loop: 'event', warmup: 1000, signalEvery: 1, recvBatch: 1, op: 'write' };
  for (let i = 1; i < argv.length; i++) {
    const k = argv[i];
    const v = argv[i + 1];
    switch (k) {
      case '--server': a.server = true; break;
      case '--client': a.server = false; break;
      case '--device': a.device = v; i++; break;
      case '--host': a.host = v; i++; break;
      case '--port': a.port = Number(v); i++; break;
      case '--iters': a.iters = Number(v); i++; break;
      case '--size': a.size = Number(v); i++; break;
      case '--depth': a.depth = Number(v); i++; break;
      case '--no-busy-poll': a.busyPoll = false; break;
      case '--spin-us': a.spinUs = Number(v); i++; break;
      case '--warmup': a.warmup = Number(v); i++; break;
      case '--signal-every': a.signalEvery = Number(v); i++; break;
      case '--recv-batch': a.recvBatch = Number(v); i++; break;
      case '--op':
        if (v !== 'write' && v !== 'send') throw new Error('--op is write or send');
        a.op = v; i++; break;
      case '--loop':
        if (v !== 'event' && v !== 'sync') throw new Error('--loop is event or sync');
        a.loop = v; i++; break;
      default: throw new Error(`unknown argument ${k}`);
    }
  }
  if (a.mode !== 'latency' && a.mode !== 'rate') throw new Error('usage: verbs.js latency|rate [options]');
  if (!Number.isInteger(a.signalEvery) || a.signalEvery < 1 || a.signalEvery > 8) throw new Error('--signal-every is 1 to 8');
  if (!Number.isInteger(a.recvBatch) || a.recvBatch < 1 || a.recvBatch > 32) throw new Error('--recv-batch is 1 to 32');
  return a;
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

async function latency(a: Args): Promise<object> {
  const dev = openDevice(a.device);
  const pd = dev.allocPd();
  const cq = dev.createCompletionQueue({ cqe: 64, busyPoll: a.busyPoll, spinUs: a.spinUs });
  const buf = pd.registerMemory(pd.allocate(Math.max(a.size, 64)), Access.LOCAL_WRITE | Access.REMOTE_WRITE);
  cq.ref();
  const desc = Buffer.alloc(12);
  desc.writeDoubleLE(buf.addr, 0);
  desc.writeUInt32LE(buf.rkey, 8);
  // receives are replaced `recvBatch` at a time; twice that are posted up front
  const spareRecvs = Array.from({ length: 2 * a.recvBatch }, () => ({ wrId: 0 }));
  let id: CmId;
  let listener: CmId | undefined;
  let peer: Buffer;
  if (a.server) {
    listener = CmId.create();
    listener.listen(a.host, a.port);
    id = await new Promise<CmId>((resolve) => listener!.once('connection', (req: CmId, pdata: Buffer) => {
      peer = Buffer.from(pdata);
      resolve(req);
    }));
    id.createQueuePair(pd, { sendCq: cq, recvCq: cq, maxSendWr: 16, maxRecvWr: 2 * a.recvBatch + 2, maxInlineData: 64 });
    id.queuePair!.postRecv(spareRecvs);
    await id.accept({ privateData: desc });
  } else {
    // the server process may still be starting (slow under TCG): retry a
    // refused connect for a while with a fresh id each time
    const deadline = Date.now() + 60_000;
    for (;;) {
      id = CmId.create();
      await id.resolveAddr(a.host, a.port);
      await id.resolveRoute();
      id.createQueuePair(pd, { sendCq: cq, recvCq: cq, maxSendWr: 16, maxRecvWr: 2 * a.recvBatch + 2, maxInlineData: 64 });
      id.queuePair!.postRecv(spareRecvs);
      try {
        peer = (await id.connect({ privateData: desc })).privateData;
        break;
      } catch (err) {
        id.close();
        if ((err as { code?: string }).code !== 'ECONNREFUSED' || Date.now() > deadline) throw err;
        await new Promise((r) => setTimeout(r, 250));
      }
    }
  }
  const qp = id.queuePair!;
  const remoteAddr = peer!.readDoubleLE(0);
  const rkey = peer!.readUInt32LE(8);
  const inline = a.size <= 64;
  const sge = [buf.sge(0, a.size)];
  // selective signaling (--signal-every N): one send in N asks for a
  // completion, which also frees the send queue slots of those before it
  const every = a.signalEvery;
  // the event loop posts a work request object each time, as most code
  // does; the sync loop posts prepared sends (one signaled, one not), as a
  // latency-critical loop would
  const prepared = a.loop === 'sync'
    ? [false, true].map((signaled) => qp.prepareSend({ opcode: 'RDMA_WRITE_WITH_IMM', imm: 0, sge, remoteAddr, rkey, inline, signaled }))
    : [];
  const write = a.loop === 'sync'
    ? (n: number) => prepared[n % every === every - 1 ? 1 : 0].post(n, n)
    : (n: number) => qp.postSend([{
      wrId: n, opcode: 'RDMA_WRITE_WITH_IMM', imm: n, sge, remoteAddr, rkey, inline, signaled: n % every === every - 1,
    }]);
  const recvWrs = Array.from({ length: a.recvBatch }, () => ({ wrId: 0 }));
  let consumed = 0;
  const replaceRecv = () => {
    if (++consumed < a.recvBatch) return;
    consumed = 0;
    qp.postRecv(recvWrs);
  };
  // callback-driven, as a latency-minded user would write it: the reply is
  // posted from inside the completion batch, with no promise hop between
  // Like a latency-minded user: the reply is posted before the receive is
  // replaced (a spare receive is always posted, so the repost is off the
  // critical path) and one clock read per round trip. The first `warmup`
  // round trips let the JIT settle and are not measured.
  const total = a.warmup + a.iters;
  const rtts: number[] = [];
  let t0 = 0n;
  let done = 0;
  const onRecv = (): boolean => {
    if (a.server) {
      write(done);
      replaceRecv();
      return ++done === total;
    }
    const now = process.hrtime.bigint();
    if (done >= a.warmup) rtts.push(Number(now - t0) / 1000);
    if (++done === total) return true;
    t0 = now;
    write(done);
    replaceRecv();
    return false;
  };
  const start = () => {
    if (a.server) return;
    t0 = process.hrtime.bigint();
    write(0);
  };
  if (a.loop === 'sync') {
    // the whole ping-pong in one synchronous loop over cq.pollBatch(), like
    // perftest's: no event-loop turn between a completion and the reply,
    // and no object allocated per completion or per post
    start();
    let finished = false;
    while (!finished) {
      const b = cq.pollBatch();
      for (let i = 0; i < b.length; i++) {
        if (!b.ok(i)) throw new Error(`completion ${WC_OPCODE[b.opcode(i)]}: ${WC_STATUS[b.status(i)]}`);
        if (b.opcode(i) === WcOpcode.RECV_RDMA_WITH_IMM && onRecv()) finished = true;
      }
    }
  } else {
    // callback-driven, as a Node user would write it: the reply is posted
    // from inside the completion batch, with no promise hop between
    await new Promise<void>((resolve, reject) => {
      cq.on('completions', (wcs) => {
        for (const w of wcs) {
          if (!w.ok) return reject(new Error(`completion ${w.opcodeName}: ${w.statusName}`));
          if (w.opcodeName === 'RECV_RDMA_WITH_IMM' && onRecv()) return resolve();
        }
      });
      start();
    });
  }
  // the server's last send completion
  await new Promise((r) => setTimeout(r, 50));
  id.disconnect();
  await new Promise((r) => setTimeout(r, 200));
  cq.unref();
  id.close();
  listener?.close();
  dev.close();
  if (a.server) return { role: 'server', iters: a.iters };
  const oneWay = rtts.map((x) => x / 2).sort((x, y) => x - y);
  return {
    bench: 'js_write_imm_lat', device: a.device, size: a.size, iters: a.iters, warmup: a.warmup, loop: a.loop, signalEvery: a.signalEvery, recvBatch: a.recvBatch,
    busyPoll: a.busyPoll, spinUs: a.spinUs,
    t_min_usec: oneWay[0], t_typical_usec: percentile(oneWay, 50), t_avg_usec: oneWay.reduce((x, y) => x + y, 0) / oneWay.length,
    t_p99_usec: percentile(oneWay, 99), t_max_usec: oneWay[oneWay.length - 1],
    histogram_usec: oneWay.filter((_, i) => i % Math.max(1, Math.floor(oneWay.length / 200)) === 0),
  };
}

async function rate(a: Args): Promise<object> {
  const dev = openDevice(a.device);
  const pd = dev.allocPd();
  const cq = dev.createCompletionQueue({ cqe: a.depth * 2, busyPoll: a.busyPoll });
  const depth = a.depth;
  const signal = Math.max(1, Math.floor(depth / 4));
  const qpa = pd.createQueuePair({ sendCq: cq, recvCq: cq, maxSendWr: depth + 1 });
  // SENDs land in receives the other QP keeps posted: twice the window,
  // replaced per completion batch (one post each), as ib_send_bw does
  const send = a.op === 'send';
  const rq = send ? depth * 2 : 1;
  const cqb = dev.createCompletionQueue({ cqe: rq + 16 });
  const qpb = pd.createQueuePair({ sendCq: cqb, recvCq: cqb, maxRecvWr: rq });
  const gid = dev.gids().find((g) => g.port === 1 && g.type === 'RoCEv2' && g.gid.startsWith('::ffff:'))!;
  qpa.connectTo({ qpNum: qpb.qpNum, gid: gid.gid }, { sgidIndex: gid.index });
  qpb.connectTo({ qpNum: qpa.qpNum, gid: gid.gid }, { sgidIndex: gid.index });
  const src = pd.registerMemory(pd.allocate(a.size), Access.LOCAL_WRITE);
  const dst = pd.registerMemory(pd.allocate(a.size * rq), Access.LOCAL_WRITE | Access.REMOTE_WRITE);
  const sge = [src.sge()];
  let recvError: Error | undefined;
  if (send) {
    const recv = (i: number) => ({ wrId: i, sge: [dst.sge(i * a.size, a.size)] });
    qpb.postRecv(Array.from({ length: rq }, (_, i) => recv(i)));
    cqb.on('completions', (wcs) => {
      const again = [];
      for (const w of wcs) {
        if (!w.ok) recvError ??= new Error(`receive: ${w.statusName}`);
        else again.push(recv(w.wrId));
      }
      if (again.length) qpb.postRecv(again);
    });
    cqb.ref();
  }
  // `count` WRITEs with a window of `depth` outstanding, one signaled per `signal`
  const run = (count: number) => new Promise<void>((resolve, reject) => {
    let posted = 0;
    let completed = 0;
    const post = () => {
      // keep `depth` WRs outstanding, in batches (one ibv_post_send each)
      const batch: Parameters<typeof qpa.postSend>[0] = [];
      while (posted - completed + batch.length < depth && posted + batch.length < count) {
        const n = posted + batch.length;
        const signaled = (n + 1) % signal === 0 || n + 1 === count;
        batch.push(send ? { wrId: n, opcode: 'SEND', sge, signaled } : { wrId: n, opcode: 'RDMA_WRITE', sge, remoteAddr: dst.addr, rkey: dst.rkey, signaled });
      }
      if (batch.length) {
        qpa.postSend(batch);
        posted += batch.length;
      }
    };
    const onWcs = (wcs: WorkCompletion[]) => {
      for (const w of wcs) {
        if (!w.ok) return reject(new Error(`${send ? 'SEND' : 'RDMA_WRITE'}: ${w.statusName}`));
        if (recvError) return reject(recvError);
        completed = w.wrId + 1;
      }
      if (completed >= count) {
        cq.off('completions', onWcs);
        resolve();
      } else post();
    };
    cq.on('completions', onWcs);
    post();
  });
  // the first `warmup` WRITEs let the JIT settle and are not measured
  if (a.warmup > 0) await run(a.warmup);
  const t0 = process.hrtime.bigint();
  await run(a.iters);
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  if (send) cqb.unref();
  dev.close();
  return {
    bench: send ? 'js_send_rate' : 'js_write_rate', device: a.device, size: a.size, iters: a.iters, warmup: a.warmup, depth, busyPoll: a.busyPoll,
    msg_rate_mpps: a.iters / secs / 1e6, bw_mb_sec: (a.iters * a.size) / secs / 1e6, seconds: secs,
  };
}

async function main(): Promise<void> {
  const a = parseArgs(process.argv.slice(2));
  const out = a.mode === 'latency' ? await latency(a) : await rate(a);
  process.stdout.write(JSON.stringify(out) + '\n');
}

main().catch((err) => {
  process.stderr.write(`bench/verbs: ${err.stack ?? err}\n`);
  process.exit(1);
});
