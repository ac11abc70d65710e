/**
 * Building blocks shared by the per-layer graphs: RMSNorm, rotary embedding from explicit position ids, SwiGLU.
 * Each function adds nodes to a builder and returns the name of the result.
 * @module
 */
import type { GraphBuilder } from './builder.js';

/** RMSNorm over the last axis: x / sqrt(mean(x²) + eps) · weight (Llama / Qwen convention). */
export function rmsNorm(g: GraphBuilder, x: string, weight: string, eps: number): string {
  const meanSquare = g.op('ReduceMean', [g.op('Mul', [x, x]), g.int64([-1])], { keepdims: 1 });
  const rms = g.op('Sqrt', [g.op('Add', [meanSquare, g.float([eps], [])])]);
  return g.op('Mul', [g.op('Div', [x, rms]), weight]);
}

/** y = x · Wᵀ (+ b) for x [n, in] and an HF Linear weight W [out, in]. */
export function linear(g: GraphBuilder, x: string, weight: string, bias?: string): string {
  return g.op('Gemm', bias ? [x, weight, bias] : [x, weight], { transB: 1 });
}

/**
 * cos and sin tables [n, 1, headDim/2] for the given position ids [n] (int64): positions · invFreq, then cos/sin
 * times the rope's attention scaling. Positions need not be contiguous: after token-selective propagation the
 * tokens keep their original positions.
 */
export function ropeTables(g: GraphBuilder, positionIds: string, invFreq: string, attentionScaling: number): { cos: string; sin: string } {
  const pos = g.op('Unsqueeze', [g.op('Cast', [positionIds], { to: 1 /* FLOAT */ }), g.int64([1])]); // [n, 1]
  const freqs = g.op('Unsqueeze', [g.op('Mul', [pos, invFreq]), g.int64([1])]);                    // [n, 1, d/2]
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
 * Rotate-half RoPE on x [n, heads·headDim]: with x = (x1, x2) split at headDim/2,
 * out = (x1·cos − x2·sin, x2·cos + x1·sin). Returns [n, heads, headDim].
 */
export function applyRope(g: GraphBuilder, x: string, heads: number, headDim: number, cos: string, sin: string): string {
  const x3 = g.op('Reshape', [x, g.int64([0, heads, headDim])]);
  const [x1, x2] = g.opN('Split', [x3, g.int64([headDim / 2, headDim / 2])], 2, { axis: -1 });
  const out1 = g.op('Sub', [g.op('Mul', [x1, cos]), g.op('Mul', [x2, sin])]);
  const out2 = g.op('Add', [g.op('Mul', [x2, cos]), g.op('Mul', [x1, sin])]);
  return g.op('Concat', [out1, out2], { axis: -1 });
}

/** SwiGLU MLP: down(silu(gate(x)) · up(x)), with gate and up fused in one projection to [n, 2·inter]. */
export function swiGlu(g: GraphBuilder, x: string, gateUp: (x: string) => string, down: (x: string) => string, intermediate: number): string {
  const [gate, up] = g.opN('Split', [gateUp(x), g.int64([intermediate, intermediate])], 2, { axis: -1 });
  const silu = g.op('Mul', [gate, g.op('Sigmoid', [gate])]);
  return down(g.op('Mul', [silu, up]));
}
