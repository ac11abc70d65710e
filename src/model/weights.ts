/**
 * Loads a checkpoint's weights into the fused float32 layout the engine's ONNX graphs take. Every matrix is
 * row-major in the Hugging Face Linear convention [out, in]; fused matrices stack their parts' rows, and each
 * tensor is read straight into its block of the fused array (no intermediate copy).
 * @module
 */

import type { ModelConfig } from './config.js';
import { SafetensorsStore } from './safetensors.js';
import { ModelLoadError, quoted } from '../errors.js';

export interface LayerWeights {
  /** [hidden] input_layernorm. */
  readonly inputNorm: Float32Array;
  /** [(numHeads + 2*numKvHeads) * headDim, hidden]: rows of q_proj, then k_proj, then v_proj. */
  readonly qkv: Float32Array;
  /** [(numHeads + 2*numKvHeads) * headDim]: q, k, v biases (qwen2), else null. */
  readonly qkvBias: Float32Array | null;
  /** [headDim] per-head RMSNorm weight on q (qwen3), else null. */
  readonly qNorm: Float32Array | null;
  /** [headDim] per-head RMSNorm weight on k (qwen3), else null. */
  readonly kNorm: Float32Array | null;
  /** [hidden, numHeads*headDim] o_proj. */
  readonly o: Float32Array;
  /** [hidden] post_attention_layernorm. */
  readonly postNorm: Float32Array;
  /** [2*intermediate, hidden]: rows of gate_proj, then up_proj. */
  readonly gateUp: Float32Array;
  /** [hidden, intermediate] down_proj. */
  readonly down: Float32Array;
}

export interface ModelWeights {
  /** [vocab, hidden] model.embed_tokens.weight. */
  readonly embed: Float32Array;
  readonly layers: readonly LayerWeights[];
  /** [hidden] model.norm.weight. */
  readonly finalNorm: Float32Array;
  /** [vocab, hidden]; the very same array as `embed` when the embeddings are tied. */
  readonly lmHead: Float32Array;
  /** Bytes of float32 weights held, a tied head counted once. */
  readonly bytes: number;
}

/**
 * Reads every weight of `dir`'s checkpoint, checking each tensor's shape against `config` (a mismatch or a
 * missing tensor is a ModelLoadError naming it). `onProgress(done, total)` is called after each tensor.
 */
export function loadWeights(dir: string, config: ModelConfig, onProgress?: (done: number, total: number) => void,
  onWarning: (message: string) => void = () => {}): ModelWeights {
  const store = SafetensorsStore.open(dir);
  const used = new Set<string>();
  const H = config.hiddenSize, I = config.intermediateSize, V = config.vocabSize, Dh = config.headDim;
  const qRows = config.numHeads * Dh, kvRows = config.numKvHeads * Dh;
  const qkvRows = qRows + 2 * kvRows;

  const tied = config.tieWordEmbeddings;
  if (!tied && !store.has('lm_head.weight')) {
    throw new ModelLoadError(`tensor "lm_head.weight" not found in ${store.dir}, and config.json does not tie the ` +
      'embeddings (tie_word_embeddings is false)');
  }
  const perLayer = 9 + (config.qkvBias ? 3 : 0) + (config.qkNorm ? 2 : 0);
  const total = 2 + (tied ? 0 : 1) + config.numLayers * perLayer;
  let done = 0;
  let bytes = 0;

  /** Reads `name` (shape `shape`) into `target` at element `offset`, or into a new array. */
  const read = (name: string, shape: number[], target?: Float32Array, offset = 0): Float32Array => {
    const n = shape.reduce((a, d) => a * d, 1);
    const out = target ?? new Float32Array(n);
    store.readF32Into(name, out.subarray(offset, offset + n), shape);
    used.add(name);
    onProgress?.(++done, total);
    return out;
  };
  const alloc = (n: number): Float32Array => {
    bytes += n * 4;
    return new Float32Array(n);
  };
  const vector = (name: string, n: number): Float32Array => read(name, [n], alloc(n));

  const embed = read('model.embed_tokens.weight', [V, H], alloc(V * H));
  const layers: LayerWeights[] = [];
  for (let i = 0; i < config.numLayers; i++) {
    const p = `model.layers.${i}.`;
    const qkv = alloc(qkvRows * H);
    read(`${p}self_attn.q_proj.weight`, [qRows, H], qkv, 0);
    read(`${p}self_attn.k_proj.weight`, [kvRows, H], qkv, qRows * H);
    read(`${p}self_attn.v_proj.weight`, [kvRows, H], qkv, (qRows + kvRows) * H);
    let qkvBias: Float32Array | null = null;
    if (config.qkvBias) {
      qkvBias = alloc(qkvRows);
      read(`${p}self_attn.q_proj.bias`, [qRows], qkvBias, 0);
      read(`${p}self_attn.k_proj.bias`, [kvRows], qkvBias, qRows);
      read(`${p}self_attn.v_proj.bias`, [kvRows], qkvBias, qRows + kvRows);
    }
    const gateUp = alloc(2 * I * H);
    read(`${p}mlp.gate_proj.weight`, [I, H], gateUp, 0);
    read(`${p}mlp.up_proj.weight`, [I, H], gateUp, I * H);
    layers.push(Object.freeze({
      inputNorm: vector(`${p}input_layernorm.weight`, H),
      qkv,
      qkvBias,
      qNorm: config.qkNorm ? vector(`${p}self_attn.q_norm.weight`, Dh) : null,
      kNorm: config.qkNorm ? vector(`${p}self_attn.k_norm.weight`, Dh) : null,
      o: read(`${p}self_attn.o_proj.weight`, [H, qRows], alloc(H * qRows)),
      postNorm: vector(`${p}post_attention_layernorm.weight`, H),
      gateUp,
      down: read(`${p}mlp.down_proj.weight`, [H, I], alloc(H * I)),
    }));
  }
  const finalNorm = vector('model.norm.weight', H);
  // Tied: transformers shares the embedding matrix and ignores any stored lm_head.weight.
  const lmHead = tied ? embed : read('lm_head.weight', [V, H], alloc(V * H));
  if (tied) used.add('lm_head.weight');            // transformers ignores it too
  checkUnused(store.names().filter((n) => !used.has(n)), config, store.dir, onWarning);
  return Object.freeze({ embed, layers: Object.freeze(layers), finalNorm, lmHead, bytes });
}

/** Buffers some checkpoints store that hold nothing the model computes from. */
const HARMLESS = /(^|\.)rotary_emb\.inv_freq$/;

/**
 * Tensors of the checkpoint that loading did not read. Inside a decoder layer (a layer past num_hidden_layers, a
 * bias the config turns off) they surely change what the network computes: refused, naming them. Elsewhere they
 * are reported through `onWarning`, as transformers warns about unused weights.
 */
function checkUnused(unused: string[], config: ModelConfig, dir: string, onWarning: (message: string) => void): void {
  const relevant = unused.filter((n) => !HARMLESS.test(n)).sort();
  if (relevant.length === 0) return;
  const list = (names: string[]) => names.slice(0, 5).map((n) => quoted(n, 80)).join(', ') + (names.length > 5 ? `, and ${names.length - 5} more` : '');
  const beyond = relevant.filter((n) => {
    const m = /^model\.layers\.(\d+)\./.exec(n);
    return m !== null && Number(m[1]) >= config.numLayers;
  });
  if (beyond.length > 0) {
    throw new ModelLoadError(`${dir} holds layers past num_hidden_layers (${config.numLayers} in config.json): ${list(beyond)}; ` +
      'running without them would be a truncated network');
  }
  const inLayers = relevant.filter((n) => n.startsWith('model.layers.'));
  if (inLayers.length > 0) {
    const biases = inLayers.some((n) => /\.(q|k|v)_proj\.bias$/.test(n));
    throw new ModelLoadError(`${dir} holds tensors that config.json does not use: ${list(inLayers)}` +
      (biases ? ` (config.json turns q/k/v biases off: attention_bias is ${String(config.qkvBias)})` : '') +
      '; ignoring them would change what the model computes');
  }
  onWarning(`${dir}: checkpoint tensors not used by ${config.architecture}: ${list(relevant)}`);
}
