/**
 * TSP-layer calibration (FastKV paper v7, Eq. 3; the official repository has no code for it): for each
 * candidate layer t, run FastKV's prefill with token-selective propagation at t on calibration prompts and
 * measure the mean squared L2 distance between the final hidden states of the propagated tokens and those of the
 * same tokens in a full-context run. Later layers propagate from more informed scores (smaller distance) but
 * save less prefill work; the choice is the earliest layer whose distance is within a tolerance of the best.
 *
 * The distance at layer t is 0 at the last layer (nothing runs after it) and at TSP rate 1 (every token goes
 * on). To compare layers on one scale the table also gives each distance relative to layer 0's. The table covers
 * every layer; the choice is made among the candidates 0..maxLayer (the paper's L ≤ L_max; default L/2 − 1, the
 * reference's default layer, where TSP at rate 0.2 costs about 60% of full prefill): the earliest candidate whose
 * relative distance is within `tolerance` of the best candidate's. Hidden states are the last layer's outputs
 * before the final norm.
 * @module
 */
import { ConfigError } from '../errors.js';
import type { Model } from '../engine/model.js';
import { prefill, type LayerStats } from '../engine/forward.js';
import { resolvePolicy } from '../compress/registry.js';
import { flopsOfLayers } from '../bench/methods.js';
import { shapeOf, type Calibration, type CalibrationRow } from '../compress/calibration.js';
import { haystackTokens, type Haystack } from './haystack.js';

export type { Calibration, CalibrationRow };

export interface CalibrationOptions {
  haystack: Haystack;
  /** Prompts, drawn at evenly spaced offsets of the text (default 4). */
  samples?: number;
  /** Tokens per prompt. */
  length: number;
  /** FastKV's TSP rate (default 0.2). */
  tspRate?: number;
  /** Highest candidate layer (default L/2 − 1). */
  maxLayer?: number;
  /** Relative-distance tolerance for the choice (default 0.05). */
  tolerance?: number;
  onStep?: (note: string) => void;
}


/** Rows each layer processes with TSP at layer t: N up to t, T after. */
function tspLayers(L: number, N: number, T: number, t: number): LayerStats[] {
  return Array.from({ length: L }, (_, l) => ({ rows: l <= t || T >= N ? N : T, kept: 0 }));
}

export async function calibrateTspLayer(model: Model, o: CalibrationOptions): Promise<Calibration> {
  const c = model.config;
  const L = c.numLayers;
  const samples = o.samples ?? 4;
  const tspRate = o.tspRate ?? 0.2;
  const tolerance = o.tolerance ?? 0.05;
  const maxLayer = o.maxLayer ?? Math.max(0, Math.floor(L / 2) - 1);
  if (!Number.isInteger(maxLayer) || maxLayer < 0 || maxLayer > L - 1) throw new ConfigError(`calibrate: maxLayer must be an integer in [0, ${L - 1}], got ${maxLayer}`);
  if (!(tolerance >= 0)) throw new ConfigError(`calibrate: tolerance must be >= 0, got ${tolerance}`);
  const D = c.hiddenSize;
  const text = haystackTokens(model.tokenizer, o.haystack, o.length);
  const stride = Math.max(1, Math.floor((text.length - o.length) / Math.max(1, samples - 1)));
  const sums = new Float64Array(L);
  const counts = new Float64Array(L);
  for (let s = 0; s < samples; s++) {
    const start = Math.min(s * stride, Math.max(0, text.length - o.length));
    const ids = Int32Array.from(text.slice(start, start + o.length));
    const full = await prefill(model, ids, { finalHidden: true });
    const reference = full.finalHidden!.hidden; // rows = positions 0..N−1
    for (let t = 0; t < L; t++) {
      o.onStep?.(`prompt ${s + 1}/${samples}, TSP layer ${t}`);
      const policy = resolvePolicy({ method: 'fastkv', retainRate: 1, tspRate, tspLayer: t }, c);
      const run = await prefill(model, ids, { policy, finalHidden: true });
      const { hidden, positionIds } = run.finalHidden!;
      for (let r = 0; r < positionIds.length; r++) {
        const p = positionIds[r];
        let d2 = 0;
        for (let e = 0; e < D; e++) { const diff = hidden[r * D + e] - reference[p * D + e]; d2 += diff * diff; }
        sums[t] += d2;
      }
      counts[t] += positionIds.length;
    }
  }
  const N = o.length;
  const T = Math.floor(N * tspRate);
  const fullFlops = flopsOfLayers(c, tspLayers(L, N, N, L - 1));
  const distances = Array.from(sums, (x, t) => x / counts[t]);
  const rows = distances.map((distance, layer) => ({
    layer, distance, relative: distances[0] > 0 ? distance / distances[0] : 0,
    flopShare: flopsOfLayers(c, tspLayers(L, N, T, layer)) / fullFlops,
  }));
  const candidates = rows.slice(0, maxLayer + 1);
  const best = Math.min(...candidates.map((r) => r.relative));
  const tspLayer = candidates.find((r) => r.relative <= best + tolerance)!.layer;
  return { model: model.dir, shape: shapeOf(c), tspRate, samples, length: N, tolerance, maxLayer, rows, tspLayer };
}

