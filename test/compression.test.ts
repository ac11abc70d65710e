/**
 * FastKV and the baselines inside the engine: exactness at full budget, the budgets and propagation counts the
 * spec prescribes, scoring against a plain JavaScript computation of its definition, decode positions after
 * compression, KV byte accounting, and every invalid parameter.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Model } from '../src/engine/model.js';
import { decodeStep, prefill } from '../src/engine/forward.js';
import { generate } from '../src/engine/generate.js';
import { ropeFrequencies } from '../src/model/config.js';
import { resolvePolicy, METHODS, type CompressionSpec } from '../src/compress/registry.js';
import { ConfigError } from '../src/errors.js';
import { FIXTURES, HAYSTACK, STORIES, headScoresFile, randomModel, recording, storyText } from './helpers.js';
import { argmax } from '../src/engine/sampling.js';

const stories = Model.load(STORIES, { threads: 1 });
const storiesHeadScores = headScoresFile(5, 8); // stories260K: 5 layers of 8 query heads
/** Options a method cannot run without (HeadKV's score file). */
const required = (method: string): Record<string, unknown> => (method === 'headkv' ? { headScores: storiesHeadScores } : {});
const longPrompt = storyText(3300); // about 1,500 stories260K tokens

/** Greedy decode of `steps` tokens after a prefill; returns every logits row (prefill's first). */
async function greedyLogits(model: Model, ids: number[], spec: CompressionSpec, steps: number): Promise<Float32Array[]> {
  const run = await prefill(model, Int32Array.from(ids), { policy: resolvePolicy(spec, model.config), decodeCapacity: steps });
  const { invFreq } = ropeFrequencies(model.config, run.nextPosition + steps);
  const rows = [run.logits];
  for (let s = 1; s < steps; s++) rows.push(await decodeStep(model, run.cache, argmax(rows[s - 1]), run.nextPosition + s - 1, invFreq));
  return rows;
}

test('fastkv with retainRate 1 and tspRate 1 gives exactly the logits of full', async () => {
  for (const model of [await stories, await Model.load(path.join(FIXTURES, 'tiny-qwen3'), { threads: 1 })]) {
    const ids = model.tokenizer.encode(storyText(600));
    const full = await greedyLogits(model, ids, { method: 'full' }, 6);
    const fast = await greedyLogits(model, ids, { method: 'fastkv', retainRate: 1, tspRate: 1 }, 6);
    for (let s = 0; s < full.length; s++) assert.deepEqual(fast[s], full[s], `step ${s}`);
  }
});

test('pyramidkv, adakv, headkv and pyramidinfer with every budget at least the prompt give exactly the logits of full', async () => {
  const model = await stories;
  const ids = model.tokenizer.encode(storyText(600));
  const full = await greedyLogits(model, ids, { method: 'full' }, 5);
  for (const spec of [{ method: 'pyramidkv', retainRate: 1 }, { method: 'adakv', retainRate: 1 }, { method: 'headkv', retainRate: 1, headScores: storiesHeadScores },
    { method: 'pyramidinfer', decayRatio: 1 }] as CompressionSpec[]) {
    const got = await greedyLogits(model, ids, spec, 5);
    for (let s = 0; s < full.length; s++) assert.deepEqual(got[s], full[s], `${spec.method} step ${s}`);
  }
});

test('pyramidkv in the engine: layer budgets decrease and average the flat budget; adakv and headkv: KV bytes = Σ per-head entries', async () => {
  const model = await stories;
  const c = model.config;
  const ids = model.tokenizer.encode(longPrompt);
  const N = ids.length;
  const B = 100;
  const pyr = await prefill(model, Int32Array.from(ids), { policy: resolvePolicy({ method: 'pyramidkv', budget: B }, c) });
  const kept = pyr.layers.map((l) => l.kept);
  for (let l = 1; l < kept.length; l++) assert.ok(kept[l] < kept[l - 1], `layer budgets ${kept.join(', ')}`);
  // base 92, min 92 // 20 = 4, max 180, step 176 // 4 = 44: exact, so the mean is B.
  assert.deepEqual(kept, [188, 144, 100, 56, 12]);
  assert.ok(N > 2 * B);
  for (const spec of [{ method: 'adakv', budget: B }, { method: 'headkv', budget: B, headScores: storiesHeadScores }] as CompressionSpec[]) {
    const r = await generate(model, { ids }, { maxTokens: 1, compression: spec, maxContext: 4096 });
    const perHead = r.layers.map((l) => l.keptPerHead ?? new Array<number>(c.numKvHeads).fill(l.kept));
    assert.ok(perHead.some((heads) => new Set(heads).size > 1), `${spec.method}: no layer is ragged`);
    const entries = perHead.flat().reduce((a, b) => a + b, 0);
    assert.equal(r.timings.kvCacheBytesAfterPrefill, entries * c.headDim * 8, spec.method);
    if (spec.method === 'adakv') {
      // Each head at least the floor α·B' plus the window; each layer about H·B' + H·w in total.
      for (const heads of perHead) {
        for (const k of heads) assert.ok(k >= Math.floor(0.2 * (B - 8)) + 8);
        assert.ok(Math.abs(heads.reduce((a, b) => a + b, 0) - c.numKvHeads * B) <= c.numKvHeads);
      }
    }
  }
});

test('pyramidinfer: rows per layer follow the cosine schedule, positions are preserved, and decoding re-compresses every 16 entries', async () => {
  const model = await stories;
  const c = model.config;
  const ids = model.tokenizer.encode(longPrompt);
  const N = ids.length;
  const { policy, layers } = recording(resolvePolicy({ method: 'pyramidinfer', recentRatio: 0.1, decayRatio: 0.3 }, c));
  const steps = 40;
  const run = await prefill(model, Int32Array.from(ids), { policy, decodeCapacity: steps });
  const R = Math.floor(N * 0.1);
  // The schedule by hand: n_{l+1} = floor((n_l − 1 − R) · ρ_l) + 1 + R with ρ_l = 0.7·(cos(πl/L) + 1)/2 + 0.3.
  let n = N;
  for (let l = 0; l < c.numLayers; l++) {
    assert.equal(run.layers[l].rows, n, `rows at layer ${l}`);
    assert.equal(run.layers[l].kept, n, 'each layer caches the rows present');
    const rho = 0.7 * (Math.cos((Math.PI * l) / c.numLayers) + 1) / 2 + 0.3;
    const ctx = n - 1 - R;
    const k = Math.floor(ctx * rho);
    if (rho < 1 && ctx > 64 && k > 64) n = k + 1 + R;
  }
  for (const { input, decision } of layers) {
    if (decision.kind !== 'propagate') continue;
    // The sinks and the recent block always go on.
    assert.deepEqual(Array.from(decision.rows.subarray(0, 4)), [0, 1, 2, 3]);
    assert.deepEqual(Array.from(decision.rows.subarray(decision.rows.length - 1 - R)), Array.from({ length: 1 + R }, (_, i) => input.numRows - 1 - R + i));
  }
  // Positions preserved: each layer's cache holds the original positions of its rows, ascending.
  for (let l = 1; l < c.numLayers; l++) {
    const prev = new Set(run.cache.layer(l - 1).headPositions(0));
    for (const p of run.cache.layer(l).headPositions(0)) assert.ok(prev.has(p));
    assert.deepEqual(run.cache.layer(l).headPositions(0), run.cache.layer(l).headPositions(c.numKvHeads - 1));
  }
  const before = run.cache.layers.map((x) => x!.headLength(0));
  const { invFreq } = ropeFrequencies(c, N + steps);
  let logits = run.logits;
  for (let s = 0; s < steps; s++) logits = await decodeStep(model, run.cache, argmax(logits), N + s, invFreq);
  // Each 16 entries gathered before the recent block are cut to 14: 40 new tokens → two cuts of 2 entries.
  const after = run.cache.layers.map((x) => x!.headLength(0));
  for (let l = 0; l < c.numLayers; l++) assert.equal(after[l], before[l] + steps - 4, `layer ${l}: ${before[l]} → ${after[l]}`);
  for (let l = 0; l < c.numLayers; l++) {
    const pos = run.cache.layer(l).headPositions(0);
    for (let i = 1; i < pos.length; i++) assert.ok(pos[i] > pos[i - 1]);
    assert.equal(pos[pos.length - 1], N + steps - 1);
  }
});

test('snapkv with repeatKv (the original layout): G× the KV bytes, and at retainRate 1 the logits of full', async () => {
  const model = await stories;
  const c = model.config;
  const ids = model.tokenizer.encode(storyText(600));
  const full = await greedyLogits(model, ids, { method: 'full' }, 5);
  const repeated = await greedyLogits(model, ids, { method: 'snapkv', retainRate: 1, repeatKv: true }, 5);
  for (let s = 0; s < full.length; s++) {
    let err = 0;
    for (let i = 0; i < full[s].length; i++) err = Math.max(err, Math.abs(full[s][i] - repeated[s][i]));
    assert.ok(err < 1e-4, `step ${s}: ${err}`);
  }
  const perKv = await generate(model, storyText(1500), { maxTokens: 3, compression: { method: 'snapkv', retainRate: 0.2 }, maxContext: 4096 });
  const perQuery = await generate(model, storyText(1500), { maxTokens: 3, compression: { method: 'snapkv', retainRate: 0.2, repeatKv: true }, maxContext: 4096 });
  assert.equal(perQuery.timings.kvCacheBytesAfterPrefill, perKv.timings.kvCacheBytesAfterPrefill * (c.numHeads / c.numKvHeads));
  assert.equal(perQuery.outputIds.length, 3);
});

test('fastkv proportional mode: floor(N·retainRate) entries per KV head, floor(N·tspRate) rows after the TSP layer', async () => {
  const model = await stories;
  const ids = model.tokenizer.encode(longPrompt);
  const N = ids.length;
  const { policy, layers } = recording(resolvePolicy({ method: 'fastkv', retainRate: 0.1, tspRate: 0.2 }, model.config));
  const run = await prefill(model, Int32Array.from(ids), { policy });
  const t = Math.floor(model.config.numLayers / 2) - 1;
  const T = Math.floor(N * 0.2);
  const w = 8;
  assert.ok(N > 1200, `prompt has ${N} tokens`);
  run.layers.forEach((layer, l) => {
    assert.equal(layer.rows, l <= t ? N : T, `rows at layer ${l}`);
    // Spec §2.2: B_l = floor(n_l·ρ_l), which after TSP is floor(T · retain/tsp): within one of floor(N·retain).
    assert.ok(Math.abs(layer.kept - Math.floor(N * 0.1)) <= 1, `layer ${l} keeps ${layer.kept}`);
  });
  const tsp = layers[t].decision;
  assert.equal(tsp.kind, 'propagate');
  if (tsp.kind === 'propagate') {
    assert.equal(tsp.rows.length, T);
    for (let i = 1; i < T; i++) assert.ok(tsp.rows[i] > tsp.rows[i - 1], 'propagated rows ascend');
    assert.deepEqual(Array.from(tsp.rows.subarray(T - w)), Array.from({ length: w }, (_, i) => N - w + i));
  }
  // Deeper layers see the propagated rows with their original positions.
  assert.deepEqual(Array.from(layers[t + 1].input.positionIds), tsp.kind === 'propagate' ? Array.from(tsp.rows) : []);
  // Every layer's cache: ascending original positions per head, ending with the window.
  for (let l = 0; l < model.config.numLayers; l++) {
    const cache = run.cache.layer(l);
    for (let h = 0; h < cache.numHeads; h++) {
      const pos = Array.from(cache.headPositions(h));
      for (let i = 1; i < pos.length; i++) assert.ok(pos[i] > pos[i - 1]);
      assert.deepEqual(pos.slice(-w), Array.from({ length: w }, (_, i) => N - w + i));
    }
  }
});

test('with one query head per KV head and kernel 1, fastkv selects exactly what snapkv selects', async () => {
  const model = await randomModel({ num_hidden_layers: 3, num_attention_heads: 4, num_key_value_heads: 4 }, 11);
  const ids = Array.from({ length: 300 }, (_, i) => 3 + ((i * 37) % 500));
  const opts = { retainRate: 0.2, kernelSize: 1 };
  const fast = await prefill(model, Int32Array.from(ids), { policy: resolvePolicy({ method: 'fastkv', tspRate: 1, ...opts }, model.config) });
  const snap = await prefill(model, Int32Array.from(ids), { policy: resolvePolicy({ method: 'snapkv', ...opts }, model.config) });
  for (let l = 0; l < 3; l++) {
    for (let h = 0; h < model.config.numKvHeads; h++) assert.deepEqual(fast.cache.layer(l).headPositions(h), snap.cache.layer(l).headPositions(h), `layer ${l}`);
    assert.equal(fast.cache.layer(l).length, 60);
  }
});

/** SnapKV's window score written out plainly (spec §3.3 a–f), in float64. */
function windowScoresByDefinition(keys: Float32Array, queries: Float32Array, n: number, H: number, Hkv: number, d: number, w: number, kernel: number): Float64Array[] {
  const G = H / Hkv;
  const out = Array.from({ length: Hkv }, () => new Float64Array(n - w));
  for (let h = 0; h < H; h++) {
    const g = Math.floor(h / G);
    const summed = new Float64Array(n - w);
    for (let i = 0; i < w; i++) {
      const visible = n - w + i + 1;
      const logits = new Float64Array(visible);
      for (let j = 0; j < visible; j++) {
        let dot = 0;
        for (let e = 0; e < d; e++) dot += queries[(queries.length / (H * d) - w + i) * H * d + h * d + e] * keys[(g * n + j) * d + e];
        logits[j] = dot / Math.sqrt(d);
      }
      const max = Math.max(...logits);
      let z = 0;
      for (let j = 0; j < visible; j++) z += Math.exp(logits[j] - max);
      for (let j = 0; j < n - w; j++) summed[j] += Math.exp(logits[j] - max) / z;
    }
    const half = Math.floor(kernel / 2);
    for (let j = 0; j < n - w; j++) {
      let m = -Infinity;
      for (let k = Math.max(0, j - half); k <= Math.min(n - w - 1, j + half); k++) m = Math.max(m, summed[k]);
      out[g][j] += m;
    }
  }
  return out;
}

test('the ONNX window-score graph equals the definition computed in plain JavaScript', async () => {
  const model = await stories;
  const c = model.config;
  const ids = model.tokenizer.encode(storyText(400));
  const { policy, layers } = recording(resolvePolicy({ method: 'snapkv', retainRate: 0.3 }, c));
  await prefill(model, Int32Array.from(ids), { policy });
  for (const l of [0, c.numLayers - 1]) {
    const { input } = layers[l];
    const got = await input.scorer.window({ window: 8, softmax: true, scale: 1 / Math.sqrt(c.headDim), aggregate: 'sum', pooling: 'max', kernel: 7, groupReduce: 'sum' });
    const want = windowScoresByDefinition(input.keys, input.windowQueries, input.numRows, c.numHeads, c.numKvHeads, c.headDim, 8, 7);
    assert.equal(got.heads, c.numKvHeads);
    assert.equal(got.length, input.numRows - 8);
    let err = 0;
    for (let g = 0; g < c.numKvHeads; g++) for (let j = 0; j < got.length; j++) err = Math.max(err, Math.abs(got.data[g * got.length + j] - want[g][j]));
    assert.ok(err < 1e-5, `layer ${l}: max error ${err}`);
  }
});

test('H2O accumulated attention equals the causal attention summed over every query, by definition', async () => {
  const model = await stories;
  const c = model.config;
  const ids = model.tokenizer.encode(storyText(300));
  const { policy, layers } = recording(resolvePolicy({ method: 'h2o', retainRate: 0.5 }, c));
  await prefill(model, Int32Array.from(ids), { policy });
  const { input } = layers[1];
  const n = input.numRows;
  const got = await input.scorer.accumulated();
  const G = c.numHeads / c.numKvHeads;
  let err = 0;
  for (const h of [0, c.numHeads - 1]) {
    const want = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      const logits = Array.from({ length: i + 1 }, (_, j) => {
        let dot = 0;
        for (let e = 0; e < c.headDim; e++) dot += input.windowQueries[i * c.numHeads * c.headDim + h * c.headDim + e] * input.keys[(Math.floor(h / G) * n + j) * c.headDim + e];
        return dot / Math.sqrt(c.headDim);
      });
      const max = Math.max(...logits);
      const z = logits.reduce((a, x) => a + Math.exp(x - max), 0);
      logits.forEach((x, j) => { want[j] += Math.exp(x - max) / z; });
    }
    for (let j = 0; j < n; j++) err = Math.max(err, Math.abs(got.data[h * n + j] - want[j]));
  }
  assert.ok(err < 1e-4, `max error ${err}`);
});

test('after compression, decoding continues at positions N, N+1, ... (checked against recomputing the kept tokens)', async () => {
  // One layer and one KV head: the kept entries are then exactly what a prefill of the kept tokens alone,
  // at their original positions, would cache; so the compressed run must match that recomputation.
  const model = await randomModel({ num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 1 }, 11);
  const ids = Array.from({ length: 120 }, (_, i) => 3 + ((i * 53) % 500));
  for (const spec of [{ method: 'streamingllm', budget: 40 }, { method: 'snapkv', budget: 40 }] as CompressionSpec[]) {
    const steps = 4;
    const run = await prefill(model, Int32Array.from(ids), { policy: resolvePolicy(spec, model.config), decodeCapacity: steps });
    assert.equal(run.nextPosition, ids.length);
    const cache = run.cache.layer(0);
    const keptPositions = Array.from(cache.headPositions(0));
    const { invFreq } = ropeFrequencies(model.config, ids.length + steps);
    let logits = run.logits;
    const generated: number[] = [];
    for (let s = 0; s < steps; s++) {
      const next = argmax(logits);
      generated.push(next);
      logits = await decodeStep(model, run.cache, next, ids.length + s, invFreq);
      const tokens = [...keptPositions.map((p) => ids[p]), ...generated];
      const positions = [...keptPositions, ...generated.map((_, i) => ids.length + i)];
      const again = await prefill(model, Int32Array.from(tokens), { positionIds: Int32Array.from(positions) });
      let err = 0;
      for (let i = 0; i < logits.length; i++) err = Math.max(err, Math.abs(logits[i] - again.logits[i]));
      assert.ok(err < 1e-4, `${spec.method} step ${s}: ${err}`);
    }
  }
});

test('GemFilter restarts on its selected tokens with positions 0..k−1', async () => {
  const model = await stories;
  const ids = model.tokenizer.encode(storyText(1200));
  const run = await prefill(model, Int32Array.from(ids), { policy: resolvePolicy({ method: 'gemfilter', retainRate: 0.2 }, model.config) });
  const k = Math.floor(ids.length * 0.2);
  assert.ok(run.restartedOn && run.restartedOn.length === k);
  assert.equal(run.nextPosition, k);
  const last = run.cache.layer(model.config.numLayers - 1);
  assert.deepEqual(Array.from(last.headPositions(0)), Array.from({ length: k }, (_, i) => i));
});

test('reported KV bytes = Σ layers entries × KV heads × head_dim × 2 × 4', async () => {
  const model = await stories;
  const c = model.config;
  for (const method of ['full', 'fastkv', 'snapkv', 'streamingllm']) {
    const r = await generate(model, storyText(1500), { maxTokens: 1, compression: { method }, maxContext: 4096 });
    const expected = r.layers.reduce((sum, l) => sum + l.kept * c.numKvHeads * c.headDim * 2 * 4, 0);
    assert.equal(r.timings.kvCacheBytesAfterPrefill, expected, method);
    if (method !== 'full') assert.ok(expected < r.promptIds.length * c.numLayers * c.numKvHeads * c.headDim * 8 * 0.2);
  }
});

test('every method on a ~1,500-token story prompt writes story words and reports its budgets', async () => {
  const model = await stories;
  const prompt = longPrompt;
  const vocabulary = new Set(fs.readFileSync(HAYSTACK, 'utf8').toLowerCase().match(/[a-z]+/g));
  for (const method of METHODS) {
    const r = await generate(model, prompt, { maxTokens: 48, compression: { method, ...required(method) }, maxContext: 4096 });
    const words = r.text.toLowerCase().match(/[a-z]+/g) ?? [];
    const known = words.filter((wd) => vocabulary.has(wd)).length;
    assert.ok(words.length >= 10, `${method}: "${r.text}"`);
    assert.ok(known / words.length >= 0.8, `${method}: only ${known}/${words.length} known words in "${r.text}"`);
    assert.equal(r.method, method);
    assert.ok(r.layers.length >= model.config.numLayers);
    if (method !== 'full') assert.ok(r.layers.some((l) => l.kept < r.promptIds.length), `${method} compressed nothing`);
  }
});

test('invalid compression parameters get errors that name them', async () => {
  const c = (await stories).config;
  const cases: [CompressionSpec, RegExp][] = [
    [{ method: 'fastkv', budget: 8 }, /budget 8/],
    [{ method: 'fastkv', budget: 4, windowSize: 8 }, /budget 4/],
    [{ method: 'fastkv', retainRate: 0 }, /retainRate/],
    [{ method: 'fastkv', retainRate: 1.2 }, /retainRate/],
    [{ method: 'fastkv', tspRate: 0 }, /tspRate/],
    [{ method: 'fastkv', tspRate: 2 }, /tspRate/],
    [{ method: 'fastkv', tspLayer: 5 }, /tspLayer must be an integer in \[0, 4\]/],
    [{ method: 'fastkv', tspLayer: -1 }, /tspLayer/],
    [{ method: 'fastkv', kernelSize: 4 }, /kernelSize must be odd/],
    [{ method: 'fastkv', pooling: 'median' }, /pooling/],
    [{ method: 'fastkv', tspRate: 0.2, tspLength: 100 }, /only one of tspRate, tspLength/],
    [{ method: 'snapkv', compressionRatio: 1 }, /compressionRatio/],
    [{ method: 'snapkv', tspRate: 0.2 }, /unknown option "tspRate"/],
    [{ method: 'snapkv', repeatKv: 'yes' }, /repeatKv must be true or false/],
    [{ method: 'streamingllm', budget: 4 }, /budget 4/],
    [{ method: 'gemfilter', filterLayer: 9 }, /filterLayer/],
    [{ method: 'h2o', windowSize: 0 }, /windowSize/],
    [{ method: 'magic' }, /unknown compression method "magic"/],
  ];
  for (const [spec, pattern] of cases) {
    assert.throws(() => resolvePolicy(spec, c), (e: Error) => e instanceof ConfigError && pattern.test(e.message), JSON.stringify(spec));
  }
});

test('budgets larger than the prompt keep everything', async () => {
  const model = await stories;
  const ids = model.tokenizer.encode(storyText(300));
  const specs = [{ method: 'fastkv', budget: 5000, tspLength: 6000 }, { method: 'snapkv', budget: 5000 }, { method: 'streamingllm', budget: 5000 },
    { method: 'pyramidkv', budget: 5000 }, { method: 'adakv', budget: 5000 }, { method: 'headkv', budget: 5000, headScores: storiesHeadScores },
    { method: 'pyramidinfer', decayRatio: 1 }] as CompressionSpec[];
  for (const spec of specs) {
    const run = await prefill(model, Int32Array.from(ids), { policy: resolvePolicy(spec, model.config) });
    for (const l of run.layers) assert.deepEqual(l, { rows: ids.length, kept: ids.length }, spec.method);
  }
});
