/**
 * The package as users get it, checked in this tree (scripts/test-consumer
 * checks the packed tarball): package.json's shape (exports map, files,
 * dependencies, scripts), the ESM entry point, the loader's consumer-facing
 * ENOADDON/ENOLIB messages, the install script's fallback-build message, the
 * typed event maps against what the classes emit and the docs name, and the
 * error-code union against the codes the addon names.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as lib from '../../lib';
import { EXTRA_ERRNO_CODES } from '../../lib/errors';
import { explainLoadError } from '../../lib/native';
import { TRANSPORT_CLIENT_EVENTS, TRANSPORT_SERVER_EVENTS } from '../../lib/transport/events';
import { ASYNC_EVENT_TYPES, CM_ID_EVENTS, COMPLETION_QUEUE_EVENTS } from '../../lib/verbs/events';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
const read = (f: string) => fs.readFileSync(path.join(ROOT, f), 'utf8');

/** Runs node with `args` in a clean environment plus `env`. */
function node(args: string[], env: Record<string, string> = {}, cwd = ROOT) {
  return spawnSync(process.execPath, args, { cwd, encoding: 'utf8', env: { PATH: process.env.PATH ?? '', HOME: os.homedir(), ...env } });
}

describe('package.json', () => {
  test('exports: "." with import (ESM) and require (CJS) entry points, types first; package.json; nothing else', () => {
    expect(pkg.exports).toEqual({
      '.': {
        import: { types: './dist/lib/index.d.mts', default: './dist/lib/index.mjs' },
        require: { types: './dist/lib/index.d.ts', default: './dist/lib/index.js' },
      },
      './package.json': './package.json',
    });
    for (const c of Object.values(pkg.exports['.']) as Array<Record<string, string>>) {
      expect(Object.keys(c)[0]).toBe('types');
      for (const f of Object.values(c)) expect(fs.existsSync(path.join(ROOT, f))).toBe(true);
    }
    expect(pkg.main).toBe('dist/lib/index.js');
    expect(pkg.types).toBe('dist/lib/index.d.ts');
  });

  test('dependencies: node-gyp-build and node-addon-api at run time, node-gyp only for development', () => {
    expect(Object.keys(pkg.dependencies).sort()).toEqual(['node-addon-api', 'node-gyp-build']);
    expect(pkg.devDependencies['node-gyp']).toBeDefined();
    expect(pkg.devDependencies.prebuildify).toBeDefined();
    expect(pkg.peerDependenciesMeta['@types/node']).toEqual({ optional: true });
  });

  test('scripts: install keeps a loading prebuilt addon, prepack builds dist and the prebuilt addon', () => {
    expect(pkg.scripts.install).toBe('node scripts/install.js');
    expect(pkg.scripts.prepack).toBe('bash scripts/prepack');
  });

  test('files: what a user runs, not the test guest tooling', () => {
    expect(pkg.files).toEqual(expect.arrayContaining(['dist/lib', 'lib', 'prebuilds', 'native', 'binding.gyp', 'scripts/install.js', 'LICENSE', 'README.md']));
    expect(pkg.files).not.toContain('scripts');
    expect(pkg.files).not.toContain('docs');
    for (const f of pkg.files as string[]) if (f !== 'prebuilds') expect(fs.existsSync(path.join(ROOT, f))).toBe(true);
  });
});

describe('entry points', () => {
  test('the ESM entry exports every name of the CommonJS entry, as the same objects, named and on the default export', () => {
    const script = `
      import * as esm from ${JSON.stringify(path.join(ROOT, 'dist/lib/index.mjs'))};
      import def from ${JSON.stringify(path.join(ROOT, 'dist/lib/index.mjs'))};
      import { createRequire } from 'module';
      const cjs = createRequire(import.meta.url)(${JSON.stringify(path.join(ROOT, 'dist/lib/index.js'))});
      const missing = Object.keys(cjs).filter((k) => !(k in esm));
      const different = Object.keys(cjs).filter((k) => (k in esm && esm[k] !== cjs[k]) || def[k] !== cjs[k]);
      console.log(JSON.stringify({ missing, different, n: Object.keys(cjs).length }));`;
    const r = node(['--input-type=module', '-e', script]);
    expect(r.stderr).toBe('');
    const out = JSON.parse(r.stdout);
    expect(out).toEqual({ missing: [], different: [], n: Object.keys(lib).length });
  });

  test("the declarations reference Node's types, so consumers compile with \"types\": []", () => {
    for (const f of ['dist/lib/index.d.ts', 'dist/lib/index.d.mts']) expect(read(f).split('\n')[0]).toBe('/// <reference types="node" preserve="true" />');
  });
});

describe('loading the addon: messages for the package user', () => {
  test('no addon file: ENOADDON that says npm rebuild node-rdma, not the maintainers\' scripts', () => {
    const r = node(['-e', `try { require('./dist/lib').listDevices() } catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message })) }`],
      { NODE_RDMA_ADDON: '/nonexistent/node_rdma.node' });
    const e = JSON.parse(r.stdout);
    expect(e.code).toBe('ENOADDON');
    expect(e.message).toMatch(/npm rebuild node-rdma/);
    expect(e.message).not.toMatch(/scripts\/setup|npm run build/);
  });

  test('no addon for this platform (no build/, no prebuilds/): ENOADDON naming the platform and what a build needs', () => {
    // a copy of the package without any addon: the loader resolves from its own directory
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'node-rdma-noaddon-'));
    try {
      fs.cpSync(path.join(ROOT, 'dist', 'lib'), path.join(dir, 'dist', 'lib'), { recursive: true });
      fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'node-rdma', version: pkg.version }));
      fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(dir, 'node_modules'));
      const r = node(['-e', `try { require('./dist/lib').listDevices() } catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message })) }`], {}, dir);
      const e = JSON.parse(r.stdout);
      expect(e.code).toBe('ENOADDON');
      expect(e.message).toMatch(new RegExp(`no native addon for ${process.platform}-${process.arch} \\(Node ${process.versions.node}`));
      expect(e.message).toMatch(/prebuilt ones for linux-x64 \(glibc\) only/);
      expect(e.message).toMatch(/npm rebuild node-rdma/);
      expect(e.message).toMatch(/apt-get install build-essential python3 pkg-config libibverbs-dev librdmacm-dev/);
      expect(e.message).toMatch(/dnf install .*rdma-core-devel/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('explainLoadError: missing libraries are ENOLIB with the packages; an old rdma-core or glibc says what it needs', () => {
    const f = '/x/node-rdma.glibc.node';
    const lib1 = explainLoadError(f, new Error('librdmacm.so.1: cannot open shared object file: No such file or directory'));
    expect(lib1).toMatchObject({ name: 'RdmaError', code: 'ENOLIB' });
    expect(lib1!.message).toMatch(/apt-get install libibverbs1 librdmacm1 ibverbs-providers.*dnf install libibverbs librdmacm/);
    const old = explainLoadError(f, new Error("/lib/x86_64-linux-gnu/libibverbs.so.1: version `IBVERBS_1.13' not found (required by /x/node-rdma.glibc.node)"));
    // the library is there but too old: still ENOLIB, with the version needed
    expect(old).toMatchObject({ code: 'ENOLIB' });
    expect(old!.message).toMatch(/rdma-core 35 or newer/);
    const glibc = explainLoadError(f, new Error("/lib/x86_64-linux-gnu/libc.so.6: version `GLIBC_2.32' not found (required by /x/node-rdma.glibc.node)"));
    expect(glibc).toMatchObject({ code: 'ENOADDON' });
    expect(glibc!.message).toMatch(/npm rebuild node-rdma --build-from-source/);
    expect(explainLoadError(f, new Error('something else entirely'))).toBeUndefined();
  });

  test('install.js --build-from-source without the build tools: exit 1 naming what to install, nothing built', () => {
    const empty = fs.mkdtempSync(path.join(os.tmpdir(), 'node-rdma-nopath-'));
    try {
      const r = node([path.join(ROOT, 'scripts', 'install.js')], { PATH: empty, npm_config_build_from_source: 'true' }, empty);
      expect(r.status).toBe(1);
      expect(r.stderr).toMatch(/node-rdma: cannot build the native addon: pkg-config, a C\+\+ compiler, make, python3 missing/);
      expect(r.stderr).toMatch(/apt-get install build-essential python3 pkg-config libibverbs-dev librdmacm-dev/);
      expect(r.stderr).toMatch(/npm rebuild node-rdma/);
    } finally {
      fs.rmSync(empty, { recursive: true, force: true });
    }
  });

  test("install.js --build-from-source without rdma-core's -dev packages: exit 1 naming them, not gyp's raw pkg-config error", () => {
    // pkg-config finds nothing under an empty search path: as on a machine without libibverbs-dev/librdmacm-dev
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'node-rdma-nodev-'));
    try {
      const r = node([path.join(ROOT, 'scripts', 'install.js')], { npm_config_build_from_source: 'true', PKG_CONFIG_LIBDIR: dir, PKG_CONFIG_PATH: '' }, dir);
      expect(r.status).toBe(1);
      expect(r.stderr).toMatch(/cannot build the native addon: rdma-core's headers \(libibverbs-dev, librdmacm-dev\) missing/);
      expect(r.stderr).not.toMatch(/gyp/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

/** Event names a source file emits: `<emitter>.emit('name'`. */
function emitted(file: string, emitter: RegExp): string[] {
  const names = new Set<string>();
  const re = new RegExp(`${emitter.source}\\.emit\\('([^']+)'`, 'g');
  for (const m of read(file).matchAll(re)) names.add(m[1]);
  return [...names].sort();
}

describe('typed event maps', () => {
  test('TransportClientEvents and TransportServerEvents name exactly what the classes emit, and the docs name them', () => {
    expect([...TRANSPORT_CLIENT_EVENTS].sort()).toEqual(emitted('lib/transport/client.ts', /this/));
    // the server emits from its class (server.ts) and from its paths (server-session.ts)
    const serverEmits = [...emitted('lib/transport/server.ts', /this/), ...emitted('lib/transport/server-session.ts', /this\.session\.server/)];
    expect([...TRANSPORT_SERVER_EVENTS].sort()).toEqual([...new Set(serverEmits)].sort());
    const docs = read('docs/api.md') + read('docs/protocol.md');
    for (const e of [...TRANSPORT_CLIENT_EVENTS, ...TRANSPORT_SERVER_EVENTS]) expect([`\`${e}\``, `\`'${e}'\``].some((w) => docs.includes(w))).toBe(true);
  });

  test('CmIdEvents and CompletionQueueEvents name exactly what CmId and CompletionQueue emit', () => {
    expect([...CM_ID_EVENTS].sort()).toEqual(emitted('lib/verbs/cm.ts', /this\.#events/));
    expect([...COMPLETION_QUEUE_EVENTS].sort()).toEqual(emitted('lib/verbs/cq.ts', /this\.#events/));
  });

  test('AsyncEventType is every event type name native/context.cc gives', () => {
    const src = read('native/context.cc');
    const body = src.slice(src.indexOf('const char* AsyncEventName('));
    const names = [...body.slice(0, body.indexOf('\n}\n')).matchAll(/return "([A-Z_]+)";/g)].map((m) => m[1]);
    expect(names.length).toBeGreaterThan(15);
    expect([...new Set(names)].sort()).toEqual([...ASYNC_EVENT_TYPES].sort());
  });
});

test('RdmaErrorCode covers every errno name the addon gives (os.constants.errno names, or EXTRA_ERRNO_CODES)', () => {
  const names = [...read('native/util/errors.cc').matchAll(/E\((E[A-Z0-9]+)\)/g)].map((m) => m[1]);
  expect(names.length).toBeGreaterThan(40);
  const extra: readonly string[] = EXTRA_ERRNO_CODES;
  expect(names.filter((n) => !(n in os.constants.errno) && !extra.includes(n))).toEqual([]);
});
