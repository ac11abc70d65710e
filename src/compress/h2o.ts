/**
 * H2O (arXiv 2306.14048), one-shot at prefill as in KVCache-Factory and FastKV's repo: every prompt query's
 * attention (causal) summed over the queries gives each key its "heavy hitter" score; each KV head keeps the
 * recent window and the top B−w earlier tokens. Scores are accumulated over query blocks, so memory stays at
 * (block × N) per head, never N × N.
 * Reference: `baselines/h2o/utils.py` (FastKV repo, era C). Deviations: the reference masks causally only the
 * last w×w block (earlier rows see the future); here every row is causal. Scores are summed over each KV group
 * (the reference selects per query head with repeated KV).
 */
import type { ModelConfig } from '../model/config.js';
import {
  checkInteger, entriesFor, parseBudget, type BudgetOptions,
} from './budget.js';
import type { CompressionPolicy } from './policy.js';
import { keepTopAndWindow, sumGroups } from './select.js';

export interface H2OOptions extends BudgetOptions {
  /** Recent tokens always kept (default 8). */
  windowSize?: number;
}

export function h2o(options: H2OOptions, config: ModelConfig): CompressionPolicy {
  const w = checkInteger('h2o', 'windowSize', options.windowSize ?? 8, 1);
  const budget = parseBudget('h2o', options, w, { kind: 'rate', rate: 0.1 });
  return {
    name: 'h2o',
    queryWindow: Infinity,
    begin: () => ({
      async layer({ numRows: n, scorer }) {
        const B = entriesFor(budget, n);
        if (n <= B || n <= w) return { kind: 'keep', keep: null };
        const perKvHead = sumGroups(await scorer.accumulated(), config.numKvHeads);
        // Score only the prefix: the window is kept whatever its score.
        const prefix = { data: new Float32Array(perKvHead.heads * (n - w)), heads: perKvHead.heads, length: n - w };
        for (let h = 0; h < prefix.heads; h++) prefix.data.set(perKvHead.data.subarray(h * n, h * n + n - w), h * (n - w));
        return { kind: 'keep', keep: keepTopAndWindow(prefix, n, Math.max(B, w), w) };
      },
    }),
  };
}
