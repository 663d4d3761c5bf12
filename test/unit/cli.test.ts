/**
 * The node-rdma CLI on the host (no RDMA devices needed): usage and exit
 * codes of every command, option parsing, `devices` without devices, and
 * the failures of serve/bench when rdma_cm has no device.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { listDevices } from '../../lib';
import { parseAddress, parseArgs, parseDuration, parseSize, UsageError } from '../../lib/cli/args';
import { planCuts } from '../../lib/cli/demo';
import { COMMANDS, main, MAIN_USAGE } from '../../lib/cli/main';

const MAIN_JS = path.resolve(__dirname, '../../lib/cli/main.js');

async function run(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await main(argv, { stdout: (s) => (out += s), stderr: (s) => (err += s) });
  return { code, out, err };
}

/** The kernel's RDMA verbs interface (ib_uverbs) is there; without it listDevices() throws ENOSYS. */
const hasVerbs = fs.existsSync('/sys/class/infiniband_verbs');
const hasDevices = hasVerbs && listDevices().length > 0;

describe('node-rdma (main)', () => {
  test('--help lists every command and exits 0', async () => {
    const r = await run('--help');
    expect(r.code).toBe(0);
    expect(r.err).toBe('');
    expect(r.out).toBe(MAIN_USAGE);
    for (const c of ['devices', 'p2p', 'serve', 'bench', 'demo']) expect(r.out).toMatch(new RegExp(`^  ${c} `, 'm'));
    expect((await run('-h')).out).toBe(MAIN_USAGE);
  });

  test('no command and unknown commands/options: a clear error and exit 2', async () => {
    const none = await run();
    expect(none.code).toBe(2);
    expect(none.err).toMatch(/no command given/);
    const bad = await run('frobnicate');
    expect(bad.code).toBe(2);
    expect(bad.out).toBe('');
    expect(bad.err).toMatch(/unknown command 'frobnicate'/);
    expect(bad.err).toMatch(/devices, p2p, serve, bench, demo/);
    const opt = await run('--frob');
    expect(opt.code).toBe(2);
    expect(opt.err).toMatch(/unknown option '--frob'/);
  });

  test('--version prints the package version', async () => {
    const r = await run('--version');
    expect(r.code).toBe(0);
    expect(r.out.trim()).toBe(require('../../../package.json').version);
  });

  test.each(Object.keys(COMMANDS))('%s --help: usage on stdout, exit 0; help %s says the same', async (cmd) => {
    const r = await run(cmd, '--help');
    expect(r.code).toBe(0);
    expect(r.err).toBe('');
    expect(r.out).toMatch(new RegExp(`^Usage: node-rdma ${cmd}\\b`));
    expect(r.out).toMatch(/-h, --help/);
    expect(r.out).toMatch(/--json/);
    expect((await run('help', cmd)).out).toBe(r.out);
  });

  test.each(Object.keys(COMMANDS))('%s with an unknown option: exit 2 naming it', async (cmd) => {
    const r = await run(cmd, '--no-such-option');
    expect(r.code).toBe(2);
    expect(r.out).toBe('');
    expect(r.err).toMatch(/'--no-such-option'/);
  });

  test('the compiled main.js has the shebang and runs as a program', () => {
    const src = require('fs').readFileSync(MAIN_JS, 'utf8') as string;
    expect(src.split('\n')[0]).toBe('#!/usr/bin/env node');
    const help = spawnSync(process.execPath, [MAIN_JS, '--help'], { encoding: 'utf8' });
    expect(help.status).toBe(0);
    expect(help.stdout).toMatch(/^Usage: node-rdma <command>/);
    const bad = spawnSync(process.execPath, [MAIN_JS, 'nope'], { encoding: 'utf8' });
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/unknown command 'nope'/);
  });
});

describe('devices', () => {
  // the host's own state decides which of the two is checked: CI hosts have
  // no ib_uverbs (ENOSYS); a machine with the module and no devices is the
  // other case
  (hasDevices ? test.skip : test)(`without RDMA devices: exit 0 with "no devices" when the kernel has the verbs interface, exit 1 naming ib_uverbs (ENOSYS) when it has none, as ibv_devinfo fails${hasDevices ? ' [skipped: this host has RDMA devices]' : ''}`, async () => {
    const r = await run('devices');
    const j = await run('devices', '--json');
    const one = await run('devices', '--device', 'mlx5_0');
    const sep = spawnSync(process.execPath, [MAIN_JS, 'devices', '--json'], { encoding: 'utf8' });
    if (hasVerbs) {
      expect(r.code).toBe(0);
      expect(r.err).toBe('');
      expect(r.out).toMatch(/^No RDMA devices found on this host\./);
      expect(j.code).toBe(0);
      expect(JSON.parse(j.out)).toEqual({ devices: [] });
      expect(one.code).toBe(1);
      expect(one.err).toMatch(/no RDMA device 'mlx5_0' \(this host has none\)/);
      expect(sep.status).toBe(0);
      expect(JSON.parse(sep.stdout).devices).toEqual([]);
    } else {
      expect(r.code).toBe(1);
      expect(r.out).toBe('');
      expect(r.err).toMatch(/^node-rdma devices: cannot list RDMA devices: ibv_get_device_list failed: ENOSYS: .*ib_uverbs module is not loaded.*modprobe ib_uverbs/);
      expect(j.code).toBe(1);
      expect(JSON.parse(j.out)).toEqual({ devices: [], error: { code: 'ENOSYS', message: expect.stringMatching(/no RDMA verbs interface/) } });
      expect(one.code).toBe(1);
      expect(one.err).toMatch(/ENOSYS/);
      // as a separate program too (no crash in the addon), like ibv_devinfo: a failure
      expect(sep.status).toBe(1);
      expect(JSON.parse(sep.stdout).error.code).toBe('ENOSYS');
      const devinfo = spawnSync('ibv_devinfo', { encoding: 'utf8' });
      if (!devinfo.error) expect(devinfo.status).not.toBe(0);
    }
  });

  test('--device needs a value', async () => {
    const r = await run('devices', '--device');
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/--device needs a value/);
  });
});

describe('serve and bench argument checks', () => {
  test('serve: --listen is required, host:port checked, strict/relaxed exclusive, numbers checked', async () => {
    expect((await run('serve')).err).toMatch(/--listen HOST:PORT is required/);
    const bad = await run('serve', '--listen', 'nohostport');
    expect(bad.code).toBe(2);
    expect(bad.err).toMatch(/--listen must be host:port, got 'nohostport'/);
    expect((await run('serve', '--listen', '10.0.0.1:70000')).err).toMatch(/port must be 1..65535/);
    const both = await run('serve', '--listen', '10.0.0.1:1', '--strict', '--relaxed');
    expect(both.code).toBe(2);
    expect(both.err).toMatch(/exclude each other/);
    expect((await run('serve', '--listen', '10.0.0.1:1', '--queue-depth', 'many')).err).toMatch(/--queue-depth must be an integer/);
    expect((await run('serve', '--listen', '10.0.0.1:1', '--queue-depth', '0')).err).toMatch(/at least 1/);
    expect((await run('serve', '--listen', '10.0.0.1:1', '--chunk-size', '4Q')).err).toMatch(/--chunk-size must be a number of bytes/);
  });

  test('bench: --path required, read ratio in 0..1, policy known, one --source per --path', async () => {
    expect((await run('bench')).code).toBe(2);
    expect((await run('bench', '--path', '10.0.0.1:1', '--read-ratio', '1.5')).err).toMatch(/--read-ratio must be at most 1/);
    expect((await run('bench', '--path', '10.0.0.1:1', '--policy', 'random')).err).toMatch(/--policy must be/);
    expect((await run('bench', '--path', '10.0.0.1:1', '--path', '10.0.0.2:1', '--source', '10.0.0.9')).err).toMatch(/one --source per --path/);
    expect((await run('bench', '--path', '10.0.0.1:1', '--duration', 'soon')).err).toMatch(/--duration must be a duration/);
  });

  (hasDevices ? test.skip : test)(`serve and bench without RDMA devices fail with exit 1 and the reason${hasDevices ? ' [skipped: this host has RDMA devices]' : ''}`, async () => {
    const s = await run('serve', '--listen', '127.0.0.1:18999');
    expect(s.code).toBe(1);
    expect(s.err).toMatch(/cannot listen on 127\.0\.0\.1:18999: .*ENODEV/);
    const b = await run('bench', '--path', '127.0.0.1:18999', '--duration', '1');
    expect(b.code).toBe(1);
    expect(b.err).toMatch(/cannot connect to 127\.0\.0\.1:18999: .*ENODEV/);
    const d = await run('demo', '--duration', '10');
    expect(d.code).toBe(1);
    expect(d.err).toMatch(hasVerbs ? /no active RDMA port/ : /ENOSYS: this kernel has no RDMA verbs interface/);
  });

  test('demo: --cut modes and times are checked', async () => {
    expect((await run('demo', '--cut', 'cable')).err).toMatch(/--cut must be none or a comma list of link and server/);
    expect((await run('demo', '--duration', '10', '--cut', 'link', '--cut-at', '8', '--restore-at', '5')).err).toMatch(/--cut-at < --restore-at < --duration/);
    expect((await run('demo', '--cut', 'server,link', '--cut-at', '3')).code).toBe(2);
    expect((await run('demo', '--live', '--no-live')).err).toMatch(/exclude each other/);
  });
});

describe('option parsing', () => {
  test('sizes, addresses, durations', () => {
    expect(parseSize('4096')).toBe(4096);
    expect(parseSize('4K')).toBe(4096);
    expect(parseSize('4KiB')).toBe(4096);
    expect(parseSize('64k')).toBe(65536);
    expect(parseSize('1M')).toBe(1 << 20);
    expect(parseSize('2g')).toBe(2 * 1024 ** 3);
    expect(() => parseSize('1.5K')).toThrow(UsageError);
    expect(() => parseSize('-1')).toThrow(/number of bytes/);
    expect(parseAddress('10.99.1.1:18515')).toEqual({ host: '10.99.1.1', port: 18515 });
    expect(parseAddress('[fe80::1]:7')).toEqual({ host: 'fe80::1', port: 7 });
    expect(() => parseAddress('10.99.1.1')).toThrow(/host:port/);
    expect(() => parseAddress('a:0')).toThrow(/1..65535/);
    expect(parseDuration('10')).toBe(10_000);
    expect(parseDuration('2.5s')).toBe(2500);
    expect(parseDuration('500ms')).toBe(500);
    expect(parseDuration('2m')).toBe(120_000);
    expect(() => parseDuration('1h')).toThrow(UsageError);
  });

  test('parseArgs: values inline or next, repeatable options, flags, short aliases, errors', () => {
    const spec = {
      path: { type: 'address' as const, multiple: true },
      size: { type: 'size' as const, min: 1 },
      depth: { type: 'int' as const, max: 64 },
      json: { type: 'flag' as const },
      verbose: { type: 'flag' as const, short: 'v' },
    };
    expect(parseArgs(['--path', 'a:1', '--path=b:2', '--size=4K', '--depth', '8', '--json', '-v'], spec)).toEqual({
      path: [{ host: 'a', port: 1 }, { host: 'b', port: 2 }], size: 4096, depth: 8, json: true, verbose: true,
    });
    expect(parseArgs(['-h'], spec)).toEqual({ help: true });
    expect(() => parseArgs(['--size', '1', '--size', '2'], spec)).toThrow(/--size given twice/);
    expect(() => parseArgs(['--size'], spec)).toThrow(/--size needs a value/);
    expect(() => parseArgs(['--size', '--json'], spec)).toThrow(/--size needs a value/);
    expect(() => parseArgs(['--json=1'], spec)).toThrow(/--json takes no value/);
    expect(() => parseArgs(['--depth', '65'], spec)).toThrow(/at most 64/);
    expect(() => parseArgs(['extra'], spec)).toThrow(/unexpected argument 'extra'/);
    expect(() => parseArgs(['-x'], spec)).toThrow(/unknown option '-x'/);
  });

  test('planCuts spreads cuts over the run; a link comes back within its slot', () => {
    expect(planCuts(60_000, 'none')).toEqual([]);
    expect(planCuts(60_000, 'server')).toEqual([{ mode: 'server', atMs: 20_000 }]);
    expect(planCuts(60_000, 'link')).toEqual([{ mode: 'link', atMs: 20_000, restoreAtMs: 35_000 }]);
    expect(planCuts(60_000, 'server,link')).toEqual([{ mode: 'server', atMs: 15_000 }, { mode: 'link', atMs: 30_000, restoreAtMs: 41_250 }]);
    expect(planCuts(30_000, 'link', '5', '9')).toEqual([{ mode: 'link', atMs: 5000, restoreAtMs: 9000 }]);
    expect(() => planCuts(30_000, 'server', undefined, '9')).toThrow(/--restore-at applies to a link cut/);
    expect(() => planCuts(30_000, 'link', '40')).toThrow(/within --duration/);
  });
});
