#!/usr/bin/env node
// install.js: the package's "install" script (runs when node-rdma is
// installed as a dependency, and on `npm rebuild node-rdma`).
//
// 1. If the package ships a prebuilt addon for this platform
//    (prebuilds/<platform>-<arch>/, made by prebuildify --napi) and it loads,
//    there is nothing to do: no compiler is needed.
// 2. If it does not load because rdma-core's runtime libraries are missing,
//    building cannot help (a build links the same libraries): say which
//    packages to install and succeed, so that an image can install its
//    node_modules before it installs rdma-core. Loading then fails with
//    ENOLIB until they are there.
// 3. Otherwise (no prebuilt addon for this platform, one that needs a newer
//    glibc, or --build-from-source / npm_config_build_from_source=true):
//    build from native/ with node-gyp, after checking that the build tools
//    and rdma-core's headers are there; a missing prerequisite or a failed
//    build says what to install.
'use strict';
const { spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const ROOT = path.resolve(__dirname, '..');
const say = (line) => process.stderr.write(`node-rdma: ${line}\n`);

const DEV_PACKAGES =
  'Debian/Ubuntu: apt-get install build-essential python3 pkg-config libibverbs-dev librdmacm-dev; ' +
  'RHEL/Fedora: dnf install gcc-c++ make python3 pkgconf-pkg-config rdma-core-devel';
const RUNTIME_PACKAGES =
  'Debian/Ubuntu: apt-get install libibverbs1 librdmacm1 ibverbs-providers; ' +
  'RHEL/Fedora: dnf install libibverbs librdmacm';

function buildFromSource() {
  return process.env.npm_config_build_from_source === 'true' || process.argv.includes('--build-from-source');
}

/** The prebuilt addon node-gyp-build picks for this platform, or undefined. */
function prebuilt() {
  // only prebuilds/ (node-gyp-build reads this when it is loaded): an
  // earlier build/Release is not what the package ships
  process.env.PREBUILDS_ONLY = '1';
  try {
    return require('node-gyp-build').resolve(ROOT);
  } catch {
    return undefined;
  }
}

function tryPrebuilt() {
  const file = prebuilt();
  if (!file) {
    say(`no prebuilt addon for ${process.platform}-${process.arch} in this package: building it from source`);
    return false;
  }
  try {
    require(file);
    say(`the prebuilt addon ${path.relative(ROOT, file)} loads: nothing to build`);
    return true;
  } catch (err) {
    const msg = String(err && err.message).split('\n')[0];
    if (/lib(ibverbs|rdmacm)\.so/.test(msg)) {
      say(`rdma-core's runtime libraries are missing (${msg}).`);
      say(`The prebuilt addon is installed and will load once they are there: ${RUNTIME_PACKAGES}`);
      return true;
    }
    say(`the prebuilt addon ${path.relative(ROOT, file)} does not load here (${msg}): building it from source`);
    return false;
  }
}

function has(cmd, args) {
  const r = spawnSync(cmd, args, { stdio: 'ignore' });
  return r.status === 0;
}

function checkPrerequisites() {
  const missing = [];
  if (!has('pkg-config', ['--version'])) missing.push('pkg-config');
  else if (!has('pkg-config', ['--exists', 'libibverbs', 'librdmacm'])) missing.push("rdma-core's headers (libibverbs-dev, librdmacm-dev)");
  // CXX may carry flags ("g++ -m32"): its first word is the compiler
  if (!has((process.env.CXX || 'c++').trim().split(/\s+/)[0], ['--version'])) missing.push('a C++ compiler');
  if (!has('make', ['--version'])) missing.push('make');
  if (!has('python3', ['--version'])) missing.push('python3');
  return missing;
}

function build() {
  const missing = checkPrerequisites();
  if (missing.length) {
    say(`cannot build the native addon: ${missing.join(', ')} missing. Install them (${DEV_PACKAGES}), then run: npm rebuild node-rdma`);
    return 1;
  }
  // npm runs install scripts with its own node-gyp on PATH and names it in
  // npm_config_node_gyp; node-gyp is not a dependency of this package
  const gyp = process.env.npm_config_node_gyp;
  const [cmd, args] = gyp && fs.existsSync(gyp) ? [process.execPath, [gyp, 'rebuild']] : ['node-gyp', ['rebuild']];
  const r = spawnSync(cmd, args, { cwd: ROOT, stdio: 'inherit', env: { ...process.env, NODE_RDMA_SANITIZE: '' } });
  if (r.error) {
    say(`cannot run node-gyp (${r.error.message}): install it (npm install -g node-gyp) or use a current npm, which carries one`);
    return 1;
  }
  if (r.status !== 0) {
    say(`building the native addon failed (node-gyp exited ${r.status ?? r.signal}). It needs: ${DEV_PACKAGES}`);
    return r.status || 1;
  }
  return 0;
}

if (!buildFromSource() && tryPrebuilt()) process.exit(0);
process.exit(build());
