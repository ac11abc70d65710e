/**
 * AdaKV (Ada-SnapKV, arXiv 2407.11550): SnapKV's window scoring, with the layer's budget shared adaptively among
 * its KV heads. Of all heads' scores together, the top H·B' (B' = B − w) are found (a flattened top-k across the
 * heads); head h's share c_h is how many of them it holds, and it keeps
 *
 *   cap_h = round(c_h · (1 − α) + floor(α · B'))   prefix tokens (its own top cap_h) plus the window,
 *
 * so every head keeps at least the floor α·B' and Σ cap_h ≈ H·B'. Heads keep different numbers of entries, and
 * the cache stores them ragged (each head only what it keeps: see `engine/kv-cache.ts`).
 * Reference: FFY0/AdaKV `adaptive_snapkv/monkeypatch/snapkv_utils.py` (`AdaptiveSnapKVCluster`) with
 * `--gqa_support`: scores are the window-attention mean over the window queries, reduced over each KV group's
 * query heads (mean by default, `max` as gqa_func's other choice) before pooling; one score row per KV head.
 * `normalize` (off by default, as in the original code) scales each head's scores by the share of its mass in
 * its top B'. Defaults α = 0.2, window 8, kernel 7, maxpool. `round` is torch's: halves to even.
 * Deviations: fp32 scores; ties in the flattened top-k go to the lower head (the reference's order is
 * unspecified); the whole prompt is compressed when n > B (the reference: when B' ≤ n − w, the same).
 */
import { ConfigError } from '../errors.js';
import type { ModelConfig } from '../model/config.js';
import { entriesFor, parseBudget, parseWindowOptions, type BudgetOptions, type WindowOptions } from './budget.js';
import type { CompressionPolicy } from './policy.js';
import type { ScoreMatrix, WindowScoreRequest } from './scoring.js';
import { flatTopKCounts, keepTopAndWindowPerHead, roundHalfEven, row } from './select.js';

export interface AdaKVOptions extends BudgetOptions, WindowOptions {
  /** α: share of B' every head is guaranteed (reference `floor_alpha`, default 0.2), [0, 1]. */
  floorAlpha?: number;
  /** How a KV group's query-head scores combine (reference `gqa_func`, default 'mean'). */
  groupReduce?: 'mean' | 'max';
  /** Scale each head's scores by the share of its mass in its top B' (reference `normalize`, default false). */
  normalize?: boolean;
}

/**
 * Per-head prefix counts (window excluded) from a [heads, n − w] score matrix and a per-head base budget B':
 * the flattened top-k rule with floor α.
 */
export function adaptiveCounts(scores: ScoreMatrix, base: number, alpha: number): number[] {
  const shares = flatTopKCounts(scores, scores.heads * base);
  const floor = Math.floor(base * alpha);
  return Array.from(shares, (c) => roundHalfEven(c * (1 - alpha) + floor));
}

/** Each row times (its top-`base` mass / its total mass): AdaKV's `normalize`. */
function normalizeRows(scores: ScoreMatrix, base: number): ScoreMatrix {
  const data = new Float32Array(scores.data);
  for (let h = 0; h < scores.heads; h++) {
    const r = row(scores, h);
    const sorted = Float32Array.from(r).sort().reverse();
    let top = 0;
    let all = 0;
    for (let j = 0; j < sorted.length; j++) { all += sorted[j]; if (j < base) top += sorted[j]; }
    const ratio = all > 0 ? top / all : 1;
    for (let j = 0; j < r.length; j++) data[h * scores.length + j] = r[j] * ratio;
  }
  return { ...scores, data };
}

export function adakv(options: AdaKVOptions, config: ModelConfig): CompressionPolicy {
  const { windowSize: w, kernelSize, pooling } = parseWindowOptions('adakv', options);
  const budget = parseBudget('adakv', options, w, { kind: 'rate', rate: 0.1 });
  const alpha = options.floorAlpha ?? 0.2;
  if (typeof alpha !== 'number' || !Number.isFinite(alpha) || alpha < 0 || alpha > 1) {
    throw new ConfigError(`adakv: floorAlpha must be a number in [0, 1], got ${String(alpha)}`);
  }
  const groupReduce = options.groupReduce ?? 'mean';
  if (groupReduce !== 'mean' && groupReduce !== 'max') throw new ConfigError(`adakv: groupReduce must be "mean" or "max", got "${String(groupReduce)}"`);
  if (options.normalize !== undefined && typeof options.normalize !== 'boolean') {
    throw new ConfigError(`adakv: normalize must be true or false, got ${String(options.normalize)}`);
  }
  const normalize = options.normalize === true;
  const scoring: WindowScoreRequest = {
    window: w, softmax: true, scale: 1 / Math.sqrt(config.headDim), aggregate: 'mean', pooling, kernel: kernelSize,
    groupReduce, groupBeforePool: true,
  };
  return {
    name: 'adakv',
    queryWindow: w,
    begin: () => ({
      async layer({ numRows: n, scorer }) {
        const B = entriesFor(budget, n);
        if (n <= B || n <= w) return { kind: 'keep', keep: null };
        const base = Math.max(B, w) - w;
        let scores = await scorer.window(scoring);
        if (normalize) scores = normalizeRows(scores, base);
        return { kind: 'keep', keep: keepTopAndWindowPerHead(scores, n, adaptiveCounts(scores, base, alpha), w) };
      },
    }),
  };
}
