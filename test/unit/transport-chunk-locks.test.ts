/**
 * The server's per-chunk lock (lib/transport/chunk-locks.ts): one task at a
 * time per chunk, in submission order, whether tasks finish synchronously,
 * asynchronously, throw or reject; a synchronous task frees its chunk at once.
 */
import fc from 'fast-check';
import { ChunkLocks } from '../../lib/transport/chunk-locks';

const flush = () => new Promise((r) => setImmediate(r));

test('a synchronous task takes and frees its chunk in the same call', () => {
  const errors: unknown[] = [];
  const l = new ChunkLocks(2, (_c, e) => errors.push(e));
  let ran = 0;
  l.serialize(0, () => {
    ran++;
  });
  expect(ran).toBe(1);
  expect(l.acquire(0)).toBe(true); // free again at once
  l.release(0, undefined);
  expect(errors).toEqual([]);
});

test('an asynchronous task holds its chunk until it settles; queued tasks then run in order; other chunks are free', async () => {
  const l = new ChunkLocks(2, () => undefined);
  const order: string[] = [];
  let finish!: () => void;
  l.serialize(0, () => new Promise<void>((r) => {
    order.push('a');
    finish = r;
  }));
  l.serialize(0, () => {
    order.push('b');
  });
  l.serialize(1, () => {
    order.push('other');
  });
  expect(l.acquire(0)).toBe(false);
  l.serialize(0, () => {
    order.push('c');
  });
  expect(order).toEqual(['a', 'other']);
  finish();
  await flush();
  expect(order).toEqual(['a', 'other', 'b', 'c']);
  expect(l.acquire(0)).toBe(true);
});

test('a task that throws or rejects is reported and the chunk goes on', async () => {
  const errors: Array<[number, string]> = [];
  const l = new ChunkLocks(1, (c, e) => errors.push([c, (e as Error).message]));
  const order: string[] = [];
  l.serialize(0, () => {
    throw new Error('sync');
  });
  l.serialize(0, () => Promise.reject(new Error('async')));
  l.serialize(0, () => {
    order.push('after');
  });
  await flush();
  expect(errors).toEqual([[0, 'sync'], [0, 'async']]);
  expect(order).toEqual(['after']);
  expect(l.acquire(0)).toBe(true);
});

test('random tasks on random chunks: never two at once on a chunk, each chunk in submission order, every task runs once', async () => {
  type Kind = 'sync' | 'async' | 'throw' | 'reject';
  const taskArb = fc.record({ c: fc.integer({ min: 0, max: 2 }), kind: fc.constantFrom<Kind>('sync', 'async', 'throw', 'reject'), viaAcquire: fc.boolean() });
  await fc.assert(fc.asyncProperty(fc.array(taskArb, { maxLength: 40 }), async (tasks) => {
    const l = new ChunkLocks(3, () => undefined);
    const running = [0, 0, 0];
    const started: number[][] = [[], [], []];
    tasks.forEach((t, i) => {
      const fn = (): void | Promise<void> => {
        expect(running[t.c]).toBe(0);
        running[t.c]++;
        started[t.c].push(i);
        if (t.kind === 'sync') {
          running[t.c]--;
          return;
        }
        if (t.kind === 'throw') {
          running[t.c]--;
          throw new Error('x');
        }
        return new Promise<void>((resolve, reject) => setImmediate(() => {
          running[t.c]--;
          if (t.kind === 'reject') reject(new Error('y'));
          else resolve();
        }));
      };
      // the request path's shape: acquire a free chunk and run now, else queue
      if (t.viaAcquire && l.acquire(t.c)) {
        let r: void | Promise<void> = undefined;
        try {
          r = fn();
        } catch (err) {
          l.failed(t.c, err);
        }
        l.release(t.c, r);
      } else {
        l.serialize(t.c, fn);
      }
    });
    for (let i = 0; i < tasks.length + 2; i++) await flush();
    for (let c = 0; c < 3; c++) {
      expect(started[c]).toEqual(tasks.map((t, i) => (t.c === c ? i : -1)).filter((i) => i >= 0));
      expect(l.acquire(c)).toBe(true);
    }
  }), { numRuns: 200 });
});
