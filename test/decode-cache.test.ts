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
