/**
 * The transport's constructors check their options on the host, before any
 * device, CM id or memory is touched: a wrong option is a TypeError or
 * RangeError that names it.
 */
import { transport } from '../../lib';

const { TransportServer, TransportClient } = transport;
const handler = () => ({ status: 0 });
const path = { host: '10.0.0.1', port: 7470 };

test.each([
  ['no options', undefined, TypeError, /options must be an object/],
  ['no handler', {}, TypeError, /handler must be a function/],
  ['a queue depth of 0', { handler, queueDepth: 0 }, RangeError, /queueDepth/],
  ['a chunk too small for a header', { handler, chunkSize: 4096, maxHeaderSize: 8192 }, RangeError, /maxHeaderSize|chunkSize/],
  ['strict as a string', { handler, strict: 'yes' }, TypeError, /strict must be a boolean/],
  ['busyPoll as a number', { handler, busyPoll: 1 }, TypeError, /busyPoll must be a boolean/],
  ['a log that is not a function', { handler, log: 'stderr' }, TypeError, /log must be a function/],
  ['maxSessions 0', { handler, maxSessions: 0 }, RangeError, /maxSessions must be an integer from 1/],
  ['a negative sessionLingerMs', { handler, sessionLingerMs: -1 }, RangeError, /sessionLingerMs must be an integer from 0/],
  ['infoTimeoutMs 0', { handler, infoTimeoutMs: 0 }, RangeError, /infoTimeoutMs must be an integer >= 1/],
  ['an unknown invalidation', { handler, invalidation: 'sometimes' }, RangeError, /invalidation must be 'auto', 'local-inv' or 'dealloc'/],
  ['a heartbeat interval of 0', { handler, hbIntervalMs: 0 }, RangeError, /hbIntervalMs/],
  ['windowType 3', { handler, windowType: 3 }, RangeError, /windowType must be 'auto', 1 or 2/],
  ['an authorize that is not a function', { handler, authorize: true }, TypeError, /authorize must be a function/],
  ['authorizeTimeoutMs 0', { handler, authorizeTimeoutMs: 0 }, RangeError, /authorizeTimeoutMs/],
])('TransportServer refuses %s', (_what, opts, kind, message) => {
  expect(() => new TransportServer(opts as never)).toThrow(kind);
  expect(() => new TransportServer(opts as never)).toThrow(message);
});

test('listen() checks its addresses before creating a listener', () => {
  const s = new TransportServer({ handler });
  expect(() => s.listen([])).toThrow(/addresses must be a non-empty array/);
  expect(() => s.listen('10.0.0.1:7470' as never)).toThrow(TypeError);
  expect(() => s.listen([{ host: 1, port: 7470 }] as never)).toThrow(/every address needs a host string/);
  expect(() => s.listen([{ host: '10.0.0.1', port: 70000 }])).toThrow(/port must be an integer from 0 to 65535/);
});

test.each([
  ['no options', undefined, TypeError, /options must be an object/],
  ['no paths', { paths: [] }, RangeError, /paths must list 1\.\./],
  ['a path without a host', { paths: [{ port: 1 }] }, TypeError, /every path needs a host string/],
  ['a port beyond 65535', { paths: [{ host: '10.0.0.1', port: 65536 }] }, RangeError, /port must be an integer from 0 to 65535/],
  ['a source that is not a string', { paths: [{ ...path, source: 1 }] }, TypeError, /source must be a string/],
  ['a bad session id', { paths: [path], sessionId: 'not-a-uuid' }, TypeError, /sessionId must be a lowercase non-nil UUID/],
  ['fewer path slots than paths', { paths: [path, path], pathSlots: 1 }, RangeError, /pathSlots must be an integer in 2\.\./],
  ['maxQueueDepth 0', { paths: [path], maxQueueDepth: 0 }, RangeError, /maxQueueDepth must be an integer from 1/],
  ['connectTimeoutMs 0', { paths: [path], connectTimeoutMs: 0 }, RangeError, /connectTimeoutMs must be an integer from 1/],
  ['busyPoll as a string', { paths: [path], busyPoll: 'yes' }, TypeError, /busyPoll must be a boolean/],
  ['requireStrict as a number', { paths: [path], requireStrict: 1 }, TypeError, /requireStrict must be a boolean/],
  ['a log that is not a function', { paths: [path], log: 1 }, TypeError, /log must be a function/],
  ['an unknown policy', { paths: [path], policy: 'fastest' }, RangeError, /unknown policy fastest/],
  ['a negative reconnectWaitMs', { paths: [path], reconnectWaitMs: -1 }, RangeError, /reconnectWaitMs must be a number >= 0/],
  ['maxAttempts below -1', { paths: [path], reconnect: { maxAttempts: -2 } }, RangeError, /maxAttempts must be an integer >= -1/],
  ['windowType "2"', { paths: [path], windowType: '2' }, RangeError, /windowType must be 'auto', 1 or 2/],
  ['credentials as a string', { paths: [path], credentials: 'secret' }, TypeError, /credentials must be a Uint8Array/],
  ['24 bytes of credentials', { paths: [path], credentials: Buffer.alloc(24) }, RangeError, /credentials must be at most 23 bytes/],
])('TransportClient refuses %s', (_what, opts, kind, message) => {
  expect(() => new TransportClient(opts as never)).toThrow(kind);
  expect(() => new TransportClient(opts as never)).toThrow(message);
});

test('connect() with bad options rejects (it never throws synchronously)', async () => {
  const p = transport.connect({ paths: [] });
  await expect(p).rejects.toThrow(/paths must list/);
});
