/**
 * Fork safety (docs/fork-safety.md): child processes started while memory is
 * registered and RDMA traffic runs must not take the registered pages away
 * from the parent. On the kernels we support, pinned anonymous pages are
 * copied into the child at fork() (copy-on-fork), so after any number of
 * spawn / execFile / spawnSync calls:
 *   - the NIC's writes into the parent's registered memory stay visible to
 *     the parent's CPU, even after the parent wrote to those pages itself
 *     (on a kernel without copy-on-fork, that CPU write after a fork would
 *     copy the page and the parent would stop seeing the NIC's writes),
 *   - the NIC reads what the parent's CPU wrote (RDMA READ),
 *   - traffic posted before and during the children's lives completes.
 * A second test runs a child node with RDMAV_FORK_SAFE=1 (rdma-core's
 * madvise(MADV_DONTFORK) mode) that registers memory, spawns, and checks the
 * same things in itself.
 */
import { execFile, spawn, spawnSync } from 'child_process';
import * as path from 'path';
import { promisify } from 'util';
import { Access, forkSafety, MemoryRegion } from '../../lib';
import { bytes, completions, loopback, Loopback, region } from './helpers';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const execFileP = promisify(execFile);
const ACCESS = Access.LOCAL_WRITE | Access.REMOTE_WRITE | Access.REMOTE_READ;
const SIZE = 256 << 10;

let l: Loopback;
beforeAll(() => {
  l = loopback('rxe0', { maxSendWr: 256 });
});
afterAll(() => l.close());

function exited(child: ReturnType<typeof spawn>): Promise<number | null> {
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) => resolve(code));
  });
}

/** RDMA-writes `src` over all of `dst` in 64 KiB writes and waits for them. */
async function writeAll(src: MemoryRegion, dst: { addr: number; rkey: number }, wrIdBase: number): Promise<void> {
  const chunk = 64 << 10;
  const n = SIZE / chunk;
  const done = completions(l.cqA, n);
  l.a.postSend(Array.from({ length: n }, (_, i) => ({
    wrId: wrIdBase + i, opcode: 'RDMA_WRITE' as const, sge: [src.sge(i * chunk, chunk)],
    remoteAddr: dst.addr + i * chunk, rkey: dst.rkey,
  })));
  const wcs = await done;
  expect(wcs.filter((w) => !w.ok).map((w) => w.statusName)).toEqual([]);
}

test('spawn, execFile and spawnSync while memory is registered and RDMA writes run; the parent keeps its registered pages', async () => {
  // JS memory (malloc'd by V8, shares pages with nothing we control) and
  // addon memory, both registered for remote writes and reads
  const jsMem = new Uint8Array(SIZE);
  const targets = [
    { mem: jsMem, mr: l.pd.registerMemory(jsMem, ACCESS) },
    { mem: new Uint8Array(l.pd.allocate(SIZE)), mr: undefined as unknown as MemoryRegion },
  ];
  targets[1].mr = l.pd.registerMemory(targets[1].mem.buffer, ACCESS);
  const src = region(l.pd, SIZE);
  const readBack = region(l.pd, SIZE);

  // traffic: rounds of RDMA writes with a fresh pattern, each checked, until told to stop
  let stop = false;
  let rounds = 0;
  const pump = (async () => {
    while (!stop) {
      const pattern = (rounds % 250) + 1;
      bytes(src).fill(pattern);
      for (const t of targets) await writeAll(src, t.mr, rounds * 100);
      for (const t of targets) {
        if (!t.mem.every((x) => x === pattern)) throw new Error(`round ${rounds}: the parent does not see the NIC's write`);
      }
      rounds++;
    }
  })();

  // children of every kind, while the pump runs
  const kids: string[] = [];
  expect(await exited(spawn('true', [], { stdio: 'ignore' }))).toBe(0);
  kids.push('spawn true');
  const sh = await execFileP('sh', ['-c', 'echo child $$']);
  expect(sh.stdout).toMatch(/^child \d+/);
  kids.push('execFile sh');
  const node = await execFileP(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']);
  expect(Number(node.stdout)).toBeGreaterThan(1);
  kids.push('execFile node');
  expect(spawnSync('true').status).toBe(0); // blocks the loop; the NIC keeps going
  kids.push('spawnSync true');
  // a child that lives for a while: the parent writes its own registered
  // pages (CPU) while the child exists, as an old kernel's COW would punish
  const sleeper = spawn('sleep', ['0.5'], { stdio: 'ignore' });
  jsMem[12345] = jsMem[12345]; // a CPU store into a registered page
  const sleeperDone = exited(sleeper);
  // the rdma tool reports whether this kernel copies pinned pages on fork
  let cof = 'rdma tool not found';
  try {
    cof = (await execFileP('rdma', ['sys'])).stdout.trim();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  kids.push('execFile rdma sys');
  expect(await sleeperDone).toBe(0);
  kids.push('spawn sleep 0.5');
  const minRounds = rounds + 2; // traffic still flows after all of that
  while (rounds < minRounds) await new Promise((r) => setTimeout(r, 10));
  stop = true;
  await pump;

  // after the children: the CPU writes every registered page, then the NIC
  // writes all of it; the parent must see the NIC's bytes
  for (const t of targets) {
    t.mem.fill(0x11);
    bytes(src).fill(0x5a);
    await writeAll(src, t.mr, 900_000);
    expect(t.mem.every((x) => x === 0x5a)).toBe(true);
    // and the NIC sees the CPU's bytes: RDMA READ them back
    for (let i = 0; i < SIZE; i++) t.mem[i] = i & 0xff;
    const done = completions(l.cqA, 1);
    l.a.postSend([{ wrId: 7, opcode: 'RDMA_READ', sge: [readBack.sge()], remoteAddr: t.mr.addr, rkey: t.mr.rkey }]);
    expect((await done)[0].ok).toBe(true);
    expect(Buffer.compare(bytes(readBack), Buffer.from(t.mem.buffer, t.mem.byteOffset, SIZE))).toBe(0);
  }
  console.log(`fork: ${kids.length} children (${kids.join(', ')}) during ${rounds} rounds of RDMA writes; rdma sys: ${cof}`);
  if (cof.includes('copy-on-fork')) expect(cof).toMatch(/copy-on-fork on/);
});

test('RDMAV_FORK_SAFE=1 (madvise DONTFORK mode): JS memory sharing pages with the heap is refused; whole-page memory registers, spawn works, RDMA writes still land', () => {
  const script = `
    const { openDevice, Access } = require(${JSON.stringify(path.join(ROOT, 'dist', 'lib'))});
    const { spawnSync } = require('child_process');
    const dev = openDevice('rxe0');
    const pd = dev.allocPd();
    const cq = dev.createCompletionQueue({ cqe: 64 });
    const init = { sendCq: cq, recvCq: cq, maxSendWr: 16, maxRecvWr: 16 };
    const a = pd.createQueuePair(init), b = pd.createQueuePair(init);
    const g = dev.gids().find((e) => e.port === 1 && e.type === 'RoCEv2' && e.gid.startsWith('::ffff:'));
    a.connectTo({ qpNum: b.qpNum, gid: g.gid, psn: 1 }, { sgidIndex: g.index, psn: 2 });
    b.connectTo({ qpNum: a.qpNum, gid: g.gid, psn: 2 }, { sgidIndex: g.index, psn: 1 });
    // not page aligned: its pages hold other heap data, which DONTFORK would
    // hide from the child between fork() and exec()
    let refused = '';
    try { pd.registerMemory(new Uint8Array(65536 + 100).subarray(100), Access.LOCAL_WRITE); } catch (e) { refused = e.name + ': ' + e.message; }
    if (!/^RangeError: .*whole pages/.test(refused)) throw new Error('misaligned JS memory was not refused: ' + refused);
    const dstMem = new Uint8Array(pd.allocate(65536));
    const dst = pd.registerMemory(dstMem, Access.LOCAL_WRITE | Access.REMOTE_WRITE);
    const src = pd.registerMemory(pd.allocate(65536));
    const wait = () => { for (let t = 0; t < 2e6; t++) { const w = cq.poll(); if (w.length) return w[0]; } throw new Error('no completion'); };
    const write = (v) => { new Uint8Array(src.buffer).fill(v); a.postSend([{ opcode: 'RDMA_WRITE', sge: [src.sge()], remoteAddr: dst.addr, rkey: dst.rkey }]); const w = wait(); if (!w.ok) throw new Error(w.statusName); };
    write(1);
    const r = spawnSync('sh', ['-c', 'exit 3']);
    if (r.status !== 3) throw new Error('child status ' + r.status);
    dstMem.fill(9);   // CPU store after the fork
    write(2);
    if (!dstMem.every((x) => x === 2)) throw new Error('the NIC write is not visible after a fork');
    dev.close();
    console.log('ok');`;
  const r = spawnSync(process.execPath, ['-e', script], {
    encoding: 'utf8', timeout: 60_000, env: { ...process.env, RDMAV_FORK_SAFE: '1' },
  });
  expect(r.error).toBeUndefined();
  expect(r.stderr).toBe('');
  expect(r.status).toBe(0);
  expect(r.stdout.trim()).toBe('ok');
});

test("forkSafety() is 'unneeded' on this kernel: it copies pinned pages into the child at fork", () => {
  // the guest's kernel (6.12 then, 7.3.4 now) has copy-on-fork for pinned pages (rdma sys:
  // "copy-on-fork on"), which rdma-core reports as IBV_FORK_UNNEEDED
  expect(forkSafety()).toBe('unneeded');
});
