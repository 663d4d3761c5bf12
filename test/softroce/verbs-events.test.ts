/**
 * Async events: taking eth1 down and up again in the guest reaches rxe1's
 * Device as PORT_ERR and PORT_ACTIVE events, an address added and removed
 * as GID_CHANGE; completions reach JS in batches; a CQ in busy-poll mode
 * delivers completions without the completion channel.
 */
import { execFileSync } from 'child_process';
import { AsyncEvent, AsyncEventType, openDevice } from '../../lib';
import { bytes, completions, connectedPair, region } from './helpers';

function nextEvent(dev: ReturnType<typeof openDevice>, type: AsyncEventType, ms = 30_000): Promise<AsyncEvent> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      dev.off(type, on);
      reject(new Error(`no ${type} event within ${ms} ms`));
    }, ms);
    const on = (ev: AsyncEvent) => {
      clearTimeout(timer);
      dev.off(type, on);
      resolve(ev);
    };
    dev.on(type, on);
  });
}

test('eth1 down/up: rxe1 reports PORT_ERR then PORT_ACTIVE, and the port state follows', async () => {
  const dev = openDevice('rxe1');
  const all: AsyncEvent[] = [];
  dev.on('event', (ev) => all.push(ev));
  try {
    const down = nextEvent(dev, 'PORT_ERR');
    execFileSync('ip', ['link', 'set', 'eth1', 'down']);
    expect(await down).toEqual({ type: 'PORT_ERR', port: 1 });
    expect(dev.queryPort(1).state).toBe('DOWN');
    const up = nextEvent(dev, 'PORT_ACTIVE');
    execFileSync('ip', ['link', 'set', 'eth1', 'up']);
    expect(await up).toEqual({ type: 'PORT_ACTIVE', port: 1 });
    expect(dev.queryPort(1).state).toBe('ACTIVE');
    expect(all.map((e) => e.type)).toEqual(expect.arrayContaining(['PORT_ERR', 'PORT_ACTIVE']));
  } finally {
    execFileSync('ip', ['link', 'set', 'eth1', 'up']);
    // leave rxe1 as later tests expect it: its IPv4 GID back in the table
    for (let i = 0; i < 100 && !dev.gids().some((g) => g.gid === '::ffff:10.99.2.1'); i++) {
      await new Promise((r) => setTimeout(r, 100));
    }
    dev.close();
  }
});

test('an address added to eth1 and removed again: rxe1 reports GID_CHANGE and the GID table follows', async () => {
  const dev = openDevice('rxe1');
  try {
    const added = nextEvent(dev, 'GID_CHANGE');
    execFileSync('ip', ['addr', 'add', '10.99.2.77/24', 'dev', 'eth1']);
    expect(await added).toMatchObject({ type: 'GID_CHANGE', port: 1 });
    for (let i = 0; i < 50 && !dev.gids().some((g) => g.gid === '::ffff:10.99.2.77'); i++) await new Promise((r) => setTimeout(r, 100));
    expect(dev.gids().find((g) => g.gid === '::ffff:10.99.2.77')).toMatchObject({ type: 'RoCEv2', netdev: 'eth1' });
    const removed = nextEvent(dev, 'GID_CHANGE');
    execFileSync('ip', ['addr', 'del', '10.99.2.77/24', 'dev', 'eth1']);
    expect(await removed).toMatchObject({ type: 'GID_CHANGE', port: 1 });
    for (let i = 0; i < 50 && dev.gids().some((g) => g.gid === '::ffff:10.99.2.77'); i++) await new Promise((r) => setTimeout(r, 100));
    expect(dev.gids().some((g) => g.gid === '::ffff:10.99.2.77')).toBe(false);
  } finally {
    try {
      execFileSync('ip', ['addr', 'del', '10.99.2.77/24', 'dev', 'eth1'], { stdio: 'ignore' });
    } catch {
      // already gone
    }
    dev.close();
  }
});

test('completions reach JS in batches: one listener call per batch of up to `batch` completions', async () => {
  const dev = openDevice('rxe0');
  try {
    const pd = dev.allocPd();
    const src = region(pd, 64);
    const dst = region(pd, 64 * 8);
    for (const batch of [64, 8]) {
      const cq = dev.createCompletionQueue({ cqe: 128, batch });
      const peer = dev.createCompletionQueue();
      const { a } = connectedPair(pd, cq, peer);
      const calls: number[] = [];
      cq.on('completions', (wcs) => calls.push(wcs.length));
      const all = completions(cq, 32);
      a.postSend(Array.from({ length: 32 }, (_, i) => ({ wrId: i, opcode: 'RDMA_WRITE' as const, sge: [src.sge(0, 8)], remoteAddr: dst.addr + (i % 64) * 8, rkey: dst.rkey })));
      // keep the event loop away until rxe has completed all 32 (its work
      // runs in kernel threads): the channel then wakes the loop once
      for (const until = Date.now() + 500; Date.now() < until;) { /* busy */ }
      const wcs = await all;
      expect(wcs.map((w) => w.wrId)).toEqual(Array.from({ length: 32 }, (_, i) => i));
      expect(calls).toEqual(batch === 64 ? [32] : [8, 8, 8, 8]);
      cq.close();
      peer.close();
    }
  } finally {
    dev.close();
  }
});

test('busy-poll CQ: completions arrive through polling from the event loop', async () => {
  const dev = openDevice('rxe0');
  try {
    const pd = dev.allocPd();
    const cq = dev.createCompletionQueue({ busyPoll: true });
    const { a } = connectedPair(pd, cq, cq);
    const src = region(pd, 64);
    const dst = region(pd, 64);
    bytes(src).fill(9, 0, 8);
    const c = completions(cq, 1);
    a.postSend([{ wrId: 1, opcode: 'RDMA_WRITE', sge: [src.sge(0, 8)], remoteAddr: dst.addr, rkey: dst.rkey }]);
    expect((await c)[0]).toMatchObject({ ok: true, wrId: 1 });
    expect(cq.busyPoll).toBe(true);
    expect(bytes(dst)[7]).toBe(9);
  } finally {
    dev.close();
  }
});
