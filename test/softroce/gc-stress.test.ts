/**
 * GC stress: registered memory must stay put and stay registered whatever
 * the garbage collector does, and objects dropped without close() must be
 * reclaimed (or at least released at exit) without a crash.
 *
 * 1. Many regions, their MemoryRegion objects dropped (only the memory and
 *    the rkeys kept): the NIC keeps RDMA-writing into them through the rkeys
 *    across many forced GCs with allocation churn, and every byte lands in
 *    the memory JS sees. The regions include tiny typed arrays (V8 keeps
 *    those on its own heap, where the collector may move them, until their
 *    buffer is materialized off-heap) and views into a larger buffer.
 * 2. A child process creates and drops thousands of verbs objects without
 *    close(), with forced GCs in between, and must exit 0 with no output on
 *    stderr; it reports how many fds the finalizers gave back.
 */
import { spawnSync } from 'child_process';
import * as path from 'path';
import { setFlagsFromString } from 'v8';
import { runInNewContext } from 'vm';
import { Access } from '../../lib';
import { bytes, completions, loopback, Loopback, region } from './helpers';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
const ROOT = path.resolve(__dirname, '..', '..', '..');
const ACCESS = Access.LOCAL_WRITE | Access.REMOTE_WRITE;

/** Allocation churn: young and old garbage, so scavenges and compactions happen. */
function churn(): void {
  const keep: unknown[] = [];
  for (let i = 0; i < 2000; i++) {
    const o = { i, s: `x${i}`, a: new Array(16).fill(i) };
    if (i % 10 === 0) keep.push(o, new Uint8Array(32), new Uint8Array(4096));
  }
  for (let i = 0; i < 20; i++) new Uint8Array(1 << 20);
  keep.length = 0;
}

interface Target { mem: Uint8Array; addr: number; rkey: number; len: number }

let l: Loopback;
beforeAll(() => {
  l = loopback('rxe0', { maxSendWr: 256 });
});
afterAll(() => l.close());

test('MR objects dropped, memory kept: RDMA writes via the rkeys land across 10 forced GC cycles', async () => {
  const targets: Target[] = [];
  // tiny typed arrays: V8 allocates these inside its heap (movable)
  for (let i = 0; i < 192; i++) {
    const mem = new Uint8Array(48);
    const mr = l.pd.registerMemory(mem, ACCESS);
    targets.push({ mem, addr: mr.addr, rkey: mr.rkey, len: 48 });
  }
  // views at odd offsets into one larger JS buffer, one MR each
  const big = new ArrayBuffer(1 << 20);
  for (let i = 0; i < 32; i++) {
    const mem = new Uint8Array(big, i * 32768 + 8, 4096);
    const mr = l.pd.registerMemory(mem, ACCESS);
    targets.push({ mem, addr: mr.addr, rkey: mr.rkey, len: 4096 });
  }
  // addon memory (a fresh ArrayBuffer per region)
  for (let i = 0; i < 32; i++) {
    const mem = new Uint8Array(l.pd.allocate(8192));
    const mr = l.pd.registerMemory(mem.buffer, ACCESS);
    targets.push({ mem, addr: mr.addr, rkey: mr.rkey, len: 8192 });
  }
  // no reference to any MemoryRegion is kept here (the PD keeps them open)
  const src = region(l.pd, 8192);
  const BATCH = 128;
  for (let round = 1; round <= 10; round++) {
    churn();
    gc();
    bytes(src).fill(round);
    for (let i = 0; i < targets.length; i += BATCH) {
      const part = targets.slice(i, i + BATCH);
      const done = completions(l.cqA, part.length);
      l.a.postSend(part.map((t, j) => ({
        wrId: i + j, opcode: 'RDMA_WRITE' as const, sge: [src.sge(0, t.len)], remoteAddr: t.addr, rkey: t.rkey,
      })));
      const wcs = await done;
      expect(wcs.filter((w) => !w.ok).map((w) => `${w.wrId}: ${w.statusName}`)).toEqual([]);
    }
    churn();
    gc();
    const wrong = targets.findIndex((t) => !t.mem.every((x) => x === round));
    expect({ round, wrong }).toEqual({ round, wrong: -1 });
  }
  // the bytes around the views in the large buffer were never written
  const whole = new Uint8Array(big);
  expect(whole.subarray(0, 8).every((x) => x === 0)).toBe(true);
  expect(whole.subarray(4096 + 8, 32768 + 8).every((x) => x === 0)).toBe(true);
});

test('an MR whose memory is referenced only by the MR keeps receiving RDMA writes across GCs; data read back through mr.buffer', async () => {
  const rkeys: Array<{ addr: number; rkey: number }> = [];
  const mrs = [];
  for (let i = 0; i < 16; i++) {
    // no JS reference to the memory outside the MR
    const mr = l.pd.registerMemory(i % 2 ? new Uint8Array(16) : new Float64Array(512), ACCESS);
    rkeys.push({ addr: mr.addr, rkey: mr.rkey });
    mrs.push(new WeakRef(mr));
  }
  const src = region(l.pd, 4096);
  for (let round = 1; round <= 5; round++) {
    churn();
    gc();
    bytes(src).fill(0x40 + round);
    const done = completions(l.cqA, rkeys.length);
    l.a.postSend(rkeys.map((t, i) => ({
      wrId: i, opcode: 'RDMA_WRITE' as const, sge: [src.sge(0, i % 2 ? 16 : 4096)], remoteAddr: t.addr, rkey: t.rkey,
    })));
    expect((await done).every((w) => w.ok)).toBe(true);
    gc();
  }
  for (const ref of mrs) {
    const mr = ref.deref();
    expect(mr).toBeDefined(); // the PD holds its regions until they are closed
    const view = mr!.buffer as ArrayBufferView;
    expect(Buffer.from(view.buffer, view.byteOffset, view.byteLength).every((x) => x === 0x45)).toBe(true);
  }
});

const DROP_N = Number(process.env.NODE_RDMA_GC_DROP ?? 400);

interface DropStats {
  made: { plain: number; withCq: number; cmIds: number };
  unreclaimed: { plain: number; withCq: number; cmIds: number };
  fds: { base: number; afterPlain: number; peak: number; end: number };
  createMs: number; gcMs: number;
}

let dropped: { stats?: DropStats; r: ReturnType<typeof spawnSync>; ms: number } | undefined;

/** One child for the dropped-objects tests: creates, drops, GCs, reports. */
function dropChild(): NonNullable<typeof dropped> {
  if (dropped) return dropped;
  const N = DROP_N;
  const script = `
    const { openDevice, CmId, Access } = require(${JSON.stringify(path.join(ROOT, 'dist', 'lib'))});
    const { setFlagsFromString } = require('v8'); setFlagsFromString('--expose-gc');
    const gc = require('vm').runInNewContext('gc');
    const fs = require('fs');
    const fds = () => fs.readdirSync('/proc/self/fd').length;
    const N = ${N};
    const t0 = Date.now();
    openDevice('rxe0').close(); CmId.create().close(); // librdmacm's own fds, the CM channel
    const base = fds();
    const kinds = ['plain', 'withCq', 'cmIds'];
    const made = {}, left = {}, reg = {};
    for (const k of kinds) { made[k] = 0; left[k] = 0; reg[k] = new FinalizationRegistry(() => { left[k]--; }); }
    const track = (k, o) => { reg[k].register(o, 0); made[k]++; left[k]++; return o; };
    // a dropped stack is reclaimed level by level (an MR's finalizer lets go
    // of its PD, the PD's of its device): GC until nothing changes for 3 rounds
    const settle = async () => {
      let last = -1, same = 0;
      for (let i = 0; i < 40 && same < 3; i++) {
        gc(); await new Promise((r) => setTimeout(r, 20));
        const now = left.plain + left.withCq + left.cmIds;
        same = now === last ? same + 1 : 0; last = now;
      }
    };
    // created in plain functions: an async function's suspended frame would
    // keep its last loop iteration's objects reachable
    function makePlain() {
      // stacks without a CQ: device, PD, MRs (JS and addon memory), MWs
      for (let i = 0; i < N / 2; i++) {
        const dev = track('plain', openDevice('rxe0')); const pd = track('plain', dev.allocPd());
        track('plain', pd.registerMemory(new Uint8Array(4096), Access.LOCAL_WRITE));
        track('plain', pd.registerMemory(pd.allocate(4096), Access.LOCAL_WRITE | Access.REMOTE_WRITE));
        track('plain', pd.allocMemoryWindow(i % 2 ? 1 : 2));
        if (i % 100 === 99) gc();
      }
    }
    function makeRest() {
      // stacks with CQs, QPs and SRQs
      for (let i = 0; i < N / 10; i++) {
        const dev = track('withCq', openDevice('rxe0')); const pd = track('withCq', dev.allocPd());
        const cq = track('withCq', dev.createCompletionQueue({ cqe: 16 }));
        track('withCq', pd.createQueuePair({ sendCq: cq, recvCq: cq, maxSendWr: 4, maxRecvWr: 4 }));
        track('withCq', pd.createSharedReceiveQueue({ maxWr: 4 }));
        track('withCq', pd.registerMemory(pd.allocate(4096)));
        if (i % 50 === 49) gc();
      }
      // rdma_cm ids, some bound to an address (not listening: a listening id
      // keeps the process alive by design, closed or not)
      for (let i = 0; i < N / 10; i++) {
        const id = track('cmIds', CmId.create());
        if (i % 4 === 0) id.handle.bindAddr('10.99.1.1', 0);
      }
    }
    (async () => {
      makePlain();
      await settle();
      const afterPlain = fds();
      makeRest();
      const peak = fds();
      const t1 = Date.now();
      await settle();
      console.log(JSON.stringify({ made, unreclaimed: left, fds: { base, afterPlain, peak, end: fds() }, createMs: t1 - t0, gcMs: Date.now() - t1 }));
    })();`;
  const t0 = Date.now();
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 100_000 });
  let stats: DropStats | undefined;
  try {
    stats = JSON.parse(String(r.stdout).trim());
  } catch {
    stats = undefined;
  }
  dropped = { stats, r, ms: Date.now() - t0 };
  if (stats) console.log(`gc-stress child: ${JSON.stringify(stats)} in ${dropped.ms} ms`);
  return dropped;
}

test(`verbs objects dropped without close(): ${DROP_N * 3.2} of them with forced GCs; the child exits 0, and finalizers reclaim every stack without a CQ`, () => {
  const { r, stats } = dropChild();
  expect(r.error).toBeUndefined();
  expect(r.stderr).toBe('');
  expect(r.signal).toBeNull();
  expect(r.status).toBe(0);
  expect(stats!.made).toEqual({ plain: DROP_N / 2 * 5, withCq: DROP_N / 10 * 6, cmIds: DROP_N / 10 });
  // devices, PDs, MRs, MWs: all finalized, no fd left behind
  expect(stats!.unreclaimed.plain).toBe(0);
  expect(stats!.fds.afterPlain).toBe(stats!.fds.base);
  // a CmId is rooted by design until close() (native self reference); the
  // process still exits, and nothing crashed at teardown
  expect(stats!.unreclaimed.cmIds).toBe(DROP_N / 10);
});

test('a CQ (and its device stack) dropped without close() is reclaimed by GC: the completion callback no longer roots it; its channel fd, QP, PD, MRs and device are released', () => {
  const { stats } = dropChild();
  expect(stats!.unreclaimed.withCq).toBe(0);
  expect(stats!.fds.end).toBe(stats!.fds.base);
});
