/**
 * Writes and reads of every size class from 0 to the largest IO a chunk
 * holds (maxIoSize), with the bytes checked both ways, in strict and in
 * relaxed mode, with plain Buffers (copied through the staging pool) and
 * with zero-copy buffers from allocBuffer(); and the largest headers both
 * ways together with the largest IO.
 */
import { transport } from '../../lib';

const { TransportServer, connect } = transport;
const HOST = '10.99.1.1';
let port = 22000 + (process.pid % 500) * 4;

function pattern(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

test.each([true, false])('sizes 0 .. maxIoSize round-trip byte for byte (strict=%s)', async (strict) => {
  const p = port++;
  const store = new Map<string, Buffer>();
  const server = new TransportServer({
    queueDepth: 8, chunkSize: 16384, maxHeaderSize: 256, strict,
    handler: (req) => {
      const key = req.header.toString();
      if (req.kind === 'write') {
        store.set(key, Buffer.from(req.data));
        return { status: 0 };
      }
      const v = store.get(key)!;
      v.copy(req.data);
      return { length: v.length };
    },
  });
  server.listen([{ host: HOST, port: p }]);
  const client = await connect({ paths: [{ host: HOST, port: p }] });
  try {
    const max = client.maxIoSize;
    const sizes = [0, 1, 2, 63, 4095, 4096, 4097, 8192, max - 1, max];
    for (const [i, n] of sizes.entries()) {
      const data = pattern(n, i);
      const zc = client.allocBuffer(Math.max(n, 1));
      data.copy(zc);
      for (const [how, src] of [['plain', data], ['zero-copy', zc.subarray(0, n)]] as const) {
        const key = Buffer.from(`${how}-${n}`);
        expect((await client.write(key, src)).status).toBe(0);
        expect(store.get(key.toString())!.equals(data)).toBe(true);
        const into = how === 'plain' ? Buffer.alloc(max) : client.allocBuffer(max);
        into.fill(0xee);
        const r = await client.read(key, into);
        expect(r).toMatchObject({ status: 0, length: n });
        expect(into.subarray(0, n).equals(data)).toBe(true);
        if (n < max) expect(into[n]).toBe(0xee); // nothing past the data
      }
    }
  } finally {
    await client.close();
    await server.close();
  }
});

test.each([true, false])('the largest headers both ways with the largest IO (strict=%s)', async (strict) => {
  const p = port++;
  const store = new Map<string, Buffer>();
  const server = new TransportServer({
    queueDepth: 4, chunkSize: 16384, maxHeaderSize: 256, strict,
    handler: (req) => {
      const key = req.header.toString('hex');
      // the response header: the request header reversed, as long as allowed
      const header = Buffer.from(req.header).reverse();
      if (req.kind === 'write') {
        store.set(key, Buffer.from(req.data));
        return { header };
      }
      const v = store.get(key)!;
      v.copy(req.data);
      return { length: v.length, header };
    },
  });
  server.listen([{ host: HOST, port: p }]);
  const client = await connect({ paths: [{ host: HOST, port: p }] });
  try {
    const max = client.maxIoSize;
    expect(max).toBe(16384 - 256 - 32);
    const header = pattern(256, 7);
    const data = pattern(max, 9);
    const w = await client.write(header, data);
    expect(w.status).toBe(0);
    expect(w.header.equals(Buffer.from(header).reverse())).toBe(true);
    const into = Buffer.alloc(max);
    const r = await client.read(header, into);
    expect(r).toMatchObject({ status: 0, length: max });
    expect(r.header.equals(Buffer.from(header).reverse())).toBe(true);
    expect(into.equals(data)).toBe(true);
    // one byte more of either is refused before anything is posted
    await expect(client.write(pattern(257, 1), Buffer.alloc(1))).rejects.toThrow(/EMSGSIZE: header of 257 bytes exceeds maxHeaderSize 256/);
    await expect(client.read(header, Buffer.alloc(max + 1))).rejects.toThrow(/EMSGSIZE/);
  } finally {
    await client.close();
    await server.close();
  }
});
