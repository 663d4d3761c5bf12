/**
 * Which rdma-core this process runs: the version is the third number of
 * libibverbs' file name (libibverbs.so.1.14.44.0 is rdma-core v44), read
 * from the process's own mappings, so it is the library actually loaded.
 */
import * as fs from 'fs';
import { native } from '../native';

/** The rdma-core version in a /proc/<pid>/maps text, or null when no libibverbs is mapped. */
export function rdmaCoreVersionFromMaps(maps: string): number | null {
  const m = /\/libibverbs\.so\.\d+\.\d+\.(\d+)\.\d+\s*$/m.exec(maps);
  return m ? Number(m[1]) : null;
}

/** The rdma-core version of the loaded libibverbs (e.g. 44), or null when it cannot be told. */
export function rdmaCoreVersion(): number | null {
  native(); // loads the addon, and with it libibverbs
  try {
    return rdmaCoreVersionFromMaps(fs.readFileSync('/proc/self/maps', 'utf8'));
  } catch {
    return null;
  }
}
