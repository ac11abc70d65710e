/**
 * The graphs of a Llama-family decoder layer. Each layer is one ONNX Runtime session whose weights are constant
 * initializers (prepacked once by ONNX Runtime, held once in memory; see `layer-graph.ts`), with one branch per
 * kind of run:
 *
 * - `project` (prefill): norm → fused QKV (+bias) → (q/k norm) → RoPE from explicit position ids, for a chunk of
 *   rows. Queries, keys and values go back to the engine, which attends over them in a weightless session shared
 *   by all layers (`buildPrefillAttentionGraph`: ONNX Runtime's GroupQueryAttention, KV heads never repeated) and
 *   hands the keys, values and last queries to the compression policy.
 * - `mlp` (prefill): o_proj of the attention output → residual → norm → SwiGLU → residual. Token-wise, so the
 *   engine runs it on chunks of rows.
 * - `decode`: one token through a whole layer, attending to the cache in place (see `buildDecodeGraph`).
 * - `head` (its own session): final norm → logits.
 *
 * The functions here add a branch's nodes to a builder; how a weight enters (float32 `Gemm`, quantized
 * `MatMulNBits` or int8 `DynamicQuantizeMatMul`) is the {@link LayerParams}' business.
 * @module
 */
import type { ModelConfig } from '../model/config.js';
import { GraphBuilder } from './builder.js';
import { addRmsNorm, applyRope, fusedRmsNorm, rmsNorm, ropeTables, swiGlu } from './ops.js';

/** A layer's weights as the branch graphs see them. */
export interface LayerParams {
  /** The value name of a per-layer vector weight ([hidden] norms, [headDim] q/k norms). */
  vector(which: 'inputNorm' | 'postNorm' | 'qNorm' | 'kNorm'): string;
  /** y = x · Wᵀ for the layer's projection `which` (the fused QKV with its bias, if any), added to `g`. */
  linear(g: GraphBuilder, x: string, which: 'qkv' | 'o' | 'gateUp' | 'down'): string;
}

/** Input and output names of the prefill projection branch. */
export const PROJECT = {
  hidden: 'hidden',               // [n, hidden] f32: the layer's input rows
  positionIds: 'position_ids',    // [n] i64: original positions of those rows
  invFreq: 'inv_freq',            // [headDim/2] f32
  // outputs
  query: 'query',                 // [n, numHeads·headDim]: RoPE applied
  key: 'key',                     // [n, numKvHeads·headDim]: RoPE applied
  value: 'value',                 // [n, numKvHeads·headDim]
} as const;

export const MLP = {
  hidden: 'hidden',               // [n, hidden]: the layer's input rows
  attention: 'attention',         // [n, numHeads·headDim]: their attention output (before o_proj)
  hiddenOut: 'hidden_out',        // [n, hidden]
} as const;

/** Input and output names of the decode graph: a whole layer for one token against its cache. */
export const DECODE = {
  hidden: 'hidden',               // [1, hidden]
  positionIds: 'position_ids',    // [1] i64
  invFreq: 'inv_freq',            // [headDim/2]
  /** Head h's live keys [length_h, headDim], RoPE applied: each head its own length (ragged caches). */
  cacheKeys: (h: number) => `cache_keys_${h}`,
  /** Head h's live values [length_h, headDim]. */
  cacheValues: (h: number) => `cache_values_${h}`,
  hiddenOut: 'hidden_out',        // [1, hidden]
  newKey: 'new_key',              // [numKvHeads, headDim]: this token's key (RoPE applied), for the cache
  newValue: 'new_value',          // [numKvHeads, headDim]
  query: 'query',                 // [1, numHeads·headDim]: this token's query (RoPE applied), for policies that evict while decoding
} as const;

/**
 * Names of the batched decode step, split in two layer branches around attention so that the weights are read
 * once for B sequences while each sequence attends over its own cache in a weightless graph (see
 * `buildBatchAttentionGraph`): `decodeProject` (norm → QKV → RoPE for B rows, each at its own position with its
 * own rope frequencies) and `decodeFinish` (o_proj → residual → MLP for B rows).
 */
export const BATCH = {
  hidden: 'hidden',               // [B, hidden]: one row per sequence
  positionIds: 'position_ids',    // [B] i64
  rowInvFreq: 'row_inv_freq',     // [B, headDim/2]: each sequence's rope frequencies (dynamic rope differs by length)
  attention: 'attention',         // [B, numHeads·headDim]: decodeFinish's input, the attention output
  // decodeProject's outputs
  query: 'query',                 // [B, numHeads·headDim], RoPE applied
  key: 'key',                     // [B, numKvHeads·headDim], RoPE applied
  value: 'value',                 // [B, numKvHeads·headDim]
  // decodeFinish's output
  hiddenOut: 'hidden_out',        // [B, hidden]
} as const;

export const HEAD = {
  hidden: 'hidden', finalNorm: 'w_final_norm', lmHead: 'w_lm_head',
  logits: 'logits',               // [n, vocab]
} as const;

/** The outputs of each branch, in order. */
export const BRANCH_OUTPUTS = {
  project: [PROJECT.query, PROJECT.key, PROJECT.value],
  mlp: [MLP.hiddenOut],
  decode: [DECODE.hiddenOut, DECODE.newKey, DECODE.newValue, DECODE.query],
  decodeProject: [BATCH.query, BATCH.key, BATCH.value],
  decodeFinish: [BATCH.hiddenOut],
} as const;

/**
 * Input norm → fused QKV (+ bias) → Qwen3's per-head q/k norm → RoPE at `positionIds`. Returns q [1, n, H·d] and
 * k [1, n, Hkv·d] with RoPE applied, and v [1, n, Hkv·d] (batched, as GroupQueryAttention and RotaryEmbedding
 * take them). Without q/k norms, queries and keys are rotated together in one RotaryEmbedding node. `norm` is
 * the RMSNorm form (see `fusedRmsNorm`).
 */
function projectQkv(g: GraphBuilder, c: ModelConfig, p: LayerParams, hidden: string, positionIds: string, invFreq: string, attentionScaling: number,
  norm: typeof rmsNorm) {
  const { numHeads: H, numKvHeads: Hkv, headDim: d } = c;
  const qSize = H * d;
  const kvSize = Hkv * d;

  const normed = norm(g, hidden, p.vector('inputNorm'), c.rmsNormEps);
  const qkv = g.op('Unsqueeze', [p.linear(g, normed, 'qkv'), g.int64([0])]);                      // [1, n, (H+2Hkv)·d]
  const { cos, sin } = ropeTables(g, positionIds, invFreq, attentionScaling);
  if (!c.qkNorm) {
    const [qk, v] = g.opN('Split', [qkv, g.int64([qSize + kvSize, kvSize])], 2, { axis: -1 });
    const [qRot, kRot] = g.opN('Split', [applyRope(g, qk, H + Hkv, cos, sin), g.int64([qSize, kvSize])], 2, { axis: -1 });
    return { qRot, kRot, v };
  }
  // Qwen3 normalizes each head's query and key before RoPE.
  const [q, k, v] = g.opN('Split', [qkv, g.int64([qSize, kvSize, kvSize])], 3, { axis: -1 });
  const headNorm = (x: string, heads: number, w: string) =>
    g.op('Reshape', [norm(g, g.op('Reshape', [x, g.int64([0, 0, heads, d])]), w, c.rmsNormEps), g.int64([0, 0, heads * d])]);
  const qRot = applyRope(g, headNorm(q, H, p.vector('qNorm')), H, cos, sin);
  const kRot = applyRope(g, headNorm(k, Hkv, p.vector('kNorm')), Hkv, cos, sin);
  return { qRot, kRot, v };
}

/** SwiGLU → residual, for `normed` = the post-attention norm of `hidden`. */
function mlpBlock(g: GraphBuilder, c: ModelConfig, p: LayerParams, hidden: string, normed: string): string {
  return g.op('Add', [hidden, swiGlu(g, normed, (x) => p.linear(g, x, 'gateUp'), (x) => p.linear(g, x, 'down'), c.intermediateSize)]);
}

/** Adds the prefill projection branch to `g`; returns its outputs in the order of `BRANCH_OUTPUTS.project`. */
export function buildPrefillProjectGraph(g: GraphBuilder, c: ModelConfig, attentionScaling: number, p: LayerParams): string[] {
  const { hiddenSize: D, headDim: d } = c;
  const hidden = g.input(PROJECT.hidden, 'float', ['n', D]);
  const positionIds = g.input(PROJECT.positionIds, 'int64', ['n']);
  const invFreq = g.input(PROJECT.invFreq, 'float', [d / 2]);
  const { qRot, kRot, v } = projectQkv(g, c, p, hidden, positionIds, invFreq, attentionScaling, rmsNorm);
  const rows = (x: string) => g.op('Squeeze', [x, g.int64([0])]);                                 // [1, n, ·] → [n, ·]
  return [rows(qRot), rows(kRot), rows(v)];
}

/**
 * o_proj of `attention` → residual onto `hidden` → post-attention norm → MLP block. Prefill uses the plain RMSNorm
 * (like its projections and the head); decode the fused `SkipSimplifiedLayerNormalization`.
 */
function finishLayer(g: GraphBuilder, c: ModelConfig, p: LayerParams, hidden: string, attention: string, fused: boolean): string {
  const attnOut = p.linear(g, attention, 'o');
  if (fused) {
    const { sum, normed } = addRmsNorm(g, attnOut, hidden, p.vector('postNorm'), c.rmsNormEps);
    return mlpBlock(g, c, p, sum, normed);
  }
  const sum = g.op('Add', [hidden, attnOut]);
  return mlpBlock(g, c, p, sum, rmsNorm(g, sum, p.vector('postNorm'), c.rmsNormEps));
}

/** Adds the prefill MLP branch to `g` (o_proj → residual → MLP, see `finishLayer`); returns its output [n, hidden]. */
export function buildMlpGraph(g: GraphBuilder, c: ModelConfig, p: LayerParams): string[] {
  const hidden = g.input(MLP.hidden, 'float', ['n', c.hiddenSize]);
  const attention = g.input(MLP.attention, 'float', ['n', c.numHeads * c.headDim]);
  return [finishLayer(g, c, p, hidden, attention, false)];
}

/** Input and output names of the prefill attention graph (weightless, one per model). */
export const PREFILL_ATTENTION = {
  query: 'query',                 // [1, n, numHeads·headDim]: a block of consecutive rows, RoPE applied
  key: 'key',                     // [1, n, numKvHeads·headDim]
  value: 'value',
  pastKey: 'past_key',            // [1, numKvHeads, p, headDim]: the keys of every row before the block (p may be 0)
  pastValue: 'past_value',
  // outputs
  attention: 'attention',         // [1, n, numHeads·headDim]
  presentKey: 'present_key',      // [1, numKvHeads, p + n, headDim]: past and block
  presentValue: 'present_value',
} as const;

/**
 * Causal GQA attention of a block of `n` rows over the `p` rows before it and itself (ONNX Runtime's
 * GroupQueryAttention with past keys and values: KV heads never repeated, rows in position order). The engine
 * runs a prompt in blocks, each block's present keys and values being the next one's past, so that the memory
 * this session holds stays that of one block (its memory arena is on; its buffers are scores of a block's rows),
 * not of the whole prompt; the result is the same as one run over the whole prompt, bit for bit (measured).
 */
export function buildPrefillAttentionGraph(c: ModelConfig): Uint8Array {
  const { numHeads: H, numKvHeads: Hkv, headDim: d } = c;
  const g = new GraphBuilder('prefill_attention');
  const P = PREFILL_ATTENTION;
  const query = g.input(P.query, 'float', [1, 'n', H * d]);
  const key = g.input(P.key, 'float', [1, 'n', Hkv * d]);
  const value = g.input(P.value, 'float', [1, 'n', Hkv * d]);
  const pastKey = g.input(P.pastKey, 'float', [1, Hkv, 'p', d]);
  const pastValue = g.input(P.pastValue, 'float', [1, Hkv, 'p', d]);
  // seqlens_k = p + n − 1 and total_sequence_length = p + n, as int32.
  const int32 = (x: string) => g.op('Cast', [x], { to: 6 /* INT32 */ });
  const total = g.op('Add', [g.op('Shape', [pastKey], { start: 2, end: 3 }), g.op('Shape', [query], { start: 1, end: 2 })]);  // [1]
  const seqlensK = int32(g.op('Sub', [total, g.int64([1])]));
  const totalLength = int32(g.op('Squeeze', [total, g.int64([0])]));
  const [attention, presentKey, presentValue] = g.msOpN('GroupQueryAttention',
    [query, key, value, pastKey, pastValue, seqlensK, totalLength], 3,
    { num_heads: H, kv_num_heads: Hkv, scale: { float: 1 / Math.sqrt(d) }, local_window_size: c.slidingWindow ?? -1 });
  g.output(attention, P.attention, 'float', [1, 'n', H * d]);
  g.output(presentKey, P.presentKey, 'float', [1, Hkv, 'total', d]);
  g.output(presentValue, P.presentValue, 'float', [1, Hkv, 'total', d]);
  return g.build();
}

/** Adds the head to `g`: final norm → logits [n, vocab] through `lmHead`. */
export function buildHeadGraph(g: GraphBuilder, c: ModelConfig, finalNorm: string, lmHead: (x: string) => string): void {
  const hidden = g.input(HEAD.hidden, 'float', ['n', c.hiddenSize]);
  g.output(lmHead(rmsNorm(g, hidden, finalNorm, c.rmsNormEps)), HEAD.logits, 'float', ['n', c.vocabSize]);
}

/**
 * One decode step of a whole layer. Attention reads each cache head's live entries in place (one input per head,
 * [length_h, headDim], never repeated to query heads, never copied), so heads may hold different numbers of
 * entries and a step costs what the cache holds; plus the new token's own key and value. The new key and value
 * come back for the engine to append to the cache.
 */
export function buildDecodeGraph(g: GraphBuilder, c: ModelConfig, attentionScaling: number, p: LayerParams, repeatKv = false): string[] {
  const { hiddenSize: D, numHeads: H, headDim: d } = c;
  // With repeatKv the cache holds one head per query head: the new key and value are repeated G times.
  const Hkv = repeatKv ? H : c.numKvHeads;
  const G = H / Hkv;
  const hidden = g.input(DECODE.hidden, 'float', [1, D]);
  const positionIds = g.input(DECODE.positionIds, 'int64', [1]);
  const invFreq = g.input(DECODE.invFreq, 'float', [d / 2]);

  const projected = projectQkv(g, c, p, hidden, positionIds, invFreq, attentionScaling, fusedRmsNorm);
  const repeat = (x: string) => repeatKv ? repeatKvHeads(g, x, c.numKvHeads, H / c.numKvHeads, d) : x;
  const { qRot } = projected;
  const kRot = repeat(projected.kRot);
  const v = repeat(projected.v);
  const attn = attendOverCache(g, qRot, kRot, v, Hkv, G, d);

  // Outputs, in the order of BRANCH_OUTPUTS.decode: [1, D], [Hkv, d], [Hkv, d], [1, H·d].
  return [finishLayer(g, c, p, hidden, attn, true), g.op('Reshape', [kRot, g.int64([Hkv, d])]), g.op('Reshape', [v, g.int64([Hkv, d])]),
    g.op('Reshape', [qRot, g.int64([1, H * d])])];
}

/** Adds the batched decode's first branch to `g`: B rows, each at its own position → [q, k, v] (RoPE applied). */
export function buildDecodeProjectGraph(g: GraphBuilder, c: ModelConfig, attentionScaling: number, p: LayerParams): string[] {
  const hidden = g.input(BATCH.hidden, 'float', ['batch', c.hiddenSize]);
  const positionIds = g.input(BATCH.positionIds, 'int64', ['batch']);
  const rowInvFreq = g.input(BATCH.rowInvFreq, 'float', ['batch', c.headDim / 2]);
  // positions [B, 1] · frequencies [B, d/2]: each row with its own, the same products as the one-sequence step;
  // the same fused norm as the one-sequence decode branch, so both steps compute alike.
  const { qRot, kRot, v } = projectQkv(g, c, p, hidden, positionIds, rowInvFreq, attentionScaling, fusedRmsNorm);
  const rows = (x: string) => g.op('Squeeze', [x, g.int64([0])]);                                 // [1, B, ·] → [B, ·]
  return [rows(qRot), rows(kRot), rows(v)];
}

/** Adds the batched decode's second branch to `g`: hidden + o_proj(attention) → MLP block, for B rows. */
export function buildDecodeFinishGraph(g: GraphBuilder, c: ModelConfig, p: LayerParams): string[] {
  const hidden = g.input(BATCH.hidden, 'float', ['batch', c.hiddenSize]);
  const attention = g.input(BATCH.attention, 'float', ['batch', c.numHeads * c.headDim]);
  return [finishLayer(g, c, p, hidden, attention, true)];
}

/** The cache layout of one sequence in a batched step: its cache heads (numKvHeads, or numHeads when repeated). */
export type BatchLayout = readonly ('kv' | 'repeated')[];

/** Input names of the batched attention graph: sequence s's cache head h. */
export const BATCH_CACHE = {
  keys: (s: number, h: number) => `cache_keys_${s}_${h}`,
  values: (s: number, h: number) => `cache_values_${s}_${h}`,
  output: 'attention',            // [B, numHeads·headDim]
} as const;

/**
 * The attention of a batched decode step, without weights. The engine has already appended each sequence's new
 * key and value to its cache, so sequence s (row s of `query`) attends over its cache heads alone, each given in
 * place ([length, headDim], the new entry last: no padding to a common length, no copies): per head one scaled
 * MatMul, a Softmax and a MatMul, a third of the nodes of attending over cache and new entry apart (per-node
 * cost dominates at decode sizes). Returns [B, numHeads·headDim].
 */
export function buildBatchAttentionGraph(c: ModelConfig, layout: BatchLayout): Uint8Array {
  const { numHeads: H, numKvHeads: Hkv, headDim: d } = c;
  const g = new GraphBuilder('batch_attention');
  const B = layout.length;
  const scale = { float: 1 / Math.sqrt(d) };
  const query = g.input(BATCH.query, 'float', [B, H * d]);
  const rows = B === 1 ? [query] : g.opN('Split', [query, g.int64(Array(B).fill(1))], B, { axis: 0 });  // B × [1, H·d]
  const outputs = layout.map((kind, s) => {
    const Hc = kind === 'repeated' ? H : Hkv;
    const G = H / Hc;
    const q = g.op('Reshape', [rows[s], g.int64([Hc, G, d])]);
    const perHead = Hc === 1 ? [q] : g.opN('Split', [q, g.int64(Array(Hc).fill(1))], Hc, { axis: 0 });  // Hc × [1, G, d]
    const heads = perHead.map((qh, h) => {
      const keys = g.input(BATCH_CACHE.keys(s, h), 'float', [`length_${s}_${h}`, d]);
      const values = g.input(BATCH_CACHE.values(s, h), 'float', [`length_${s}_${h}`, d]);
      const scores = g.msOpN('FusedMatMul', [qh, keys], 1, { transB: 1, alpha: scale })[0];          // [1, G, length]
      return g.op('MatMul', [g.op('Softmax', [scores], { axis: -1 }), values]);                        // [1, G, d]
    });
    return g.op('Reshape', [Hc === 1 ? heads[0] : g.op('Concat', heads, { axis: 0 }), g.int64([1, H * d])]);
  });
  g.output(B === 1 ? outputs[0] : g.op('Concat', outputs, { axis: 0 }), BATCH_CACHE.output, 'float', [B, H * d]);
  return g.build();
}

/** [1, Hkv·d] → [1, Hkv·G·d]: each KV head's vector repeated for the G query heads that share it. */
function repeatKvHeads(g: GraphBuilder, x: string, Hkv: number, G: number, d: number): string {
  return g.op('Reshape', [g.op('Expand', [g.op('Reshape', [x, g.int64([Hkv, 1, d])]), g.int64([Hkv, G, d])]), g.int64([1, Hkv * G * d])]);
}

/**
 * Attention of one token over a ragged cache: for each cache head h, its G query heads attend to the head's
 * own entries (input `cache_keys_h` / `cache_values_h`, [length_h, d]) and to the new key and value; softmax
 * over both. Declares the cache inputs. q [.., Hc·G·d], kNew and vNew [.., Hc·d]; returns [1, Hc·G·d].
 *
 * Per head it takes 6 nodes (q·Kᵀ, concat with the own score, softmax, two slices, P·V); the new token's
 * score and value are handled for all heads at once, outside the loop, since every step costs per node.
 */
export function attendOverCache(g: GraphBuilder, qRot: string, kRot: string, v: string, Hc: number, G: number, d: number): string {
  const scale = { float: 1 / Math.sqrt(d) };
  const q = g.op('Reshape', [qRot, g.int64([Hc, G, d])]);             // query heads grouped by cache head
  const kNew = g.op('Reshape', [kRot, g.int64([Hc, 1, d])]);
  const vNew = g.op('Reshape', [v, g.int64([Hc, 1, d])]);
  // The new token's score for every query head at once, as rows [Hc·G, 1].
  const own = g.op('Reshape', [g.msOpN('FusedMatMul', [q, kNew], 1, { transB: 1, alpha: scale })[0], g.int64([Hc * G, 1])]);
  // Per cache head, 2-D operands: [G, d] queries against [length_h, d] keys (a 3-D query here ran slower).
  const perHead = (x: string) => (Hc === 1 ? [x] : g.opN('Split', [x, g.int64(Array(Hc).fill(G))], Hc, { axis: 0 }));
  const qs = perHead(g.op('Reshape', [q, g.int64([Hc * G, d])]));                           // [G, d] each
  const owns = perHead(own);                                                                  // [G, 1] each
  const big = Number.MAX_SAFE_INTEGER;
  const pastOut: string[] = [];
  const ownProbs: string[] = [];
  for (let h = 0; h < Hc; h++) {
    const keys = g.input(DECODE.cacheKeys(h), 'float', [`length_${h}`, d]);
    const values = g.input(DECODE.cacheValues(h), 'float', [`length_${h}`, d]);
    const past = g.msOpN('FusedMatMul', [qs[h], keys], 1, { transB: 1, alpha: scale })[0];  // [G, length_h]
    const probs = g.op('Softmax', [g.op('Concat', [past, owns[h]], { axis: 1 })], { axis: 1 });
    pastOut.push(g.op('MatMul', [g.op('Slice', [probs, g.int64([0]), g.int64([-1]), g.int64([1])]), values])); // [G, d]
    ownProbs.push(g.op('Slice', [probs, g.int64([-1]), g.int64([big]), g.int64([1])]));                    // [G, 1]
  }
  const all = (xs: string[], dims: number[]) => g.op('Reshape', [Hc === 1 ? xs[0] : g.op('Concat', xs, { axis: 0 }), g.int64(dims)]);
  const out = g.op('Add', [all(pastOut, [Hc, G, d]), g.op('Mul', [all(ownProbs, [Hc, G, 1]), vNew])]); // [Hc, G, d]
  return g.op('Reshape', [out, g.int64([1, Hc * G * d])]);
}
