/**
 * The ONNX models a loaded model runs, with its weights as constant initializers: ONNX Runtime prepacks them
 * once at session creation and holds them once (measured: decode 1.2-1.45x faster than weights fed as inputs
 * on every run, prefill unchanged; docs/ort-performance.md §4-5).
 *
 * - One model per decoder layer. Its `mode` input picks which of six sibling `If` nodes does the work: prefill
 *   projections (norm → QKV → RoPE), prefill o_proj + MLP, decode, decode over a cache with K/V repeated per query
 *   head (policies with `repeatKv`), and the two halves of a batched decode step around attention
 *   (`decodeProject`, `decodeFinish`); the others return empty tensors. Every branch reads the same outer-scope initializers, so a
 *   layer's weights are held (and prepacked) once whatever runs. The `If`s are siblings, never nested: ONNX
 *   Runtime 1.30 does not prepack initializers used two subgraph levels down (measured: a nested decode branch
 *   ran 190 ms per layer instead of 1.1 ms, q8). Outputs are named `<mode>_y<i>`; a run fetches only its
 *   branch's outputs (each output fetched costs about 1.7 µs per run in onnxruntime-node, even when empty).
 *   Every input must still be fed: ONNX Runtime 1.30 reads an `If` branch's outer-scope values that are
 *   initializers from the initializer, ignoring a feed, so inputs cannot have defaults here (tried: decoding
 *   then saw empty caches).
 * - The head: final norm → LM head.
 * - The embedding: a `Gather` from the table as stored (F32, F16 or BF16, widened after the lookup), so lookups
 *   are exact and a 16-bit table takes half the memory of a float32 one.
 * @module
 */
import type { ModelConfig } from '../model/config.js';
import type { LayerTensors } from '../model/weights.js';
import { GraphBuilder, type BuiltModel } from './builder.js';
import {
  BRANCH_OUTPUTS, HEAD, buildDecodeFinishGraph, buildDecodeGraph, buildDecodeProjectGraph, buildHeadGraph, buildMlpGraph, buildPrefillProjectGraph,
  type LayerParams,
} from './decoder-layer.js';
import { addLinearWeight, linearOp, type LinearInitializers, type LinearWeight } from './linear.js';

export type LayerMode = 'project' | 'mlp' | 'decode' | 'decodeRepeated' | 'decodeProject' | 'decodeFinish';
export const LAYER_MODES: readonly LayerMode[] = ['project', 'mlp', 'decode', 'decodeRepeated', 'decodeProject', 'decodeFinish'];

export const LAYER = {
  mode: 'mode',                          // [] i64: the index of the branch in LAYER_MODES
} as const;

/** The names of a branch's outputs, in order (PROJECT / MLP / DECODE / BATCH names). */
export function modeOutputs(mode: LayerMode): readonly string[] {
  return mode === 'decodeRepeated' ? BRANCH_OUTPUTS.decode : BRANCH_OUTPUTS[mode];
}

/** The layer model's output holding output `i` of `mode`'s branch. */
export function layerOutput(mode: LayerMode, i: number): string {
  return `${mode}_y${i}`;
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

/** A branch returning `build`'s outputs. */
function branch(name: string, parent: GraphBuilder, build: (g: GraphBuilder) => string[]): GraphBuilder {
  const g = new GraphBuilder(name, parent);
  build(g).forEach((v, i) => g.output(v, `${name}_y${i}`, 'float', null));
  return g;
}

/** A branch returning `count` empty float tensors (the `else` of a mode that does not run). */
function emptyBranch(name: string, parent: GraphBuilder, count: number): GraphBuilder {
  return branch(name, parent, (g) => Array.from({ length: count }, () => g.float([], [0])));
}

/** The model of one decoder layer (see the module comment). */
export function buildLayerModel(c: ModelConfig, attentionScaling: number, t: LayerTensors, name: string): BuiltModel {
  const g = new GraphBuilder(name);
  const p = initializerParams(g, t);
  const mode = g.input(LAYER.mode, 'int64', []);
  const builders: Record<LayerMode, (b: GraphBuilder) => string[]> = {
    project: (b) => buildPrefillProjectGraph(b, c, attentionScaling, p),
    mlp: (b) => buildMlpGraph(b, c, p),
    decode: (b) => buildDecodeGraph(b, c, attentionScaling, p),
    decodeRepeated: (b) => buildDecodeGraph(b, c, attentionScaling, p, true),
    decodeProject: (b) => buildDecodeProjectGraph(b, c, attentionScaling, p),
    decodeFinish: (b) => buildDecodeFinishGraph(b, c, p),
  };
  const branches = LAYER_MODES.map((m) => branch(m, g, builders[m]));
  g.declareOuterInputs(...branches);
  LAYER_MODES.forEach((m, k) => {
    const count = modeOutputs(m).length;
    const runs = g.op('Equal', [mode, g.int64([k], [])]);
    const outs = g.opN('If', [runs], count, {
      then_branch: { graph: branches[k].graph() }, else_branch: { graph: emptyBranch(`${m}_idle`, g, count).graph() },
    });
    outs.forEach((v, i) => g.output(v, layerOutput(m, i), 'float', null));
  });
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
