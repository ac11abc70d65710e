/**
 * Decoding with the KV cache must give the logits of recomputing the whole sequence from scratch: the cache
 * holds each entry with RoPE of its original position, and the new token attends to all of them.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { Model } from '../src/engine/model.js';
import { PREFILL_ATTENTION_BLOCK, decodeStep, prefill, rowsPerRun } from '../src/engine/forward.js';
import { ropeFrequencies } from '../src/model/config.js';
import { FIXTURES, STORIES, maxAbsDiff, randomModel } from './helpers.js';
import { argmax } from '../src/engine/sampling.js';

/**
 * Greedy-decodes `steps` tokens after `ids` with the cache and, at each step, recomputes the whole sequence
 * from scratch; returns the largest difference between the two last-row logits, and the final ones.
 */
async function cachedVsRecomputed(model: Model, prompt: readonly number[], steps: number) {
  const ids = [...prompt];
  const run = await prefill(model, Int32Array.from(ids), { decodeCapacity: steps });
  const { invFreq } = ropeFrequencies(model.config, ids.length + steps);
  let logits = run.logits;
  let worst = 0;
  for (let s = 0; s < steps; s++) {
    const next = argmax(logits);
    logits = await decodeStep(model, run.cache, next, ids.length, invFreq);
    ids.push(next);
    const fresh = await prefill(model, Int32Array.from(ids), { allLogits: true });
    worst = Math.max(worst, maxAbsDiff(logits, fresh.logits.subarray((ids.length - 1) * model.config.vocabSize)));
  }
  return { worst, logits, ids, cache: run.cache };
}

for (const dir of [STORIES, path.join(FIXTURES, 'tiny-qwen3')]) {
  test(`${path.basename(dir)}: cached decode logits equal a full recomputation at every step`, async (t) => {
    const model = await Model.load(dir, { threads: 1 });
    const steps = 12;
    const { worst, ids, cache } = await cachedVsRecomputed(model, [1, 403, 407, 261, 378, 432, 383, 286, 300, 301], steps);
    t.diagnostic(`max |cached - recomputed| over ${steps} steps = ${worst.toExponential(2)}`);
    assert.ok(worst < 1e-4, `cached decode differs from recomputation by ${worst}`);
    assert.equal(cache.layer(0).length, ids.length);
    await model.dispose();
  });
}

test('sliding-window attention (Mistral): cached decode equals recomputation, and the window matters', async () => {
  const mistral = (slidingWindow: number | null) => randomModel({
    architectures: ['MistralForCausalLM'], model_type: 'mistral', max_position_embeddings: 1024,
    tie_word_embeddings: false, sliding_window: slidingWindow,
  }, 3);
  const windowed = await mistral(6);
  const { worst, logits, ids } = await cachedVsRecomputed(windowed, Array.from({ length: 20 }, (_, i) => 3 + ((i * 29) % 500)), 8);
  assert.ok(worst < 1e-4, `windowed decode differs from recomputation by ${worst}`);
  // The same weights without a window give other logits: the window is really applied.
  const unwindowed = await mistral(null);
  const plain = await prefill(unwindowed, Int32Array.from(ids), {});
  assert.ok(maxAbsDiff(plain.logits, logits) > 1e-3);
});

/**
 * A prompt longer than one block of the prefill attention and one chunk of the projections: prefill runs it in
 * pieces (each attention block over the keys and values of the blocks before it), decoding one token at a time
 * sees each token against everything before it. Every row's logits must agree, at every block boundary too.
 */
for (const slidingWindow of [null, 300]) {
  test(`prefill in blocks equals decoding token by token over ${2 * PREFILL_ATTENTION_BLOCK + 300} tokens (sliding window ${slidingWindow})`, async () => {
    const model = await randomModel({
      architectures: ['MistralForCausalLM'], model_type: 'mistral', max_position_embeddings: 8192, sliding_window: slidingWindow,
    }, 11);
    const c = model.config;
    const n = 2 * PREFILL_ATTENTION_BLOCK + 300;
    assert.ok(n > rowsPerRun((c.numHeads + 2 * c.numKvHeads) * c.headDim), 'the projections run in more than one chunk');
    const ids = Int32Array.from({ length: n }, (_, i) => 3 + ((i * 7919) % 500));
    const whole = await prefill(model, ids, { allLogits: true });
    assert.equal((await model.prefillAttention()).stats.runs, 3 * c.numLayers, 'three attention blocks per layer');

    const { invFreq } = ropeFrequencies(c, n);
    const first = await prefill(model, ids.subarray(0, 1), {});
    const V = c.vocabSize;
    let worst = maxAbsDiff(first.logits, whole.logits.subarray(0, V));
    for (let i = 1; i < n; i++) {
      const logits = await decodeStep(model, first.cache, ids[i], i, invFreq);
      worst = Math.max(worst, maxAbsDiff(logits, whole.logits.subarray(i * V, (i + 1) * V)));
    }
    assert.ok(worst < 1e-4, `prefill rows differ from token-by-token decoding by ${worst}`);
    await model.dispose();
  });
}
