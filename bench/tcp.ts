/**
 * What a Node user would pick instead of the transport: the same 4 KiB
 * request/response workload over Node's `net` (TCP, Nagle off) between the
 * same two addresses, the server in its own process (as the transport's
 * latency and IOPS servers are). A write sends a 12-byte request header and
 * 4 KiB, answered by an 8-byte response header; a read sends the header and
 * is answered by the header and 4 KiB, from an in-memory store of 4 KiB
 * values by key (reads are checked against what was written).
 *
 *   node dist/bench/tcp.js --host 10.99.1.1 [--port 18900] [--iters 1000]
 *        [--point-ms 1500] [--server-cpu N]
 * Prints one JSON line: QD1 write and read latency (p50/p99/mean), and
 * IOPS with 50% reads at QD 1 and 32.
 */
import { spawn } from 'child_process';
import * as net from 'net';
import { Histogram } from '../lib/cli/workload';

const REQ = 12;
const RSP = 8;
const OP_WRITE = 1;
const OP_READ = 2;

interface Args { host: string; port: number; iters: number; pointMs: number; size: number; serve: boolean; serverCpu: number | undefined }

function parse(argv: string[]): Args {
  const a: Args = { host: '10.99.1.1', port: 18900, iters: 1000, pointMs: 1500, size: 4096, serve: false, serverCpu: undefined };
  for (let i = 0; i < argv.length; i += 2) {
    const [k, v] = [argv[i], argv[i + 1]];
    if (k === '--serve') {
      a.serve = true;
      i--;
      continue;
    }
    if (v === undefined) throw new Error(`${k} needs a value`);
    if (k === '--host') a.host = v;
    else if (k === '--port') a.port = Number(v);
    else if (k === '--iters') a.iters = Number(v);
    else if (k === '--point-ms') a.pointMs = Number(v);
    else if (k === '--size') a.size = Number(v);
    else if (k === '--server-cpu') a.serverCpu = Number(v);
    else throw new Error(`unknown argument ${k}`);
  }
  return a;
}

const say = (s: string): void => void process.stderr.write(`bench/tcp: ${s}\n`);

/** A byte stream cut into frames: `need(buf)` says how long the frame at the head is (0: not known yet). */
class Frames {
  #buf: Buffer = Buffer.alloc(0);
  constructor(readonly need: (head: Buffer) => number, readonly onFrame: (frame: Buffer) => void) {}
  push(chunk: Buffer): void {
    this.#buf = this.#buf.length ? Buffer.concat([this.#buf, chunk]) : chunk;
    for (;;) {
      const n = this.need(this.#buf);
      if (n === 0 || this.#buf.length < n) return;
      const f = this.#buf.subarray(0, n);
      this.#buf = this.#buf.subarray(n);
      this.onFrame(f);
    }
  }
}

/** --serve: the store, until SIGTERM; prints one line when it listens. */
function serve(a: Args): void {
  const store = new Map<number, Buffer>();
  const server = net.createServer((sock) => {
    sock.setNoDelay(true);
    const frames = new Frames(
      (h) => (h.length < REQ ? 0 : REQ + (h[0] === OP_WRITE ? h.readUInt32LE(8) : 0)),
      (f) => {
        const key = f.readUInt32LE(4);
        if (f[0] === OP_WRITE) {
          store.set(key, Buffer.from(f.subarray(REQ)));
          const r = Buffer.alloc(RSP);
          sock.write(r);
        } else {
          const v = store.get(key) ?? Buffer.alloc(0);
          const r = Buffer.allocUnsafe(RSP + v.length);
          r.writeUInt32LE(0, 0);
          r.writeUInt32LE(v.length, 4);
          v.copy(r, RSP);
          sock.write(r);
        }
      },
    );
    sock.on('data', (d) => frames.push(d));
    sock.on('error', () => sock.destroy());
  });
  server.listen(a.port, a.host, () => process.stdout.write('listening\n'));
  process.once('SIGTERM', () => server.close(() => process.exit(0)));
}

/** One connection, IOs pipelined up to a depth; responses come back in order. */
class Client {
  readonly #pending: Array<{ done: (data: Buffer) => void }> = [];
  readonly #sock: net.Socket;
  constructor(sock: net.Socket) {
    this.#sock = sock;
    const frames = new Frames((h) => (h.length < RSP ? 0 : RSP + h.readUInt32LE(4)), (f) => this.#pending.shift()!.done(f.subarray(RSP)));
    sock.on('data', (d) => frames.push(d));
  }

  io(op: number, key: number, data: Buffer | undefined, done: (data: Buffer) => void): void {
    const h = Buffer.allocUnsafe(REQ);
    h[0] = op;
    h[1] = h[2] = h[3] = 0;
    h.writeUInt32LE(key, 4);
    h.writeUInt32LE(data ? data.length : 0, 8);
    this.#pending.push({ done });
    if (data) this.#sock.write(Buffer.concat([h, data]));
    else this.#sock.write(h);
  }
}

/** `total` IOs (or until `ms`) at `depth`, each timed; `readRatio` of them reads of keys already written. */
function workload(c: Client, o: { depth: number; total: number; ms: number; readRatio: number; keys: number; size: number; values: Map<number, Buffer> }): Promise<{ ios: number; seconds: number; h: Histogram; mismatches: number }> {
  return new Promise((resolve) => {
    const h = new Histogram();
    const start = performance.now();
    let issued = 0;
    let done = 0;
    let mismatches = 0;
    let inflight = 0;
    let seq = 0;
    const next = (): void => {
      while (inflight < o.depth && issued < o.total && performance.now() - start < o.ms) {
        issued++;
        inflight++;
        const key = seq++ % o.keys;
        const read = o.values.has(key) && Math.random() < o.readRatio;
        const t0 = performance.now();
        const fin = (data: Buffer): void => {
          h.record((performance.now() - t0) * 1000);
          if (read && !data.equals(o.values.get(key)!)) mismatches++;
          inflight--;
          done++;
          next();
          if (inflight === 0) resolve({ ios: done, seconds: (performance.now() - start) / 1000, h, mismatches });
        };
        if (read) c.io(OP_READ, key, undefined, fin);
        else {
          const v = Buffer.alloc(o.size, (key * 31 + seq) & 0xff);
          o.values.set(key, v);
          c.io(OP_WRITE, key, v, fin);
        }
      }
    };
    next();
  });
}

async function main(): Promise<void> {
  const a = parse(process.argv.slice(2));
  if (a.serve) return serve(a);
  const argv = [process.execPath, __filename, '--serve', '--host', a.host, '--port', String(a.port)];
  if (a.serverCpu !== undefined) argv.unshift('taskset', '-c', String(a.serverCpu));
  const child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`tcp server exited (${code})`)));
    child.stdout!.once('data', () => resolve());
  });
  try {
    const sock = net.connect(a.port, a.host);
    await new Promise<void>((resolve, reject) => sock.once('connect', resolve).once('error', reject));
    sock.setNoDelay(true);
    const c = new Client(sock);
    const values = new Map<number, Buffer>();
    const base = { size: a.size, values };
    // warm-up (JIT), as the transport's runs have
    await workload(c, { ...base, depth: 8, total: 3000, ms: 6000, readRatio: 0.5, keys: 16 });
    const out: Record<string, unknown> = { size: a.size, iters: a.iters, host: a.host };
    for (const kind of ['write', 'read'] as const) {
      const r = await workload(c, { ...base, depth: 1, total: a.iters, ms: 120_000, readRatio: kind === 'read' ? 1 : 0, keys: 1 });
      const s = r.h.summary();
      say(`${kind} latency, ${a.size} B, QD1: p50 ${s.p50Us.toFixed(0)} us`);
      out[kind] = { iters: s.count, p50Us: s.p50Us, p99Us: s.p99Us, meanUs: s.meanUs, minUs: s.minUs, maxUs: s.maxUs, mismatches: r.mismatches, histogram: r.h.buckets() };
    }
    const iops: Array<Record<string, number>> = [];
    for (const depth of [1, 32]) {
      const r = await workload(c, { ...base, depth, total: Infinity, ms: a.pointMs, readRatio: 0.5, keys: 256 });
      const s = r.h.summary();
      say(`depth ${depth}: ${(r.ios / r.seconds).toFixed(0)} IOPS, p50 ${s.p50Us.toFixed(0)} us`);
      iops.push({ depth, iops: r.ios / r.seconds, p50Us: s.p50Us, p99Us: s.p99Us, mismatches: r.mismatches });
    }
    out.iops = iops;
    sock.destroy();
    process.stdout.write(JSON.stringify(out) + '\n');
  } finally {
    child.kill('SIGTERM');
  }
}

main().then(
  () => undefined,
  (err) => {
    process.stderr.write(`bench/tcp: ${(err as Error).stack ?? err}\n`);
    process.exit(1);
  },
);
