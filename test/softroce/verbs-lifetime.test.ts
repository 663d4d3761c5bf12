/**
 * Lifetimes and capabilities on the real kernel: parents close their
 * children first, registered memory survives GC, an idle CQ does not keep
 * node alive, and the capabilities rxe lacks (on-demand paging, dma-buf
 * regions) fail with errors that name them. The same calls succeed on a
 * capable device in the hardware tier (test/hardware/capable-device.test.ts).
 */
import { spawnSync } from 'child_process';
import * as path from 'path';
import { setFlagsFromString } from 'v8';
import { runInNewContext } from 'vm';
import { Access, openDevice, RdmaError, Udmabuf } from '../../lib';
import { bytes, completions, loopback, region } from './helpers';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

const ROOT = path.resolve(__dirname, '..', '..', '..');

test('closing a PD with live MRs, MWs and QPs closes them first', () => {
  const dev = openDevice('rxe0');
  const pd = dev.allocPd();
  const cq = dev.createCompletionQueue();
  const mrs = [region(pd, 4096), region(pd, 8192)];
  const mw = pd.allocMemoryWindow(2);
  const qp = pd.createQueuePair({ sendCq: cq, recvCq: cq });
  pd.close();
  expect(mrs.every((m) => m.closed)).toBe(true);
  expect(mw.closed).toBe(true);
  expect(qp.closed).toBe(true);
  expect(pd.closed).toBe(true);
  expect(cq.closed).toBe(false);
  expect(() => mrs[0].sge()).toThrow(expect.objectContaining({ code: 'ECLOSED' }));
  pd.close(); // idempotent
  dev.close();
  expect(cq.closed).toBe(true);
});

test('closing a CQ closes the QPs using it first; the device closes everything', () => {
  const dev = openDevice('rxe0');
  const pd = dev.allocPd();
  const cq = dev.createCompletionQueue();
  const qp = pd.createQueuePair({ sendCq: cq, recvCq: cq });
  cq.close();
  expect(qp.closed).toBe(true);
  const mr = region(pd, 4096);
  dev[Symbol.dispose]();
  expect(mr.closed && pd.closed && dev.closed).toBe(true);
});

test('closing a region closes the windows bound onto it first', async () => {
  const l = loopback('rxe0');
  try {
    const mr = region(l.pd, 8192, Access.LOCAL_WRITE | Access.REMOTE_WRITE | Access.MW_BIND);
    const mw = l.pd.allocMemoryWindow(2);
    const c = completions(l.cqB, 1);
    l.b.postSend([{ wrId: 1, opcode: 'BIND_MW', bind: { mw, mr, access: Access.REMOTE_WRITE } }]);
    expect((await c)[0].ok).toBe(true);
    mr.close(); // without the window closing first, ibv_dereg_mr refuses
    expect(mw.closed).toBe(true);
    expect(mr.closed).toBe(true);
  } finally {
    l.close();
  }
});

test('registered memory survives forced GCs while the NIC writes into it', async () => {
  const l = loopback('rxe0');
  try {
    // the only references to the registered memory are the MRs themselves
    const dst = l.pd.registerMemory(new Uint8Array(1 << 20).subarray(4096), Access.LOCAL_WRITE | Access.REMOTE_WRITE);
    const dst2 = l.pd.registerMemory(l.pd.allocate(1 << 20), Access.LOCAL_WRITE | Access.REMOTE_WRITE);
    const src = region(l.pd, 1 << 16);
    bytes(src).fill(0x77);
    for (let round = 0; round < 5; round++) {
      for (let i = 0; i < 50; i++) new Uint8Array(1 << 20); // churn
      gc();
      const c = completions(l.cqA, 2);
      l.a.postSend([
        { wrId: 1, opcode: 'RDMA_WRITE', sge: [src.sge()], remoteAddr: dst.addr + round * 65536, rkey: dst.rkey },
        { wrId: 2, opcode: 'RDMA_WRITE', sge: [src.sge()], remoteAddr: dst2.addr + round * 65536, rkey: dst2.rkey },
      ]);
      expect((await c).every((w) => w.ok)).toBe(true);
      gc();
    }
    const view = dst.buffer as Uint8Array;
    expect(view.subarray(0, 5 * 65536).every((x) => x === 0x77)).toBe(true);
    expect(Buffer.from(dst2.buffer as ArrayBuffer, 0, 5 * 65536).every((x) => x === 0x77)).toBe(true);
  } finally {
    l.close();
  }
});

test('objects dropped without close() are reclaimed by finalizers without a crash', () => {
  // run in a child so the finalizers really run (and a crash would show)
  const script = `
    const { openDevice } = require(${JSON.stringify(path.join(ROOT, 'dist', 'lib'))});
    const { setFlagsFromString } = require('v8'); setFlagsFromString('--expose-gc');
    const gc = require('vm').runInNewContext('gc');
    for (let i = 0; i < 20; i++) {
      const dev = openDevice('rxe0'); const pd = dev.allocPd(); const cq = dev.createCompletionQueue();
      pd.registerMemory(pd.allocate(4096)); pd.createQueuePair({ sendCq: cq, recvCq: cq });
    }
    gc(); gc();
    setTimeout(() => { gc(); console.log('ok'); }, 100);`;
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 60_000 });
  expect(r.stderr).toBe('');
  expect(r.status).toBe(0);
  expect(r.stdout.trim()).toBe('ok');
});

test('an idle CQ (and device, PD, MR, QP, CM id) does not keep node alive', () => {
  const script = `
    const { openDevice, CmId } = require(${JSON.stringify(path.join(ROOT, 'dist', 'lib'))});
    const dev = openDevice('rxe0'); const pd = dev.allocPd();
    const cq = dev.createCompletionQueue(); cq.on('completions', () => {});
    dev.on('event', () => {});
    pd.registerMemory(pd.allocate(4096)); pd.createQueuePair({ sendCq: cq, recvCq: cq });
    CmId.create();
    console.log('set up');`;
  const t0 = Date.now();
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 60_000 });
  expect(r.error).toBeUndefined(); // not killed by the timeout
  expect(r.status).toBe(0);
  expect(r.stdout.trim()).toBe('set up');
  expect(Date.now() - t0).toBeLessThan(60_000);
});

describe('capabilities rxe lacks fail clearly', () => {
  test('implicit on-demand paging: rxe has explicit ODP only; implicit names the missing capability', () => {
    const dev = openDevice('rxe0');
    try {
      const pd = dev.allocPd();
      expect(dev.query().odpCaps.general).not.toContain('SUPPORT_IMPLICIT');
      const err = (() => { try { pd.registerImplicitOnDemand(); } catch (e) { return e; } })() as RdmaError;
      expect(err).toBeInstanceOf(RdmaError);
      expect(err).toMatchObject({ code: 'EOPNOTSUPP', errno: 95, syscall: 'ibv_reg_mr' });
      expect(err.message).toMatch(/rxe0 does not support implicit on-demand paging.*IBV_ODP_SUPPORT_IMPLICIT/);
    } finally {
      dev.close();
    }
  });

  test('dma-buf: a udmabuf registers nowhere on rxe; the error says the device does not support dma-buf regions', () => {
    const dev = openDevice('rxe0');
    const buf = new Udmabuf(1 << 16);
    try {
      new Uint8Array(buf.buffer).fill(3);
      expect(new Uint8Array(buf.buffer)[65535]).toBe(3);
      const pd = dev.allocPd();
      let err: RdmaError | undefined;
      try {
        pd.registerDmabuf({ fd: buf.fd, length: 1 << 16 });
      } catch (e) {
        err = e as RdmaError;
      }
      expect(err).toMatchObject({ code: 'EOPNOTSUPP', errno: 95, syscall: 'ibv_reg_dmabuf_mr' });
      expect(err!.message).toMatch(/rxe0 does not support dma-buf memory regions/);
      expect(() => pd.registerDmabuf({ fd: -1, length: 1 })).toThrow(RangeError);
    } finally {
      buf.close();
      dev.close();
    }
  });
});
