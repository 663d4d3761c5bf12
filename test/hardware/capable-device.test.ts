/**
 * The hardware tier: the success paths of what rxe lacks (on-demand paging,
 * dma-buf regions), on the device RDMA_TEST_DEVICE names (e.g. mlx5_0).
 * scripts/test runs this tier on the host, and only when RDMA_TEST_DEVICE is
 * set; its rxe counterparts (the clear capability errors) are in
 * test/softroce/verbs-lifetime.test.ts.
 */
import { Access, openDevice, Udmabuf } from '../../lib';

const HW = process.env.RDMA_TEST_DEVICE;
if (!HW) throw new Error('the hardware tier needs RDMA_TEST_DEVICE: a device with ODP and dma-buf MRs, e.g. mlx5_0');
const DEVICE: string = HW;

test(`on-demand paging on ${DEVICE}: register, advise, use`, async () => {
  const dev = openDevice(DEVICE);
  try {
    const pd = dev.allocPd();
    const mr = pd.registerOnDemand(new Uint8Array(1 << 20), Access.LOCAL_WRITE | Access.REMOTE_WRITE);
    mr.advise('PREFETCH_WRITE', { flush: true });
    expect(mr.kind).toBe('on-demand');
    if (dev.query().odpCaps.general.includes('SUPPORT_IMPLICIT')) {
      const imr = pd.registerImplicitOnDemand(Access.LOCAL_WRITE);
      expect(imr.kind).toBe('implicit-on-demand');
    }
  } finally {
    dev.close();
  }
});

test(`dma-buf regions on ${DEVICE}`, () => {
  const dev = openDevice(DEVICE);
  const buf = new Udmabuf(1 << 16);
  try {
    const mr = dev.allocPd().registerDmabuf({ fd: buf.fd, length: 1 << 16 });
    expect(mr.kind).toBe('dmabuf');
    expect(mr.lkey).toBeGreaterThan(0);
  } finally {
    buf.close();
    dev.close();
  }
});
