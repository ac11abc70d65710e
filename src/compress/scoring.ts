/**
 * Token scores shared by the policies, computed by ONNX Runtime graphs (`src/graph/window-scores.ts`) over a
 * layer's keys and queries. A policy asks its `LayerInput.scorer`; the scorer runs the graph and returns a
 * [heads, length] matrix in JavaScript memory, where selection (`select.ts`) happens.
 * @module
 */
import type { Model } from '../engine/model.js';
import { dataF32, f32, i64 } from '../engine/ort.js';
import {
  BLOCK_ATTENTION, WINDOW_SCORES, buildBlockAttentionGraph, buildWindowScoresGraph, type WindowScoreSpec,
} from '../graph/window-scores.js';

/** Scores laid out [heads, length]: row h is head h's score for each key. */
export interface ScoreMatrix {
  readonly data: Float32Array;
  readonly heads: number;
  readonly length: number;
}

export interface WindowScoreRequest extends WindowScoreSpec {
  /** Observation window w: the last w rows' queries score the n − w keys before them. */
  readonly window: number;
}

export interface Scorer {
  /** Observation-window scores of the prefix keys: [numKvHeads (or numHeads with groupReduce 'none'), n − w]. */
  window(request: WindowScoreRequest): Promise<ScoreMatrix>;
  /** H2O: softmax attention of every row (causal) summed over rows, per query head: [numHeads, n]. */
  accumulated(): Promise<ScoreMatrix>;
}

/** SnapKV's scoring as FastKV's reference code runs it: softmax, window sum, pooled, summed per KV group. */
export function snapScoring(window: number, kernel: number, pooling: 'max' | 'avg', headDim: number): WindowScoreRequest {
  return { window, softmax: true, scale: 1 / Math.sqrt(headDim), aggregate: 'sum', pooling, kernel, groupReduce: 'sum' };
}

/** Elements of block-attention scores computed at once (heads × rows × keys): bounds H2O's memory. */
const BLOCK_ELEMENTS = 1 << 24;

/** A scorer over one layer's keys [numKvHeads, n, headDim] and the queries [rows, numHeads·headDim] of its last rows. */
export function createScorer(model: Model, keys: Float32Array, n: number, queries: Float32Array): Scorer {
  const c = model.config;
  const shape = { numHeads: c.numHeads, numKvHeads: c.numKvHeads, headDim: c.headDim };
  const qWidth = c.numHeads * c.headDim;
  const queryRows = queries.length / qWidth;
  const keyTensor = f32(keys, [1, c.numKvHeads, n, c.headDim]);
  return {
    async window(req) {
      if (req.window < 1 || req.window > queryRows) throw new RangeError(`window ${req.window} outside [1, ${queryRows}]`);
      const key = `window-scores:${req.softmax}:${req.scale}:${req.aggregate}:${req.pooling}:${req.kernel}:${req.groupReduce}:${req.includeWindowKeys ?? false}:${req.groupBeforePool ?? false}:${req.distanceWeight ?? 1}`;
      // A few MFLOP per layer: one thread beats waking the pool (measured: half the time at 4k tokens).
      const session = await model.graph(key, () => buildWindowScoresGraph(shape, req), 1);
      const w = req.window;
      // Causal inside the window: window query i must not see window key j > i.
      const mask = new Float32Array(w * w);
      for (let i = 0; i < w; i++) for (let j = i + 1; j < w; j++) mask[i * w + j] = -Infinity;
      const out = await session.run({
        [WINDOW_SCORES.queries]: f32(queries.subarray((queryRows - w) * qWidth), [w, qWidth]),
        [WINDOW_SCORES.keys]: keyTensor,
        [WINDOW_SCORES.windowMask]: f32(mask, [w, w]),
      });
      const t = out[WINDOW_SCORES.scores];
      return { data: dataF32(t), heads: t.dims[0], length: t.dims[1] };
    },
    async accumulated() {
      if (queryRows !== n) throw new RangeError(`accumulated attention needs all ${n} rows' queries, got ${queryRows}`);
      const session = await model.graph('block-attention', () => buildBlockAttentionGraph(shape));
      const total = new Float32Array(c.numHeads * n);
      const block = Math.max(1, Math.floor(BLOCK_ELEMENTS / (c.numHeads * n)));
      for (let start = 0; start < n; start += block) {
        const rows = Math.min(block, n - start);
        const out = await session.run({
          [BLOCK_ATTENTION.queries]: f32(queries.subarray(start * qWidth, (start + rows) * qWidth), [rows, qWidth]),
          [BLOCK_ATTENTION.keys]: keyTensor,
          [BLOCK_ATTENTION.start]: i64(BigInt64Array.of(BigInt(start)), []),
        });
        const part = dataF32(out[BLOCK_ATTENTION.scores]);
        for (let i = 0; i < part.length; i++) total[i] += part[i];
      }
      return { data: total, heads: c.numHeads, length: n };
    },
  };
}
