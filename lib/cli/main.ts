#!/usr/bin/env node
/**
 * The node-rdma command line: `node-rdma <command> [options]`.
 * Every command has --help and, where it prints results, --json.
 */
import { benchCommand } from './bench';
import { demoCommand } from './demo';
import { devicesCommand } from './devices';
import { CliIo, defaultIo } from './display';
import { p2pCommand } from './p2p';
import { serveCommand } from './serve';

export const MAIN_USAGE = `Usage: node-rdma <command> [options]

RDMA for Node.js: verbs bindings, PCI peer-to-peer memory and an RTRS-style
multipath IO transport.

Commands:
  devices   list RDMA devices, ports, GIDs and capabilities (ODP, memory
            windows, dma-buf, atomics)
  p2p       PCI peer-to-peer memory providers and P2P distances
  serve     run a transport server that stores writes in memory and serves
            reads from them (keyed by the user header)
  bench     run a read/write workload against a transport server
  demo      server + two-path client with a path cut mid-run (npm start)

Options:
  -h, --help      this text ('node-rdma <command> --help' for a command's)
  -V, --version   the node-rdma version

Exit status: 0 ok, 1 failure, 2 usage error.
`;

type Command = (argv: string[], io: CliIo) => Promise<number>;

export const COMMANDS: Record<string, Command> = {
  devices: devicesCommand,
  p2p: (argv, io) => p2pCommand(argv, io),
  serve: (argv, io) => serveCommand(argv, io),
  bench: (argv, io) => benchCommand(argv, io),
  demo: (argv, io) => demoCommand(argv, io),
};

function version(): string {
  try {
    // dist/lib/cli/main.js -> package.json
    return (require('../../../package.json') as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

export async function main(argv: string[], io: CliIo = defaultIo): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === undefined) {
    io.stderr(`node-rdma: no command given\n\n${MAIN_USAGE}`);
    return 2;
  }
  if (cmd === '-h' || cmd === '--help' || cmd === 'help') {
    if (cmd === 'help' && rest[0] && COMMANDS[rest[0]]) return COMMANDS[rest[0]](['--help'], io);
    io.stdout(MAIN_USAGE);
    return 0;
  }
  if (cmd === '-V' || cmd === '--version') {
    io.stdout(`${version()}\n`);
    return 0;
  }
  const run = COMMANDS[cmd];
  if (!run) {
    io.stderr(`node-rdma: unknown ${cmd.startsWith('-') ? 'option' : 'command'} '${cmd}'\nCommands: ${Object.keys(COMMANDS).join(', ')}. Run 'node-rdma --help' for more.\n`);
    return 2;
  }
  try {
    return await run(rest, io);
  } catch (err) {
    const e = err as Error & { code?: string };
    io.stderr(`node-rdma ${cmd}: ${e.code ? `${e.code}: ` : ''}${e.message}\n`);
    return 1;
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
      // let stdout drain; do not wait for stray handles
      setImmediate(() => process.exit(code));
    },
    (err) => {
      process.stderr.write(`node-rdma: ${(err as Error).stack ?? err}\n`);
      process.exit(1);
    },
  );
}
