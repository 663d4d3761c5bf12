/**
 * The hardware tier: the success paths of what rxe lacks (on-demand paging,
 * dma-buf regions), on the device RDMA_TEST_DEVICE names (e.g. mlx5_0).
 * scripts/test runs this tier on the host, and only when RDMA_TEST_DEVICE is
 * set; its rxe counterparts (the clear capability errors) are in
 * test/softroce/verbs-lifetime.test.ts.
 */
import { Access, CompletionQueue, Device, openDevice, ProtectionDomain, QueuePair, Udmabuf } from '../../lib';
import { completions } from '../softroce/helpers';

const HW = process.env.RDMA_TEST_DEVICE;
if (!HW) throw new Error('the hardware tier needs RDMA_TEST_DEVICE: a device with ODP and dma-buf MRs, e.g. mlx5_0');
const DEVICE: string = HW;

/** Two RC QPs on port 1 of `dev`, connected to each other: RoCE through a RoCE v2 GID, InfiniBand through the port's LID. */
function pair(dev: Device, pd: ProtectionDomain): { a: QueuePair; b: QueuePair; cq: CompletionQueue } {
  const cq = dev.createCompletionQueue({ cqe: 256 });
  const a = pd.createQueuePair({ sendCq: cq, recvCq: cq });
  const b = pd.createQueuePair({ sendCq: cq, recvCq: cq });
  const port = dev.queryPort(1);
  if (port.linkLayer === 'Ethernet') {
    const gids = dev.gids().filter((g) => g.port === 1 && g.type === 'RoCEv2');
    const g = gids.find((x) => x.gid.startsWith('::ffff:')) ?? gids[0];
    if (!g) throw new Error(`${dev.name} port 1 has no RoCE v2 GID`);
    a.connectTo({ qpNum: b.qpNum, gid: g.gid }, { sgidIndex: g.index });
    b.connectTo({ qpNum: a.qpNum, gid: g.gid }, { sgidIndex: g.index });
  } else {
    a.connectTo({ qpNum: b.qpNum, lid: port.lid });
    b.connectTo({ qpNum: a.qpNum, lid: port.lid });
  }
  return { a, b, cq };
}

test(`on-demand paging on ${DEVICE}: register, advise, RDMA into and out of the region`, async () => {
  const dev = openDevice(DEVICE);
  try {
    const pd = dev.allocPd();
    const { a, cq } = pair(dev, pd);
    const odpMem = new Uint8Array(1 << 20);
    const mr = pd.registerOnDemand(odpMem, Access.LOCAL_WRITE | Access.REMOTE_WRITE | Access.REMOTE_READ);
    expect(mr.kind).toBe('on-demand');
    mr.advise('PREFETCH');
    mr.advise('PREFETCH_WRITE', { flush: true });
    mr.advise('PREFETCH_NO_FAULT', { ranges: [{ addr: mr.addr, length: 4096 }] });
    // a pinned source writes into the ODP region (the NIC faults its pages in) ...
    const src = pd.registerMemory(pd.allocate(8192), Access.LOCAL_WRITE);
    Buffer.from(src.buffer as ArrayBuffer).fill(0x5a, 0, 4096);
    const w = completions(cq, 1);
    a.postSend([{ wrId: 1, opcode: 'RDMA_WRITE', sge: [src.sge(0, 4096)], remoteAddr: mr.addr + 65536, rkey: mr.rkey }]);
    expect((await w)[0]).toMatchObject({ ok: true, wrId: 1 });
    expect(odpMem.subarray(65536, 65536 + 4096).every((x) => x === 0x5a)).toBe(true);
    // ... and reads back from it into the source's second page
    odpMem.fill(0xa5, 131072, 131072 + 4096);
    const r = completions(cq, 1);
    a.postSend([{ wrId: 2, opcode: 'RDMA_READ', sge: [src.sge(4096, 4096)], remoteAddr: mr.addr + 131072, rkey: mr.rkey }]);
    expect((await r)[0]).toMatchObject({ ok: true, wrId: 2 });
    expect(Buffer.from(src.buffer as ArrayBuffer).subarray(4096, 8192).every((x) => x === 0xa5)).toBe(true);
    if (dev.query().odpCaps.general.includes('SUPPORT_IMPLICIT')) {
      // the implicit region's lkey covers any address of the process: send
      // from plain memory whose address a pinned registration tells us
      const imr = pd.registerImplicitOnDemand(Access.LOCAL_WRITE);
      expect(imr.kind).toBe('implicit-on-demand');
      const plain = pd.allocate(4096);
      const where = pd.registerMemory(plain, Access.LOCAL_WRITE);
      Buffer.from(plain).fill(0x3c);
      imr.advise('PREFETCH', { ranges: [{ addr: where.addr, length: 4096 }] });
      const iw = completions(cq, 1);
      a.postSend([{ wrId: 3, opcode: 'RDMA_WRITE', sge: [{ addr: where.addr, length: 4096, lkey: imr.lkey }], remoteAddr: mr.addr + 196608, rkey: mr.rkey }]);
      expect((await iw)[0]).toMatchObject({ ok: true, wrId: 3 });
      expect(odpMem.subarray(196608, 196608 + 4096).every((x) => x === 0x3c)).toBe(true);
    }
  } finally {
    dev.close();
  }
});

test(`dma-buf regions on ${DEVICE}: register a udmabuf, RDMA WRITE into it`, async () => {
  const dev = openDevice(DEVICE);
  const buf = new Udmabuf(1 << 16);
  try {
    const pd = dev.allocPd();
    const mr = pd.registerDmabuf({ fd: buf.fd, length: 1 << 16 }, Access.LOCAL_WRITE | Access.REMOTE_WRITE);
    expect(mr.kind).toBe('dmabuf');
    expect(mr.lkey).toBeGreaterThan(0);
    // the udmabuf's pages are this process's memfd pages: the data shows in its mapping
    const { a, cq } = pair(dev, pd);
    const src = pd.registerMemory(pd.allocate(4096), Access.LOCAL_WRITE);
    Buffer.from(src.buffer as ArrayBuffer).fill(0x77);
    const w = completions(cq, 1);
    a.postSend([{ wrId: 1, opcode: 'RDMA_WRITE', sge: [src.sge()], remoteAddr: mr.addr + 8192, rkey: mr.rkey }]);
    expect((await w)[0]).toMatchObject({ ok: true, wrId: 1 });
    expect(new Uint8Array(buf.buffer, 8192, 4096).every((x) => x === 0x77)).toBe(true);
  } finally {
    buf.close();
    dev.close();
  }
});
