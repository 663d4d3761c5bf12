/**
 * Child node processes for the native-safety tests: what they check can
 * abort a process (std::terminate, SIGABRT) or must be seen at its exit, so
 * each runs in a node of its own. The child gets a prelude: the library
 * (`lib`), its native addon (`N`), `gc`, and helpers to connect QPs and
 * wait for completions by polling; it prints one JSON line as its result.
 */
import { spawnSync } from 'child_process';
import * as path from 'path';

const LIB = JSON.stringify(path.resolve(__dirname, '..', '..', 'lib'));

const PRELUDE = `
  const lib = require(${LIB});
  const { native } = require(${LIB} + '/native');
  const N = native();
  const { openDevice, Access, WrOpcode, SendFlags } = lib;
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  // two RC QPs of pd connected to each other (a on cqA, b on cqB)
  function pair(pd, cqA, cqB, init = {}) {
    const base = { maxSendWr: 16, maxRecvWr: 16, ...init };
    const a = pd.createQueuePair({ sendCq: cqA, recvCq: cqA, ...base });
    const b = pd.createQueuePair({ sendCq: cqB, recvCq: cqB, ...base });
    const g = pd.device.gids().find((e) => e.port === 1 && e.type === 'RoCEv2' && e.gid.startsWith('::ffff:'));
    a.connectTo({ qpNum: b.qpNum, gid: g.gid, psn: 1 }, { sgidIndex: g.index, psn: 2 });
    b.connectTo({ qpNum: a.qpNum, gid: g.gid, psn: 2 }, { sgidIndex: g.index, psn: 1 });
    return { a, b };
  }
  // the next n completions of cq, polled (for raw posts the CQ was not told
  // of, which do not keep it ref'd); the event loop may deliver them too
  async function polled(cq, n, ms = 20000) {
    const got = [];
    const on = (wcs) => got.push(...wcs);
    cq.on('completions', on);
    try {
      const end = Date.now() + ms;
      while (got.length < n) {
        if (Date.now() > end) throw new Error('timed out waiting for ' + n + ' completions, got ' + got.length);
        cq.poll();
        if (got.length < n) await sleep(2);
      }
    } finally {
      cq.off('completions', on);
    }
    return got;
  }
  async function settleGc(rounds = 8) {
    for (let i = 0; i < rounds; i++) {
      gc();
      await new Promise((r) => setImmediate(r));
      await sleep(20);
    }
  }
  function pdCount() {
    const out = require('child_process').execFileSync('rdma', ['resource', 'show', 'pd'], { encoding: 'utf8' });
    return out.split('\\n').filter((l) => /\\bpdn\\b/.test(l)).length;
  }
  function report(obj) { process.stdout.write('RESULT ' + JSON.stringify(obj) + '\\n'); }
`;

export interface ChildResult {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
  /** the object the child passed to report(), if it did */
  result: any;
}

/** Runs `body` (with the prelude above) in a child node with --expose-gc. */
export function runChild(body: string, timeoutMs = 100_000, env: NodeJS.ProcessEnv = process.env): ChildResult {
  const t0 = Date.now();
  const r = spawnSync(process.execPath, ['--expose-gc', '-e', `${PRELUDE}\n${body}`], { encoding: 'utf8', timeout: timeoutMs, env });
  const line = r.stdout.split('\n').find((l) => l.startsWith('RESULT '));
  return {
    status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr, ms: Date.now() - t0,
    result: line ? JSON.parse(line.slice(7)) : undefined,
  };
}

/** What a failed child said, for the assertion message. */
export function childSummary(r: ChildResult): string {
  return `status ${r.status} signal ${r.signal} after ${r.ms} ms\nstdout: ${r.stdout.slice(-2000)}\nstderr: ${r.stderr.slice(-2000)}`;
}
