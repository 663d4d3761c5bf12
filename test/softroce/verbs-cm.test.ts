/**
 * rdma_cm on rxe0 (10.99.1.1), client and server in one process: connect and
 * accept with private data both ways, reject with private data, data over
 * the connection, disconnect and time-wait exit events on both sides.
 */
import { CmId, CompletionQueue, ProtectionDomain, RdmaError } from '../../lib';
import { bytes, completions, region } from './helpers';

const HOST = '10.99.1.1';
let port = 18000 + (process.pid % 1000) * 10;

interface Side { id: CmId; pd: ProtectionDomain; cq: CompletionQueue }

function setupQp(id: CmId): Side {
  const pd = id.device.allocPd();
  const cq = id.device.createCompletionQueue({ cqe: 64 });
  id.createQueuePair(pd, { sendCq: cq, recvCq: cq, maxSendWr: 16, maxRecvWr: 16 });
  return { id, pd, cq };
}

async function clientTo(p: number): Promise<Side> {
  const id = CmId.create();
  await id.resolveAddr(HOST, p);
  await id.resolveRoute();
  return setupQp(id);
}

test('connect/accept carry private data both ways; a SEND crosses; disconnect reaches both sides, then time-wait exit', async () => {
  const p = port++;
  const listener = CmId.create();
  let server: Side | undefined;
  const serverDisconnected = new Promise<void>((resolve) => {
    listener.on('connection', (req, privateData) => {
      expect(privateData.subarray(0, 5).toString()).toBe('hello');
      server = setupQp(req);
      const rx = region(server.pd, 64);
      server.id.queuePair!.postRecv([{ wrId: 1, sge: [rx.sge()] }]);
      (server as Side & { rx?: typeof rx }).rx = rx;
      req.on('disconnected', () => resolve());
      void req.accept({ privateData: Buffer.from('welcome') });
    });
  });
  listener.listen(HOST, p);
  const client = await clientTo(p);
  try {
    const { privateData } = await client.id.connect({ privateData: Buffer.from('hello') });
    expect(privateData.subarray(0, 7).toString()).toBe('welcome');
    expect(client.id.info()).toMatchObject({ device: 'rxe0', peer: { host: HOST, port: p } });

    const got = completions(server!.cq, 1);
    const sent = completions(client.cq, 1);
    const tx = region(client.pd, 64);
    bytes(tx).write('over rdma_cm');
    client.id.queuePair!.postSend([{ wrId: 2, opcode: 'SEND', sge: [tx.sge(0, 12)] }]);
    const [[r]] = await Promise.all([got, sent]);
    expect(r).toMatchObject({ ok: true, byteLen: 12 });
    const rx = (server as Side & { rx: ReturnType<typeof region> }).rx;
    expect(bytes(rx).subarray(0, 12).toString()).toBe('over rdma_cm');

    const clientDisconnected = new Promise<void>((resolve) => client.id.once('disconnected', resolve));
    // then both QPs leave the CM's time-wait (about half a second on rxe)
    const timewaitExit = (id: CmId) => new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('no timewait-exit within 20 s')), 20_000);
      id.once('timewait-exit', () => {
        clearTimeout(t);
        resolve();
      });
    });
    const exits = [timewaitExit(client.id), timewaitExit(server!.id)];
    client.id.disconnect();
    await Promise.all([clientDisconnected, serverDisconnected]);
    await Promise.all(exits);
  } finally {
    client.id.close();
    server?.id.close();
    listener.close();
  }
});

test('reject carries private data to the client, which gets ECONNREFUSED', async () => {
  const p = port++;
  const listener = CmId.create();
  listener.on('connection', (req) => {
    req.reject(Buffer.from('go away'));
    req.close();
  });
  listener.listen(HOST, p);
  const client = await clientTo(p);
  try {
    const err = await client.id.connect({ privateData: Buffer.from('hi') }).then(() => undefined, (e) => e);
    expect(err).toBeInstanceOf(RdmaError);
    expect(err).toMatchObject({ code: 'ECONNREFUSED', syscall: 'rdma_connect' });
    expect(err.privateData.subarray(0, 7).toString()).toBe('go away');
  } finally {
    client.id.close();
    listener.close();
  }
});

test('resolving an address no device serves fails with an RdmaError', async () => {
  const id = CmId.create();
  try {
    // no route: the kernel refuses at once (thrown) or later (ADDR_ERROR)
    const err = await (async () => id.resolveAddr('10.99.77.1', 1, { timeoutMs: 500 }))().then(() => undefined, (e) => e);
    expect(err).toBeInstanceOf(RdmaError);
    expect(typeof err.code).toBe('string');
    expect(['rdma_resolve_addr']).toContain(err.syscall);
  } finally {
    id.close();
  }
});

test('bad arguments: TypeError/RangeError naming the argument', () => {
  const id = CmId.create();
  try {
    expect(() => id.resolveAddr(42 as unknown as string, 1)).toThrow(/host must be a string/);
    expect(() => id.resolveAddr(HOST, 70000)).toThrow(/port/);
    expect(() => id.listen('not-an-ip', 1)).toThrow(expect.objectContaining({ name: 'TypeError', message: expect.stringMatching(/address literal/) }));
    expect(() => id.device).toThrow(/no device yet/);
  } finally {
    id.close();
  }
  expect(() => id.info()).toThrow(expect.objectContaining({ code: 'ECLOSED' }));
  expect(() => CmId.create('RAW' as 'TCP')).toThrow(TypeError);
});
