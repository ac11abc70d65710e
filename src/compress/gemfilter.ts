/**
 * GemFilter (arXiv 2409.17422): run layers 0..f on the full prompt; at the filter layer f, score every token by
 * the last query's raw (unscaled, pre-softmax) dot products summed over all heads, average-pooled (kernel 5);
 * keep the top k tokens, sorted, and prefill the whole model again on them alone with positions 0..k−1. The
 * decode cache is then the full cache of those k tokens: prefill reduction and KV budget are one number.
 * Reference: SalesforceAIResearch/GemFilter; FastKV repo `baselines/gemfilter/utils.py` (filter layer 13 of 32
 * for LLaMA-3.1-8B; here scaled to the model's depth). Layers before f keep no cache: pass 1 is discarded.
 */
import type { ModelConfig } from '../model/config.js';
import { checkInteger, entriesFor, parseBudget, type BudgetOptions } from './budget.js';
import type { CompressionPolicy } from './policy.js';
import type { WindowScoreRequest } from './scoring.js';
import { sumGroups, topK } from './select.js';

export interface GemFilterOptions extends BudgetOptions {
  /** Filter layer f (reference `filter_idx`); default round(13 / 32 · L). */
  filterLayer?: number;
  /** Average-pooling kernel over the scores (default 5). */
  kernelSize?: number;
}

export function gemfilter(options: GemFilterOptions, config: ModelConfig): CompressionPolicy {
  const L = config.numLayers;
  const f = checkInteger('gemfilter', 'filterLayer', options.filterLayer ?? Math.min(L - 1, Math.round((13 / 32) * L)), 0, L - 1);
  const kernel = checkInteger('gemfilter', 'kernelSize', options.kernelSize ?? 5, 1);
  const budget = parseBudget('gemfilter', options, 0, { kind: 'rate', rate: 0.1 });
  // The last query alone, every key (its own included), no softmax, no scaling.
  const scoring: WindowScoreRequest = {
    window: 1, softmax: false, scale: 1, aggregate: 'sum', pooling: 'avg', kernel, groupReduce: 'sum', includeWindowKeys: true,
  };
  const none = Array.from({ length: config.numKvHeads }, () => new Int32Array(0));
  return {
    name: 'gemfilter',
    queryWindow: 1,
    begin(_config, N) {
      const k = Math.max(1, entriesFor(budget, N));
      return {
        async layer({ layer, scorer }) {
          if (k >= N) return { kind: 'keep', keep: null };
          if (layer < f) return { kind: 'keep', keep: none };
          const total = sumGroups(await scorer.window(scoring), 1);
          return { kind: 'restart', tokens: topK(total.data, k) };
        },
      };
    },
  };
}
