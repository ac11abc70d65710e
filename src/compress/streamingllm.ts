/**
 * StreamingLLM (arXiv 2309.17453): keep the first `sinks` tokens (attention sinks) and the most recent B − sinks,
 * the same set for every KV head. No scoring; prefill costs as much as full.
 * Reference: mit-han-lab/streaming-llm; as run in FastKV's repo (`baselines/streamingllm/utils.py`, 4 sinks,
 * B = floor(N · retain_rate) in proportional mode). Positions are kept, not shifted (no pos_shift).
 */
import type { ModelConfig } from '../model/config.js';
import { checkInteger, entriesFor, parseBudget, type BudgetOptions } from './budget.js';
import type { CompressionPolicy } from './policy.js';
import { concat, range } from './select.js';

export interface StreamingLLMOptions extends BudgetOptions {
  /** Attention-sink tokens always kept at the start (default 4). */
  sinks?: number;
}

export function streamingllm(options: StreamingLLMOptions, config: ModelConfig): CompressionPolicy {
  const sinks = checkInteger('streamingllm', 'sinks', options.sinks ?? 4, 0);
  const budget = parseBudget('streamingllm', options, sinks, { kind: 'rate', rate: 0.1 });
  return {
    name: 'streamingllm',
    queryWindow: 0,
    begin: () => ({
      layer({ numRows: n }) {
        const B = Math.max(entriesFor(budget, n), sinks + 1);
        if (n <= B) return { kind: 'keep', keep: null };
        const rows = concat(range(0, sinks), range(n - (B - sinks), n));
        return { kind: 'keep', keep: Array.from({ length: config.numKvHeads }, () => rows) };
      },
    }),
  };
}
