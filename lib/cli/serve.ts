/**
 * `node-rdma serve`: a transport server whose handler keeps writes in
 * memory and serves reads from them, keyed by the user header. Runs until
 * SIGINT/SIGTERM (or --duration), then closes every session and exits 0.
 */
import { TransportServer } from '../transport';
import { Address, parseArgs, parseDuration, UsageError } from './args';
import { CliIo, defaultIo, fmtBytes, table } from './display';
import { memoryStore } from './workload';

export const SERVE_USAGE = `Usage: node-rdma serve --listen HOST:PORT [options]

Runs a node-rdma transport server (docs/protocol.md). Its handler stores
each write's data in memory under the write's user header (the key), and
answers a read with the data stored under its header (status 2 ENOENT when
there is none). Clients: 'node-rdma bench --path HOST:PORT'.

Options:
  --listen HOST:PORT   address to listen on (rdma_cm); repeat for several
                       paths (e.g. one per port/device)
  --queue-depth N      chunks per session (default 128)
  --chunk-size SIZE    bytes per chunk, power of two (default 64K; max IO =
                       chunk size - max header - 32)
  --max-header SIZE    largest user header (default 512)
  --strict             invalidate a chunk's key while its IO runs (default)
  --relaxed            keep keys valid (trusted clients; faster)
  --hb-interval MS     heartbeat interval (default 1000)
  --max-keys N         keys kept in memory (default 65536)
  --duration SECS      stop after this long (default: until SIGINT/SIGTERM)
  --stats-interval S   print counters every S seconds (default 0 = never)
  --json               JSON lines: 'listening', 'stats', 'closed'
  -h, --help           this text

Exit status: 0 stopped cleanly, 1 could not listen, 2 usage error.
`;

export async function serveCommand(argv: string[], io: CliIo = defaultIo, opts: { signals?: boolean } = {}): Promise<number> {
  let o;
  try {
    o = parseArgs(argv, {
      listen: { type: 'address', multiple: true },
      'queue-depth': { type: 'int', min: 1, max: 4096 },
      'chunk-size': { type: 'size', min: 4096 },
      'max-header': { type: 'size', min: 0 },
      strict: { type: 'flag' },
      relaxed: { type: 'flag' },
      'hb-interval': { type: 'int', min: 10 },
      'max-keys': { type: 'int', min: 1 },
      duration: { type: 'string' },
      'stats-interval': { type: 'number', min: 0 },
      json: { type: 'flag' },
    });
    if (o.help) {
      io.stdout(SERVE_USAGE);
      return 0;
    }
    if (!o.listen) throw new UsageError('--listen HOST:PORT is required');
    if (o.strict && o.relaxed) throw new UsageError('--strict and --relaxed exclude each other');
    if (o.duration !== undefined) o.duration = parseDuration(o.duration as string);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    io.stderr(`node-rdma serve: ${err.message}\nRun 'node-rdma serve --help' for the options.\n`);
    return 2;
  }
  const listen = o.listen as Address[];
  const json = !!o.json;
  const store = memoryStore({ maxKeys: (o['max-keys'] as number | undefined) ?? 65536 });
  const emit = (obj: Record<string, unknown>, text: string): void => io.stdout(json ? JSON.stringify(obj) + '\n' : text + '\n');
  let server: TransportServer;
  try {
    server = new TransportServer({
      handler: store.handler,
      queueDepth: (o['queue-depth'] as number | undefined) ?? 128,
      chunkSize: (o['chunk-size'] as number | undefined) ?? 65536,
      maxHeaderSize: (o['max-header'] as number | undefined) ?? 512,
      strict: !o.relaxed,
      hbIntervalMs: (o['hb-interval'] as number | undefined) ?? 1000,
      log: json ? undefined : (line) => io.stderr(`serve: ${line}\n`),
    });
  } catch (err) {
    io.stderr(`node-rdma serve: ${(err as Error).message}\n`);
    return 2;
  }
  try {
    server.listen(listen);
  } catch (err) {
    await server.close();
    io.stderr(`node-rdma serve: cannot listen on ${listen.map((a) => `${a.host}:${a.port}`).join(', ')}: ${(err as Error).message}\n`);
    return 1;
  }
  const p = server.params;
  emit(
    { event: 'listening', listen, ...p, pid: process.pid },
    `node-rdma serve: listening on ${listen.map((a) => `${a.host}:${a.port}`).join(', ')} (${p.strict ? 'strict' : 'relaxed'}, queue depth ${p.queueDepth}, chunk ${fmtBytes(p.chunkSize)}, max header ${p.maxHeaderSize} B)`,
  );
  const started = Date.now();
  const stats = (): Record<string, unknown> => ({
    uptimeMs: Date.now() - started, sessions: server.sessionCount, keys: store.size, storedBytes: store.bytes, ...store.counters, perSession: server.stats(),
  });
  const statsText = (): string => {
    const c = store.counters;
    const rows = [['sessions', 'keys', 'stored', 'writes', 'reads', 'misses', 'written', 'read']];
    rows.push([String(server.sessionCount), String(store.size), fmtBytes(store.bytes), String(c.writes), String(c.reads), String(c.misses), fmtBytes(c.writeBytes), fmtBytes(c.readBytes)]);
    return table(rows).trimEnd();
  };
  await new Promise<void>((resolve) => {
    // serving keeps the process alive (idle rdma_cm listeners do not)
    const keepAlive = setInterval(() => undefined, 1 << 30);
    const stop = (why: string): void => {
      clearInterval(keepAlive);
      clearTimeout(timer);
      clearInterval(ticker);
      if (opts.signals !== false) {
        process.off('SIGINT', onInt);
        process.off('SIGTERM', onTerm);
      }
      if (!json) io.stderr(`node-rdma serve: stopping (${why})\n`);
      resolve();
    };
    const onInt = (): void => stop('SIGINT');
    const onTerm = (): void => stop('SIGTERM');
    if (opts.signals !== false) {
      process.on('SIGINT', onInt);
      process.on('SIGTERM', onTerm);
    }
    const timer = o.duration !== undefined ? setTimeout(() => stop('duration over'), o.duration as number) : undefined;
    const si = ((o['stats-interval'] as number | undefined) ?? 0) * 1000;
    const ticker = si > 0 ? setInterval(() => emit({ event: 'stats', ...stats() }, statsText()), si) : undefined;
  }).then(() => undefined);
  const final = stats();
  await server.close();
  emit({ event: 'closed', ...final }, `node-rdma serve: closed\n${statsText()}`);
  return 0;
}
