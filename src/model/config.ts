/**
 * Hugging Face `config.json` -> one frozen, validated {@link ModelConfig}, and the rotary-embedding frequencies
 * that config implies ({@link ropeFrequencies}, a port of transformers' `ROPE_INIT_FUNCTIONS`).
 *
 * Both config layouts are read: the older `rope_theta` + `rope_scaling` (whose type key is `rope_type` or the
 * legacy `type`) and the newer `rope_parameters` (`{rope_theta, rope_type, ...}`). As in transformers, a non-null
 * `rope_scaling` wins over `rope_parameters`, and a `rope_theta` inside the dict wins over a top-level one.
 * @module
 */

import { constants as bufferConstants } from 'node:buffer';
import * as path from 'node:path';
import { ConfigError, quoted } from '../errors.js';
import { own } from '../own.js';
import { MAX_JSON_BYTES, readJsonFile } from '../files.js';

export type Family = 'llama' | 'mistral' | 'qwen2' | 'qwen3';
export type RopeType = 'default' | 'linear' | 'dynamic' | 'llama3' | 'yarn';

export interface RopeConfig {
  readonly type: RopeType;
  readonly theta: number;
  /** Context-extension factor; 1 for default. For yarn without an explicit factor: max positions / original. */
  readonly factor: number;
  /** Pre-extension context length (llama3, yarn); max_position_embeddings for the others, as transformers uses it. */
  readonly originalMaxPositions: number;
  /** The rope dict as read (rope_theta and rope_type filled in). */
  readonly raw: Readonly<Record<string, unknown>>;
}

export interface ModelConfig {
  readonly architecture: string;
  readonly family: Family;
  readonly numLayers: number;
  readonly hiddenSize: number;
  readonly intermediateSize: number;
  /** Query heads. */
  readonly numHeads: number;
  readonly numKvHeads: number;
  /** Explicit `head_dim` if given, else hidden / heads. */
  readonly headDim: number;
  readonly vocabSize: number;
  readonly rmsNormEps: number;
  readonly maxPositionEmbeddings: number;
  readonly tieWordEmbeddings: boolean;
  /** q/k/v projections carry biases (qwen2). */
  readonly qkvBias: boolean;
  /** Per-head RMSNorm on q and k (qwen3). */
  readonly qkNorm: boolean;
  readonly slidingWindow: number | null;
  readonly bosTokenId: number | null;
  readonly eosTokenIds: readonly number[];
  readonly rope: RopeConfig;
  /** `torch_dtype` or `dtype` as written, e.g. 'bfloat16'. */
  readonly dtype: string;
}

const ARCHITECTURES: Readonly<Record<string, Family>> = {
  LlamaForCausalLM: 'llama', MistralForCausalLM: 'mistral', Qwen2ForCausalLM: 'qwen2', Qwen3ForCausalLM: 'qwen3',
};
const ROPE_TYPES: readonly RopeType[] = ['default', 'linear', 'dynamic', 'llama3', 'yarn'];

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);
const absent = (v: unknown): boolean => v === undefined || v === null;

/** Field readers: a missing field takes `def` (or is an error without one); a present one must be valid. */
function makeReaders(obj: Json, where: string) {
  const fail = (key: string, what: string): never => {
    throw new ConfigError(`${where}: "${key}" must be ${what}, got ${JSON.stringify(obj[key]) ?? 'nothing'}`);
  };
  return {
    posInt(key: string, def?: number): number {
      const v = obj[key];
      if (absent(v) && def !== undefined) return def;
      return typeof v === 'number' && Number.isSafeInteger(v) && v > 0 ? v : fail(key, 'a positive integer');
    },
    posNum(key: string, def?: number): number {
      const v = obj[key];
      if (absent(v) && def !== undefined) return def;
      return typeof v === 'number' && Number.isFinite(v) && v > 0 ? v : fail(key, 'a positive number');
    },
    /** A positive number that stays positive and finite in float32, where the graphs use it. */
    posF32(key: string, def?: number): number {
      const v = obj[key];
      if (absent(v) && def !== undefined) return def;
      const ok = typeof v === 'number' && v > 0 && Math.fround(v) > 0 && Number.isFinite(Math.fround(v));
      return ok ? v : fail(key, 'a positive number within float32 range (about 1.2e-38 to 3.4e38)');
    },
    optNum(key: string): number | undefined {
      const v = obj[key];
      if (absent(v)) return undefined;
      return typeof v === 'number' && Number.isFinite(v) ? v : fail(key, 'a number');
    },
    bool(key: string, def: boolean): boolean {
      const v = obj[key];
      if (absent(v)) return def;
      return typeof v === 'boolean' ? v : fail(key, 'true or false');
    },
    tokenIds(key: string): number[] {
      const v = obj[key];
      if (absent(v)) return [];
      const ids = Array.isArray(v) ? v : [v];
      return ids.every((x) => Number.isSafeInteger(x) && x >= 0) ? (ids as number[]) : fail(key, 'a token id or a list of them');
    },
  };
}

export function parseConfig(json: unknown, source: string): ModelConfig {
  if (!isObject(json)) throw new ConfigError(`${source}: config is not a JSON object`);
  const r = makeReaders(json, source);

  const archs = json.architectures;
  let architecture: string;
  if (Array.isArray(archs) && archs.length > 0 && typeof archs[0] === 'string') architecture = archs[0];
  else if (typeof json.model_type === 'string') {
    const byType = Object.keys(ARCHITECTURES).find((a) => ARCHITECTURES[a] === json.model_type);
    architecture = byType ?? `model_type ${json.model_type}`;
  } else throw new ConfigError(`${source}: neither "architectures" nor "model_type" names the model`);
  const family = own(ARCHITECTURES, architecture);
  if (!family) {
    throw new ConfigError(
      `${source}: unsupported architecture ${quoted(architecture)}; supported: ${Object.keys(ARCHITECTURES).join(', ')}`);
  }

  const hiddenSize = r.posInt('hidden_size');
  const numHeads = r.posInt('num_attention_heads');
  const numKvHeads = r.posInt('num_key_value_heads', numHeads);
  if (numHeads % numKvHeads !== 0) {
    throw new ConfigError(
      `${source}: num_attention_heads (${numHeads}) must be a multiple of num_key_value_heads (${numKvHeads})`);
  }
  if (absent(json.head_dim) && hiddenSize % numHeads !== 0) {
    throw new ConfigError(`${source}: hidden_size (${hiddenSize}) is not divisible by num_attention_heads ` +
      `(${numHeads}) and no head_dim is given`);
  }
  const headDim = r.posInt('head_dim', hiddenSize / numHeads);
  if (headDim % 2 !== 0) throw new ConfigError(`${source}: head_dim ${headDim} must be even for rotary embeddings`);
  const maxPositionEmbeddings = r.posInt('max_position_embeddings');

  if (!absent(json.hidden_act) && json.hidden_act !== 'silu') {
    throw new ConfigError(`${source}: hidden_act "${String(json.hidden_act)}" is not supported (only silu)`);
  }
  if (r.bool('mlp_bias', false)) throw new ConfigError(`${source}: mlp_bias true is not supported`);
  // transformers: Qwen2 always has q/k/v biases; Mistral ignores attention_bias; Llama and Qwen3 would also put a
  // bias on o_proj, which the fused layout has no room for.
  const qkvBias = family === 'qwen2' ? r.bool('attention_bias', true)
    : family === 'mistral' ? false : r.bool('attention_bias', false);
  if (qkvBias && family !== 'qwen2') {
    throw new ConfigError(`${source}: attention_bias true is not supported for ${architecture} (it adds an o_proj bias)`);
  }

  let slidingWindow: number | null = null;
  if (family === 'mistral' || r.bool('use_sliding_window', false)) {
    slidingWindow = absent(json.sliding_window) ? null : r.posInt('sliding_window');
  }
  const bos = r.tokenIds('bos_token_id');
  const numLayers = r.posInt('num_hidden_layers');
  const intermediateSize = r.posInt('intermediate_size');
  const vocabSize = r.posInt('vocab_size');
  checkSizes(source, { hiddenSize, intermediateSize, numHeads, numKvHeads, headDim, vocabSize });
  const dtype = [json.torch_dtype, json.dtype].find((d) => typeof d === 'string') as string | undefined;

  return Object.freeze({
    architecture,
    family,
    numLayers,
    hiddenSize,
    intermediateSize,
    numHeads,
    numKvHeads,
    headDim,
    vocabSize,
    rmsNormEps: r.posF32('rms_norm_eps', 1e-6),
    maxPositionEmbeddings,
    tieWordEmbeddings: r.bool('tie_word_embeddings', false),
    qkvBias,
    qkNorm: family === 'qwen3',
    slidingWindow,
    bosTokenId: bos.length > 0 ? bos[0] : null,
    eosTokenIds: Object.freeze(r.tokenIds('eos_token_id')),
    rope: parseRope(json, source, maxPositionEmbeddings),
    dtype: dtype ?? 'float32',
  });
}

function parseRope(json: Json, source: string, maxPositions: number): RopeConfig {
  let dict: Json = {};
  let key = 'rope_parameters';
  for (const k of ['rope_parameters', 'rope_scaling']) {
    const v = json[k];
    if (absent(v)) continue;
    if (!isObject(v)) throw new ConfigError(`${source}: "${k}" must be an object or null`);
    dict = v; key = k;                       // rope_scaling is read last, so it wins, as in transformers
  }
  // transformers 5 may nest rope_parameters by layer type ({"full_attention": {...}, ...}); one shared dict is fine.
  const layerTypes = Array.isArray(json.layer_types) ? json.layer_types : [];
  const nested = Object.keys(dict).filter((k) => layerTypes.includes(k));
  if (nested.length > 0) {
    const distinct = new Set(nested.map((k) => JSON.stringify(dict[k])));
    if (distinct.size > 1 || !isObject(dict[nested[0]])) {
      throw new ConfigError(`${source}: ${key} differ per layer type; not supported`);
    }
    dict = dict[nested[0]] as Json;
  }
  const where = `${source} (${key})`;
  const r = makeReaders(dict, where);
  const type = dict.rope_type ?? dict.type ?? 'default';
  if (typeof type !== 'string' || !(ROPE_TYPES as readonly string[]).includes(type)) {
    throw new ConfigError(`${where}: unsupported rope type "${String(type)}"; supported: ${ROPE_TYPES.join(', ')}`);
  }
  const theta = absent(dict.rope_theta) ? makeReaders(json, source).posF32('rope_theta', 10000) : r.posF32('rope_theta');
  const partial = dict.partial_rotary_factor ?? json.partial_rotary_factor;
  if (!absent(partial) && partial !== 1) {
    throw new ConfigError(`${source}: partial_rotary_factor ${String(partial)} is not supported`);
  }

  let factor = 1;
  let originalMaxPositions = maxPositions;
  if (type === 'llama3' || type === 'yarn') {
    // transformers' standardize_rope_params: a top-level original_max_position_embeddings wins, else the dict's,
    // else max_position_embeddings.
    originalMaxPositions = absent(json.original_max_position_embeddings)
      ? r.posInt('original_max_position_embeddings', maxPositions)
      : makeReaders(json, source).posInt('original_max_position_embeddings');
  }
  if (type === 'yarn') factor = r.posF32('factor', maxPositions / originalMaxPositions);
  else if (type !== 'default') factor = r.posF32('factor');
  if (type === 'llama3') {
    const low = r.posF32('low_freq_factor'), high = r.posF32('high_freq_factor');
    if (high <= low) throw new ConfigError(`${where}: high_freq_factor (${high}) must be greater than low_freq_factor (${low})`);
  }
  if (type === 'yarn') {
    if (!absent(dict.attention_factor)) r.posF32('attention_factor');
    for (const k of ['beta_fast', 'beta_slow', 'mscale', 'mscale_all_dim']) r.optNum(k);
    r.bool('truncate', true);
  }
  const raw = Object.freeze({ ...dict, rope_type: type, rope_theta: theta });
  return Object.freeze({ type: type as RopeType, theta, factor, originalMaxPositions, raw });
}

/** Reads and parses `dir/config.json` (a regular file of at most 64 MiB). */
export function loadConfig(dir: string): ModelConfig {
  const file = path.join(dir, 'config.json');
  return parseConfig(readJsonFile(file, { maxBytes: MAX_JSON_BYTES, what: file, error: ConfigError }), file);
}

/** Most float32 values one weight array can hold (the largest ArrayBuffer Node.js allocates). */
const MAX_ARRAY_FLOATS = Math.floor(bufferConstants.MAX_LENGTH / 4);

/**
 * Sizes that would not fit one array are a config error here, before anything is allocated (a RangeError from
 * `new Float32Array` deep in loading would name nothing).
 */
function checkSizes(source: string, s: { hiddenSize: number; intermediateSize: number; numHeads: number; numKvHeads: number;
  headDim: number; vocabSize: number }): void {
  const arrays: [string, number][] = [
    ['vocab_size × hidden_size (embeddings)', s.vocabSize * s.hiddenSize],
    ['(num_attention_heads + 2 × num_key_value_heads) × head_dim × hidden_size (q, k, v)', (s.numHeads + 2 * s.numKvHeads) * s.headDim * s.hiddenSize],
    ['2 × intermediate_size × hidden_size (gate, up)', 2 * s.intermediateSize * s.hiddenSize],
  ];
  for (const [what, n] of arrays) {
    if (!(n <= MAX_ARRAY_FLOATS)) {
      throw new ConfigError(`${source}: ${what} = ${n}, more than the ${MAX_ARRAY_FLOATS} float32 values one weight array can hold`);
    }
  }
}

export { ropeFrequencies } from './rope.js';
