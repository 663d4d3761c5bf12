/**
 * Reading sysfs (and /proc/cpuinfo) below an injectable root, so that the
 * whole P2P layer runs unchanged on a fixture tree in tests.
 *
 * Paths handed around are absolute host paths below `sysfsRoot`; `rel()`
 * turns them into sysfs-relative ones ("devices/pci0000:00/...") for output.
 */
import * as fs from 'fs';
import * as path from 'path';

export interface P2pOptions {
  /** Where sysfs is mounted (default '/sys'). */
  sysfsRoot?: string;
  /** The cpuinfo file the host-bridge rule reads (default '/proc/cpuinfo'). */
  cpuinfoPath?: string;
  /**
   * Host bridges the kernel lets P2P traffic cross (default: the table of
   * Linux 6.12's drivers/pci/p2pdma.c, see HOST_BRIDGE_WHITELIST).
   */
  hostBridgeWhitelist?: readonly HostBridgeWhitelistEntry[];
}

export interface HostBridgeWhitelistEntry {
  vendor: number;
  /** A device ID, or 'any'. */
  device: number | 'any';
  /** Both devices must hang off this same host bridge (REQ_SAME_HOST_BRIDGE). */
  requireSameHostBridge: boolean;
  /** What the entry is (for messages). */
  name: string;
}

export const BDF_RE = /^([0-9a-f]{4,}):([0-9a-f]{2}):([0-9a-f]{2})\.([0-7])$/;
export const HOST_BRIDGE_RE = /^pci([0-9a-f]{4,}):([0-9a-f]{2})$/;

/** A value read from a sysfs attribute, or why it could not be. */
export type Read<T> = { ok: true; value: T } | { ok: false; problem: string };

export class Sysfs {
  readonly root: string;
  readonly cpuinfoPath: string;

  constructor(opts: P2pOptions = {}) {
    if (opts.sysfsRoot !== undefined && typeof opts.sysfsRoot !== 'string')
      throw new TypeError('options.sysfsRoot must be a string');
    if (opts.cpuinfoPath !== undefined && typeof opts.cpuinfoPath !== 'string')
      throw new TypeError('options.cpuinfoPath must be a string');
    this.root = path.resolve(opts.sysfsRoot ?? '/sys');
    this.cpuinfoPath = opts.cpuinfoPath ?? '/proc/cpuinfo';
  }

  /** Absolute path of a sysfs-relative one. */
  path(...parts: string[]): string {
    return path.join(this.root, ...parts);
  }

  /** sysfs-relative form of an absolute path below the root. */
  rel(abs: string): string {
    const r = path.relative(this.root, abs);
    return r.startsWith('..') ? abs : r;
  }

  exists(abs: string): boolean {
    try {
      fs.lstatSync(abs);
      return true;
    } catch {
      return false;
    }
  }

  isDir(abs: string): boolean {
    try {
      return fs.statSync(abs).isDirectory();
    } catch {
      return false;
    }
  }

  /** Entries of a directory ([] when it does not exist), sorted. */
  list(abs: string): string[] {
    try {
      return fs.readdirSync(abs).sort();
    } catch (err) {
      if (isMissing(err)) return [];
      throw err;
    }
  }

  /** Resolved target of a path (symlinks followed), or null when dangling/missing. */
  realpath(abs: string): string | null {
    try {
      return fs.realpathSync(abs);
    } catch {
      return null;
    }
  }

  /** The trimmed text of an attribute. */
  readText(abs: string): Read<string> {
    try {
      return { ok: true, value: fs.readFileSync(abs, 'latin1').trim() };
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      const what = this.rel(abs);
      if (code === 'ENOENT') return { ok: false, problem: `${what} is missing` };
      if (code === 'EACCES' || code === 'EPERM') return { ok: false, problem: `${what} is not readable (${code})` };
      return { ok: false, problem: `${what} cannot be read (${code ?? String(err)})` };
    }
  }

  /** The raw bytes of a binary attribute (PCI config space), or null. */
  readBytes(abs: string): Buffer | null {
    try {
      return fs.readFileSync(abs);
    } catch {
      return null;
    }
  }

  /** A non-negative decimal integer attribute (p2pmem size/available). */
  readUInt(abs: string): Read<number> {
    const t = this.readText(abs);
    if (!t.ok) return t;
    if (!/^\d+$/.test(t.value) || !Number.isSafeInteger(Number(t.value)))
      return { ok: false, problem: `${this.rel(abs)} is not a non-negative integer: '${clip(t.value)}'` };
    return { ok: true, value: Number(t.value) };
  }

  /** A hexadecimal attribute like '0x1b36' (vendor, device, class). */
  readHex(abs: string): Read<string> {
    const t = this.readText(abs);
    if (!t.ok) return t;
    if (!/^0x[0-9a-fA-F]+$/.test(t.value))
      return { ok: false, problem: `${this.rel(abs)} is not a hex number: '${clip(t.value)}'` };
    return { ok: true, value: t.value.toLowerCase() };
  }

  /** The name a symlink points to (driver, physfn), or null. */
  linkName(abs: string): string | null {
    try {
      return path.basename(fs.readlinkSync(abs));
    } catch {
      return null;
    }
  }
}

export function isMissing(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException)?.code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}

function clip(s: string): string {
  return s.length > 40 ? `${s.slice(0, 40)}...` : s;
}
