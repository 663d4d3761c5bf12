/**
 * UD queue pairs on rxe0: address handles, SENDs to a QP number with a
 * Q_Key, the 40-byte GRH in front of every received datagram, and datagrams
 * with the wrong Q_Key dropped by the receiver.
 */
import { AddressHandle, CompletionQueue, Device, openDevice, ProtectionDomain, QueuePair, WcFlags } from '../../lib';
import { bytes, completions, ipv4GidIndex, region } from './helpers';

const QKEY = 0x11111111;
const GRH = 40;

let dev: Device;
let pd: ProtectionDomain;
let cqA: CompletionQueue;
let cqB: CompletionQueue;
let a: QueuePair;
let b: QueuePair;
let ah: AddressHandle;

function readyUd(qp: QueuePair): void {
  qp.modify({ qpState: 'INIT', pkeyIndex: 0, portNum: 1, qkey: QKEY });
  qp.modify({ qpState: 'RTR' });
  qp.modify({ qpState: 'RTS', sqPsn: 0 });
}

beforeEach(() => {
  dev = openDevice('rxe0');
  pd = dev.allocPd();
  cqA = dev.createCompletionQueue({ cqe: 64 });
  cqB = dev.createCompletionQueue({ cqe: 64 });
  a = pd.createQueuePair({ type: 'UD', sendCq: cqA, recvCq: cqA, maxSendWr: 16, maxRecvWr: 16 });
  b = pd.createQueuePair({ type: 'UD', sendCq: cqB, recvCq: cqB, maxSendWr: 16, maxRecvWr: 16 });
  readyUd(a);
  readyUd(b);
  const { index, gid } = ipv4GidIndex(dev);
  ah = pd.createAddressHandle({ portNum: 1, grh: { dgid: gid, sgidIndex: index, hopLimit: 64 } });
});
afterEach(() => dev.close());

test('a UD SEND reaches the QP number it names, behind a 40-byte GRH, with the sender QP number', async () => {
  expect(a.query()).toMatchObject({ qpState: 'RTS', qkey: QKEY, type: 4 });
  const src = region(pd, 256);
  const dst = region(pd, GRH + 256);
  bytes(src).write('a datagram over rxe');
  const [ca, cb] = [completions(cqA, 1), completions(cqB, 1)];
  b.postRecv([{ wrId: 5, sge: [dst.sge()] }]);
  a.postSend([{ wrId: 6, opcode: 'SEND', sge: [src.sge(0, 19)], ud: { ah, remoteQpn: b.qpNum, remoteQkey: QKEY } }]);
  const [[s], [r]] = await Promise.all([ca, cb]);
  expect(s).toMatchObject({ wrId: 6, ok: true, opcodeName: 'SEND' });
  expect(r).toMatchObject({ wrId: 5, ok: true, opcodeName: 'RECV', byteLen: GRH + 19, srcQp: a.qpNum });
  expect(r.wcFlags & WcFlags.GRH).toBe(WcFlags.GRH);
  expect(bytes(dst).subarray(GRH, GRH + 19).toString()).toBe('a datagram over rxe');
});

test('SEND_WITH_IMM over UD delivers the immediate', async () => {
  const dst = region(pd, GRH + 64);
  const [ca, cb] = [completions(cqA, 1), completions(cqB, 1)];
  b.postRecv([{ wrId: 1, sge: [dst.sge()] }]);
  a.postSend([{ wrId: 2, opcode: 'SEND_WITH_IMM', imm: 0xc0ffee, ud: { ah, remoteQpn: b.qpNum, remoteQkey: QKEY } }]);
  const [[s], [r]] = await Promise.all([ca, cb]);
  expect(s.ok).toBe(true);
  expect(r).toMatchObject({ ok: true, imm: 0xc0ffee, byteLen: GRH, srcQp: a.qpNum });
});

test('a datagram with the wrong Q_Key is dropped by the receiver; the next right one arrives', async () => {
  const src = region(pd, 64);
  const dst = region(pd, GRH + 64);
  bytes(src).write('wrong-key');
  bytes(src).write('right-key', 32);
  b.postRecv([{ wrId: 1, sge: [dst.sge()] }]);
  const sent = completions(cqA, 2);
  const got = completions(cqB, 1);
  a.postSend([{ wrId: 1, opcode: 'SEND', sge: [src.sge(0, 9)], ud: { ah, remoteQpn: b.qpNum, remoteQkey: QKEY + 1 } }]);
  // nothing may arrive for the bad datagram
  await new Promise((res) => setTimeout(res, 500));
  a.postSend([{ wrId: 2, opcode: 'SEND', sge: [src.sge(32, 9)], ud: { ah, remoteQpn: b.qpNum, remoteQkey: QKEY } }]);
  const [s, [r]] = await Promise.all([sent, got]);
  // UD sends complete locally either way: the sender never learns of the drop
  expect(s.map((w) => [w.wrId, w.ok])).toEqual([[1, true], [2, true]]);
  expect(r).toMatchObject({ wrId: 1, ok: true, byteLen: GRH + 9 });
  expect(bytes(dst).subarray(GRH, GRH + 9).toString()).toBe('right-key');
});

test('address handles: checked attributes, PD close closes them, a closed one is refused', () => {
  expect(() => pd.createAddressHandle({ portNum: 1, grh: { dgid: 'not a gid' } })).toThrow(/grh.dgid must be an IPv6-format GID/);
  expect(() => pd.createAddressHandle({ portNum: 1, sl: 16 })).toThrow(RangeError);
  expect(() => pd.createAddressHandle({ portNum: 1, bogus: 1 } as never)).toThrow(/no attribute 'bogus'/);
  const src = region(pd, 64);
  expect(() => a.postSend([{ opcode: 'SEND', sge: [src.sge(0, 4)], ud: { ah: {} as never, remoteQpn: b.qpNum, remoteQkey: QKEY } }]))
    .toThrow(/ud.ah must be an AddressHandle/);
  expect(() => a.postSend([{ opcode: 'SEND', sge: [src.sge(0, 4)], ud: { ah, remoteQpn: 1 << 24, remoteQkey: QKEY } }])).toThrow(RangeError);
  const other = pd.createAddressHandle({ portNum: 1, grh: { dgid: ah.attr.grh!.dgid, sgidIndex: ah.attr.grh!.sgidIndex } });
  other.close();
  expect(() => a.postSend([{ opcode: 'SEND', sge: [src.sge(0, 4)], ud: { ah: other, remoteQpn: b.qpNum, remoteQkey: QKEY } }])).toThrow(/closed/);
  pd.close();
  expect(ah.closed).toBe(true);
  expect(a.closed).toBe(true);
});
