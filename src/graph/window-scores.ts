/**
 * Scoring graphs shared by the compression policies. They read the queries of some rows and a layer's keys
 * ([1, numKvHeads, n, headDim], RoPE applied) and return one score per (head, key): the observation-window
 * attention of SnapKV / FastKV / AdaKV (softmax, causal inside the window, summed or averaged over the window
 * queries, pooled along the keys, reduced over each KV group), GemFilter's raw last-query dot products, and
 * H2O's attention accumulated over query blocks. The query head h belongs to KV group floor(h / G).
 * @module
 */
import { GraphBuilder } from './builder.js';

export interface WindowScoreSpec {
  /** Softmax over keys (SnapKV-style) or the raw dot products (GemFilter). */
  readonly softmax: boolean;
  /** Multiplier of q·k before the softmax (1/√d for attention; 1 for GemFilter's unscaled scores). */
  readonly scale: number;
  /** How the window queries' rows combine. */
  readonly aggregate: 'sum' | 'mean';
  /** 1-D pooling along the keys, stride 1, padding ⌊k/2⌋ ('avg' counts the zero padding, as PyTorch's default). */
  readonly pooling: 'max' | 'avg' | 'none';
  readonly kernel: number;
  /** Reduction over the G query heads of a KV group; 'none' keeps one row per query head. */
  readonly groupReduce: 'sum' | 'mean' | 'max' | 'none';
  /** Score the window's own keys too (GemFilter ranks every token); default: prefix keys only. */
  readonly includeWindowKeys?: boolean;
  /**
   * Reduce over each KV group's query heads before pooling (PyramidKV, AdaKV and HeadKV's GQA paths) instead of
   * pooling each query head first (FastKV, SnapKV). Ignored with groupReduce 'none'.
   */
  readonly groupBeforePool?: boolean;
  /**
   * Weight the window rows by linspace(1, distanceWeight, w) before combining them, the latest row most
   * (PyramidInfer's distance weighting; default none).
   */
  readonly distanceWeight?: number;
}

export const WINDOW_SCORES = {
  queries: 'queries',   // [w, numHeads·headDim]: the last w rows' queries
  keys: 'keys',         // [1, numKvHeads, n, headDim]
  windowMask: 'window_mask', // [w, w]: 0, or −inf above the diagonal (causal inside the window)
  scores: 'scores',     // [heads, n − w] (or [heads, n] with includeWindowKeys): heads = numKvHeads, or numHeads with groupReduce 'none'
} as const;

export const BLOCK_ATTENTION = {
  queries: 'queries',   // [b, numHeads·headDim]: rows start..start+b−1
  keys: 'keys',         // [1, numKvHeads, n, headDim]
  start: 'start',       // [] i64: row index of the first query
  scores: 'scores',     // [numHeads, n]: attention of the b queries summed over rows (causal)
} as const;

interface Shape { numHeads: number; numKvHeads: number; headDim: number }

/** Logits [numKvHeads, G, rows, n] of `queries` [rows, H·d] against `keys` [1, Hkv, n, d], times `scale`. */
function groupedLogits(g: GraphBuilder, s: Shape, queries: string, keys: string, scale: number): string {
  const G = s.numHeads / s.numKvHeads;
  const q = g.op('Transpose', [g.op('Reshape', [queries, g.int64([-1, s.numKvHeads, G, s.headDim])])], { perm: [1, 2, 0, 3] }); // [Hkv, G, rows, d]
  const kT = g.op('Transpose', [g.op('Squeeze', [keys, g.int64([0])])], { perm: [0, 2, 1] });                              // [Hkv, d, n]
  const logits = g.op('MatMul', [q, g.op('Unsqueeze', [kT, g.int64([1])])]);                                                // [Hkv, G, rows, n]
  return scale === 1 ? logits : g.op('Mul', [logits, g.float([scale], [])]);
}

export function buildWindowScoresGraph(s: Shape, spec: WindowScoreSpec): Uint8Array {
  const g = new GraphBuilder('window-scores');
  const queries = g.input(WINDOW_SCORES.queries, 'float', ['w', s.numHeads * s.headDim]);
  const keys = g.input(WINDOW_SCORES.keys, 'float', [1, s.numKvHeads, 'n', s.headDim]);
  const windowMask = g.input(WINDOW_SCORES.windowMask, 'float', ['w', 'w']);
  let logits = groupedLogits(g, s, queries, keys, spec.scale); // [Hkv, G, w, n]

  // Keys are the prefix (n − w) then the window itself; only the window block needs the causal mask.
  const w = g.op('Gather', [g.op('Shape', [windowMask]), g.int64([0], [])]);        // scalar w
  const n = g.op('Gather', [g.op('Shape', [logits]), g.int64([3], [])]);
  const prefixLen = g.op('Unsqueeze', [g.op('Sub', [n, w]), g.int64([0])]);        // [1]
  if (spec.softmax) {
    const [prefix, window] = g.opN('Split', [logits, g.op('Concat', [prefixLen, g.op('Unsqueeze', [w, g.int64([0])])], { axis: 0 })], 2, { axis: 3 });
    logits = g.op('Softmax', [g.op('Concat', [prefix, g.op('Add', [window, windowMask])], { axis: 3 })], { axis: 3 });
  }
  if (spec.distanceWeight !== undefined && spec.distanceWeight !== 1) {
    // linspace(1, dw, w) over the window rows (axis 2): 1 + i·(dw − 1)/max(w − 1, 1).
    const wf = g.op('Cast', [w], { to: 1 });
    const steps = g.op('Max', [g.op('Sub', [wf, g.float([1], [])]), g.float([1], [])]);
    const i = g.op('Range', [g.float([0], []), wf, g.float([1], [])]);
    const weights = g.op('Add', [g.float([1], []), g.op('Mul', [i, g.op('Div', [g.float([spec.distanceWeight - 1], []), steps])])]);
    logits = g.op('Mul', [logits, g.op('Reshape', [weights, g.int64([1, 1, -1, 1])])]);
  }
  // Window rows → one score per key; prefix keys only unless asked.
  let scores = g.op(spec.aggregate === 'sum' ? 'ReduceSum' : 'ReduceMean', [logits, g.int64([2])], { keepdims: 0 }); // [Hkv, G, n]
  if (!spec.includeWindowKeys) scores = g.op('Slice', [scores, g.int64([0]), prefixLen, g.int64([2])]); // [Hkv, G, n − w]
  const G = s.numHeads / s.numKvHeads;
  const reduceGroups = (x: string) => {
    const op = { sum: 'ReduceSum', mean: 'ReduceMean', max: 'ReduceMax', none: '' }[spec.groupReduce];
    return g.op(op, [g.op('Reshape', [x, g.int64([s.numKvHeads, G, -1])]), g.int64([1])], { keepdims: 0 }); // [Hkv, m]
  };
  const early = spec.groupBeforePool === true && spec.groupReduce !== 'none';
  if (early) scores = reduceGroups(scores);
  const rows = early ? s.numKvHeads : s.numHeads;
  scores = g.op('Reshape', [scores, g.int64([1, rows, -1])]);                        // [1, rows, m] for pooling
  if (spec.pooling !== 'none' && spec.kernel > 1) {
    const half = Math.floor(spec.kernel / 2);
    scores = spec.pooling === 'max'
      ? g.op('MaxPool', [scores], { kernel_shape: [spec.kernel], pads: [half, half], strides: [1] })
      : g.op('AveragePool', [scores], { kernel_shape: [spec.kernel], pads: [half, half], strides: [1], count_include_pad: 1 });
  }
  scores = early || spec.groupReduce === 'none' ? g.op('Squeeze', [scores, g.int64([0])]) : reduceGroups(scores);
  g.output(scores, WINDOW_SCORES.scores, 'float', ['heads', 'm']);
  return g.build();
}

/**
 * H2O's score over a block of query rows: softmax attention (causal: row i sees keys 0..i) summed over the
 * block, per query head. Blocks keep memory at b × n per head instead of n × n.
 */
export function buildBlockAttentionGraph(s: Shape): Uint8Array {
  const g = new GraphBuilder('block-attention');
  const queries = g.input(BLOCK_ATTENTION.queries, 'float', ['b', s.numHeads * s.headDim]);
  const keys = g.input(BLOCK_ATTENTION.keys, 'float', [1, s.numKvHeads, 'n', s.headDim]);
  const start = g.input(BLOCK_ATTENTION.start, 'int64', []);
  const logits = groupedLogits(g, s, queries, keys, 1 / Math.sqrt(s.headDim)); // [Hkv, G, b, n]
  const shape = g.op('Shape', [logits]);
  const b = g.op('Gather', [shape, g.int64([2], [])]);
  const n = g.op('Gather', [shape, g.int64([3], [])]);
  const one = g.int64([1], []);
  const rows = g.op('Unsqueeze', [g.op('Range', [start, g.op('Add', [start, b]), one]), g.int64([1])]); // [b, 1]
  const cols = g.op('Range', [g.int64([0], []), n, one]);                                                 // [n]
  const mask = g.op('Where', [g.op('Greater', [cols, rows]), g.float([-Infinity], []), g.float([0], [])]);  // [b, n]
  const probs = g.op('Softmax', [g.op('Add', [logits, mask])], { axis: 3 });
  const summed = g.op('ReduceSum', [probs, g.int64([2])], { keepdims: 0 });                                 // [Hkv, G, n]
  g.output(g.op('Reshape', [summed, g.int64([s.numHeads, -1])]), BLOCK_ATTENTION.scores, 'float', [s.numHeads, 'n']);
  return g.build();
}
