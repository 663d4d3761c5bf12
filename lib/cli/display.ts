/**
 * Output helpers for the CLI: number formatting, tables, and the live
 * workload display. On a terminal the display redraws a block in place;
 * otherwise (a pipe, a CI log, the SoftRoCE guest's serial port) it prints
 * one line per interval, and events (path down, failover, recovery) as
 * lines of their own in both cases.
 */
import type { IntervalStats } from './workload';

export interface CliIo {
  stdout: (s: string) => void;
  stderr: (s: string) => void;
}

export const defaultIo: CliIo = {
  stdout: (s) => void process.stdout.write(s),
  stderr: (s) => void process.stderr.write(s),
};

export function fmtUs(us: number): string {
  if (!Number.isFinite(us)) return '-';
  if (us >= 1e6) return `${(us / 1e6).toFixed(2)} s`;
  if (us >= 1000) return `${(us / 1000).toFixed(us >= 1e4 ? 1 : 2)} ms`;
  return `${us.toFixed(us >= 100 ? 0 : 1)} us`;
}

export function fmtCount(n: number): string {
  if (!Number.isFinite(n)) return '-';
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)}M`;
  if (n >= 1e4) return `${(n / 1e3).toFixed(1)}k`;
  return n >= 100 ? n.toFixed(0) : n.toFixed(n >= 10 ? 1 : 2).replace(/\.?0+$/, '') || '0';
}

export function fmtBytes(n: number): string {
  if (n >= 1024 ** 3) return `${+(n / 1024 ** 3).toFixed(2)} GiB`;
  if (n >= 1024 ** 2) return `${+(n / 1024 ** 2).toFixed(2)} MiB`;
  if (n >= 1024) return `${+(n / 1024).toFixed(2)} KiB`;
  return `${n} B`;
}

/** Rows of cells -> aligned text (first row = header), two-space indent. */
export function table(rows: string[][], indent = '  '): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  const right = rows[0].map((_, i) => rows.slice(1).every((r) => /^[-+]?[\d.,]+\s*(%|x|[kM]|us|ms|s|MB\/s|B|KiB|MiB)?$|^-$/.test(r[i] ?? '')));
  return rows
    .map((r) => indent + r.map((c, i) => {
      const cell = c ?? '';
      if (i === r.length - 1 && !right[i]) return cell;
      return right[i] ? cell.padStart(widths[i]) : cell.padEnd(widths[i]);
    }).join('  ').trimEnd())
    .join('\n') + '\n';
}

const STATE_LABEL: Record<string, string> = {
  connected: 'up', connecting: 'connecting', reconnecting: 'DOWN/reconnecting', dead: 'DEAD', closed: 'closed',
};

export function pathLabel(p: { index: number; device?: string; host: string }): string {
  return `path${p.index} ${p.device ?? '?'} ${p.host}`;
}

/** One line for an interval (the non-TTY form, also used in logs). */
export function intervalLine(s: IntervalStats, label?: string): string {
  const t = `t=${(s.tMs / 1000).toFixed(1).padStart(5)}s`;
  const paths = s.paths
    .map((p) => `p${p.index}(${p.device ?? '?'}) ${STATE_LABEL[p.state] ?? p.state} ${fmtCount(p.iops)}/s`)
    .join('  ');
  const err = s.errors ? `  errors ${s.errors}` : '';
  return `${t}  ${fmtCount(s.iops).padStart(6)} IOPS  ${s.mbps.toFixed(1).padStart(6)} MB/s  p50 ${fmtUs(s.p50Us).padStart(8)}  p99 ${fmtUs(s.p99Us).padStart(8)}  | ${paths}${err}${label ? `  [${label}]` : ''}`;
}

function bar(frac: number, width: number): string {
  const n = Math.max(0, Math.min(width, Math.round(frac * width)));
  return '#'.repeat(n) + '.'.repeat(width - n);
}

/**
 * The live display. update() once per interval; event() for things that
 * happen (printed above the block on a TTY, as a line otherwise).
 */
export class LiveDisplay {
  readonly tty: boolean;
  readonly #write: (s: string) => void;
  readonly #title: string;
  #drawn = 0;
  #peak = 1;
  #events: string[] = [];

  constructor(opts: { write?: (s: string) => void; tty?: boolean; title: string }) {
    this.#write = opts.write ?? ((s) => void process.stdout.write(s));
    this.tty = opts.tty ?? !!process.stdout.isTTY;
    this.#title = opts.title;
    if (!this.tty) this.#write(`${opts.title}\n`);
  }

  #clear(): void {
    if (this.tty && this.#drawn > 0) this.#write(`\x1b[${this.#drawn}F\x1b[J`);
    this.#drawn = 0;
  }

  event(line: string, tMs?: number): void {
    const text = `${tMs !== undefined ? `t=${(tMs / 1000).toFixed(1).padStart(5)}s  ` : ''}>> ${line}`;
    this.#events.push(text);
    if (this.tty) {
      this.#clear();
      this.#write(`${text}\n`);
      this.#redraw();
    } else {
      this.#write(`${text}\n`);
    }
  }

  #last: { s: IntervalStats; phase?: string; remainingMs?: number } | undefined;

  update(s: IntervalStats, phase?: string, remainingMs?: number): void {
    this.#last = { s, phase, remainingMs };
    if (!this.tty) {
      this.#write(`${intervalLine(s, phase)}\n`);
      return;
    }
    this.#clear();
    this.#redraw();
  }

  #redraw(): void {
    const l = this.#last;
    if (!this.tty || !l) return;
    const s = l.s;
    this.#peak = Math.max(this.#peak, s.iops, ...s.paths.map((p) => p.iops));
    const lines: string[] = [];
    const rem = l.remainingMs !== undefined ? `, ${Math.max(0, Math.ceil(l.remainingMs / 1000))} s left` : '';
    lines.push(`-- ${this.#title} -- t=${(s.tMs / 1000).toFixed(1)} s${rem}${l.phase ? ` -- ${l.phase}` : ''}`);
    lines.push(`   total   ${bar(s.iops / this.#peak, 30)} ${fmtCount(s.iops).padStart(7)} IOPS  ${s.mbps.toFixed(1).padStart(7)} MB/s   p50 ${fmtUs(s.p50Us).padStart(8)}   p99 ${fmtUs(s.p99Us).padStart(8)}   errors ${s.errors}`);
    for (const p of s.paths) {
      const state = (STATE_LABEL[p.state] ?? p.state).padEnd(17);
      lines.push(`   ${`path${p.index}`.padEnd(7)} ${bar(p.iops / this.#peak, 30)} ${fmtCount(p.iops).padStart(7)} IOPS  ${p.mbps.toFixed(1).padStart(7)} MB/s   ${(p.device ?? '?').padEnd(6)} ${p.host.padEnd(15)} ${state} inflight ${p.inflight}  failovers ${p.failovers}  reconnects ${p.reconnects.ok}/${p.reconnects.fail}`);
    }
    // one screen line per line, or the cursor-up count is wrong
    const cols = process.stdout.columns || Number(process.env.COLUMNS) || 160;
    this.#write(lines.map((x) => (x.length >= cols ? x.slice(0, cols - 1) : x)).join('\n') + '\n');
    this.#drawn = lines.length;
  }

  /** Leaves the last block on screen. */
  done(): void {
    this.#drawn = 0;
  }
}
