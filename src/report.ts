/**
 * Output shared by the benchmark and evaluation commands: aligned text tables, a progress bar on stderr, and
 * JSON results written next to them.
 * @module
 */
import { writeFileAtomic } from './files.js';

/** Formats rows as an aligned table: numbers right-aligned, text left-aligned, a rule under the header. */
export function formatTable(headers: readonly string[], rows: readonly (readonly (string | number)[])[]): string {
  const cells = rows.map((r) => r.map((c) => (typeof c === 'number' ? formatNumber(c) : c)));
  const widths = headers.map((h, i) => Math.max(h.length, ...cells.map((r) => (r[i] ?? '').length)));
  // Numbers, and cells that read as numbers ("12.5", "84%", "1.78x"), align right.
  const numeric = headers.map((_, i) => rows.length > 0 && cells.every((r) => /^[-+]?[\d.,/]+[%x]?$|^-$/.test(r[i] ?? '')));
  const line = (r: readonly string[]) => r.map((c, i) => (numeric[i] ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join('  ').trimEnd();
  return [line(headers), widths.map((w) => '-'.repeat(w)).join('  '), ...cells.map(line)].join('\n') + '\n';
}

function formatNumber(x: number): string {
  if (!Number.isFinite(x)) return String(x);
  if (Number.isInteger(x)) return String(x);
  const abs = Math.abs(x);
  return abs >= 100 ? x.toFixed(1) : abs >= 1 ? x.toFixed(2) : x.toFixed(3);
}

/** A progress bar on stderr, redrawn in place on a terminal and printed every 10% otherwise. */
export class ProgressBar {
  private done = 0;
  private lastDecile = -1;
  private readonly started = performance.now();
  constructor(private readonly label: string, private readonly total: number) {}

  tick(note = ''): void {
    this.done++;
    const frac = this.total > 0 ? this.done / this.total : 1;
    const elapsed = (performance.now() - this.started) / 1000;
    const eta = frac > 0 ? elapsed / frac - elapsed : 0;
    const text = `${this.label} [${'#'.repeat(Math.round(frac * 20)).padEnd(20)}] ${this.done}/${this.total} ` +
      `${elapsed.toFixed(0)}s elapsed, ~${eta.toFixed(0)}s left ${note}`;
    if (process.stderr.isTTY) {
      process.stderr.write(`\r\x1b[K${text}`);
      if (this.done >= this.total) process.stderr.write('\n');
    } else if (Math.floor(frac * 10) > this.lastDecile) {
      this.lastDecile = Math.floor(frac * 10);
      process.stderr.write(`${text}\n`);
    }
  }
}

/** Writes `data` as pretty JSON to `file` through a temporary file renamed into place, creating folders; returns the path. */
export function writeJson(file: string, data: unknown): string {
  writeFileAtomic(file, JSON.stringify(data, null, 2) + '\n');
  return file;
}
