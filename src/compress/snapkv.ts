/**
 * SnapKV (arXiv 2404.14469): each KV head keeps the window and the top B−w prefix tokens by observation-window
 * attention (softmax of the last w queries, summed, pooled). GQA-aware: scores are summed over the query heads
 * that share a KV head, and the cache holds KV heads only. No propagation: prefill costs as much as full.
 * Reference: FasterDecoding/SnapKV `snapkv_utils.py`; as run in FastKV's repo (`baselines/snapkv/utils.py`,
 * window 8, kernel 7, maxpool in era C).
 * Deviation: the original repeats K/V to the query heads before selecting (one selection per query head, G×
 * the memory); here selection is per KV head, as in FastKV and kvpress.
 */
import type { ModelConfig } from '../model/config.js';
import {
  entriesFor, parseBudget, parseWindowOptions,
  type BudgetOptions, type WindowOptions,
} from './budget.js';
import type { CompressionPolicy } from './policy.js';
import { snapScoring } from './scoring.js';
import { keepTopAndWindow } from './select.js';

export interface SnapKVOptions extends BudgetOptions, WindowOptions {}

export function snapkv(options: SnapKVOptions, config: ModelConfig): CompressionPolicy {
  const { windowSize: w, kernelSize, pooling } = parseWindowOptions('snapkv', options);
  const budget = parseBudget('snapkv', options, w, { kind: 'rate', rate: 0.1 });
  const scoring = snapScoring(w, kernelSize, pooling, config.headDim);
  return {
    name: 'snapkv',
    queryWindow: w,
    begin: () => ({
      async layer({ numRows: n, scorer }) {
        const B = entriesFor(budget, n);
        if (n <= B || n <= w) return { kind: 'keep', keep: null };
        return { kind: 'keep', keep: keepTopAndWindow(await scorer.window(scoring), n, Math.max(B, w), w) };
      },
    }),
  };
}
