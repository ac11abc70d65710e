/**
 * The per-layer graphs of a Llama-family decoder layer. One graph serves every layer: weights are inputs, so a
 * model needs one session per graph kind, not one per layer, and no weight is copied into ONNX Runtime.
 *
 * - `attention`: norm → fused QKV (+bias) → (q/k norm) → RoPE from explicit position ids → causal GQA attention
 *   (ONNX Runtime's GroupQueryAttention: KV heads never repeated, memory linear in length) → o_proj → residual.
 *   It also returns the layer's keys and values per KV head (RoPE applied) and the queries of the last rows
 *   from `windowStart` on, which is all a compression policy needs to score tokens.
 * - `mlp`: norm → SwiGLU → residual. Token-wise, so the engine may run it on chunks of rows.
 * - `head`: final norm → logits.
 * @module
 */
import type { ModelConfig } from '../model/config.js';
import { GraphBuilder } from './builder.js';
import { applyRope, linear, rmsNorm, ropeTables, swiGlu } from './ops.js';

/** Input and output names of the attention graph. */
export const ATTN = {
  hidden: 'hidden',               // [n, hidden] f32: the layer's input rows
  positionIds: 'position_ids',    // [n] i64: original positions of those rows
  invFreq: 'inv_freq',            // [headDim/2] f32
  pastKey: 'past_key',            // [1, numKvHeads, capacity, headDim] f32: the cache (capacity 0 in prefill)
  pastValue: 'past_value',
  seqlensK: 'seqlens_k',          // [1] i32: cache entries after this step, minus one
  totalLength: 'total_length',    // [] i32: cache entries after this step
  windowStart: 'window_start',    // [1] i64: first row whose query is returned
  inputNorm: 'w_input_norm', qkv: 'w_qkv', qkvBias: 'b_qkv', qNorm: 'w_q_norm', kNorm: 'w_k_norm', o: 'w_o',
  // outputs
  hiddenOut: 'hidden_out',        // [n, hidden]: input + attention output
  presentKey: 'present_key',      // [1, numKvHeads, total, headDim]: RoPE applied
  presentValue: 'present_value',
  windowQueries: 'window_queries',// [n - windowStart, numHeads·headDim]: RoPE applied
} as const;

export const MLP = {
  hidden: 'hidden', postNorm: 'w_post_norm', gateUp: 'w_gate_up', down: 'w_down',
  hiddenOut: 'hidden_out',        // [n, hidden]
} as const;

export const HEAD = {
  hidden: 'hidden', finalNorm: 'w_final_norm', lmHead: 'w_lm_head',
  logits: 'logits',               // [n, vocab]
} as const;

export function buildAttentionGraph(c: ModelConfig, attentionScaling: number): Uint8Array {
  const g = new GraphBuilder('attention');
  const { hiddenSize: D, numHeads: H, numKvHeads: Hkv, headDim: d } = c;
  const qSize = H * d;
  const kvSize = Hkv * d;
  const hidden = g.input(ATTN.hidden, 'float', ['n', D]);
  const positionIds = g.input(ATTN.positionIds, 'int64', ['n']);
  const invFreq = g.input(ATTN.invFreq, 'float', [d / 2]);
  const pastKey = g.input(ATTN.pastKey, 'float', [1, Hkv, 'past', d]);
  const pastValue = g.input(ATTN.pastValue, 'float', [1, Hkv, 'past', d]);
  const seqlensK = g.input(ATTN.seqlensK, 'int32', [1]);
  const totalLength = g.input(ATTN.totalLength, 'int32', []);
  const windowStart = g.input(ATTN.windowStart, 'int64', [1]);
  const wNorm = g.input(ATTN.inputNorm, 'float', [D]);
  const wQkv = g.input(ATTN.qkv, 'float', [qSize + 2 * kvSize, D]);
  const bQkv = c.qkvBias ? g.input(ATTN.qkvBias, 'float', [qSize + 2 * kvSize]) : undefined;
  const wQNorm = c.qkNorm ? g.input(ATTN.qNorm, 'float', [d]) : undefined;
  const wKNorm = c.qkNorm ? g.input(ATTN.kNorm, 'float', [d]) : undefined;
  const wO = g.input(ATTN.o, 'float', [D, qSize]);

  const normed = rmsNorm(g, hidden, wNorm, c.rmsNormEps);
  const [q, k, v] = g.opN('Split', [linear(g, normed, wQkv, bQkv), g.int64([qSize, kvSize, kvSize])], 3, { axis: -1 });

  // Qwen3 normalizes each head's query and key before RoPE.
  const qIn = wQNorm ? g.op('Reshape', [rmsNorm(g, g.op('Reshape', [q, g.int64([0, H, d])]), wQNorm, c.rmsNormEps), g.int64([0, qSize])]) : q;
  const kIn = wKNorm ? g.op('Reshape', [rmsNorm(g, g.op('Reshape', [k, g.int64([0, Hkv, d])]), wKNorm, c.rmsNormEps), g.int64([0, kvSize])]) : k;

  const { cos, sin } = ropeTables(g, positionIds, invFreq, attentionScaling);
  const qRot = g.op('Reshape', [applyRope(g, qIn, H, d, cos, sin), g.int64([0, qSize])]);  // [n, H·d]
  const kRot = g.op('Reshape', [applyRope(g, kIn, Hkv, d, cos, sin), g.int64([0, kvSize])]);

  // GroupQueryAttention wants [batch, n, heads·d]; causal in row order, which is position order (rows ascend).
  const batched = (x: string) => g.op('Unsqueeze', [x, g.int64([0])]);
  const [attn, presentKey, presentValue] = g.msOpN('GroupQueryAttention',
    [batched(qRot), batched(kRot), batched(v), pastKey, pastValue, seqlensK, totalLength], 3,
    { num_heads: H, kv_num_heads: Hkv, scale: { float: 1 / Math.sqrt(d) }, local_window_size: c.slidingWindow ?? -1 });
  const attnOut = linear(g, g.op('Squeeze', [attn, g.int64([0])]), wO);

  g.output(g.op('Add', [hidden, attnOut]), ATTN.hiddenOut, 'float', ['n', D]);
  g.output(presentKey, ATTN.presentKey, 'float', [1, Hkv, 'total', d]);
  g.output(presentValue, ATTN.presentValue, 'float', [1, Hkv, 'total', d]);
  const windowQueries = g.op('Slice', [qRot, windowStart, g.int64([Number.MAX_SAFE_INTEGER]), g.int64([0])]);
  g.output(windowQueries, ATTN.windowQueries, 'float', ['w', qSize]);
  return g.build();
}

export function buildMlpGraph(c: ModelConfig): Uint8Array {
  const g = new GraphBuilder('mlp');
  const D = c.hiddenSize;
  const hidden = g.input(MLP.hidden, 'float', ['n', D]);
  const wNorm = g.input(MLP.postNorm, 'float', [D]);
  const wGateUp = g.input(MLP.gateUp, 'float', [2 * c.intermediateSize, D]);
  const wDown = g.input(MLP.down, 'float', [D, c.intermediateSize]);
  const mlp = swiGlu(g, rmsNorm(g, hidden, wNorm, c.rmsNormEps), wGateUp, wDown, c.intermediateSize);
  g.output(g.op('Add', [hidden, mlp]), MLP.hiddenOut, 'float', ['n', D]);
  return g.build();
}

export function buildHeadGraph(c: ModelConfig): Uint8Array {
  const g = new GraphBuilder('head');
  const D = c.hiddenSize;
  const hidden = g.input(HEAD.hidden, 'float', ['n', D]);
  const wNorm = g.input(HEAD.finalNorm, 'float', [D]);
  const wLm = g.input(HEAD.lmHead, 'float', [c.vocabSize, D]);
  g.output(linear(g, rmsNorm(g, hidden, wNorm, c.rmsNormEps), wLm), HEAD.logits, 'float', ['n', c.vocabSize]);
  return g.build();
}
