/**
 * A small option parser for the node-rdma subcommands: long options with a
 * value (`--size 4K` or `--size=4K`), flags, repeatable options, and clear
 * usage errors (UsageError -> exit status 2).
 */

export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

export type OptionType = 'string' | 'int' | 'number' | 'size' | 'flag' | 'address';

export interface OptionSpec {
  type: OptionType;
  /** may be given more than once (the result is an array) */
  multiple?: boolean;
  /** one-letter alias, without the dash */
  short?: string;
  /** inclusive bounds for int/number/size */
  min?: number;
  max?: number;
}

export interface Address {
  host: string;
  port: number;
}

export type Parsed = Record<string, string | number | boolean | Address | Array<string | number | Address> | undefined>;

/** '4096', '4K', '4KiB', '1M', '2g' -> bytes. */
export function parseSize(v: string, name = 'size'): number {
  const m = /^(\d+)\s*([kmg])?(i?b)?$/i.exec(v.trim());
  if (!m) throw new UsageError(`--${name} must be a number of bytes (optionally with K, M or G), got '${v}'`);
  const mult = m[2] ? { k: 1024, m: 1024 ** 2, g: 1024 ** 3 }[m[2].toLowerCase() as 'k' | 'm' | 'g'] : 1;
  const n = Number(m[1]) * mult;
  if (!Number.isSafeInteger(n)) throw new UsageError(`--${name} is too large: '${v}'`);
  return n;
}

/** 'host:port', '[v6addr]:port' -> { host, port }. */
export function parseAddress(v: string, name = 'address'): Address {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(v) ?? /^([^:\s]+):(\d+)$/.exec(v);
  if (!m) throw new UsageError(`--${name} must be host:port, got '${v}'`);
  const port = Number(m[2]);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new UsageError(`--${name}: port must be 1..65535, got '${m[2]}'`);
  return { host: m[1], port };
}

/** Durations: '10' (seconds), '10s', '500ms', '2m'. Returns milliseconds. */
export function parseDuration(v: string, name = 'duration'): number {
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m)?$/.exec(v.trim());
  if (!m) throw new UsageError(`--${name} must be a duration like 10, 10s, 500ms or 2m, got '${v}'`);
  const n = Number(m[1]);
  return Math.round(m[2] === 'ms' ? n : m[2] === 'm' ? n * 60_000 : n * 1000);
}

function convert(name: string, spec: OptionSpec, raw: string): string | number | Address {
  let v: string | number | Address;
  switch (spec.type) {
    case 'string':
      return raw;
    case 'address':
      return parseAddress(raw, name);
    case 'size':
      v = parseSize(raw, name);
      break;
    case 'int':
      if (!/^-?\d+$/.test(raw.trim())) throw new UsageError(`--${name} must be an integer, got '${raw}'`);
      v = Number(raw);
      break;
    default: {
      const n = Number(raw);
      if (raw.trim() === '' || !Number.isFinite(n)) throw new UsageError(`--${name} must be a number, got '${raw}'`);
      v = n;
    }
  }
  if (spec.min !== undefined && v < spec.min) throw new UsageError(`--${name} must be at least ${spec.min}, got '${raw}'`);
  if (spec.max !== undefined && v > spec.max) throw new UsageError(`--${name} must be at most ${spec.max}, got '${raw}'`);
  return v;
}

/**
 * Parses argv against `specs` (keys are long option names). Flags are true
 * when present. `help` (-h/--help) is always known. Positional arguments
 * are refused: every subcommand takes options only.
 */
export function parseArgs(argv: string[], specs: Record<string, OptionSpec>): Parsed {
  const all: Record<string, OptionSpec> = { help: { type: 'flag', short: 'h' }, ...specs };
  const shorts = new Map<string, string>();
  for (const [k, s] of Object.entries(all)) if (s.short) shorts.set(s.short, k);
  const out: Parsed = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    let name: string | undefined;
    let inline: string | undefined;
    if (a.startsWith('--') && a.length > 2) {
      const eq = a.indexOf('=');
      name = eq < 0 ? a.slice(2) : a.slice(2, eq);
      inline = eq < 0 ? undefined : a.slice(eq + 1);
    } else if (/^-[A-Za-z]$/.test(a)) {
      name = shorts.get(a[1]);
      if (!name) throw new UsageError(`unknown option '${a}'`);
    } else {
      throw new UsageError(`unexpected argument '${a}'`);
    }
    const spec = all[name];
    if (!spec) throw new UsageError(`unknown option '--${name}'`);
    if (spec.type === 'flag') {
      if (inline !== undefined) throw new UsageError(`--${name} takes no value`);
      out[name] = true;
      continue;
    }
    let raw = inline;
    if (raw === undefined) {
      raw = argv[++i];
      if (raw === undefined || (raw.startsWith('-') && raw.length > 1 && !/^-\d/.test(raw))) throw new UsageError(`--${name} needs a value`);
    }
    const v = convert(name, spec, raw);
    if (spec.multiple) ((out[name] as Array<string | number | Address> | undefined) ?? (out[name] = [])).push(v);
    else if (out[name] !== undefined) throw new UsageError(`--${name} given twice`);
    else out[name] = v;
  }
  return out;
}
