/**
 * Loads a checkpoint's weights into the fused layout the engine's ONNX graphs take. Every matrix is row-major in
 * the Hugging Face Linear convention [out, in]; fused matrices stack their parts' rows, and each tensor is read
 * straight into its block of the fused array (no intermediate copy).
 *
 * The engine loads layer by layer ({@link loadLayer}): a layer's tensors are read (and, for q8/q4, quantized
 * tensor by tensor in bounded row chunks), handed to ONNX Runtime, and dropped before the next layer, so that
 * peak memory holds the model in its final format plus one layer, never a float32 copy of the whole model.
 * {@link loadWeights} reads the whole model as float32 (tests and tools).
 * @module
 */

import type { ModelConfig } from './config.js';
import { SafetensorsStore } from './safetensors.js';
import { ModelLoadError, quoted } from '../errors.js';
import { blockBytes, blocksPerRow, type LinearWeight, type QuantizedDtype, type WeightDtype } from '../graph/linear.js';

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


/** A fused matrix's parts: checkpoint tensors [rows, cols] stacked by rows in this order. */
interface Parts {
  readonly cols: number;
  readonly parts: readonly { readonly name: string; readonly rows: number }[];
}

/** The checkpoint tensor names of layer `i` and how they fuse. */
function layerLayout(config: ModelConfig, i: number) {
  const H = config.hiddenSize, I = config.intermediateSize, Dh = config.headDim;
  const qRows = config.numHeads * Dh, kvRows = config.numKvHeads * Dh;
  const p = `model.layers.${i}.`;
  const qkvNames = [[`${p}self_attn.q_proj`, qRows], [`${p}self_attn.k_proj`, kvRows], [`${p}self_attn.v_proj`, kvRows]] as const;
  const matrices = {
    qkv: { cols: H, parts: qkvNames.map(([n, rows]) => ({ name: `${n}.weight`, rows })) },
    o: { cols: qRows, parts: [{ name: `${p}self_attn.o_proj.weight`, rows: H }] },
    gateUp: { cols: H, parts: [{ name: `${p}mlp.gate_proj.weight`, rows: I }, { name: `${p}mlp.up_proj.weight`, rows: I }] },
    down: { cols: I, parts: [{ name: `${p}mlp.down_proj.weight`, rows: H }] },
  } satisfies Record<string, Parts>;
  return {
    matrices,
    qkvBias: config.qkvBias ? qkvNames.map(([n, rows]) => ({ name: `${n}.bias`, rows })) : null,
    inputNorm: `${p}input_layernorm.weight`,
    postNorm: `${p}post_attention_layernorm.weight`,
    qNorm: config.qkNorm ? `${p}self_attn.q_norm.weight` : null,
    kNorm: config.qkNorm ? `${p}self_attn.k_norm.weight` : null,
  };
}

/** Tensors read per layer (for progress reports). */
export function tensorsPerLayer(config: ModelConfig): number {
  return 9 + (config.qkvBias ? 3 : 0) + (config.qkNorm ? 2 : 0);
}

/**
 * Quantizes `numRows` float32 rows of length `cols` into MatMulNBits' layout, or for `int8` into int8 codes
 * transposed to [cols, numRows] with one scale per row (see src/graph/linear.ts); the engine runs it in ONNX
 * Runtime.
 */
export type Quantizer = (rows: Float32Array, numRows: number, cols: number, format: QuantizedDtype) =>
  Promise<{ codes: Uint8Array; scales: Float32Array }>;

/** A layer's weights in the engine's format: vectors in float32, matrices as {@link LinearWeight}s. */
export interface LayerTensors {
  readonly inputNorm: Float32Array;
  readonly postNorm: Float32Array;
  readonly qNorm: Float32Array | null;
  readonly kNorm: Float32Array | null;
  readonly qkvBias: Float32Array | null;
  readonly qkv: LinearWeight;
  readonly o: LinearWeight;
  readonly gateUp: LinearWeight;
  readonly down: LinearWeight;
}

/** Float32 elements read at once when quantizing: 16 Mi (64 MiB), whatever the matrix size. */
const QUANTIZE_CHUNK_ELEMENTS = 1 << 24;

/**
 * Reads the fused matrix `m` in `dtype`: float32 straight into the fused array, or quantized part by part in
 * chunks of whole rows (rows are quantized independently, so a part's codes land at its row offset).
 */
export async function readLinear(store: SafetensorsStore, m: Parts, dtype: WeightDtype, quantize: Quantizer | null,
  onTensor?: () => void): Promise<LinearWeight> {
  const rows = m.parts.reduce((a, p) => a + p.rows, 0);
  const cols = m.cols;
  if (dtype === 'fp32') {
    const data = new Float32Array(rows * cols);
    let row = 0;
    for (const p of m.parts) {
      store.readF32Into(p.name, data.subarray(row * cols, (row + p.rows) * cols), [p.rows, cols]);
      row += p.rows;
      onTensor?.();
    }
    return { format: 'fp32', rows, cols, data };
  }
  if (!quantize) throw new Error(`readLinear: ${dtype} needs a quantizer`);
  const chunkRows = Math.max(1, Math.floor(QUANTIZE_CHUNK_ELEMENTS / Math.max(1, cols)));
  if (dtype === 'int8') {
    // Codes are [cols, rows] (B of `MatMulInteger`): a chunk of rows quantized into [cols, n] lands as columns
    // row..row+n−1, one contiguous copy per input feature.
    const codes = new Uint8Array(rows * cols);
    const scales = new Float32Array(rows);
    await quantizeInChunks(store, m, chunkRows, quantize, dtype, (q, row, n) => {
      for (let k = 0; k < cols; k++) codes.set(q.codes.subarray(k * n, (k + 1) * n), k * rows + row);
      scales.set(q.scales, row);
    }, onTensor);
    return { format: 'int8', rows, cols, codes, scales };
  }
  const nb = blocksPerRow(cols);
  const rowBytes = nb * blockBytes(dtype);
  const codes = new Uint8Array(rows * rowBytes);
  const scales = new Float32Array(rows * nb);
  await quantizeInChunks(store, m, chunkRows, quantize, dtype, (q, row) => {
    codes.set(q.codes, row * rowBytes);
    scales.set(q.scales, row * nb);
  }, onTensor);
  return { format: dtype, rows, cols, codes, scales };
}

/**
 * Quantizes the fused matrix `m` part by part, in chunks of at most `chunkRows` whole rows read into one scratch
 * buffer (rows are quantized independently); `place(q, row, n)` stores the codes of the n rows from fused row `row`.
 */
async function quantizeInChunks(store: SafetensorsStore, m: Parts, chunkRows: number, quantize: Quantizer, dtype: QuantizedDtype,
  place: (q: Awaited<ReturnType<Quantizer>>, row: number, n: number) => void, onTensor?: () => void): Promise<void> {
  const cols = m.cols;
  let row = 0;
  for (const p of m.parts) {
    const scratch = new Float32Array(Math.min(chunkRows, p.rows) * cols);
    for (let first = 0; first < p.rows; first += chunkRows) {
      const n = Math.min(chunkRows, p.rows - first);
      const chunk = scratch.subarray(0, n * cols);
      store.readF32RowsInto(p.name, [p.rows, cols], first, chunk);
      place(await quantize(chunk, n, cols, dtype), row + first, n);
    }
    row += p.rows;
    onTensor?.();
  }
}

/** Reads bias vectors into one fused vector. */
function readBias(store: SafetensorsStore, parts: readonly { name: string; rows: number }[], onTensor?: () => void): Float32Array {
  const out = new Float32Array(parts.reduce((a, p) => a + p.rows, 0));
  let at = 0;
  for (const p of parts) {
    store.readF32Into(p.name, out.subarray(at, at + p.rows), [p.rows]);
    at += p.rows;
    onTensor?.();
  }
  return out;
}

/** Reads layer `i` in `dtype` (see {@link readLinear}); `onTensor` is called after each checkpoint tensor. */
export async function loadLayer(store: SafetensorsStore, config: ModelConfig, i: number, dtype: WeightDtype,
  quantize: Quantizer | null, onTensor?: () => void): Promise<LayerTensors> {
  const L = layerLayout(config, i);
  const vector = (name: string, n: number): Float32Array => {
    const v = store.readF32(name, [n]);
    onTensor?.();
    return v;
  };
  const qkvBias = L.qkvBias ? readBias(store, L.qkvBias, onTensor) : null;
  const m = L.matrices;
  return {
    inputNorm: vector(L.inputNorm, config.hiddenSize),
    postNorm: vector(L.postNorm, config.hiddenSize),
    qNorm: L.qNorm ? vector(L.qNorm, config.headDim) : null,
    kNorm: L.kNorm ? vector(L.kNorm, config.headDim) : null,
    qkvBias,
    qkv: await readLinear(store, m.qkv, dtype, quantize, onTensor),
    o: await readLinear(store, m.o, dtype, quantize, onTensor),
    gateUp: await readLinear(store, m.gateUp, dtype, quantize, onTensor),
    down: await readLinear(store, m.down, dtype, quantize, onTensor),
  };
}

/** The LM head's matrix: `lm_head.weight`, or the embedding matrix when tied (as transformers does). */
export function lmHeadParts(store: SafetensorsStore, config: ModelConfig): Parts {
  if (!config.tieWordEmbeddings && !store.has('lm_head.weight')) {
    throw new ModelLoadError(`tensor "lm_head.weight" not found in ${store.dir}, and config.json does not tie the ` +
      'embeddings (tie_word_embeddings is false)');
  }
  // Tied: transformers shares the embedding matrix and ignores any stored lm_head.weight.
  const name = config.tieWordEmbeddings ? 'model.embed_tokens.weight' : 'lm_head.weight';
  return { cols: config.hiddenSize, parts: [{ name, rows: config.vocabSize }] };
}

/** The embedding table as stored (F32, F16 or BF16 bytes, [vocab, hidden]): lookups stay exact. */
export function readEmbeddingTable(store: SafetensorsStore, config: ModelConfig): { dtype: 'F32' | 'F16' | 'BF16'; bytes: Uint8Array } {
  const name = 'model.embed_tokens.weight';
  const info = store.info(name);
  const shape = [config.vocabSize, config.hiddenSize];
  if (info.shape.length !== 2 || info.shape[0] !== shape[0] || info.shape[1] !== shape[1]) {
    throw new ModelLoadError(`tensor ${name} has shape [${info.shape.join(',')}], expected [${shape.join(',')}] (${info.file})`);
  }
  if (info.dtype !== 'F32' && info.dtype !== 'F16' && info.dtype !== 'BF16') {
    throw new ModelLoadError(`tensor "${name}" in ${info.file} has dtype ${info.dtype}; only F32, F16 and BF16 can be loaded`);
  }
  return { dtype: info.dtype, bytes: store.readRaw(name).bytes };
}

/**
 * Reads every weight of `dir`'s checkpoint as float32, checking each tensor's shape against `config` (a
 * mismatch or a missing tensor is a ModelLoadError naming it). `onProgress(done, total)` is called after each
 * tensor.
 */
export function loadWeights(dir: string, config: ModelConfig, onProgress?: (done: number, total: number) => void): ModelWeights {
  const store = SafetensorsStore.open(dir);
  const H = config.hiddenSize, V = config.vocabSize;
  const head = lmHeadParts(store, config);
  const tied = config.tieWordEmbeddings;
  const total = 2 + (tied ? 0 : 1) + config.numLayers * tensorsPerLayer(config);
  let done = 0;
  let bytes = 0;
  const tick = () => onProgress?.(++done, total);
  const read = (name: string, shape: number[]): Float32Array => {
    const out = store.readF32(name, shape);
    bytes += out.byteLength;
    tick();
    return out;
  };
  const fused = (m: Parts): Float32Array => {
    const rows = m.parts.reduce((a, p) => a + p.rows, 0);
    const data = new Float32Array(rows * m.cols);
    bytes += data.byteLength;
    let row = 0;
    for (const p of m.parts) {
      store.readF32Into(p.name, data.subarray(row * m.cols, (row + p.rows) * m.cols), [p.rows, m.cols]);
      row += p.rows;
      tick();
    }
    return data;
  };

  const embed = read('model.embed_tokens.weight', [V, H]);
  const layers: LayerWeights[] = [];
  for (let i = 0; i < config.numLayers; i++) {
    const L = layerLayout(config, i);
    const qkv = fused(L.matrices.qkv);
    const qkvBias = L.qkvBias ? readBias(store, L.qkvBias, tick) : null;
    if (qkvBias) bytes += qkvBias.byteLength;
    const gateUp = fused(L.matrices.gateUp);
    layers.push(Object.freeze({
      inputNorm: read(L.inputNorm, [H]),
      qkv,
      qkvBias,
      qNorm: L.qNorm ? read(L.qNorm, [config.headDim]) : null,
      kNorm: L.kNorm ? read(L.kNorm, [config.headDim]) : null,
      o: fused(L.matrices.o),
      postNorm: read(L.postNorm, [H]),
      gateUp,
      down: fused(L.matrices.down),
    }));
  }
  const finalNorm = read('model.norm.weight', [H]);
  const lmHead = tied ? embed : fused(head);
  return Object.freeze({ embed, layers: Object.freeze(layers), finalNorm, lmHead, bytes });
}

/**
 * Refuses or reports the checkpoint tensors that loading `config` will not read (see {@link checkUnused}).
 * Checked before any weight is read, so a wrong config fails in a moment, not after minutes of loading.
 */
export function checkUnusedTensors(store: SafetensorsStore, config: ModelConfig, onWarning: (message: string) => void): void {
  const used = new Set<string>(['model.embed_tokens.weight', 'model.norm.weight', 'lm_head.weight']);
  for (let i = 0; i < config.numLayers; i++) {
    const L = layerLayout(config, i);
    for (const m of Object.values(L.matrices)) for (const part of m.parts) used.add(part.name);
    for (const part of L.qkvBias ?? []) used.add(part.name);
    for (const name of [L.inputNorm, L.postNorm, L.qNorm, L.kNorm]) if (name) used.add(name);
  }
  checkUnused(store.names().filter((n) => !used.has(n)), config, store.dir, onWarning);
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
