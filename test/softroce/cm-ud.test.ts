/**
 * UD over rdma_cm (docs/hardening.md, L7): a UDP id's connect() resolves
 * with the passive side's UD address (rdma_ud_param: QP number, Q_Key,
 * address handle attributes), the passive side's accept() settles (it gets
 * no ESTABLISHED), and a datagram sent to that address arrives.
 */
import { CmId, Device, openDevice } from '../../lib';
import { bytes, completions, region } from './helpers';

const GRH = 40;

function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

test('L7: UD over rdma_cm: connect() yields the peer UD address, accept() settles, a datagram reaches the server QP', async () => {
  const port = 25500 + (process.pid % 400);
  const listener = CmId.create('UDP');
  const client = CmId.create('UDP');
  let server: CmId | undefined;
  let dev: Device | undefined;
  try {
    listener.listen('10.99.1.1', port);
    await client.resolveAddr('10.99.1.1', port);
    await client.resolveRoute();
    dev = openDevice(client.info().device!);
    const pd = dev.allocPd();
    const cqA = dev.createCompletionQueue({ cqe: 64 });
    const cqB = dev.createCompletionQueue({ cqe: 64 });
    const a = client.createQueuePair(pd, { type: 'UD', sendCq: cqA, recvCq: cqA, maxSendWr: 8, maxRecvWr: 8 });
    const dst = region(pd, GRH + 64);
    const received = completions(cqB, 1);
    received.catch(() => undefined);  // awaited below; a failure before that must not go unhandled
    const accepted = new Promise<void>((resolve, reject) => listener.once('connection', (id: CmId) => {
      server = id;
      try {
        const b = id.createQueuePair(pd, { type: 'UD', sendCq: cqB, recvCq: cqB, maxSendWr: 8, maxRecvWr: 8 });
        b.postRecv([{ wrId: 9, sge: [dst.sge()] }]);
        id.accept().then(resolve, reject);
      } catch (err) {
        reject(err as Error);
      }
    }));
    const [conn] = await within(Promise.all([client.connect(), accepted]), 20_000, 'connect/accept');
    const b = server!.queuePair!;
    expect(conn.ud).toEqual({
      qpNum: b.qpNum, qkey: b.query().qkey,
      ahAttr: expect.objectContaining({ portNum: 1, grh: expect.objectContaining({ dgid: expect.stringMatching(/^::ffff:10\.99\.1\.1$/) }) }),
    });
    const ah = pd.createAddressHandle(conn.ud!.ahAttr);
    const src = region(pd, 64);
    bytes(src).write('a datagram over rdma_cm');
    const sent = completions(cqA, 1);
    a.postSend([{ wrId: 1, opcode: 'SEND', sge: [src.sge(0, 23)], ud: { ah, remoteQpn: conn.ud!.qpNum, remoteQkey: conn.ud!.qkey } }]);
    const [[s], [r]] = await Promise.all([sent, received]);
    expect(s).toMatchObject({ wrId: 1, ok: true });
    expect(r).toMatchObject({ wrId: 9, ok: true, opcodeName: 'RECV', byteLen: GRH + 23, srcQp: a.qpNum });
    expect(bytes(dst).subarray(GRH, GRH + 23).toString()).toBe('a datagram over rdma_cm');
  } finally {
    client.close();
    server?.close();
    listener.close();
    dev?.close();
  }
});
