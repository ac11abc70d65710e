/**
 * PyramidInfer (arXiv 2405.12532): progressive, layer-wise reduction of the tokens that go on in prefill, like
 * FastKV's TSP but at every layer, and re-compression while generating. Each layer's cache holds the rows
 * present at that layer, so deeper layers hold fewer.
 * Reference: dongwonjo/FastKV `baselines/pyramidinfer/llama_model.py` (`LlamaModel.forward`, era C) and its
 * `pyramidinfer_configs/*.json` (`fastkv-spec.md` §4.8). With N prompt tokens, R = floor(N · recentRatio):
 *
 *   prefill, after layer l (n rows): the attention of the last R rows' queries (softmax over every key,
 *   averaged over query heads, rows weighted by linspace(1, 1.2) and averaged) scores the context = all but
 *   the last 1 + R rows; the first 4 rows (sinks) always stay. With ρ_l = (1 − d)(cos(πl/L) + 1)/2 + d
 *   (d = decayRatio) and ctx = n − 1 − R: if ctx > minCtx = min(64, N − 1 − R) and ρ_l < 1, the top
 *   floor(ctx · ρ_l) context rows (all, if that is not above minCtx) and the last 1 + R rows go on, keeping
 *   their original positions.
 *   generation: once 16 entries have gathered between the compressed part and the recent 1 + R, that block is
 *   cut to floor(16 · 0.9 · 1.0) = 14 by the same score from the last 1 + R queries.
 *
 * Configurations as the reference names them (LLaMA-3.1-8B): retain 35% → recentRatio 0.01, decayRatio 0.01;
 * 50% → 0.2, 0.3; 60% → 0.2, 0.7. A `retainRate` picks the named configuration at or above it (PyramidInfer
 * cannot reach 10%: anything up to 0.35 gets the 35% one); the default is the 50% one. Shared: sinks 4,
 * distance weight 1.2, minimum context 64, downsample interval 1, 16 / 0.9 / 1.0 in generation.
 * Deviations: fp32; every row is causal (the reference masks only the recent block, as here); in generation
 * the score of the recent queries is recomputed over the current cache (the reference keeps their attention
 * rows from when they were computed), and a layer re-compresses when 16 of *its* entries have gathered (the
 * reference compares the global count of tokens seen with each layer's length, so layers reduced in prefill
 * re-compress at every step).
 */
import { ConfigError } from '../errors.js';
import type { ModelConfig } from '../model/config.js';
import { checkRate } from './budget.js';
import type { CompressionPolicy, LayerDecision } from './policy.js';
import type { ScoreMatrix, WindowScoreRequest } from './scoring.js';
import { concat, range, row, topK } from './select.js';

export interface PyramidInferOptions {
  /** Picks the reference configuration at or above this retain rate (35%, 50% or 60%). */
  retainRate?: number;
  /** Share of the prompt kept as the recent block (reference `recent_ratio`). */
  recentRatio?: number;
  /** d of the cosine schedule (reference `prefill_decay_ratio`). */
  decayRatio?: number;
}

const SINKS = 4;
const DISTANCE_WEIGHT = 1.2;
const MIN_CONTEXT = 64;
const GEN_BLOCK = 16;
const GEN_KEEP = Math.floor(GEN_BLOCK * 0.9 * 1.0);

/** The reference's named configurations: retain rate → (recentRatio, decayRatio). */
const CONFIGS: readonly [number, number, number][] = [[0.35, 0.01, 0.01], [0.5, 0.2, 0.3], [0.6, 0.2, 0.7]];

/** ρ_l of the cosine schedule. */
export function pyramidInferRatio(layer: number, layers: number, decay: number): number {
  return (1 - decay) * (Math.cos((Math.PI * layer) / layers) + 1) / 2 + decay;
}

/**
 * Context rows kept after a layer with n rows (N prompt tokens, R recent): null when the layer keeps all.
 */
export function pyramidInferContextKept(n: number, N: number, R: number, ratio: number): number | null {
  const ctx = n - 1 - R;
  const minCtx = Math.min(MIN_CONTEXT, N - 1 - R);
  if (!(ctx > minCtx && ratio < 1)) return null;
  const k = Math.floor(ctx * ratio);
  return k > minCtx ? k : null;
}

/** Per-key score: mean over query heads of a [heads, m] matrix, keys [from, to). */
function headMean(scores: ScoreMatrix, from: number, to: number): Float32Array {
  const out = new Float32Array(to - from);
  for (let h = 0; h < scores.heads; h++) {
    const r = row(scores, h);
    for (let j = from; j < to; j++) out[j - from] += r[j] / scores.heads;
  }
  return out;
}

export function pyramidinfer(options: PyramidInferOptions, config: ModelConfig): CompressionPolicy {
  let recentRatio = options.recentRatio;
  let decay = options.decayRatio;
  if (options.retainRate !== undefined) {
    if (recentRatio !== undefined || decay !== undefined) throw new ConfigError('pyramidinfer: give retainRate or recentRatio/decayRatio, not both');
    const r = checkRate('pyramidinfer', 'retainRate', options.retainRate);
    [, recentRatio, decay] = CONFIGS.find(([rate]) => r <= rate) ?? CONFIGS[CONFIGS.length - 1];
  }
  recentRatio ??= 0.2;
  decay ??= 0.3;
  for (const [name, v] of [['recentRatio', recentRatio], ['decayRatio', decay]] as const) {
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0 || v > 1) throw new ConfigError(`pyramidinfer: ${name} must be a number in [0, 1], got ${String(v)}`);
  }
  const L = config.numLayers;
  const score = (w: number): WindowScoreRequest => ({
    window: w, softmax: true, scale: 1 / Math.sqrt(config.headDim), aggregate: 'mean', pooling: 'none', kernel: 1,
    groupReduce: 'none', includeWindowKeys: true, distanceWeight: DISTANCE_WEIGHT,
  });
  return {
    name: 'pyramidinfer',
    // The recent block's queries (R score in prefill; 1 + R are kept for re-compression while decoding): set per
    // request, as R depends on the prompt length.
    queryWindow: Infinity,
    begin(_config, N) {
      const R = Math.max(1, Math.floor(N * recentRatio!));
      const recent = 1 + R;
      const qWidth = config.numHeads * config.headDim;
      /** Per layer: the last 1 + R queries, and the entries before `compressed` that are done. */
      const queries: Float32Array[] = new Array(L);
      const compressed = new Int32Array(L);
      return {
        queryWindow: recent,
        async layer({ layer, numRows: n, windowQueries, scorer }): Promise<LayerDecision> {
          const rows = windowQueries.length / qWidth;
          queries[layer] = windowQueries.slice(Math.max(0, rows - recent) * qWidth);
          compressed[layer] = Math.max(0, n - recent);
          const k = pyramidInferContextKept(n, N, R, pyramidInferRatio(layer, L, decay!));
          if (k === null || n <= recent) return { kind: 'keep', keep: null };
          const s = headMean(await scorer.window(score(Math.min(R, n))), 0, n - recent);
          s.fill(Infinity, 0, Math.min(SINKS, s.length)); // the sinks always stay
          return { kind: 'propagate', keep: null, rows: concat(topK(s, k), range(n - recent, n)) };
        },
        async decode({ layer, cache, query, scorer }) {
          // Slide the recent queries by one.
          const q = queries[layer];
          const kept = Math.min(recent, q.length / qWidth + 1);
          const next = new Float32Array(kept * qWidth);
          next.set(q.subarray(q.length - (kept - 1) * qWidth));
          next.set(query, (kept - 1) * qWidth);
          queries[layer] = next;
          const len = cache.headLength(0);
          const blockEnd = len - recent;
          const blockStart = compressed[layer];
          if (blockEnd - blockStart < GEN_BLOCK || kept < recent) return;
          const start = blockEnd - GEN_BLOCK; // the reference compresses the 16 entries just before the recent block
          const s = headMean(await scorer(next).window(score(kept)), start, blockEnd);
          const slots = concat(concat(range(0, start), Int32Array.from(topK(s, GEN_KEEP), (j) => start + j)), range(blockEnd, len));
          for (let h = 0; h < cache.numHeads; h++) cache.retain(h, slots);
          compressed[layer] = start + GEN_KEEP;
        },
      };
    },
  };
}
