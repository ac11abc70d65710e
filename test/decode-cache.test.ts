/**
 * Decoding with the KV cache must give the logits of recomputing the whole sequence from scratch: the cache
 * holds each entry with RoPE of its original position, and the new token attends to all of them.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { Model } from '../src/engine/model.js';
import { prefill, decodeStep } from '../src/engine/forward.js';
import { ropeFrequencies } from '../src/model/config.js';
import { FIXTURES, STORIES, argmax, maxAbsDiff } from './helpers.js';

for (const dir of [STORIES, path.join(FIXTURES, 'tiny-qwen3')]) {
  test(`${path.basename(dir)}: cached decode logits equal a full recomputation at every step`, async (t) => {
    const model = await Model.load(dir, { threads: 1 });
    const vocab = model.config.vocabSize;
    const ids = [1, 403, 407, 261, 378, 432, 383, 286, 300, 301];
    const steps = 12;
    const run = await prefill(model, Int32Array.from(ids), { decodeCapacity: steps });
    const { invFreq } = ropeFrequencies(model.config, ids.length + steps);
    let logits = run.logits;
    let worst = 0;
    for (let s = 0; s < steps; s++) {
      const next = argmax(logits);
      logits = await decodeStep(model, run.cache, next, ids.length, invFreq);
      ids.push(next);
      const fresh = await prefill(model, Int32Array.from(ids), { allLogits: true });
      const lastRow = fresh.logits.subarray((ids.length - 1) * vocab);
      worst = Math.max(worst, maxAbsDiff(logits, lastRow));
    }
    t.diagnostic(`max |cached - recomputed| over ${steps} steps = ${worst.toExponential(2)}`);
    assert.ok(worst < 1e-4, `cached decode differs from recomputation by ${worst}`);
    assert.equal(run.cache.layer(0).length, ids.length);
    await model.dispose();
  });
}

test('sliding-window attention (Mistral): cached decode equals recomputation, and the window matters', async () => {
  const { writeRandomCheckpoint } = await import('../src/bench/random-checkpoint.js');
  const fs = await import('node:fs');
  const os = await import('node:os');
  const mk = (slidingWindow: number | null) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fastkv-swa-'));
    writeRandomCheckpoint(dir, {
      architectures: ['MistralForCausalLM'], model_type: 'mistral', hidden_size: 64, intermediate_size: 96,
      num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 16, vocab_size: 512,
      max_position_embeddings: 1024, rms_norm_eps: 1e-5, rope_theta: 10000, tie_word_embeddings: false,
      sliding_window: slidingWindow, bos_token_id: 1, eos_token_id: 2,
    }, 3);
    return Model.load(dir, { threads: 1, withoutTokenizer: true });
  };
  const windowed = await mk(6);
  const ids = Array.from({ length: 20 }, (_, i) => 3 + ((i * 29) % 500));
  const steps = 8;
  const run = await prefill(windowed, Int32Array.from(ids), { decodeCapacity: steps });
  const { invFreq } = ropeFrequencies(windowed.config, ids.length + steps);
  let logits = run.logits;
  let worst = 0;
  for (let s = 0; s < steps; s++) {
    const next = argmax(logits);
    logits = await decodeStep(windowed, run.cache, next, ids.length, invFreq);
    ids.push(next);
    const fresh = await prefill(windowed, Int32Array.from(ids), { allLogits: true });
    worst = Math.max(worst, maxAbsDiff(logits, fresh.logits.subarray((ids.length - 1) * windowed.config.vocabSize)));
  }
  assert.ok(worst < 1e-4, `windowed decode differs from recomputation by ${worst}`);
  // The same weights without a window give other logits: the window is really applied.
  const unwindowed = await mk(null);
  const plain = await prefill(unwindowed, Int32Array.from(ids), {});
  assert.ok(maxAbsDiff(plain.logits, logits) > 1e-3);
});
