import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadConfig, parseConfig, ropeFrequencies, type ModelConfig } from './config.js';
import { ConfigError } from '../errors.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const FIXTURES = ['models/stories260K', 'test/fixtures/tiny-llama3', 'test/fixtures/tiny-qwen2', 'test/fixtures/tiny-qwen3',
  'test/fixtures/tiny-mistral', 'test/fixtures/retrieval-3M'];
const rawConfig = (dir: string): Record<string, any> => JSON.parse(fs.readFileSync(path.join(ROOT, dir, 'config.json'), 'utf8'));
const f = Math.fround;

function throwsConfig(fn: () => unknown, ...patterns: RegExp[]): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof ConfigError, `expected ConfigError, got ${String(e)}`);
    for (const p of patterns) assert.match(e.message, p);
    return true;
  });
}

/** A llama config in the old layout with the given overrides (undefined deletes a key). */
function llama(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  const c: Record<string, unknown> = { ...rawConfig('test/fixtures/tiny-llama3'), ...overrides };
  for (const [k, v] of Object.entries(overrides)) if (v === undefined) delete c[k];
  return c;
}
const parse = (json: unknown): ModelConfig => parseConfig(json, '/m/config.json');

test('every fixture config parses to the numbers in its config.json', () => {
  for (const dir of FIXTURES) {
    const raw = rawConfig(dir);
    const c = loadConfig(path.join(ROOT, dir));
    assert.ok(Object.isFrozen(c) && Object.isFrozen(c.rope));
    assert.equal(c.architecture, raw.architectures[0]);
    assert.equal(c.numLayers, raw.num_hidden_layers);
    assert.equal(c.hiddenSize, raw.hidden_size);
    assert.equal(c.intermediateSize, raw.intermediate_size);
    assert.equal(c.numHeads, raw.num_attention_heads);
    assert.equal(c.numKvHeads, raw.num_key_value_heads);
    assert.equal(c.headDim, raw.head_dim ?? raw.hidden_size / raw.num_attention_heads);
    assert.equal(c.vocabSize, raw.vocab_size);
    assert.equal(c.rmsNormEps, raw.rms_norm_eps);
    assert.equal(c.maxPositionEmbeddings, raw.max_position_embeddings);
    assert.equal(c.tieWordEmbeddings, raw.tie_word_embeddings);
    assert.equal(c.bosTokenId, raw.bos_token_id);
    assert.deepEqual(c.eosTokenIds, [raw.eos_token_id]);
    assert.equal(c.dtype, raw.torch_dtype ?? raw.dtype);
    assert.equal(c.rope.theta, raw.rope_theta ?? raw.rope_parameters.rope_theta);
    assert.equal(c.slidingWindow, null);
  }
});

test('family-specific fields of the fixtures', () => {
  const load = (name: string) => loadConfig(path.join(ROOT, 'test/fixtures', name));
  const qwen3 = load('tiny-qwen3');
  assert.equal(qwen3.family, 'qwen3');
  assert.equal(qwen3.headDim, 32);
  assert.notEqual(qwen3.numHeads * qwen3.headDim, qwen3.hiddenSize);
  assert.equal(qwen3.qkNorm, true);
  assert.equal(qwen3.qkvBias, false);
  assert.equal(qwen3.rope.type, 'default');

  const qwen2 = load('tiny-qwen2');
  assert.equal(qwen2.family, 'qwen2');
  assert.equal(qwen2.qkvBias, true);
  assert.equal(qwen2.tieWordEmbeddings, true);
  assert.equal(qwen2.qkNorm, false);

  const llama3 = load('tiny-llama3');
  assert.equal(llama3.family, 'llama');
  assert.equal(llama3.tieWordEmbeddings, false);
  assert.deepEqual({ ...llama3.rope, raw: undefined }, { type: 'llama3', theta: 500000, factor: 8, originalMaxPositions: 1024, raw: undefined });
  assert.equal(llama3.rope.raw.low_freq_factor, 1);

  const mistral = load('tiny-mistral');
  assert.equal(mistral.family, 'mistral');
  assert.equal(mistral.dtype, 'float16');
  assert.equal(mistral.qkvBias, false);
});

test('default rope: invFreq[i] = theta^(-2i/d), rounded to float32 like torch', () => {
  for (const dir of FIXTURES.filter((d) => !d.includes('llama3'))) {
    const c = loadConfig(path.join(ROOT, dir));
    const { invFreq, attentionScaling } = ropeFrequencies(c, 100);
    assert.equal(attentionScaling, 1);
    assert.equal(invFreq.length, c.headDim / 2);
    for (let i = 0; i < invFreq.length; i++) {
      const exact = c.rope.theta ** (-2 * i / c.headDim);
      assert.ok(Math.abs(invFreq[i] - exact) <= exact * 2 ** -22, `${dir} dim ${i}: ${invFreq[i]} vs ${exact}`);
      assert.equal(invFreq[i], f(1 / f(f(c.rope.theta) ** f((2 * i) / c.headDim))));
    }
  }
});

test('llama3 rope keeps high frequencies, divides low ones by factor, interpolates between', () => {
  const c = loadConfig(path.join(ROOT, 'test/fixtures/tiny-llama3'));
  const def = ropeFrequencies(parse(llama({ rope_scaling: null })), 0).invFreq;
  const { invFreq, attentionScaling } = ropeFrequencies(c, 0);
  assert.equal(attentionScaling, 1);
  assert.equal(invFreq[0], 1);
  const { factor, originalMaxPositions: orig } = c.rope;
  let low = 0, high = 0, mid = 0;
  for (let i = 0; i < invFreq.length; i++) {
    const wavelen = 2 * Math.PI / def[i];
    if (wavelen < orig / 4) { assert.equal(invFreq[i], def[i]); high++; }
    else if (wavelen > orig / 1) { assert.equal(invFreq[i], f(def[i] / factor)); low++; }
    else {
      assert.ok(invFreq[i] < def[i] && invFreq[i] > def[i] / factor, `dim ${i} interpolated`);
      const smooth = (orig / wavelen - 1) / (4 - 1);
      const expected = (1 - smooth) * def[i] / factor + smooth * def[i];
      assert.ok(Math.abs(invFreq[i] - expected) < expected * 1e-6);
      mid++;
    }
  }
  assert.ok(low > 0 && high > 0 && mid > 0, `all three bands exercised (${high}/${mid}/${low})`);
});

test('linear, dynamic and yarn rope', () => {
  const base = ropeFrequencies(parse(llama({ rope_scaling: null })), 0).invFreq;
  const linear = ropeFrequencies(parse(llama({ rope_scaling: { type: 'linear', factor: 4 } })), 0).invFreq;
  assert.deepEqual(linear, base.map((x) => f(x / 4)));

  const dynCfg = parse(llama({ rope_scaling: { rope_type: 'dynamic', factor: 2 } }));
  assert.deepEqual(ropeFrequencies(dynCfg, 8192).invFreq, base, 'no change within max_position_embeddings');
  const long = ropeFrequencies(dynCfg, 4 * 8192).invFreq;
  const d = dynCfg.headDim;
  const scaledBase = 500000 * ((2 * 4) - 1) ** (d / (d - 2));
  assert.equal(long[0], 1);
  for (let i = 1; i < long.length; i++) {
    assert.ok(long[i] < base[i]);
    assert.ok(Math.abs(long[i] - scaledBase ** (-2 * i / d)) < long[i] * 1e-6);
  }

  const yarnCfg = parse(llama({ rope_scaling: { rope_type: 'yarn', factor: 4, original_max_position_embeddings: 2048 } }));
  const yarn = ropeFrequencies(yarnCfg, 0);
  assert.ok(Math.abs(yarn.attentionScaling - (0.1 * Math.log(4) + 1)) < 1e-12);
  assert.equal(yarn.invFreq[0], 1, 'fastest dimension extrapolated (unchanged)');
  const last = yarn.invFreq.length - 1;
  assert.ok(Math.abs(yarn.invFreq[last] - base[last] / 4) < base[last] * 1e-6, 'slowest dimension interpolated (/factor)');
  for (let i = 0; i <= last; i++) assert.ok(yarn.invFreq[i] <= base[i] && yarn.invFreq[i] >= f(base[i] / 4) * (1 - 1e-6));
  const given = parse(llama({ rope_scaling: { rope_type: 'yarn', factor: 4, attention_factor: 0.5 } }));
  assert.equal(ropeFrequencies(given, 0).attentionScaling, 0.5);
  const ms = parse(llama({ rope_scaling: { rope_type: 'yarn', factor: 40, mscale: 0.707, mscale_all_dim: 0.707 } }));
  assert.equal(ropeFrequencies(ms, 0).attentionScaling, 1);
});

test('old and new config layouts give the same rope', () => {
  const scaling = { rope_type: 'llama3', factor: 8, high_freq_factor: 4, low_freq_factor: 1, original_max_position_embeddings: 1024 };
  const oldLayout = parse(llama());
  const newLayout = parse(llama({ rope_theta: undefined, rope_scaling: undefined, rope_parameters: { rope_theta: 500000, ...scaling } }));
  assert.deepEqual(newLayout, oldLayout);
  assert.deepEqual(ropeFrequencies(newLayout, 0), ropeFrequencies(oldLayout, 0));
  const legacyType = parse(llama({ rope_scaling: { type: 'linear', factor: 2 } }));
  assert.equal(legacyType.rope.type, 'linear');
  const defaults = parse(llama({ rope_theta: undefined, rope_scaling: undefined }));
  assert.equal(defaults.rope.theta, 10000);
  assert.equal(defaults.rope.type, 'default');
});

test('unsupported architecture and rope types are ConfigErrors naming them', () => {
  throwsConfig(() => parse(llama({ architectures: ['GPT2LMHeadModel'] })), /GPT2LMHeadModel/, /LlamaForCausalLM/, /config\.json/);
  throwsConfig(() => parse(llama({ rope_scaling: { rope_type: 'longrope', short_factor: [], long_factor: [] } })), /longrope/);
  throwsConfig(() => parse(llama({ rope_scaling: undefined, rope_parameters: { rope_type: 'mrope', rope_theta: 1 } })), /mrope/);
  const fallback = parse(llama({ architectures: undefined, model_type: 'qwen2' }));
  assert.equal(fallback.architecture, 'Qwen2ForCausalLM');
  throwsConfig(() => parse(llama({ architectures: undefined, model_type: 'gemma' })), /gemma/);
});

test('invalid numbers are ConfigErrors naming the field and the file', () => {
  throwsConfig(() => parse(llama({ hidden_size: undefined })), /hidden_size/, /\/m\/config\.json/);
  throwsConfig(() => parse(llama({ num_hidden_layers: -1 })), /num_hidden_layers/, /positive integer/);
  throwsConfig(() => parse(llama({ vocab_size: 1.5 })), /vocab_size/);
  throwsConfig(() => parse(llama({ num_key_value_heads: 3 })), /num_key_value_heads/);
  throwsConfig(() => parse(llama({ rms_norm_eps: 0 })), /rms_norm_eps/);
  throwsConfig(() => parse(llama({ head_dim: undefined, hidden_size: 100 })), /hidden_size/, /head_dim/);
  throwsConfig(() => parse(llama({ rope_scaling: { rope_type: 'linear' } })), /factor/, /rope_scaling/);
  throwsConfig(() => parse(llama({ rope_scaling: { ...rawConfig('test/fixtures/tiny-llama3').rope_scaling, high_freq_factor: 1 } })), /high_freq_factor/);
  throwsConfig(() => parse(llama({ rope_theta: 'big' })), /rope_theta/);
  throwsConfig(() => parse('not an object'), /not a JSON object/);
  throwsConfig(() => loadConfig('/nonexistent/model'), /nonexistent/);
  assert.deepEqual(parse(llama({ eos_token_id: [2, 7] })).eosTokenIds, [2, 7]);
  assert.equal(parse(llama({ bos_token_id: null })).bosTokenId, null);
});

test('sliding window: mistral reads sliding_window, qwen only with use_sliding_window', () => {
  const mistral = rawConfig('test/fixtures/tiny-mistral');
  assert.equal(parse({ ...mistral, sliding_window: 4096 }).slidingWindow, 4096);
  const qwen2 = rawConfig('test/fixtures/tiny-qwen2');
  assert.equal(parse({ ...qwen2, sliding_window: 4096 }).slidingWindow, null);
  assert.equal(parse({ ...qwen2, sliding_window: 4096, use_sliding_window: true }).slidingWindow, 4096);
});

test('sizes no array can hold are a ConfigError naming the fields, not a RangeError', () => {
  throwsConfig(() => parse(llama({ hidden_size: 1e12, num_attention_heads: 1, num_key_value_heads: 1, head_dim: undefined })),
    /hidden_size/, /float32 values one weight array can hold/);
  throwsConfig(() => parse(llama({ vocab_size: 1e9 })), /vocab_size × hidden_size/);
  throwsConfig(() => parse(llama({ intermediate_size: 2 ** 40 })), /intermediate_size/);
});

test('architectures are looked up as own names: "toString", "constructor" and "__proto__" are unsupported', () => {
  for (const name of ['toString', 'constructor', '__proto__', 'hasOwnProperty']) {
    throwsConfig(() => parse(llama({ architectures: [name] })), /unsupported architecture/, new RegExp(name));
  }
});

test('values that overflow or vanish in float32 are refused: rms_norm_eps, rope factor, yarn scaling', () => {
  throwsConfig(() => parse(llama({ rms_norm_eps: 1e308 })), /rms_norm_eps/, /float32/);
  throwsConfig(() => parse(llama({ rms_norm_eps: 1e-300 })), /rms_norm_eps/, /float32/);
  throwsConfig(() => parse(llama({ rope_scaling: { rope_type: 'linear', factor: 1e-300 } })), /factor/, /float32/);
  throwsConfig(() => parse(llama({ rope_theta: 1e39 })), /rope_theta/);
  const yarn = (extra: Record<string, unknown>) => llama({ rope_scaling: { rope_type: 'yarn', factor: 4, original_max_position_embeddings: 64, ...extra } });
  throwsConfig(() => parse(yarn({ attention_factor: -1 })), /attention_factor/);
  const huge = parse(yarn({ mscale: 1e308, mscale_all_dim: 1 }));
  throwsConfig(() => ropeFrequencies(huge, 128), /attention scaling/, /float32/);
  // A factor that is fine alone but sends a frequency to 0 or infinity in float32 with this theta.
  const tiny = parse(llama({ rope_theta: 1e30, rope_scaling: { rope_type: 'linear', factor: 1e37 } }));
  throwsConfig(() => ropeFrequencies(tiny, 128), /inverse frequency/);
  assert.ok(ropeFrequencies(parse(yarn({})), 128).invFreq.every((v) => v > 0));
});
