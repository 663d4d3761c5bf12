/**
 * What the transport's multipath tests share (transport-failover,
 * transport-exactly-once): the guest's two paths, a server whose handler
 * counts each request id, read patterns, the link of path 1, waiting helpers.
 * Client and server run in one process: path 0 is rxe0 -> 10.99.1.1, path 1
 * is rxe1 -> 10.99.2.1.
 */
import { execFileSync } from 'child_process';
import { openDevice, transport } from '../../lib';

const { TransportServer } = transport;
export type TransportServer = InstanceType<typeof TransportServer>;
export type TransportClient = InstanceType<typeof transport.TransportClient>;

export const HOST0 = '10.99.1.1';
export const HOST1 = '10.99.2.1';
const GID1 = '::ffff:10.99.2.1';
let port = 21000 + (process.pid % 500) * 8;
/** a fresh port for each server */
export function nextPort(): number {
  return port++;
}

/** TRANSPORT_DEBUG=1: client and server log lines on stderr */
export const log = process.env.TRANSPORT_DEBUG ? (l: string): void => void process.stderr.write(`${(Date.now() % 1e6).toString().padStart(6)} ${l}\n`) : undefined;

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export function later<T = void>(): { promise: Promise<T>; resolve: (v: T) => void } {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

export async function until(what: string, cond: () => boolean, ms = 20000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

export function eth1(state: 'up' | 'down'): void {
  execFileSync('ip', ['link', 'set', 'eth1', state]);
}

/** eth1 up and rxe1's IPv4 GID back (a connect before that cannot use rxe1). */
export async function restoreEth1(): Promise<void> {
  eth1('up');
  const dev = openDevice('rxe1');
  try {
    await until('the GID of rxe1', () => dev.gids().some((g) => g.gid === GID1), 30000);
    await sleep(2000); // as the client's portSettleMs: a connect right away can leave rxe1 unusable for a while
  } finally {
    dev.close();
  }
}

/** The read pattern of request id `id`. */
export function pattern(id: number, len: number): Buffer {
  const b = Buffer.alloc(len);
  for (let i = 0; i < len; i++) b[i] = (id * 31 + i * 7) & 0xff;
  return b;
}

/** A server on both addresses whose handler counts each request id and keeps written data. */
export function countingServer(opts: Partial<ConstructorParameters<typeof TransportServer>[0]> & { hold?: (id: string, pathIndex: number) => Promise<void> | undefined } = {}): {
  server: TransportServer; port: number; calls: Map<string, number>; stored: Map<string, Buffer>;
} {
  const p = nextPort();
  const calls = new Map<string, number>();
  const stored = new Map<string, Buffer>();
  const { hold, ...rest } = opts;
  const server = new TransportServer({
    queueDepth: 32, chunkSize: 8192, maxHeaderSize: 64, log,
    handler: async (req) => {
      const id = req.header.toString();
      calls.set(id, (calls.get(id) ?? 0) + 1);
      const h = hold?.(id, req.pathIndex);
      if (h) await h;
      if (req.kind === 'write') {
        stored.set(id, Buffer.from(req.data));
        return { header: Buffer.from(`w${id}`) };
      }
      const n = Number(id.split(':')[1] ?? 0);
      pattern(n, req.data.length).copy(req.data);
      return { header: Buffer.from(`r${id}`), length: req.data.length };
    },
    ...rest,
  });
  server.listen([{ host: HOST0, port: p }, { host: HOST1, port: p }]);
  return { server, port: p, calls, stored };
}

export function twoPaths(p: number): Array<{ host: string; port: number }> {
  return [{ host: HOST0, port: p }, { host: HOST1, port: p }];
}

export function events(client: TransportClient): Array<[string, ...unknown[]]> {
  const out: Array<[string, ...unknown[]]> = [];
  for (const name of ['path-up', 'path-down', 'session-up', 'session-down'] as const) {
    client.on(name, (...args: unknown[]) => out.push([name, ...args]));
  }
  return out;
}
