/**
 * The ragged, growing KV cache: heads that keep different numbers of entries (AdaKV) hold and attend over only
 * their own; decoding after such a prefill equals attention computed per head in plain JavaScript, at positions
 * N, N+1, ... in every head; and the cache grows with the tokens generated, never with the token limit.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeStep, prefill } from '../src/engine/forward.js';
import { GROWTH_CHUNK } from '../src/engine/kv-cache.js';
import { resolvePolicy } from '../src/compress/registry.js';
import { ropeFrequencies } from '../src/model/config.js';
import { argmax } from '../src/engine/sampling.js';
import { STORIES, randomModel, recording } from './helpers.js';
import { Model } from '../src/engine/model.js';
import { loadWeights, type ModelWeights } from '../src/model/weights.js';
import type { Model as ModelType } from '../src/engine/model.js';

/** y = W·x for W [rows, cols] (row-major, as a Linear weight), in float64. */
function matVec(w: Float32Array, x: ArrayLike<number>, rows: number, cols: number): Float64Array {
  const y = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let s = 0;
    for (let c = 0; c < cols; c++) s += w[r * cols + c] * x[c];
    y[r] = s;
  }
  return y;
}

function rmsNorm(x: ArrayLike<number>, weight: Float32Array, eps: number): Float64Array {
  let ms = 0;
  for (let i = 0; i < x.length; i++) ms += x[i] * x[i];
  const scale = 1 / Math.sqrt(ms / x.length + eps);
  return Float64Array.from({ length: x.length }, (_, i) => x[i] * scale * weight[i]);
}

/** Rotate-half RoPE of one head vector at `position`. */
function rope(x: Float64Array, position: number, invFreq: Float32Array): Float64Array {
  const half = x.length / 2;
  const out = new Float64Array(x.length);
  for (let i = 0; i < half; i++) {
    const a = position * invFreq[i];
    out[i] = x[i] * Math.cos(a) - x[i + half] * Math.sin(a);
    out[i + half] = x[i + half] * Math.cos(a) + x[i] * Math.sin(a);
  }
  return out;
}

/**
 * One decode step of a one-layer Llama written out plainly: each KV head h attends over its own entries
 * `keys[h]`/`values[h]` (appended to with this token's key and value). Returns the logits.
 */
function referenceStep(model: ModelType, weights: ModelWeights, keys: Float64Array[][], values: Float64Array[][], token: number, position: number, invFreq: Float32Array): Float64Array {
  const c = model.config;
  const { hiddenSize: D, numHeads: H, numKvHeads: Hkv, headDim: d, intermediateSize: I } = c;
  const w = weights.layers[0];
  const x = Float64Array.from(weights.embed.subarray(token * D, (token + 1) * D));
  const qkv = matVec(w.qkv, rmsNorm(x, w.inputNorm, c.rmsNormEps), (H + 2 * Hkv) * d, D);
  for (let h = 0; h < Hkv; h++) {
    keys[h].push(rope(qkv.slice((H + h) * d, (H + h + 1) * d), position, invFreq));
    values[h].push(qkv.slice((H + Hkv + h) * d, (H + Hkv + h + 1) * d));
  }
  const attn = new Float64Array(H * d);
  for (let j = 0; j < H; j++) {
    const q = rope(qkv.slice(j * d, (j + 1) * d), position, invFreq);
    const h = Math.floor(j / (H / Hkv));
    const logits = keys[h].map((k) => k.reduce((s, kv, e) => s + kv * q[e], 0) / Math.sqrt(d));
    const max = Math.max(...logits);
    const p = logits.map((l) => Math.exp(l - max));
    const z = p.reduce((a, b) => a + b, 0);
    for (let e = 0; e < d; e++) attn[j * d + e] = p.reduce((s, pi, i) => s + (pi / z) * values[h][i][e], 0);
  }
  const o = matVec(w.o, attn, D, H * d);
  const x2 = x.map((v, i) => v + o[i]);
  const gu = matVec(w.gateUp, rmsNorm(x2, w.postNorm, c.rmsNormEps), 2 * I, D);
  const act = Float64Array.from({ length: I }, (_, i) => (gu[i] / (1 + Math.exp(-gu[i]))) * gu[I + i]);
  const mlp = matVec(w.down, act, D, I);
  const x3 = x2.map((v, i) => v + mlp[i]);
  return matVec(weights.lmHead, rmsNorm(x3, weights.finalNorm, c.rmsNormEps), c.vocabSize, D);
}

test('ragged cache: decoding after an adakv prefill equals per-head attention in plain code, at positions N, N+1, ...', async () => {
  const model = await randomModel({ num_hidden_layers: 1, num_attention_heads: 4, num_key_value_heads: 2 }, 5);
  const c = model.config;
  const ids = Array.from({ length: 120 }, (_, i) => 3 + ((i * 53) % 500));
  const steps = 4;
  const { policy, layers } = recording(resolvePolicy({ method: 'adakv', budget: 40, floorAlpha: 0.2 }, c));
  const run = await prefill(model, Int32Array.from(ids), { policy, decodeCapacity: steps });
  const cache = run.cache.layer(0);
  assert.ok(cache.ragged, `heads keep ${cache.lengths.join(', ')}: not ragged, the test would prove nothing`);
  assert.deepEqual(run.layers[0].keptPerHead, cache.lengths);
  // Memory follows what each head keeps.
  assert.equal(cache.bytes, cache.lengths.reduce((a, b) => a + b, 0) * c.headDim * 8);

  // The reference cache: each head's kept rows of the prefill keys and values, as float64 vectors.
  const decision = layers[0].decision;
  assert.equal(decision.kind, 'keep');
  const input = layers[0].input;
  const d = c.headDim;
  const keep = decision.kind === 'keep' ? decision.keep! : [];
  const refKeys = keep.map((rows, h) => Array.from(rows, (r) => Float64Array.from(input.keys.subarray((h * input.numRows + r) * d, (h * input.numRows + r + 1) * d))));
  const refValues = keep.map((rows, h) => Array.from(rows, (r) => Float64Array.from(input.values.subarray((h * input.numRows + r) * d, (h * input.numRows + r + 1) * d))));

  const { invFreq } = ropeFrequencies(c, ids.length + steps);
  const weights = loadWeights(model.dir, c);          // float32, for the plain-code reference
  let logits = run.logits;
  for (let s = 0; s < steps; s++) {
    const token = argmax(logits);
    const position = ids.length + s;
    logits = await decodeStep(model, run.cache, token, position, invFreq);
    const want = referenceStep(model, weights, refKeys, refValues, token, position, invFreq);
    let err = 0;
    for (let i = 0; i < want.length; i++) err = Math.max(err, Math.abs(logits[i] - want[i]));
    assert.ok(err < 1e-4, `step ${s}: max |engine − reference| = ${err}`);
    // Every head continued at the same next position.
    for (let h = 0; h < c.numKvHeads; h++) {
      const pos = cache.headPositions(h);
      assert.equal(pos[pos.length - 1], position, `head ${h} step ${s}`);
      assert.equal(cache.headLength(h), keep[h].length + s + 1);
    }
  }
});

test('the cache grows with the tokens generated: a huge token limit allocates nothing up front', async () => {
  const model = await Model.load(STORIES, { threads: 1 });
  const c = model.config;
  const ids = Int32Array.from({ length: 50 }, (_, i) => 3 + ((i * 37) % 500));
  // A limit of 100 million decode steps: a cache sized for it would be terabytes.
  const run = await prefill(model, ids, { decodeCapacity: 1e8 });
  const perEntry = c.numLayers * c.numKvHeads * c.headDim * 8;
  assert.equal(run.cache.allocatedBytes, ids.length * perEntry, 'prefill allocates exactly the entries it keeps');
  const { invFreq } = ropeFrequencies(c, ids.length + 1e8);
  let logits = run.logits;
  const steps = 5;
  for (let s = 0; s < steps; s++) logits = await decodeStep(model, run.cache, argmax(logits), ids.length + s, invFreq);
  assert.equal(run.cache.bytes, (ids.length + steps) * perEntry);
  // At most one growth chunk (or a quarter) of room per head beyond what is held.
  assert.ok(run.cache.allocatedBytes <= (ids.length + steps + Math.max(GROWTH_CHUNK, ids.length)) * perEntry,
    `allocated ${run.cache.allocatedBytes} bytes for ${run.cache.bytes} held`);
  await model.dispose();
});

test('clone: an independent copy that decodes to the same logits and leaves the original untouched', async () => {
  const model = await Model.load(STORIES, { threads: 1 });
  const ids = Int32Array.from({ length: 60 }, (_, i) => 3 + ((i * 41) % 500));
  const run = await prefill(model, ids, { policy: resolvePolicy({ method: 'adakv', budget: 20 }, model.config) });
  const copy = run.cache.clone();
  const { invFreq } = ropeFrequencies(model.config, 100);
  const token = argmax(run.logits);
  const a = await decodeStep(model, run.cache, token, ids.length, invFreq);
  const before = copy.bytes;
  const b = await decodeStep(model, copy, token, ids.length, invFreq);
  assert.deepEqual(a, b);
  assert.equal(copy.bytes, before + model.config.numLayers * model.config.numKvHeads * model.config.headDim * 8);
  assert.equal(copy.bytes, run.cache.bytes);
  await model.dispose();
});
