/**
 * The four seeded-random checkpoints (one per family) against reference outputs from Hugging Face transformers
 * (fp32): logits at every position, logits with gapped position ids, and a greedy continuation.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { Model } from '../src/engine/model.js';
import { prefill, decodeStep } from '../src/engine/forward.js';
import { ropeFrequencies } from '../src/model/config.js';
import { SafetensorsStore } from '../src/model/safetensors.js';
import { FIXTURES, TINY_MODELS, maxAbsDiff } from './helpers.js';
import { argmax } from '../src/engine/sampling.js';

const TOLERANCE = 1e-3;

for (const name of TINY_MODELS) {
  test(`${name}: logits, gapped-position logits and greedy continuation match the reference`, async (t) => {
    const dir = path.join(FIXTURES, name);
    const ref = SafetensorsStore.open(path.join(dir, 'reference.safetensors'));
    const inputIds = ref.readI32('input_ids');
    const model = await Model.load(dir, { threads: 1 });
    const vocab = model.config.vocabSize;

    const full = await prefill(model, inputIds, { allLogits: true });
    const err = maxAbsDiff(full.logits, ref.readF32('logits'));
    t.diagnostic(`max |logits - reference| = ${err.toExponential(2)}`);
    assert.ok(err < TOLERANCE, `logits differ by ${err}`);

    const gapped = await prefill(model, inputIds, { allLogits: true, positionIds: ref.readI32('gapped_position_ids') });
    const gapErr = maxAbsDiff(gapped.logits, ref.readF32('gapped_logits'));
    t.diagnostic(`max |gapped logits - reference| = ${gapErr.toExponential(2)}`);
    assert.ok(gapErr < TOLERANCE, `gapped logits differ by ${gapErr}`);

    const expected = Array.from(ref.readI32('greedy_continuation'));
    const run = await prefill(model, inputIds, { decodeCapacity: expected.length });
    const { invFreq } = ropeFrequencies(model.config, inputIds.length + expected.length);
    const got: number[] = [];
    let logits = run.logits;
    for (let step = 0; step < expected.length; step++) {
      got.push(argmax(logits));
      if (step + 1 < expected.length) logits = await decodeStep(model, run.cache, got[step], run.nextPosition + step, invFreq);
    }
    assert.deepEqual(got, expected);
    assert.equal(full.logits.length, inputIds.length * vocab);
    await model.dispose();
  });
}
