/**
 * FastKV (arXiv 2502.01068): GQA-aware KV selection in every layer, and token-selective propagation (TSP) at
 * layer t: only the T most-attended tokens (plus the window) continue to layers t+1..L−1, keeping their
 * original positions. Reference: github.com/dongwonjo/FastKV @ b978769, `baselines/fastkv/utils.py`
 * (`FastKVCluster.update_kv`, `compress_fastkv`).
 *
 * Per layer (n rows): scores = window softmax (last w queries, causal inside the window) summed over the window,
 * pooled (kernel k), summed over each KV group's query heads; each KV head keeps its top B−w prefix tokens and
 * the window. At layer t the same scores summed over all heads choose the top T−w prefix tokens; with the
 * window, sorted, they are the rows that go on.
 *
 * Budgets: proportional mode (defaults, era C) B_l = floor(n_l · ρ_l) with ρ_l = retainRate for l ≤ t and
 * retainRate / tspRate after, T = floor(N · tspRate); constant mode takes `budget` B and/or `tspLength` T.
 * As in the reference, a layer with n < B keeps everything and its TSP does not fire.
 * The TSP layer can come from `fastkv calibrate` (paper v7, Eq. 3): tspLayer 'auto' reads it from a calibration file.
 * Deviations: fp32 throughout (the reference scores in fp16); selections are stored in ascending order; a
 * budget below the window keeps just the window (the reference's top-k would get a negative k).
 */
import { ConfigError } from '../errors.js';
import type { ModelConfig } from '../model/config.js';
import {
  checkInteger, checkRate, parseBudget, parseWindowOptions,
  type BudgetOptions, type WindowOptions,
} from './budget.js';
import { readCalibration } from './calibration.js';
import type { CompressionPolicy, LayerDecision } from './policy.js';
import { snapScoring } from './scoring.js';
import { concat, keepTopAndWindow, range, sumGroups, topK } from './select.js';

export interface FastKVOptions extends BudgetOptions, WindowOptions {
  /** 0-based TSP layer t (reference `tsp_idx`); default L/2 − 1; 'auto': the layer in `calibration`. */
  tspLayer?: number | 'auto';
  /** Calibration file written by `fastkv calibrate`, read when tspLayer is 'auto'. */
  calibration?: string;
  /** Share of the prompt propagated past layer t, (0, 1] (reference `tsp_rate`, default 0.2). */
  tspRate?: number;
  /** Tokens propagated past layer t, window included (reference `tsp_len`, constant mode). */
  tspLength?: number;
}

export function fastkv(options: FastKVOptions, config: ModelConfig): CompressionPolicy {
  const { windowSize: w, kernelSize, pooling } = parseWindowOptions('fastkv', options);
  const budget = parseBudget('fastkv', options, w, { kind: 'rate', rate: 0.1 });
  const L = config.numLayers;
  let tspLayer = options.tspLayer;
  if (tspLayer === 'auto') {
    if (typeof options.calibration !== 'string') {
      throw new ConfigError('fastkv: tspLayer "auto" needs a calibration file: make one with `fastkv calibrate --model DIR --out FILE`, then pass --calibration FILE');
    }
    tspLayer = readCalibration(options.calibration, config).tspLayer;
  } else if (options.calibration !== undefined) {
    throw new ConfigError('fastkv: calibration is read only with tspLayer "auto"');
  }
  const t = checkInteger('fastkv', 'tspLayer', tspLayer ?? Math.max(0, Math.floor(L / 2) - 1), 0, L - 1);
  if (options.tspRate !== undefined && options.tspLength !== undefined) throw new ConfigError('fastkv: give only one of tspRate, tspLength');
  const tspLength = options.tspLength === undefined ? undefined : checkInteger('fastkv', 'tspLength', options.tspLength, w + 1);
  const tspRate = tspLength === undefined ? checkRate('fastkv', 'tspRate', options.tspRate ?? 0.2) : undefined;
  const scoring = snapScoring(w, kernelSize, pooling, config.headDim);

  return {
    name: 'fastkv',
    queryWindow: w,
    begin(_config, N) {
      const T = tspLength ?? Math.floor(N * tspRate!);
      return {
        async layer({ layer, numRows: n, scorer }): Promise<LayerDecision> {
          // Spec §2.2: B_l = floor(n_l·ρ_l), ρ_l = retainRate up to layer t and retainRate / tspRate after it
          // (where n_l = T), so every layer keeps about N·retainRate.
          const propagated = layer > t && n < N;
          const B = budget.kind === 'absolute' ? budget.entries
            : Math.floor(n * (propagated ? budget.rate / (tspRate ?? T / N) : budget.rate));
          if (n < B || n <= w) return { kind: 'keep', keep: null };
          const scores = await scorer.window(scoring);
          const keep = keepTopAndWindow(scores, n, Math.max(B, w), w);
          if (layer !== t || n <= T) return { kind: 'keep', keep };
          // TSP: scores summed over all heads pick T − w prefix tokens; the window always goes on.
          const total = sumGroups(scores, 1);
          return { kind: 'propagate', keep, rows: concat(topK(total.data, T - w), range(n - w, n)) };
        },
      };
    },
  };
}
