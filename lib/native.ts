/**
 * The only loader of the addon. Everything native goes through `native`.
 * When the addon is not built, or rdma-core's libraries are missing, loading
 * throws an error that says exactly what to run.
 */
import * as path from 'path';
import { RdmaError } from './errors';

export interface NativeDeviceInfo {
  name: string;
  guid: string;
  nodeType: string;
  transport: string;
  ibdevPath: string;
}

export interface NativeAsyncEvent {
  type: string;
  port?: number;
  qpNum?: number;
  cqHandle?: number;
  srqHandle?: number;
}

export interface NativeGidEntry {
  port: number;
  index: number;
  gid: string;
  type: 'IB' | 'RoCEv1' | 'RoCEv2' | 'unknown';
  netdev: string | null;
}

export interface NativeContext {
  readonly name: string;
  readonly closed: boolean;
  close(): void;
  queryDevice(): Record<string, unknown>;
  queryPort(port: number): Record<string, unknown>;
  queryGidTable(): NativeGidEntry[];
  watchEvents(cb: (ev: NativeAsyncEvent) => void): void;
  unwatchEvents(): void;
}

export interface NativeAddon {
  setErrorClass(ctor: Function): void;
  getDevices(): NativeDeviceInfo[];
  Context: new (name: string) => NativeContext;
  // p2pmem (native/p2pmem.cc, wrapped by lib/p2p/memory.ts)
  p2pmemPageSize: number;
  p2pmemMap(path: string, length: number): ArrayBuffer;
  p2pmemUnmap(arrayBuffer: ArrayBuffer): void;
  p2pmemIsMapped(arrayBuffer: ArrayBuffer): boolean;
  tryRegisterP2pmem(deviceName: string, arrayBuffer: ArrayBuffer, offset?: number, length?: number): boolean;
  // further classes are typed where they are wrapped (lib/verbs/*)
  [name: string]: any;
}

const ROOT = path.resolve(__dirname, '..', '..');

function candidates(): string[] {
  const env = process.env.NODE_RDMA_ADDON;
  if (env) return [path.resolve(env)];
  return [path.join(ROOT, 'build', 'Release', 'node_rdma.node'), path.join(ROOT, 'build', 'Debug', 'node_rdma.node')];
}

function load(): NativeAddon {
  const tried = candidates();
  let lastError: unknown;
  for (const file of tried) {
    try {
      // eslint-disable-next-line @typescript-eslint/no-var-requires
      const addon = require(file) as NativeAddon;
      addon.setErrorClass(RdmaError);
      return addon;
    } catch (err) {
      lastError = err;
      const msg = String((err as Error).message);
      if (/lib(ibverbs|rdmacm)\.so/.test(msg)) {
        throw new RdmaError(
          `node-rdma: rdma-core's libraries are missing (${msg}). ` +
            `Install them: sudo apt-get install rdma-core libibverbs1 librdmacm1 ` +
            `(or run: bash scripts/setup)`,
          'ENOLIB',
        );
      }
      if ((err as NodeJS.ErrnoException).code !== 'MODULE_NOT_FOUND') throw err;
    }
  }
  throw new RdmaError(
    `node-rdma: the native addon is not built (looked for ${tried.join(', ')}). ` +
      `Build it: npm run build (needs libibverbs-dev and librdmacm-dev: bash scripts/setup does everything)` +
      (lastError ? `; last error: ${(lastError as Error).message.split('\n')[0]}` : ''),
    'ENOADDON',
  );
}

let cached: NativeAddon | undefined;

/** The addon, loaded on first use. */
export function native(): NativeAddon {
  if (!cached) cached = load();
  return cached;
}
