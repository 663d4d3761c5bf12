// One jest config for both test tiers; NODE_RDMA_TIER picks which:
//   unit      host, no RDMA hardware needed    (dist/test/unit)
//   softroce  inside the SoftRoCE guest        (dist/test/softroce; scripts/test
//             boots it, see docs/testing.md)
//   isolated  inside a SoftRoCE guest of its own per file (dist/test/isolated)
//   hardware  on the host, on the capable device RDMA_TEST_DEVICE names
//             (dist/test/hardware; mlx5: ODP, dma-buf)
// Tests are TypeScript compiled by `tsc -p tsconfig.json` into dist/, and jest
// runs the compiled JS as is: no babel transform, which would cost seconds
// per file under the guest's emulated CPU.
'use strict';
const os = require('os');
const path = require('path');

const TIERS = {
  unit: { testTimeout: 10_000, verbose: false },
  // everything in the guest runs 5-10x slower (qemu TCG), and rxe peers
  // can hang: each test still gets a bound
  // verbose: per-test times in the CI log, to spot tests that sit in timeouts
  softroce: { testTimeout: 120_000, verbose: true },
  hardware: { testTimeout: 60_000, verbose: true },
  // tests that could crash the guest's kernel if what they check broke (a
  // hostile peer's SEND_WITH_INV): scripts/test runs each file in a guest of
  // its own, so a panic fails that file and nothing else
  isolated: { testTimeout: 300_000, verbose: true },
};
const tier = process.env.NODE_RDMA_TIER || 'unit';
if (!TIERS[tier]) {
  throw new Error(`NODE_RDMA_TIER must be one of ${Object.keys(TIERS).join(', ')} (got '${tier}')`);
}

/** @type {import('jest').Config} */
module.exports = {
  rootDir: path.resolve(__dirname, '..', 'dist', 'test', tier),
  testMatch: ['**/*.test.js'],
  testEnvironment: 'node',
  testTimeout: TIERS[tier].testTimeout,
  verbose: TIERS[tier].verbose,
  transform: {},
  watchman: false,
  // the repo may be read-only or shared; /tmp is always writable (a tmpfs in the guest)
  cacheDirectory: path.join(os.tmpdir(), 'jest-node-rdma'),
  reporters: ['default', [path.join(__dirname, 'reporter.js'), { tier }]],
};
