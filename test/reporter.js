// Jest reporter for node-rdma's test tiers. At the end of a run it prints,
// alone on a line,
//   <tier>: N passed, N failed, N skipped
// then the full name of every skipped test (by convention the name carries
// the reason, e.g. "ODP registration on mlx5 [skipped: RDMA_TEST_DEVICE not
// set]") and of every failed test, and the 5 slowest tests of at least
// NODE_RDMA_SLOW_MS (5 s). A test file that could not run at all
// (syntax error, failing import, crash) counts as one failure under its path,
// because jest itself counts no test for it.
// With NODE_RDMA_SUMMARY=<file> it also writes those facts as JSON, which is
// how scripts/test checks the counts of the run inside the guest.
// It also fails a run whose process does not exit after the tests (see
// watchExit below).
'use strict';
const fs = require('fs');
const path = require('path');

// tests at least this slow are listed (the 5 slowest) after the counts
const SLOW_MS = Number(process.env.NODE_RDMA_SLOW_MS || 5_000);

class NodeRdmaReporter {
  constructor(globalConfig, options = {}) {
    this.rootDir = globalConfig.rootDir;
    this.tier = options.tier || process.env.NODE_RDMA_TIER || 'tests';
  }

  // If the process dies mid-run (a native crash takes jest down with it,
  // before any summary), the last test started is the prime suspect:
  // record it next to the summary as <summary>.running, so scripts/test can
  // name it. Removed when the run completes.
  onTestFileStart(test) {
    this.#running(path.relative(this.rootDir, test.path));
  }

  onTestCaseStart(test, info) {
    this.#running(`${path.relative(this.rootDir, test.path)} > ${info.fullName}`);
  }

  #running(what) {
    const file = process.env.NODE_RDMA_SUMMARY;
    if (file) fs.writeFileSync(`${file}.running`, what + '\n');
  }

  onRunComplete(_contexts, results) {
    if (process.env.NODE_RDMA_SUMMARY) fs.rmSync(`${process.env.NODE_RDMA_SUMMARY}.running`, { force: true });
    const skipped = [];
    const failed = [];
    const slow = [];
    let passed = 0;
    for (const file of results.testResults) {
      const rel = path.relative(this.rootDir, file.testFilePath);
      if (file.testExecError || (file.failureMessage && file.testResults.length === 0)) {
        const msg = file.testExecError ? file.testExecError.message : file.failureMessage;
        failed.push(`${rel} (test file failed to run: ${firstLine(msg)})`);
      }
      for (const t of file.testResults) {
        if (t.duration >= SLOW_MS) slow.push({ ms: t.duration, name: `${rel} > ${t.fullName}` });
        if (t.status === 'passed') passed++;
        else if (t.status === 'failed') failed.push(`${rel} > ${t.fullName}`);
        else skipped.push(t.fullName); // 'pending' (skip), 'todo', 'skipped', 'disabled'
      }
    }
    const summary = {
      tier: this.tier,
      passed,
      failed: failed.length,
      skipped: skipped.length,
      total: passed + failed.length + skipped.length,
      testFiles: results.numTotalTestSuites,
      success: failed.length === 0 && results.numRuntimeErrorTestSuites === 0,
      line: `${this.tier}: ${passed} passed, ${failed.length} failed, ${skipped.length} skipped`,
      skippedTests: skipped,
      failedTests: failed,
      durationMs: Date.now() - results.startTime,
    };
    writeSummary(summary);

    // On stderr like jest's own report, so the two keep their order, and
    // after it: jest runs its summary reporter after every custom one, so we
    // print on the next turn of the event loop (or at exit, if jest exits
    // first, e.g. with --forceExit).
    const out = [
      summary.line,
      ...skipped.map((n) => `  skipped: ${n}`),
      ...failed.map((n) => `  FAILED: ${n}`),
      // the slowest tests: where the tier's wall time goes
      ...slow
        .sort((a, b) => b.ms - a.ms)
        .slice(0, 5)
        .map((t) => `  slow: ${(t.ms / 1000).toFixed(1)} s ${t.name}`),
    ];
    let printed = false;
    const print = () => {
      if (printed) return;
      printed = true;
      fs.writeSync(2, `\n${out.join('\n')}\n`);
    };
    setImmediate(print);
    process.once('exit', print);
    watchExit(summary, print);
  }
}

// After the run nothing may keep the process alive (DESIGN.md: idle objects
// must not hold the event loop). If something does, jest waits forever and,
// in the guest, only vm-run's global timeout would end it, without a result.
// So after a grace period (NODE_RDMA_EXIT_GRACE_MS, default 30 s) we say so,
// record it as a failure and exit 1. The timer is unref'd: it never keeps the
// process alive itself, and only fires when something else does.
function watchExit(summary, print) {
  const grace = Number(process.env.NODE_RDMA_EXIT_GRACE_MS || 30_000);
  setTimeout(() => {
    print();
    const what = 'process did not exit after the tests: an open device/CQ/QP/CM id or timer keeps the event loop alive (try --detectOpenHandles)';
    fs.writeSync(2, `${summary.tier}: FAILED: ${what}; exiting after ${grace / 1000} s\n`);
    summary.success = false;
    summary.failed += 1;
    summary.total += 1;
    summary.failedTests.push(what);
    summary.line = `${summary.tier}: ${summary.passed} passed, ${summary.failed} failed, ${summary.skipped} skipped`;
    writeSummary(summary);
    process.exit(1);
  }, grace).unref();
}

function writeSummary(summary) {
  const file = process.env.NODE_RDMA_SUMMARY;
  if (!file) return;
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, JSON.stringify(summary, null, 2) + '\n');
}

function firstLine(s) {
  const l = String(s || '').split('\n').find((x) => x.trim() !== '');
  return (l || 'unknown error').trim().slice(0, 200);
}

module.exports = NodeRdmaReporter;
