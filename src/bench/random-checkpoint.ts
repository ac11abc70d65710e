/**
 * Seeded random checkpoints in Hugging Face layout (`config.json` + `model.safetensors`, BF16) for benchmarks.
 * Timing does not depend on weight values, so the benchmark shapes (Qwen2.5-0.5B, Llama-3.2-1B) are generated
 * locally rather than downloaded. Generated folders must never be committed.
 *
 * Values: each tensor gets its own stream from a counter-based generator (splitmix32) seeded by the run's seed
 * and the tensor's name, so a tensor's bytes depend on (seed, name, size) only. A value is "normal-ish": the sum
 * of the four bytes of one 32-bit draw (Irwin–Hall, 1021 levels, ±3.45σ), scaled to std 0.02 for projections,
 * embeddings and biases, and 1 + 0.02·z for norm weights. Tensors are written chunk by chunk straight as BF16, so
 * memory stays at one small buffer whatever the model size.
 *
 * A marker file is written last; a folder whose marker names the same shape and seed is complete and is reused.
 * @module
 */

import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseConfig, type ModelConfig } from '../model/config.js';
import { encodeHeader, writeAll } from '../model/safetensors-write.js';
import { own } from '../own.js';

/** A Hugging Face `config.json` object. */
export type HfConfig = Readonly<Record<string, unknown>>;

/** Benchmark shapes: the real models' config.json fields (weights are random). */
export const SHAPES: Readonly<Record<string, HfConfig>> = Object.freeze({
  'qwen2.5-0.5b': Object.freeze({
    architectures: ['Qwen2ForCausalLM'],
    model_type: 'qwen2',
    attention_dropout: 0.0,
    bos_token_id: 151643,
    eos_token_id: 151643,
    hidden_act: 'silu',
    hidden_size: 896,
    initializer_range: 0.02,
    intermediate_size: 4864,
    max_position_embeddings: 32768,
    max_window_layers: 24,
    num_attention_heads: 14,
    num_hidden_layers: 24,
    num_key_value_heads: 2,
    rms_norm_eps: 1e-6,
    rope_theta: 1000000.0,
    sliding_window: 32768,
    tie_word_embeddings: true,
    torch_dtype: 'bfloat16',
    use_cache: true,
    use_sliding_window: false,
    vocab_size: 151936,
  }),
  'llama-3.2-1b': Object.freeze({
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    attention_bias: false,
    attention_dropout: 0.0,
    bos_token_id: 128000,
    eos_token_id: 128001,
    head_dim: 64,
    hidden_act: 'silu',
    hidden_size: 2048,
    initializer_range: 0.02,
    intermediate_size: 8192,
    max_position_embeddings: 131072,
    mlp_bias: false,
    num_attention_heads: 32,
    num_hidden_layers: 16,
    num_key_value_heads: 8,
    pretraining_tp: 1,
    rms_norm_eps: 1e-5,
    rope_scaling: Object.freeze({
      factor: 32.0, high_freq_factor: 4.0, low_freq_factor: 1.0, original_max_position_embeddings: 8192, rope_type: 'llama3',
    }),
    rope_theta: 500000.0,
    tie_word_embeddings: true,
    torch_dtype: 'bfloat16',
    use_cache: true,
    vocab_size: 128256,
  }),
  // The FastKV paper's model. 16 GB of BF16 on disk; run it with --dtype q8 or q4 on a 24 GB machine.
  'llama-3.1-8b': Object.freeze({
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    attention_bias: false,
    attention_dropout: 0.0,
    bos_token_id: 128000,
    eos_token_id: 128001,
    head_dim: 128,
    hidden_act: 'silu',
    hidden_size: 4096,
    initializer_range: 0.02,
    intermediate_size: 14336,
    max_position_embeddings: 131072,
    mlp_bias: false,
    num_attention_heads: 32,
    num_hidden_layers: 32,
    num_key_value_heads: 8,
    pretraining_tp: 1,
    rms_norm_eps: 1e-5,
    rope_scaling: Object.freeze({
      factor: 8.0, high_freq_factor: 4.0, low_freq_factor: 1.0, original_max_position_embeddings: 8192, rope_type: 'llama3',
    }),
    rope_theta: 500000.0,
    tie_word_embeddings: false,
    torch_dtype: 'bfloat16',
    use_cache: true,
    vocab_size: 128256,
  }),
});

export type ShapeName = keyof typeof SHAPES;

/** Name of the marker written last into a complete generated checkpoint. */
export const MARKER_FILE = '.fastkv-random-checkpoint.json';
/** Bump when the generator's output changes, so stale folders are regenerated. */
const GENERATOR_VERSION = 1;

const STD = 0.02;

export interface TensorSpec {
  readonly name: string;
  readonly shape: readonly number[];
  readonly kind: 'matrix' | 'bias' | 'norm';
}

/** Every tensor of a checkpoint with this config, in the order written (HF names). */
export function checkpointTensors(c: ModelConfig): TensorSpec[] {
  const D = c.hiddenSize, I = c.intermediateSize, d = c.headDim;
  const q = c.numHeads * d, kv = c.numKvHeads * d;
  const out: TensorSpec[] = [{ name: 'model.embed_tokens.weight', shape: [c.vocabSize, D], kind: 'matrix' }];
  for (let l = 0; l < c.numLayers; l++) {
    const p = `model.layers.${l}.`;
    out.push({ name: `${p}input_layernorm.weight`, shape: [D], kind: 'norm' });
    out.push({ name: `${p}self_attn.q_proj.weight`, shape: [q, D], kind: 'matrix' });
    out.push({ name: `${p}self_attn.k_proj.weight`, shape: [kv, D], kind: 'matrix' });
    out.push({ name: `${p}self_attn.v_proj.weight`, shape: [kv, D], kind: 'matrix' });
    if (c.qkvBias) {
      out.push({ name: `${p}self_attn.q_proj.bias`, shape: [q], kind: 'bias' });
      out.push({ name: `${p}self_attn.k_proj.bias`, shape: [kv], kind: 'bias' });
      out.push({ name: `${p}self_attn.v_proj.bias`, shape: [kv], kind: 'bias' });
    }
    if (c.qkNorm) {
      out.push({ name: `${p}self_attn.q_norm.weight`, shape: [d], kind: 'norm' });
      out.push({ name: `${p}self_attn.k_norm.weight`, shape: [d], kind: 'norm' });
    }
    out.push({ name: `${p}self_attn.o_proj.weight`, shape: [D, q], kind: 'matrix' });
    out.push({ name: `${p}post_attention_layernorm.weight`, shape: [D], kind: 'norm' });
    out.push({ name: `${p}mlp.gate_proj.weight`, shape: [I, D], kind: 'matrix' });
    out.push({ name: `${p}mlp.up_proj.weight`, shape: [I, D], kind: 'matrix' });
    out.push({ name: `${p}mlp.down_proj.weight`, shape: [D, I], kind: 'matrix' });
  }
  out.push({ name: 'model.norm.weight', shape: [D], kind: 'norm' });
  if (!c.tieWordEmbeddings) out.push({ name: 'lm_head.weight', shape: [c.vocabSize, D], kind: 'matrix' });
  return out;
}

export interface ParameterCount {
  /** Every parameter stored, a tied head counted once. */
  total: number;
  /** embed_tokens, plus lm_head when untied. */
  embedding: number;
  /** Per-layer weights (projections, biases, norms) plus the final norm. */
  nonEmbedding: number;
}

const numel = (shape: readonly number[]): number => shape.reduce((a, x) => a * x, 1);

export function countParameters(c: ModelConfig): ParameterCount {
  let total = 0, embedding = 0;
  for (const t of checkpointTensors(c)) {
    const n = numel(t.shape);
    total += n;
    if (t.name === 'model.embed_tokens.weight' || t.name === 'lm_head.weight') embedding += n;
  }
  return { total, embedding, nonEmbedding: total - embedding };
}

// ---- values ---------------------------------------------------------------------------------------------------

/** Float32 -> bfloat16 bits, round to nearest even (inputs here are finite). */
function bf16(x: number): number {
  const f = new Float32Array([x]);
  const u = new Uint32Array(f.buffer)[0];
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

/** Irwin–Hall of 4 bytes: sum in [0, 1020], mean 510, std sqrt(4·(256²−1)/12). */
const IH_MEAN = 510;
const IH_STD = Math.sqrt((4 * (256 * 256 - 1)) / 12);

/** BF16 bits for every byte-sum, per tensor kind. */
function levelTable(kind: TensorSpec['kind']): Uint16Array {
  const t = new Uint16Array(1021);
  for (let s = 0; s <= 1020; s++) {
    const z = (s - IH_MEAN) / IH_STD;
    t[s] = bf16(kind === 'norm' ? 1 + STD * z : STD * z);
  }
  return t;
}

/** FNV-1a over the name, mixed with both 32-bit halves of the seed. */
function tensorSeed(seed: number, name: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193);
  const lo = seed >>> 0, hi = Math.floor(seed / 2 ** 32) >>> 0;
  h = Math.imul(h ^ lo, 0x9e3779b1) ^ Math.imul(hi, 0x85ebca6b);
  return h >>> 0;
}

const CHUNK = 1 << 20;

/** Fills `out` with BF16 values of stream `state`, returning the advanced state (splitmix32 counter). */
function fill(out: Uint16Array, n: number, state: number, table: Uint16Array): number {
  let s = state;
  for (let i = 0; i < n; i++) {
    s = (s + 0x9e3779b9) | 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    z ^= z >>> 16;
    out[i] = table[(z & 255) + ((z >>> 8) & 255) + ((z >>> 16) & 255) + ((z >>> 24) & 255)];
  }
  return s;
}

// ---- writing --------------------------------------------------------------------------------------------------

export interface WriteProgress {
  /** Bytes of tensor data written so far. */
  done: number;
  total: number;
  /** The tensor being written. */
  tensor: string;
}

export interface WrittenCheckpoint {
  dir: string;
  config: ModelConfig;
  /** False when a complete checkpoint of the same shape and seed was already there. */
  written: boolean;
  /** Size of model.safetensors. */
  bytes: number;
}

function resolveShape(shape: string | HfConfig): { name: string; json: HfConfig } {
  if (typeof shape !== 'string') return { name: 'custom', json: shape };
  const json = own(SHAPES, shape);
  if (!json) throw new RangeError(`unknown shape "${shape}"; known: ${Object.keys(SHAPES).join(', ')}`);
  return { name: shape, json };
}


/**
 * Writes `dir/config.json` and `dir/model.safetensors` (BF16, seeded random values) for `shape`: a name from
 * {@link SHAPES} or a config.json object of one's own (tests use tiny ones). Does nothing if `dir` already holds a
 * complete checkpoint of the same config and seed. `onProgress` is called after every chunk.
 */
export function writeRandomCheckpoint(
  dir: string, shape: string | HfConfig, seed = 0, onProgress?: (p: WriteProgress) => void,
): WrittenCheckpoint {
  if (!Number.isSafeInteger(seed) || seed < 0) throw new RangeError(`seed must be a non-negative safe integer, got ${seed}`);
  const { name, json } = resolveShape(shape);
  const config = parseConfig(json, `shape ${name}`);
  const tensors = checkpointTensors(config);
  const markerPath = path.join(dir, MARKER_FILE);
  const modelPath = path.join(dir, 'model.safetensors');
  const marker = JSON.stringify({ generator: GENERATOR_VERSION, shape: name, seed, config: json });

  // Header first: offsets follow from the shapes alone.
  const header: Record<string, unknown> = {
    __metadata__: { format: 'pt', generator: `fastkv random-checkpoint v${GENERATOR_VERSION}`, shape: name, seed: String(seed) },
  };
  let offset = 0;
  for (const t of tensors) {
    const bytes = numel(t.shape) * 2;
    header[t.name] = { dtype: 'BF16', shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  const dataBytes = offset;
  const prefix = encodeHeader(header);
  const fileBytes = prefix.length + dataBytes;

  try {
    if (fs.readFileSync(markerPath, 'utf8') === marker && fs.statSync(modelPath).size === fileBytes
        && fs.existsSync(path.join(dir, 'config.json'))) {
      return { dir, config, written: false, bytes: fileBytes };
    }
  } catch { /* no marker or no model: (re)generate */ }

  fs.mkdirSync(dir, { recursive: true });
  fs.rmSync(markerPath, { force: true });
  const tmp = `${modelPath}.partial`;
  const fd = fs.openSync(tmp, 'w');
  try {
    writeAll(fd, prefix);
    const buf = new Uint16Array(CHUNK);
    const tables = { matrix: levelTable('matrix'), bias: levelTable('bias'), norm: levelTable('norm') };
    let done = 0;
    for (const t of tensors) {
      const total = numel(t.shape);
      let state = tensorSeed(seed, t.name);
      for (let at = 0; at < total; at += CHUNK) {
        const n = Math.min(CHUNK, total - at);
        state = fill(buf, n, state, tables[t.kind]);
        writeAll(fd, new Uint8Array(buf.buffer, 0, n * 2));
        done += n * 2;
        onProgress?.({ done, total: dataBytes, tensor: t.name });
      }
    }
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, modelPath);
  fs.writeFileSync(path.join(dir, 'config.json'), `${JSON.stringify(json, null, 2)}\n`);
  fs.writeFileSync(markerPath, marker);
  return { dir, config, written: true, bytes: fileBytes };
}
