/**
 * PyramidKV (arXiv 2406.02069): SnapKV's window scoring, with per-layer budgets that decrease arithmetically from
 * the first layer to the last while keeping the mean of a flat budget B (more cache where attention is broad,
 * less where it has funnelled onto a few tokens).
 * Reference: Zefan-Cai/KVCache-Factory `pyramidkv/pyramidkv_utils.py` (`PyramidKVCluster`), the rule FastKV's
 * tables use (`baselines.md` §2.2), with w = B's window and L layers:
 *
 *   n < B: keep everything;  n < 2(B−w): every layer keeps B−w (SnapKV);  otherwise
 *   min = (B−w) // β, max = 2(B−w) − min; if max ≥ n−w: max = n−w, min = 2(B−w) − max
 *   step = (max − min) // (L−1); layer l keeps its top max − l·step prefix tokens and the window.
 *
 * GQA as the reference's GQA path: window scores summed over each KV group's query heads before pooling; the
 * cache holds KV heads. Defaults β = 20, window 8, kernel 7, maxpool (the LongBench runner's settings).
 * Deviations: fp32 scores; a proportional budget B = floor(N · retainRate) is accepted like every method here.
 */
import { ConfigError } from '../errors.js';
import type { ModelConfig } from '../model/config.js';
import { entriesFor, parseBudget, parseWindowOptions, type BudgetOptions, type WindowOptions } from './budget.js';
import type { CompressionPolicy } from './policy.js';
import { snapScoring } from './scoring.js';
import { keepTopAndWindow } from './select.js';

export interface PyramidKVOptions extends BudgetOptions, WindowOptions {
  /** β: the last layer keeps about (B−w)/β prefix tokens (reference `beta`, default 20). */
  beta?: number;
}

/** Checks β (> 0, finite), naming the method. */
export function checkBeta(method: string, value: unknown, fallback: number): number {
  const beta = value ?? fallback;
  if (typeof beta !== 'number' || !Number.isFinite(beta) || beta <= 0) throw new ConfigError(`${method}: beta must be a number > 0, got ${String(beta)}`);
  return beta;
}

/**
 * Prefix tokens (window excluded) each of `L` layers keeps, for budget B (window included), window w and n rows;
 * null when n < B (nothing is compressed).
 */
export function pyramidPrefixBudgets(B: number, w: number, beta: number, n: number, L: number): number[] | null {
  if (n < B) return null;
  const base = B - w;
  if (n < 2 * base) return new Array<number>(L).fill(base);
  let min = Math.floor(base / beta);
  let max = 2 * base - min;
  if (max >= n - w) {
    max = n - w;
    min = 2 * base - max;
  }
  const step = L > 1 ? Math.floor((max - min) / (L - 1)) : 0;
  return Array.from({ length: L }, (_, l) => max - l * step);
}

export function pyramidkv(options: PyramidKVOptions, config: ModelConfig): CompressionPolicy {
  const { windowSize: w, kernelSize, pooling } = parseWindowOptions('pyramidkv', options);
  const budget = parseBudget('pyramidkv', options, w, { kind: 'rate', rate: 0.1 });
  const beta = checkBeta('pyramidkv', options.beta, 20);
  const scoring = { ...snapScoring(w, kernelSize, pooling, config.headDim), groupBeforePool: true };
  return {
    name: 'pyramidkv',
    queryWindow: w,
    begin: () => ({
      async layer({ layer, numRows: n, scorer }) {
        const B = Math.max(entriesFor(budget, n), w + 1);
        const prefix = pyramidPrefixBudgets(B, w, beta, n, config.numLayers);
        if (!prefix || n <= w) return { kind: 'keep', keep: null };
        return { kind: 'keep', keep: keepTopAndWindow(await scorer.window(scoring), n, prefix[layer] + w, w) };
      },
    }),
  };
}
