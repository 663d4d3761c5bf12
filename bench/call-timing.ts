/**
 * call-timing — a preload (`node -r dist/bench/call-timing.js …`) that times
 * the Node-API calls of the hot path in place: each QueuePair's
 * postSendPacked / postRecvPacked and each CompletionQueue's poll (those that
 * found completions), from NODE_RDMA_CALL_TIMING_DELAY_MS (default 8000, past
 * a warm-up) until the process exits, then one line on stderr with the count
 * and mean wall time of each. Wall time: what the call took, including any
 * kernel work and any preemption inside it (rxe does its protocol work in
 * kernel threads on the same CPUs), which is what an IO waits for.
 *
 *   node -r ./dist/bench/call-timing.js dist/bench/transport.js --serve relaxed …
 *
 * docs/benchmarks.md ("What an IO costs, call by call") has its figures.
 */
import { QueuePair } from '../lib/verbs/qp';
import { Device } from '../lib/verbs/device';

const timed: Record<string, { ns: number; n: number }> = {};
let on = false;
let t0 = 0n;
setTimeout(() => {
  on = true;
  t0 = process.hrtime.bigint();
}, Number(process.env.NODE_RDMA_CALL_TIMING_DELAY_MS ?? 8000)).unref();

/** Replaces `method` of one native handle with a timed call (an own property: the prototype's are read-only). */
function time(handle: Record<string, (...a: unknown[]) => unknown>, method: string, key: string, counts?: (r: unknown) => boolean): void {
  const orig = handle[method];
  const t = (timed[key] ??= { ns: 0, n: 0 });
  Object.defineProperty(handle, method, {
    configurable: true,
    writable: true,
    value: (...a: unknown[]) => {
      if (!on) return orig.apply(handle, a);
      const s = process.hrtime.bigint();
      const r = orig.apply(handle, a);
      if (!counts || counts(r)) {
        t.ns += Number(process.hrtime.bigint() - s);
        t.n++;
      }
      return r;
    },
  });
}

const patched = new WeakSet<object>();
for (const m of ['postSend', 'postRecv'] as const) {
  const orig = QueuePair.prototype[m] as (...a: unknown[]) => void;
  (QueuePair.prototype as unknown as Record<string, unknown>)[m] = function (this: QueuePair, ...a: unknown[]) {
    if (!patched.has(this)) {
      patched.add(this);
      time(this.handle, 'postSendPacked', 'postSendPacked');
      time(this.handle, 'postRecvPacked', 'postRecvPacked');
    }
    return orig.apply(this, a);
  };
}
const createCq = Device.prototype.createCompletionQueue;
Device.prototype.createCompletionQueue = function (this: Device, ...a: Parameters<typeof createCq>) {
  const cq = createCq.apply(this, a);
  time(cq.handle, 'poll', 'poll (with completions)', (r) => typeof r === 'number' && r > 0);
  return cq;
};

// what the clock itself costs per pair of reads (to subtract)
let pair = 0;
for (let i = 0; i < 2000; i++) {
  const s = process.hrtime.bigint();
  pair += Number(process.hrtime.bigint() - s);
}

process.on('exit', () => {
  const wallMs = on ? Number(process.hrtime.bigint() - t0) / 1e6 : 0;
  const parts = Object.entries(timed).map(([k, v]) => `${k} ${v.n}x ${(v.ns / Math.max(1, v.n) / 1000).toFixed(1)} us`);
  process.stderr.write(`[call-timing ${process.pid}] ${parts.join('; ')}; clock pair ${(pair / 2000 / 1000).toFixed(1)} us; timed for ${wallMs.toFixed(0)} ms\n`);
});
