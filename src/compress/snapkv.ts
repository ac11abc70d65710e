/**
 * SnapKV (arXiv 2404.14469): each KV head keeps the window and the top B−w prefix tokens by observation-window
 * attention (softmax of the last w queries, summed, pooled). GQA-aware: scores are summed over the query heads
 * that share a KV head, and the cache holds KV heads only. No propagation: prefill costs as much as full.
 * Reference: FasterDecoding/SnapKV `snapkv_utils.py`; as run in FastKV's repo (`baselines/snapkv/utils.py`,
 * window 8, kernel 7, maxpool in era C).
 * The original repeats K/V to the query heads before selecting (one selection per query head, G× the memory);
 * here selection is per KV head by default, as in FastKV and kvpress, and `repeatKv` restores the original.
 */
import { ConfigError } from '../errors.js';
import type { ModelConfig } from '../model/config.js';
import {
  entriesFor, parseBudget, parseWindowOptions,
  type BudgetOptions, type WindowOptions,
} from './budget.js';
import type { CompressionPolicy } from './policy.js';
import { snapScoring } from './scoring.js';
import { keepTopAndWindow } from './select.js';

export interface SnapKVOptions extends BudgetOptions, WindowOptions {
  /**
   * Select per query head and cache K/V repeated to the query heads, as the original SnapKV does (G× the
   * memory). Only to reproduce the original memory figures; default false (per KV head).
   */
  repeatKv?: boolean;
}

export function snapkv(options: SnapKVOptions, config: ModelConfig): CompressionPolicy {
  const { windowSize: w, kernelSize, pooling } = parseWindowOptions('snapkv', options);
  const budget = parseBudget('snapkv', options, w, { kind: 'rate', rate: 0.1 });
  if (options.repeatKv !== undefined && typeof options.repeatKv !== 'boolean') {
    throw new ConfigError(`snapkv: repeatKv must be true or false, got ${String(options.repeatKv)}`);
  }
  const repeatKv = options.repeatKv === true;
  const scoring = { ...snapScoring(w, kernelSize, pooling, config.headDim), groupReduce: repeatKv ? 'none' : 'sum' } as const;
  return {
    name: 'snapkv',
    queryWindow: w,
    repeatKv,
    begin: () => ({
      async layer({ numRows: n, scorer }) {
        const B = entriesFor(budget, n);
        if (n <= B || n <= w) return { kind: 'keep', keep: null };
        return { kind: 'keep', keep: keepTopAndWindow(await scorer.window(scoring), n, Math.max(B, w), w) };
      },
    }),
  };
}
