/**
 * Helpers for the real-kernel tier: loopback RC queue pairs on one rxe
 * device (two QPs of one process connected to each other by hand, or
 * through rdma_cm) and
 * waiting for completions with a bound (a dead rxe peer can hang forever).
 */
import { spawnSync, SpawnSyncReturns } from 'child_process';
import * as path from 'path';
import {
  Access, CmId, CompletionQueue, Device, MemoryRegion, openDevice, ProtectionDomain, QueuePair, QueuePairInit, WorkCompletion,
} from '../../lib';

/**
 * Runs `body` in a child node after this set-up: `dev` (rxe0), `pd`, one CQ
 * `cq`, and two RC QPs `a` and `b` on it, connected to each other by hand.
 * For what must happen in a process of its own (a crash, an exit).
 */
export function inChildLoopback(body: string): SpawnSyncReturns<string> {
  const lib = JSON.stringify(path.resolve(__dirname, '..', '..', 'lib'));
  const script = `
    const { openDevice, Access } = require(${lib});
    const dev = openDevice('rxe0'); const pd = dev.allocPd();
    const cq = dev.createCompletionQueue({ cqe: 64 });
    const init = { sendCq: cq, recvCq: cq, maxSendWr: 16, maxRecvWr: 16, maxInlineData: 64 };
    const a = pd.createQueuePair(init), b = pd.createQueuePair(init);
    const g = dev.gids().find((e) => e.port === 1 && e.type === 'RoCEv2' && e.gid.startsWith('::ffff:'));
    a.connectTo({ qpNum: b.qpNum, gid: g.gid, psn: 1 }, { sgidIndex: g.index, psn: 2 });
    b.connectTo({ qpNum: a.qpNum, gid: g.gid, psn: 2 }, { sgidIndex: g.index, psn: 1 });
    ${body}`;
  return spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 60_000 });
}

/** The GID index of the device's RoCE v2 IPv4-mapped GID (::ffff:a.b.c.d). */
export function ipv4GidIndex(dev: Device): { index: number; gid: string } {
  const e = dev.gids().find((g) => g.port === 1 && g.type === 'RoCEv2' && g.gid.startsWith('::ffff:'));
  if (!e) throw new Error(`${dev.name} has no RoCE v2 IPv4 GID`);
  return { index: e.index, gid: e.gid };
}

export interface Loopback {
  dev: Device;
  pd: ProtectionDomain;
  cqA: CompletionQueue;
  cqB: CompletionQueue;
  a: QueuePair;
  b: QueuePair;
  close(): void;
}

/** Two RC QPs on `name`, connected to each other (each with its own CQ). */
export function loopback(name = 'rxe0', qp: { maxSendWr?: number; maxRecvWr?: number; maxInlineData?: number; maxSge?: number } = {}): Loopback {
  const dev = openDevice(name);
  const pd = dev.allocPd();
  const cqA = dev.createCompletionQueue({ cqe: 1024 });
  const cqB = dev.createCompletionQueue({ cqe: 1024 });
  const { a, b } = connectedPair(pd, cqA, cqB, {
    maxSendWr: qp.maxSendWr ?? 256, maxRecvWr: qp.maxRecvWr ?? 256, maxInlineData: qp.maxInlineData ?? 64,
    maxSendSge: qp.maxSge ?? 1, maxRecvSge: qp.maxSge ?? 1,
  }, { a: 200, b: 100 });
  return { dev, pd, cqA, cqB, a, b, close: () => dev.close() };
}

/**
 * Two RC QPs of `pd` on the given CQs (a on cqA, b on cqB), connected to each
 * other by hand; `psn`: each side's send PSN (default 0).
 */
export function connectedPair(
  pd: ProtectionDomain, cqA: CompletionQueue, cqB: CompletionQueue,
  init: Omit<QueuePairInit, 'sendCq' | 'recvCq'> = { maxSendWr: 64 }, psn = { a: 0, b: 0 },
): { a: QueuePair; b: QueuePair } {
  const a = pd.createQueuePair({ sendCq: cqA, recvCq: cqA, ...init });
  const b = pd.createQueuePair({ sendCq: cqB, recvCq: cqB, ...init });
  const { index, gid } = ipv4GidIndex(pd.device);
  a.connectTo({ qpNum: b.qpNum, gid, psn: psn.b }, { sgidIndex: index, psn: psn.a });
  b.connectTo({ qpNum: a.qpNum, gid, psn: psn.a }, { sgidIndex: index, psn: psn.b });
  return { a, b };
}

let cmPort = 24000 + (process.pid % 500) * 32;

/**
 * The same as loopback(), but the two QPs are created on rdma_cm ids and
 * connected through the CM (a listener and a connect in this process).
 */
export async function cmLoopback(host = '10.99.1.1', qp: { maxSendWr?: number; maxRecvWr?: number; maxInlineData?: number } = {}): Promise<Loopback> {
  const port = cmPort++;
  const listener = CmId.create();
  const client = CmId.create();
  let server: CmId | undefined;
  let dev: Device | undefined;
  try {
    listener.listen(host, port);
    await client.resolveAddr(host, port);
    await client.resolveRoute();
    dev = openDevice(client.info().device!);
    const pd = dev.allocPd();
    const cqA = dev.createCompletionQueue({ cqe: 1024 });
    const cqB = dev.createCompletionQueue({ cqe: 1024 });
    const init = { maxSendWr: qp.maxSendWr ?? 256, maxRecvWr: qp.maxRecvWr ?? 256, maxInlineData: qp.maxInlineData ?? 64 };
    const a = client.createQueuePair(pd, { sendCq: cqA, recvCq: cqA, ...init });
    const accepted = new Promise<CmId>((resolve, reject) => listener.once('connection', (id: CmId) => {
      server = id;
      try {
        id.createQueuePair(pd, { sendCq: cqB, recvCq: cqB, ...init });
        id.accept().then(() => resolve(id), reject);
      } catch (err) {
        reject(err as Error);
      }
    }));
    await client.connect();
    const b = (await accepted).queuePair!;
    const d = dev;
    return {
      dev: d, pd, cqA, cqB, a, b,
      close: () => {
        client.close();
        server?.close();
        listener.close();
        d.close();
      },
    };
  } catch (err) {
    client.close();
    server?.close();
    listener.close();
    dev?.close();
    throw err;
  }
}

/** Resolves with the next `n` completions of `cq`, or rejects after `ms`. */
export function completions(cq: CompletionQueue, n: number, ms = 20_000): Promise<WorkCompletion[]> {
  return new Promise((resolve, reject) => {
    const got: WorkCompletion[] = [];
    cq.ref();
    const done = (err?: Error) => {
      clearTimeout(timer);
      cq.off('completions', onBatch);
      cq.unref();
      if (err) reject(err);
      else resolve(got);
    };
    const onBatch = (wcs: WorkCompletion[]) => {
      got.push(...wcs);
      if (got.length >= n) done();
    };
    const timer = setTimeout(
      () => done(new Error(`timed out after ${ms} ms waiting for ${n} completions (got ${got.length}: ` +
        `${got.map((w) => `${w.opcodeName}/${w.statusName}`).join(', ')})`)),
      ms,
    );
    cq.on('completions', onBatch);
  });
}

/** Registers `size` bytes of addon memory with full access. */
export function region(pd: ProtectionDomain, size: number, access = Access.LOCAL_WRITE | Access.REMOTE_WRITE | Access.REMOTE_READ | Access.REMOTE_ATOMIC): MemoryRegion {
  return pd.registerMemory(pd.allocate(size), access);
}

export function bytes(mr: MemoryRegion): Buffer {
  const b = mr.buffer as ArrayBuffer;
  return Buffer.from(b, 0, mr.length);
}
