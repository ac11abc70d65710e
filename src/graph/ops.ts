/**
 * Building blocks shared by the per-layer graphs: RMSNorm (alone or fused with the residual add), rotary
 * embedding from explicit position ids, SwiGLU. Each function adds nodes to a builder and returns the name of
 * the result.
 *
 * RoPE, and the decode branch's norms, use ONNX Runtime's fused kernels (`com.microsoft.RotaryEmbedding`,
 * `SimplifiedLayerNormalization`, `com.microsoft.SkipSimplifiedLayerNormalization`): one node each where the
 * plain ONNX forms took 10 (RoPE of one tensor) and 6 (norm). Small nodes cost a few µs each in a decode step
 * (README, "Decode speed"). ONNX Runtime does not fuse the plain norm itself at level 'all' (checked with its
 * profiler: ReduceMean, Sqrt and Div ran as separate nodes).
 * @module
 */
import type { GraphBuilder } from './builder.js';

/** RMSNorm over the last axis: x / sqrt(mean(x²) + eps) · weight (Llama / Qwen convention), in plain ONNX ops. */
export function rmsNorm(g: GraphBuilder, x: string, weight: string, eps: number): string {
  const meanSquare = g.op('ReduceMean', [g.op('Mul', [x, x]), g.int64([-1])], { keepdims: 1 });
  const rms = g.op('Sqrt', [g.op('Add', [meanSquare, g.float([eps], [])])]);
  return g.op('Mul', [g.op('Div', [x, rms]), weight]);
}

/**
 * The same RMSNorm as one fused node. It rounds differently from {@link rmsNorm} in the last bits (about 1e-7
 * relative), which is nothing at fp32, but at q8 MatMulNBits quantizes its activations to int8 and such a
 * difference can flip a near-tied token: the prefill and head graphs (which `eval fidelity` scores) keep the
 * plain form, whose time is in their GEMMs anyway; the decode branch, where the node count is the time, uses
 * this one.
 */
export function fusedRmsNorm(g: GraphBuilder, x: string, weight: string, eps: number): string {
  return g.op('SimplifiedLayerNormalization', [x, weight], { axis: -1, epsilon: { float: eps } });
}

/** sum = x + residual, and RMSNorm(sum) (the residual add before a layer's second norm), in one node. */
export function addRmsNorm(g: GraphBuilder, x: string, residual: string, weight: string, eps: number): { sum: string; normed: string } {
  const [normed, , , sum] = g.msOpN('SkipSimplifiedLayerNormalization', [x, residual, weight], 4, { epsilon: { float: eps } });
  return { sum, normed };
}

/** y = x · Wᵀ (+ b) for x [n, in] and an HF Linear weight W [out, in]. */
export function linear(g: GraphBuilder, x: string, weight: string, bias?: string): string {
  return g.op('Gemm', bias ? [x, weight, bias] : [x, weight], { transB: 1 });
}

/**
 * cos and sin tables [n, headDim/2] for the given position ids [n] (int64), one row per position: positions ·
 * invFreq, then cos/sin times the rope's attention scaling. Positions need not be contiguous: after
 * token-selective propagation the tokens keep their original positions.
 */
export function ropeTables(g: GraphBuilder, positionIds: string, invFreq: string, attentionScaling: number): { cos: string; sin: string } {
  const pos = g.op('Unsqueeze', [g.op('Cast', [positionIds], { to: 1 /* FLOAT */ }), g.int64([1])]); // [n, 1]
  const freqs = g.op('Mul', [pos, invFreq]);                                                        // [n, d/2]
  let cos = g.op('Cos', [freqs]);
  let sin = g.op('Sin', [freqs]);
  if (attentionScaling !== 1) {
    const s = g.float([attentionScaling], []);
    cos = g.op('Mul', [cos, s]);
    sin = g.op('Mul', [sin, s]);
  }
  return { cos, sin };
}

/**
 * Rotate-half RoPE on x [1, n, heads·headDim] (`heads` heads of headDim = 2 · the tables' width): with each head
 * split into halves x1, x2, out = (x1·cos − x2·sin, x2·cos + x1·sin), row i rotated by row i of the tables from
 * {@link ropeTables}. ONNX Runtime's RotaryEmbedding indexes its cos/sin "cache" by position; giving it the
 * rows' own tables and position ids 0..n−1 (a start offset of 0) rotates each row by its own, arbitrary, position.
 * Queries and keys may go through one call: they share the tables.
 */
export function applyRope(g: GraphBuilder, x: string, heads: number, cos: string, sin: string): string {
  return g.msOpN('RotaryEmbedding', [x, g.int64([0]), cos, sin], 1, { interleaved: 0, num_heads: heads })[0];
}

/**
 * SwiGLU MLP: down(silu(gate(x)) · up(x)), with gate and up fused in one projection to [n, 2·inter]. (ONNX
 * Runtime fuses x · sigmoid(x) into one QuickGelu node.)
 */
export function swiGlu(g: GraphBuilder, x: string, gateUp: (x: string) => string, down: (x: string) => string, intermediate: number): string {
  const [gate, up] = g.opN('Split', [gateUp(x), g.int64([intermediate, intermediate])], 2, { axis: -1 });
  const silu = g.op('Mul', [gate, g.op('Sigmoid', [gate])]);
  return down(g.op('Mul', [silu, up]));
}
