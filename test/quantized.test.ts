/**
 * 8-bit and 4-bit weights against float32 on the four tiny families and stories260K: logits at every position of
 * the reference prompts stay within bounds measured first (relative RMS error ‖q − fp32‖ / ‖fp32‖ and top-1
 * agreement), and stories260K's greedy run at q8 equals fp32's.
 *
 * Measured (this machine, ORT 1.30): relative RMS error q8 0.019-0.027 on the tiny random-weight models and
 * 0.009 on stories260K; q4 0.34-0.46 and 0.15 (random weights have no structure for 4 bits to keep, and their
 * logits are nearly flat, so top-1 flips easily). A broken layout (e.g. 4-bit nibbles swapped) gives 1.26-1.41
 * and top-1 agreement near 0. The bounds sit between the two.
 *
 * int8 (per-output-channel int8 weights, activations quantized per tensor by DynamicQuantizeMatMul), measured:
 * relative RMS error 0.048-0.054, top-1 agreement 85-94 % on the tiny models; 0.025 and 100 % on stories260K.
 * Its layout is checked directly in src/engine/quantize.test.ts (a transposed layout or misplaced scales give a
 * relative error > 0.1 per matmul, compounding over the layers).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Model } from '../src/engine/model.js';
import { prefill } from '../src/engine/forward.js';
import { generate } from '../src/engine/generate.js';
import { SafetensorsStore } from '../src/model/safetensors.js';
import { argmax } from '../src/engine/sampling.js';
import { FIXTURES, STORIES, TINY_MODELS, storyText } from './helpers.js';
import { resolvePolicy } from '../src/compress/registry.js';
import type { WeightDtype } from '../src/graph/linear.js';

interface Bound { rms: number; top1: number }
type Quantized = 'q8' | 'q4' | 'int8';
const TINY_BOUNDS: Record<Quantized, Bound> = { q8: { rms: 0.06, top1: 0.9 }, q4: { rms: 0.7, top1: 0.15 }, int8: { rms: 0.1, top1: 0.75 } };
const STORIES_BOUNDS: Record<Quantized, Bound> = { q8: { rms: 0.03, top1: 0.95 }, q4: { rms: 0.3, top1: 0.7 }, int8: { rms: 0.05, top1: 0.95 } };

async function allLogits(dir: string, ids: Int32Array, dtype: WeightDtype): Promise<{ logits: Float32Array; vocab: number }> {
  const model = await Model.load(dir, { threads: 1, dtype });
  try {
    return { logits: (await prefill(model, ids, { allLogits: true })).logits, vocab: model.config.vocabSize };
  } finally {
    await model.dispose();
  }
}

function compare(fp32: Float32Array, q: Float32Array, vocab: number): Bound {
  let se = 0, sf = 0;
  for (let i = 0; i < fp32.length; i++) {
    se += (fp32[i] - q[i]) ** 2;
    sf += fp32[i] ** 2;
  }
  const rows = fp32.length / vocab;
  let agree = 0;
  for (let r = 0; r < rows; r++) {
    if (argmax(fp32.subarray(r * vocab, (r + 1) * vocab)) === argmax(q.subarray(r * vocab, (r + 1) * vocab))) agree++;
  }
  return { rms: Math.sqrt(se / sf), top1: agree / rows };
}

const storiesReference = JSON.parse(fs.readFileSync(path.join(STORIES, 'reference_greedy.json'), 'utf8'));
const cases: [string, string, () => Int32Array, Record<Quantized, Bound>][] = [
  ...TINY_MODELS.map((name): [string, string, () => Int32Array, Record<Quantized, Bound>] => [name, path.join(FIXTURES, name),
    () => SafetensorsStore.open(path.join(FIXTURES, name, 'reference.safetensors')).readI32('input_ids'), TINY_BOUNDS]),
  ['stories260K', STORIES, () => Int32Array.from(storiesReference.greedy_ids.slice(0, 64)), STORIES_BOUNDS],
];

for (const [name, dir, ids, bounds] of cases) {
  test(`${name}: q8, q4 and int8 logits stay within the measured bounds of fp32`, async (t) => {
    const prompt = ids();
    const fp32 = await allLogits(dir, prompt, 'fp32');
    for (const dtype of ['q8', 'q4', 'int8'] as const) {
      const q = await allLogits(dir, prompt, dtype);
      const got = compare(fp32.logits, q.logits, fp32.vocab);
      t.diagnostic(`${dtype}: relative RMS error ${got.rms.toFixed(4)}, top-1 agreement ${(100 * got.top1).toFixed(1)}%`);
      assert.ok(got.rms < bounds[dtype].rms, `${dtype}: relative RMS error ${got.rms} >= ${bounds[dtype].rms}`);
      assert.ok(got.top1 >= bounds[dtype].top1, `${dtype}: top-1 agreement ${got.top1} < ${bounds[dtype].top1}`);
    }
  });
}

test('stories260K: the greedy run at q8 equals fp32 for its first 32 tokens', async () => {
  const runs: number[][] = [];
  for (const dtype of ['fp32', 'q8'] as const) {
    const model = await Model.load(STORIES, { threads: 1, dtype });
    runs.push((await generate(model, storiesReference.prompt, { maxTokens: 32, ignoreEos: true })).outputIds);
    await model.dispose();
  }
  assert.equal(runs[0].length, 32);
  assert.deepEqual(runs[1], runs[0]);
});

/** Every KV head's kept positions after a FastKV prefill (retain rate 0.2) of a ~1,350-token story. */
async function fastkvSelection(dtype: WeightDtype): Promise<number[][]> {
  const model = await Model.load(STORIES, { threads: 1, dtype });
  try {
    const ids = Int32Array.from(model.tokenizer.encode(storyText(3000)));
    const run = await prefill(model, ids, { policy: resolvePolicy({ method: 'fastkv', retainRate: 0.2 }, model.config) });
    const heads: number[][] = [];
    for (let l = 0; l < model.config.numLayers; l++) {
      const cache = run.cache.layer(l);
      for (let h = 0; h < cache.numHeads; h++) heads.push(Array.from(cache.headPositions(h)));
    }
    return heads;
  } finally {
    await model.dispose();
  }
}

// FastKV's selection is not bit-identical across weight formats: quantization noise reorders near-tied scores.
// Measured share of fp32's kept cache positions also kept (stories260K, 1,347 tokens, 20 KV heads): q8 98.1 %,
// int8 95.3 % (retrieval-3M: 99.6 % and 97.0 %); every head keeps the same number of entries. A wrong weight
// layout scores noise and keeps about 20 % of them (the retain rate).
test('stories260K: FastKV at q8 and int8 keeps the same entry counts and nearly the same positions as at fp32', async (t) => {
  const fp32 = await fastkvSelection('fp32');
  for (const [dtype, bound] of [['q8', 0.95], ['int8', 0.9]] as const) {
    const q = await fastkvSelection(dtype);
    assert.equal(q.length, fp32.length);
    let shared = 0, total = 0;
    fp32.forEach((positions, i) => {
      assert.equal(q[i].length, positions.length, `${dtype}: head ${i} keeps ${q[i].length} entries, fp32 ${positions.length}`);
      const kept = new Set(q[i]);
      shared += positions.filter((p) => kept.has(p)).length;
      total += positions.length;
    });
    t.diagnostic(`${dtype}: ${(100 * shared / total).toFixed(2)} % of fp32's kept positions kept`);
    assert.ok(shared / total >= bound, `${dtype}: only ${shared} of fp32's ${total} kept positions kept`);
  }
});

test('Model.load refuses an unknown dtype, a thread count beyond the cores and a non-boolean spinning', async () => {
  await assert.rejects(Model.load(STORIES, { dtype: 'q5' as WeightDtype }), /dtype must be one of fp32, q8, q4, int8, got "q5"/);
  await assert.rejects(Model.load(STORIES, { threads: 100_000 }), /threads must be an integer from 1 to \d+/);
  await assert.rejects(Model.load(STORIES, { threads: 1.5 }), /threads must be an integer/);
  await assert.rejects(Model.load(STORIES, { spinning: 'yes' as unknown as boolean }), /spinning must be true or false, got "yes"/);
});
