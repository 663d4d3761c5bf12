/**
 * The only loader of the addon. Everything native goes through `native`.
 * When there is no addon for this platform (ENOADDON), or rdma-core's
 * runtime libraries are missing (ENOLIB), loading throws an RdmaError that
 * tells the package's user what to install or run.
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

/** What a user installs for each failure (Debian/Ubuntu, then RHEL/Fedora). */
export const RUNTIME_PACKAGES = 'Debian/Ubuntu: apt-get install libibverbs1 librdmacm1 ibverbs-providers; RHEL/Fedora: dnf install libibverbs librdmacm';
export const BUILD_PACKAGES =
  'Debian/Ubuntu: apt-get install build-essential python3 pkg-config libibverbs-dev librdmacm-dev; RHEL/Fedora: dnf install gcc-c++ make python3 pkgconf-pkg-config rdma-core-devel';

/**
 * The addon file: NODE_RDMA_ADDON when set (a sanitizer build, say), else
 * what node-gyp-build picks: build/Release (an addon built from source on
 * this machine) before prebuilds/<platform>-<arch>/ (shipped in the package).
 */
function addonFile(): string {
  const env = process.env.NODE_RDMA_ADDON;
  if (env) return path.resolve(env);
  try {
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    return (require('node-gyp-build') as { resolve(dir: string): string }).resolve(ROOT);
  } catch (err) {
    throw new RdmaError(
      `node-rdma: no native addon for ${process.platform}-${process.arch} (Node ${process.versions.node}, Node-API ${process.versions.napi}): ` +
        `the package ships prebuilt ones for linux-x64 (glibc) only, and none was built when it was installed ` +
        `(installed with --ignore-scripts, or the build failed). Build it on this machine: npm rebuild node-rdma. ` +
        `That needs a C++ compiler, make, python3, pkg-config and rdma-core's headers (${BUILD_PACKAGES}). ` +
        `(${String((err as Error).message).split('\n')[0]})`,
      'ENOADDON',
    );
  }
}

/**
 * The RdmaError for an addon file that exists but does not load, or
 * undefined when the error is none of the known cases.
 */
export function explainLoadError(file: string, err: unknown): RdmaError | undefined {
  const msg = String((err as Error)?.message).split('\n')[0];
  if (/(IBVERBS|RDMACM)_[0-9.]+' not found/.test(msg)) {
    return new RdmaError(
      `node-rdma: this system's rdma-core is too old (${msg}): node-rdma needs rdma-core 35 or newer ` +
        `(libibverbs1 and librdmacm1 from Debian 12, Ubuntu 22.04, RHEL 9 or newer)`,
      'ENOLIB',
    );
  }
  if (/lib(ibverbs|rdmacm)\.so/.test(msg)) {
    return new RdmaError(`node-rdma: rdma-core's runtime libraries are missing (${msg}). Install them: ${RUNTIME_PACKAGES}`, 'ENOLIB');
  }
  if (/(GLIBC|GLIBCXX|CXXABI)_[0-9.]+' not found/.test(msg)) {
    return new RdmaError(
      `node-rdma: the prebuilt addon needs a newer C library than this system has (${msg}). ` +
        `Build one for this system: npm rebuild node-rdma --build-from-source (needs ${BUILD_PACKAGES})`,
      'ENOADDON',
    );
  }
  if ((err as NodeJS.ErrnoException)?.code === 'MODULE_NOT_FOUND' || /cannot open shared object file/.test(msg)) {
    const why = process.env.NODE_RDMA_ADDON ? ' (NODE_RDMA_ADDON names it)' : '';
    return new RdmaError(`node-rdma: the native addon ${file}${why} cannot be loaded (${msg}). Reinstall or rebuild it: npm rebuild node-rdma`, 'ENOADDON');
  }
  return undefined;
}

function load(): NativeAddon {
  const file = addonFile();
  try {
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    const addon = require(file) as NativeAddon;
    addon.setErrorClass(RdmaError);
    return addon;
  } catch (err) {
    throw explainLoadError(file, err) ?? err;
  }
}

let cached: NativeAddon | undefined;

/** The addon, loaded on first use. */
export function native(): NativeAddon {
  if (!cached) cached = load();
  return cached;
}
