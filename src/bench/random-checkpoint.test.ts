import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadConfig, parseConfig } from '../model/config.js';
import { SafetensorsStore } from '../model/safetensors.js';
import { Model } from '../engine/model.js';
import { decodeStep, prefill } from '../engine/forward.js';
import { ropeFrequencies } from '../model/config.js';
import { MARKER_FILE, SHAPES, countParameters, writeRandomCheckpoint, type HfConfig } from './random-checkpoint.js';
import { largestProjection, prefillFlops, randomPrompt } from './prefill-decode.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fastkv-rc-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

const TINY_QWEN: HfConfig = {
  architectures: ['Qwen2ForCausalLM'], model_type: 'qwen2', hidden_act: 'silu', hidden_size: 64,
  intermediate_size: 128, num_attention_heads: 4, num_key_value_heads: 2, num_hidden_layers: 2,
  max_position_embeddings: 512, rms_norm_eps: 1e-6, rope_theta: 10000, tie_word_embeddings: true,
  vocab_size: 256, torch_dtype: 'bfloat16', bos_token_id: 1, eos_token_id: 2,
};

const TINY_LLAMA3: HfConfig = {
  architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_act: 'silu', hidden_size: 64, head_dim: 16,
  intermediate_size: 96, num_attention_heads: 4, num_key_value_heads: 1, num_hidden_layers: 2,
  max_position_embeddings: 1024, rms_norm_eps: 1e-5, rope_theta: 500000, tie_word_embeddings: false,
  rope_scaling: { factor: 32, high_freq_factor: 4, low_freq_factor: 1, original_max_position_embeddings: 128, rope_type: 'llama3' },
  vocab_size: 200,
};

const modelBytes = (dir: string): Buffer => fs.readFileSync(path.join(dir, 'model.safetensors'));

test('the benchmark shapes parse and have the real models\' parameter counts', () => {
  const qwen = parseConfig(SHAPES['qwen2.5-0.5b'], 'qwen');
  assert.equal(qwen.family, 'qwen2');
  assert.equal(qwen.qkvBias, true);
  assert.equal(qwen.headDim, 64);
  assert.equal(countParameters(qwen).total, 494_032_768);
  assert.equal(countParameters(qwen).embedding, 151936 * 896);
  assert.deepEqual(largestProjection(qwen), { what: 'gate+up', n: 2 * 4864, k: 896 });

  const llama = parseConfig(SHAPES['llama-3.2-1b'], 'llama');
  assert.equal(llama.rope.type, 'llama3');
  assert.equal(llama.rope.factor, 32);
  assert.equal(llama.rope.originalMaxPositions, 8192);
  assert.equal(countParameters(llama).total, 1_235_814_400);

  // Llama-3.1-8B: 8,030,261,248 parameters (untied head), the paper's model.
  const llama8 = parseConfig(SHAPES['llama-3.1-8b'], 'llama-3.1-8b');
  assert.equal(llama8.rope.type, 'llama3');
  assert.equal(llama8.rope.factor, 8);
  assert.equal(llama8.tieWordEmbeddings, false);
  assert.equal(countParameters(llama8).total, 8_030_261_248);
  assert.equal(countParameters(llama8).embedding, 2 * 128256 * 4096);

  // 2·P·N plus the causal attention term.
  assert.equal(prefillFlops(qwen, 10), 2 * countParameters(qwen).nonEmbedding * 10 + 24 * 2 * 100 * 64 * 14);
});

test('a tiny random checkpoint round-trips its config, loads, prefills and decodes', async () => {
  const dir = path.join(tmp, 'qwen');
  const written = writeRandomCheckpoint(dir, TINY_QWEN, 7);
  assert.equal(written.written, true);
  assert.ok(fs.existsSync(path.join(dir, MARKER_FILE)));
  assert.deepEqual(JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')), TINY_QWEN);
  assert.deepEqual(loadConfig(dir), written.config);

  const store = SafetensorsStore.open(dir);
  assert.equal(store.info('model.layers.1.mlp.gate_proj.weight').dtype, 'BF16');
  assert.equal(store.names().length, countTensors(2, true, false));
  const norm = store.readF32('model.layers.0.input_layernorm.weight');
  assert.ok(norm.every((x) => Math.abs(x - 1) < 0.1), 'norm weights are near 1');
  const q = store.readF32('model.layers.0.self_attn.q_proj.weight');
  const std = Math.sqrt(q.reduce((a, x) => a + x * x, 0) / q.length);
  assert.ok(std > 0.015 && std < 0.025, `projection std ${std} is about 0.02`);

  const model = await Model.load(dir, { withoutTokenizer: true, threads: 1 });
  try {
    const ids = randomPrompt(16, model.config.vocabSize, 3);
    const r = await prefill(model, ids, { decodeCapacity: 2 });
    assert.equal(r.logits.length, 256);
    assert.ok(r.logits.every(Number.isFinite));
    assert.equal(r.nextPosition, 16);
    const { invFreq } = ropeFrequencies(model.config, 18);
    const next = await decodeStep(model, r.cache, 5, r.nextPosition, invFreq);
    assert.equal(next.length, 256);
    assert.ok(next.every(Number.isFinite));
    assert.equal(r.cache.bytes, 2 /* layers */ * 17 * 2 /* kv heads */ * 16 * 2 * 4);
  } finally {
    await model.dispose();
  }
});

test('an untied llama3 shape writes lm_head and its rope scaling', async () => {
  const dir = path.join(tmp, 'llama');
  writeRandomCheckpoint(dir, TINY_LLAMA3, 0);
  const c = loadConfig(dir);
  assert.equal(c.rope.type, 'llama3');
  assert.equal(c.tieWordEmbeddings, false);
  const store = SafetensorsStore.open(dir);
  assert.deepEqual(store.info('lm_head.weight').shape, [200, 64]);
  assert.equal(store.names().length, countTensors(2, false, true));
  const model = await Model.load(dir, { withoutTokenizer: true, threads: 1 });
  try {
    const r = await prefill(model, randomPrompt(9, 200, 1));
    assert.ok(r.logits.every(Number.isFinite));
  } finally {
    await model.dispose();
  }
});

test('the same seed gives identical bytes, another seed different ones; a complete folder is reused', () => {
  const a = path.join(tmp, 'a'), b = path.join(tmp, 'b'), c = path.join(tmp, 'c');
  writeRandomCheckpoint(a, TINY_QWEN, 1);
  writeRandomCheckpoint(b, TINY_QWEN, 1);
  writeRandomCheckpoint(c, TINY_QWEN, 2);
  assert.ok(modelBytes(a).equals(modelBytes(b)));
  const other = modelBytes(c);
  assert.equal(other.length, modelBytes(a).length);
  assert.ok(!other.equals(modelBytes(a)));

  const before = fs.statSync(path.join(a, 'model.safetensors')).mtimeMs;
  assert.equal(writeRandomCheckpoint(a, TINY_QWEN, 1).written, false);
  assert.equal(fs.statSync(path.join(a, 'model.safetensors')).mtimeMs, before);
  // Another seed in the same folder regenerates it.
  assert.equal(writeRandomCheckpoint(a, TINY_QWEN, 2).written, true);
  assert.ok(modelBytes(a).equals(other));
  // A folder without its marker (an interrupted write) is regenerated.
  fs.rmSync(path.join(a, MARKER_FILE));
  assert.equal(writeRandomCheckpoint(a, TINY_QWEN, 2).written, true);
});

test('unknown shape names and bad seeds are rejected', () => {
  assert.throws(() => writeRandomCheckpoint(path.join(tmp, 'x'), 'gpt-5', 0), /unknown shape "gpt-5"/);
  assert.throws(() => writeRandomCheckpoint(path.join(tmp, 'x'), TINY_QWEN, -1), /seed/);
});

/** Tensors in a checkpoint: embed + per layer (2 norms, 4 attention and 3 MLP matrices, biases) + norm (+ head). */
function countTensors(layers: number, bias: boolean, untied: boolean): number {
  return 1 + layers * (9 + (bias ? 3 : 0)) + 1 + (untied ? 1 : 0);
}
