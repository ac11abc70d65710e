/**
 * The seam between the engine and the compression methods. After each prefill layer's attention the engine
 * hands the policy what it needs (keys and values per KV head with RoPE applied, the observation-window
 * queries, the original positions of the rows present) and gets back a decision: which cache entries each KV
 * head keeps, and optionally which rows continue to the next layer, or a restart on a subset of the prompt.
 * @module
 */
import type { ModelConfig } from '../model/config.js';
import type { Scorer } from './scoring.js';
import type { LayerCache } from '../engine/kv-cache.js';

/** What the engine shows a policy after layer `layer`'s attention over the `numRows` rows present. */
export interface LayerInput {
  readonly layer: number;
  readonly config: ModelConfig;
  /** N: tokens in the prompt. */
  readonly promptLength: number;
  /** n: rows present at this layer (N, or fewer after propagation). */
  readonly numRows: number;
  /** [n]: the original position id of each row; ascending. */
  readonly positionIds: Int32Array;
  /** [numKvHeads, n, headDim]: keys with RoPE applied. */
  readonly keys: Float32Array;
  /** [numKvHeads, n, headDim]. */
  readonly values: Float32Array;
  /** [w, numHeads·headDim]: queries (RoPE applied) of the last w = min(queryWindow, n) rows. */
  readonly windowQueries: Float32Array;
  /** Scores computed on demand by ONNX Runtime from these keys and queries. */
  readonly scorer: Scorer;
}

/**
 * What to do after a layer.
 * - `keep`: each KV head keeps the rows in `keep[head]` (ascending row indices, same count per head), or every
 *   row when `keep` is null.
 * - `propagate`: as `keep`, and only `rows` (ascending) continue to the next layers, keeping their positions.
 * - `restart`: drop everything and prefill again on the prompt tokens at `tokens` (ascending prompt indices),
 *   renumbered 0..k−1 (GemFilter).
 */
export type LayerDecision =
  | { readonly kind: 'keep'; readonly keep: readonly Int32Array[] | null }
  | { readonly kind: 'propagate'; readonly keep: readonly Int32Array[] | null; readonly rows: Int32Array }
  | { readonly kind: 'restart'; readonly tokens: Int32Array };

/** What the engine shows a policy after each decode step's layer `layer` (policies that evict while decoding). */
export interface DecodeInput {
  readonly layer: number;
  /** The layer's cache, the new entry already appended; the policy may evict with `retain`. */
  readonly cache: LayerCache;
  /** [numHeads·headDim]: the new token's query, RoPE applied. */
  readonly query: Float32Array;
  /** Scores of every key the cache holds (all heads the same length) against `queries` [rows, numHeads·headDim]. */
  scorer(queries: Float32Array): Scorer;
}

/** The per-request state of a policy: created at the start of a prefill, asked once per layer. */
export interface PolicyRun {
  /** Overrides the policy's `queryWindow` for this request (a window that depends on the prompt length). */
  readonly queryWindow?: number;
  layer(input: LayerInput): LayerDecision | Promise<LayerDecision>;
  /** Called after each decode step's layer, if present (PyramidInfer re-compresses during generation). */
  decode?(input: DecodeInput): void | Promise<void>;
}

export interface CompressionPolicy {
  /** The method's name everywhere: registry key, CLI value, bench and eval column. */
  readonly name: string;
  /** How many of the last rows' queries the policy reads (0 = none, Infinity = every row). */
  readonly queryWindow: number;
  /**
   * Cache one head per query head, K/V repeated (the original SnapKV layout, G× the memory); decisions then hold
   * numHeads keep lists. Only to reproduce the original memory figures: every method here is GQA-aware by default.
   */
  readonly repeatKv?: boolean;
  /** Starts a request over a prompt of `promptLength` tokens. */
  begin(config: ModelConfig, promptLength: number): PolicyRun;
}

/** No compression: every layer keeps every entry. */
export const fullPolicy: CompressionPolicy = {
  name: 'full',
  queryWindow: 0,
  begin: () => ({ layer: () => ({ kind: 'keep', keep: null }) }),
};
