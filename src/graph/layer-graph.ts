/**
 * The ONNX models a loaded model runs, with its weights as constant initializers: ONNX Runtime prepacks them
 * once at session creation and holds them once (measured: decode 1.2-1.45x faster than weights fed as inputs
 * on every run, prefill unchanged; docs/ort-performance.md §4-5).
 *
 * - One model per decoder layer. Its `mode` input picks the branch of an `If` node: prefill attention, prefill
 *   MLP, decode, or decode over a cache with K/V repeated per query head (policies with `repeatKv`). Every
 *   branch reads the same outer-scope initializers, so a layer's weights are held (and prepacked) once whatever
 *   runs. Each branch returns 4 outputs (padded with empty tensors), named `y0`..`y3` outside.
 * - The head: final norm → LM head.
 * - The embedding: a `Gather` from the table as stored (F32, F16 or BF16, widened after the lookup), so lookups
 *   are exact and a 16-bit table takes half the memory of a float32 one.
 * @module
 */
import type { ModelConfig } from '../model/config.js';
import type { LayerTensors } from '../model/weights.js';
import { GraphBuilder, type BuiltModel } from './builder.js';
import { BRANCH_OUTPUTS, HEAD, buildAttentionGraph, buildDecodeGraph, buildHeadGraph, buildMlpGraph, type LayerParams } from './decoder-layer.js';
import { addLinearWeight, linearOp, type LinearInitializers, type LinearWeight } from './linear.js';

export type LayerMode = 'attention' | 'mlp' | 'decode' | 'decodeRepeated';
export const LAYER_MODES: readonly LayerMode[] = ['attention', 'mlp', 'decode', 'decodeRepeated'];

export const LAYER = {
  mode: 'mode',                          // [] i64: the index of the branch in LAYER_MODES
  outputs: ['y0', 'y1', 'y2', 'y3'],     // the branch's outputs, in the order of BRANCH_OUTPUTS
} as const;

/** The names of a branch's outputs, in order (y0, y1, ...). */
export function modeOutputs(mode: LayerMode): readonly string[] {
  return mode === 'attention' ? BRANCH_OUTPUTS.attention : mode === 'mlp' ? BRANCH_OUTPUTS.mlp : BRANCH_OUTPUTS.decode;
}

/** Layer weights as initializers of `owner`, each added once, on first use by any branch. */
function initializerParams(owner: GraphBuilder, t: LayerTensors): LayerParams {
  const vectors = new Map<string, string>();
  const matrices = new Map<string, LinearInitializers>();
  const vector = (which: 'inputNorm' | 'postNorm' | 'qNorm' | 'kNorm' | 'qkvBias'): string => {
    let name = vectors.get(which);
    if (!name) {
      const data = t[which];
      if (!data) throw new Error(`layer weights have no ${which}`);
      name = owner.initializer(`w_${which}`, 'float', [data.length], data);
      vectors.set(which, name);
    }
    return name;
  };
  return {
    vector,
    linear(g, x, which) {
      let w = matrices.get(which);
      if (!w) {
        w = addLinearWeight(owner, `w_${which}`, t[which]);
        matrices.set(which, w);
      }
      return linearOp(g, x, w, which === 'qkv' && t.qkvBias ? vector('qkvBias') : undefined);
    },
  };
}

/** Adds a branch that returns `build`'s outputs padded with empty tensors to LAYER.outputs.length. */
function branch(name: string, parent: GraphBuilder, build: (g: GraphBuilder) => string[]): GraphBuilder {
  const g = new GraphBuilder(name, parent);
  const outs = build(g);
  while (outs.length < LAYER.outputs.length) outs.push(g.float([], [0]));
  outs.forEach((v, i) => g.output(v, `${name}_y${i}`, 'float', null));
  return g;
}

/** `If(cond)` in `g` returning LAYER.outputs.length outputs. */
function ifNode(g: GraphBuilder, cond: string, then: GraphBuilder, otherwise: GraphBuilder): string[] {
  return g.opN('If', [cond], LAYER.outputs.length, { then_branch: { graph: then.graph() }, else_branch: { graph: otherwise.graph() } });
}

/** The model of one decoder layer (see the module comment). */
export function buildLayerModel(c: ModelConfig, attentionScaling: number, t: LayerTensors, name: string): BuiltModel {
  const g = new GraphBuilder(name);
  const p = initializerParams(g, t);
  const mode = g.input(LAYER.mode, 'int64', []);
  const code = (m: LayerMode) => g.int64([LAYER_MODES.indexOf(m)], []);
  const isDecode = g.op('GreaterOrEqual', [mode, code('decode')]);
  const isRepeated = g.op('Equal', [mode, code('decodeRepeated')]);
  const isMlp = g.op('Equal', [mode, code('mlp')]);

  const decodeSide = new GraphBuilder('decode_side', g);
  const decode = branch('decode', decodeSide, (b) => buildDecodeGraph(b, c, attentionScaling, p));
  const repeated = branch('decode_repeated_kv', decodeSide, (b) => buildDecodeGraph(b, c, attentionScaling, p, true));
  ifNode(decodeSide, isRepeated, repeated, decode).forEach((v, i) => decodeSide.output(v, `decode_side_y${i}`, 'float', null));

  const prefillSide = new GraphBuilder('prefill_side', g);
  const mlp = branch('mlp', prefillSide, (b) => buildMlpGraph(b, c, p));
  const attention = branch('attention', prefillSide, (b) => buildAttentionGraph(b, c, attentionScaling, p));
  ifNode(prefillSide, isMlp, mlp, attention).forEach((v, i) => prefillSide.output(v, `prefill_side_y${i}`, 'float', null));

  g.declareOuterInputs(attention, mlp, decode, repeated);
  ifNode(g, isDecode, decodeSide, prefillSide).forEach((v, i) => g.output(v, LAYER.outputs[i], 'float', null));
  return g.buildWithExternal();
}

/** The head model: final norm → logits through `lmHead`. */
export function buildHeadModel(c: ModelConfig, finalNorm: Float32Array, lmHead: LinearWeight): BuiltModel {
  const g = new GraphBuilder('head');
  const norm = g.initializer(HEAD.finalNorm, 'float', [finalNorm.length], finalNorm);
  const w = addLinearWeight(g, HEAD.lmHead, lmHead);
  buildHeadGraph(g, c, norm, (x) => linearOp(g, x, w));
  return g.buildWithExternal();
}

export const EMBED = {
  ids: 'ids',       // [n] i64, each in [0, vocab)
  rows: 'rows',     // [n, hidden] f32
} as const;

/** The embedding model: rows of the table for `ids`, widened to float32 after the lookup. */
export function buildEmbeddingModel(c: ModelConfig, table: { dtype: 'F32' | 'F16' | 'BF16'; bytes: Uint8Array }): BuiltModel {
  const g = new GraphBuilder('embedding');
  const type = table.dtype === 'F32' ? 'float' : table.dtype === 'F16' ? 'float16' : 'bfloat16';
  const w = g.initializer('embed_tokens', type, [c.vocabSize, c.hiddenSize], table.bytes);
  const ids = g.input(EMBED.ids, 'int64', ['n']);
  const rows = g.op('Gather', [w, ids], { axis: 0 });
  g.output(type === 'float' ? rows : g.op('Cast', [rows], { to: 1 /* FLOAT */ }), EMBED.rows, 'float', ['n', c.hiddenSize]);
  return g.buildWithExternal();
}
