/**
 * Budget forms every method accepts, and their checks: an absolute per-layer budget B (entries per KV head,
 * window included), a retain rate (keep floor(N × rate)), or kvpress's compression ratio (the fraction removed).
 * A budget larger than the prompt means "keep all".
 * @module
 */
import { ConfigError } from '../errors.js';

export interface BudgetOptions {
  /** Entries kept per layer per KV head, window included (FastKV's `max_capacity_prompt`). */
  budget?: number;
  /** Keep floor(N × retainRate) entries per KV head, (0, 1] (FastKV's `retain_rate`). */
  retainRate?: number;
  /** kvpress's form: the fraction of entries removed, [0, 1). Same as retainRate = 1 − compressionRatio. */
  compressionRatio?: number;
}

export type Budget = { readonly kind: 'absolute'; readonly entries: number } | { readonly kind: 'rate'; readonly rate: number };

/** Checks that a rate lies in (0, 1], naming the parameter. */
export function checkRate(method: string, name: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0 || value > 1) {
    throw new ConfigError(`${method}: ${name} must be a number in (0, 1], got ${String(value)}`);
  }
  return value;
}

/** Checks a positive integer option, naming it. */
export function checkInteger(method: string, name: string, value: unknown, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `>= ${min}` : `in [${min}, ${max}]`;
    throw new ConfigError(`${method}: ${name} must be an integer ${range}, got ${String(value)}`);
  }
  return value;
}

/**
 * Reads the one budget form given (at most one may be), or `fallback`. `minEntries` is what the method always
 * keeps (window or sinks): an absolute budget must exceed it.
 */
export function parseBudget(method: string, o: BudgetOptions, minEntries: number, fallback: Budget): Budget {
  const given = (['budget', 'retainRate', 'compressionRatio'] as const).filter((k) => o[k] !== undefined);
  if (given.length > 1) throw new ConfigError(`${method}: give only one of budget, retainRate, compressionRatio (got ${given.join(', ')})`);
  if (o.budget !== undefined) {
    const entries = checkInteger(method, 'budget', o.budget, 1);
    if (entries <= minEntries) throw new ConfigError(`${method}: budget ${entries} must be larger than the ${minEntries} entries always kept (window or sinks)`);
    return { kind: 'absolute', entries };
  }
  if (o.retainRate !== undefined) return { kind: 'rate', rate: checkRate(method, 'retainRate', o.retainRate) };
  if (o.compressionRatio !== undefined) {
    const r = o.compressionRatio;
    if (typeof r !== 'number' || !Number.isFinite(r) || r < 0 || r >= 1) {
      throw new ConfigError(`${method}: compressionRatio must be a number in [0, 1), got ${String(r)}`);
    }
    return { kind: 'rate', rate: 1 - r };
  }
  return fallback;
}

/** Entries to keep out of n: B, or floor(n × rate). May exceed n (then everything is kept). */
export function entriesFor(b: Budget, n: number): number {
  return b.kind === 'absolute' ? b.entries : Math.floor(n * b.rate);
}

/** Window size, pooling kernel and pooling kind, shared by the window-scoring methods. */
export interface WindowOptions {
  /** Observation window w (reference `window_size`, default 8). */
  windowSize?: number;
  /** Pooling kernel (reference `kernel_size`, default 7). */
  kernelSize?: number;
  /** Pooling kind (reference `pooling`; era-C default maxpool). */
  pooling?: 'max' | 'avg';
}

export function parseWindowOptions(method: string, o: WindowOptions): Required<WindowOptions> {
  const windowSize = checkInteger(method, 'windowSize', o.windowSize ?? 8, 1);
  const kernelSize = checkInteger(method, 'kernelSize', o.kernelSize ?? 7, 1);
  if (kernelSize % 2 === 0) throw new ConfigError(`${method}: kernelSize must be odd (same-length pooling), got ${kernelSize}`);
  const pooling = o.pooling ?? 'max';
  if (pooling !== 'max' && pooling !== 'avg') throw new ConfigError(`${method}: pooling must be "max" or "avg", got "${String(pooling)}"`);
  return { windowSize, kernelSize, pooling };
}
