/**
 * CompletionQueue options are checked before anything reaches the addon:
 * busyPoll takes a boolean or 'adaptive', spinBudgetUs only with
 * 'adaptive' and within its range. A stand-in device (this host has no
 * RDMA device): a valid set of options gets past the checks and fails only
 * where the addon needs a real device context.
 */
import { CompletionQueue, CompletionQueueOptions } from '../../lib/verbs/cq';
import type { Device } from '../../lib/verbs/device';

const fakeDevice = { isSoftRoce: true, handle: {}, name: 'fake0' } as unknown as Device;

function make(o: CompletionQueueOptions): CompletionQueue {
  return new CompletionQueue(fakeDevice, o);
}

test.each<[string, CompletionQueueOptions, ErrorConstructor, RegExp]>([
  ['busyPoll as a string other than adaptive', { busyPoll: 'always' as never }, TypeError, /busyPoll must be a boolean or 'adaptive'/],
  ['busyPoll as a number', { busyPoll: 1 as never }, TypeError, /busyPoll must be a boolean or 'adaptive'/],
  ['spinBudgetUs without adaptive', { busyPoll: true, spinBudgetUs: 100 }, TypeError, /spinBudgetUs needs busyPoll: 'adaptive'/],
  ['spinBudgetUs with no busyPoll', { spinBudgetUs: 100 }, TypeError, /spinBudgetUs needs busyPoll: 'adaptive'/],
  ['spinBudgetUs of 0', { busyPoll: 'adaptive', spinBudgetUs: 0 }, RangeError, /spinBudgetUs must be an integer from 1 to 10000000, got 0/],
  ['spinBudgetUs over 10 s', { busyPoll: 'adaptive', spinBudgetUs: 10_000_001 }, RangeError, /spinBudgetUs/],
  ['spinBudgetUs fractional', { busyPoll: 'adaptive', spinBudgetUs: 1.5 }, RangeError, /spinBudgetUs/],
])('%s is refused', (_name, o, type, msg) => {
  let err: unknown;
  try {
    make(o);
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(type);
  expect((err as Error).message).toMatch(msg);
});

test.each<[string, CompletionQueueOptions]>([
  ['adaptive with a budget', { busyPoll: 'adaptive', spinBudgetUs: 250 }],
  ['adaptive alone', { busyPoll: 'adaptive' }],
  ['true', { busyPoll: true, spinUs: 5 }],
  ['false', { busyPoll: false }],
])('%s passes the option checks (fails only at the addon, which needs a real context)', (_name, o) => {
  let err: unknown;
  try {
    make(o);
  } catch (e) {
    err = e;
  }
  // the addon's check of its first argument: every option was accepted before it
  expect((err as Error).message).toBe('context must be a Context');
});
