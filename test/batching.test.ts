/**
 * Batched decoding: one step for several sequences (each with its own compressed cache) equals each sequence's
 * step alone, and concurrent generate() / stream() calls, batched by the model's scheduler, give the tokens of
 * the same calls made one after another: different prompts, lengths, methods and token limits, sequences that
 * join mid-way or are aborted, seeded sampling.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { Model } from '../src/engine/model.js';
import { generate, stream, type GenerateOptions, type PromptInput } from '../src/engine/generate.js';
import { decodeBatchStep, decodeStep, prefill } from '../src/engine/forward.js';
import { resolvePolicy, type CompressionSpec } from '../src/compress/registry.js';
import { ropeFrequencies } from '../src/model/config.js';
import { ConfigError } from '../src/errors.js';
import type { BatchSeat } from '../src/engine/batcher.js';
import { FIXTURES, STORIES, TINY_MODELS, maxAbsDiff, storyText } from './helpers.js';

/** A prompt of `n` token ids in [3, vocab), different for each `seed`. */
function ids(n: number, seed: number, vocab: number): number[] {
  return Array.from({ length: n }, (_, i) => 3 + ((i * 7919 + seed * 104729) % (vocab - 3)));
}

const METHODS: CompressionSpec[] = [
  { method: 'full' },
  { method: 'fastkv', retainRate: 0.3, tspRate: 0.5, windowSize: 4 },
  { method: 'snapkv', retainRate: 0.3, windowSize: 4 },
  { method: 'snapkv', retainRate: 0.3, windowSize: 4, repeatKv: true },
  { method: 'adakv', retainRate: 0.3, windowSize: 4 },
  { method: 'streamingllm', retainRate: 0.3 },
  { method: 'pyramidinfer' },
];

for (const name of TINY_MODELS) {
  test(`${name}: a batched step equals each sequence's step alone (ragged, repeated and sliding caches)`, async () => {
    const model = await Model.load(path.join(FIXTURES, name), { threads: 1 });
    try {
      const c = model.config;
      // Two independent copies of each sequence: one stepped alone, one in the batch.
      const alone = [];
      const batched = [];
      for (let s = 0; s < METHODS.length; s++) {
        const prompt = Int32Array.from(ids(40 + 9 * s, s, c.vocabSize));
        const policy = resolvePolicy(METHODS[s], c);
        const a = await prefill(model, prompt, { policy, decodeCapacity: 8 });
        const b = await prefill(model, prompt, { policy, decodeCapacity: 8 });
        const { invFreq } = ropeFrequencies(c, a.nextPosition + 8);
        alone.push({ cache: a.cache, position: a.nextPosition, invFreq });
        batched.push({ cache: b.cache, position: b.nextPosition, invFreq });
      }
      for (let step = 0; step < 5; step++) {
        const tokens = alone.map((_, s) => 3 + ((step * 31 + s * 17) % (c.vocabSize - 3)));
        const expected: Float32Array[] = [];
        for (let s = 0; s < alone.length; s++) {
          expected.push(await decodeStep(model, alone[s].cache, tokens[s], alone[s].position + step, alone[s].invFreq));
        }
        const got = await decodeBatchStep(model, batched.map((m, s) => ({ cache: m.cache, token: tokens[s], positionId: m.position + step, invFreq: m.invFreq })));
        got.forEach((logits, s) => {
          assert.ok(logits instanceof Float32Array, `sequence ${s}: ${String(logits)}`);
          assert.ok(maxAbsDiff(logits, expected[s]) < 1e-4, `step ${step}, ${METHODS[s].method}: ${maxAbsDiff(logits, expected[s])}`);
        });
        for (let s = 0; s < alone.length; s++) assert.deepEqual(batched[s].cache.lengths, alone[s].cache.lengths, `cache lengths of ${METHODS[s].method}`);
      }
    } finally {
      await model.dispose();
    }
  });
}

interface Call { prompt: PromptInput; options: GenerateOptions }

async function oneAfterAnother(model: Model, calls: readonly Call[]) {
  const out = [];
  for (const call of calls) out.push(await generate(model, call.prompt, call.options));
  return out;
}

/**
 * Runs `calls` one after another, then all at once, and asserts each call's tokens are the same both ways;
 * returns both results for further checks.
 */
async function assertConcurrentAsAlone(model: Model, calls: readonly Call[]) {
  const expected = await oneAfterAnother(model, calls);
  const got = await Promise.all(calls.map((c) => generate(model, c.prompt, c.options)));
  got.forEach((r, i) => assert.deepEqual(r.outputIds, expected[i].outputIds, `call ${i} (${r.method})`));
  return { expected, got };
}

const storiesPromise = Model.load(STORIES, { threads: 1 });

/** Calls with different prompts, lengths, methods and token limits on stories260K. */
function storyCalls(count: number): Call[] {
  const methods: (CompressionSpec | undefined)[] = [undefined, { method: 'fastkv', retainRate: 0.2, windowSize: 8 },
    { method: 'snapkv', retainRate: 0.3, windowSize: 8 }, { method: 'streamingllm', retainRate: 0.25 }];
  return Array.from({ length: count }, (_, i) => ({
    prompt: storyText(200 + 150 * i).slice(37 * i),
    options: { maxTokens: 6 + 5 * i, compression: methods[i % methods.length], temperature: 0, ignoreEos: i % 2 === 0 },
  }));
}

for (const count of [1, 2, 3, 5, 8]) {
  test(`stories260K: ${count} concurrent generate() calls give the tokens of the same calls one after another`, async () => {
    const model = await storiesPromise;
    const before = { ...model.batcher.stats };
    const { expected, got } = await assertConcurrentAsAlone(model, storyCalls(count));
    got.forEach((r, i) => {
      assert.equal(r.finishReason, expected[i].finishReason);
      assert.equal(r.text, expected[i].text);
    });
    if (count > 1) assert.ok(model.batcher.stats.largestBatch > 1 && model.batcher.stats.rows - before.rows > model.batcher.stats.steps - before.steps, 'steps were shared');
  });
}

test('a tiny family: concurrent calls with several methods equal the calls one after another', async () => {
  const model = await Model.load(path.join(FIXTURES, 'tiny-qwen3'), { threads: 1 });
  try {
    const v = model.config.vocabSize;
    const calls: Call[] = METHODS.map((compression, i) => ({
      prompt: { ids: ids(30 + 11 * i, i + 3, v) }, options: { maxTokens: 4 + 3 * i, compression, temperature: 0, ignoreEos: true },
    }));
    await assertConcurrentAsAlone(model, calls);
    assert.ok(model.batcher.stats.largestBatch >= 4, `largest batch ${model.batcher.stats.largestBatch}`);
  } finally {
    await model.dispose();
  }
});

test('int8: concurrent calls take turns at each step (one activation scale per matmul would mix them) and equal the calls alone', async () => {
  const model = await Model.load(STORIES, { threads: 1, dtype: 'int8' });
  try {
    const calls = storyCalls(4);
    await assertConcurrentAsAlone(model, calls);
    assert.equal(model.batcher.stats.largestBatch, 1);
    assert.equal(model.batcher.stats.steps, model.batcher.stats.rows);
  } finally {
    await model.dispose();
  }
});

/** Reads `n` chunks of a stream, leaving the rest to be read. */
async function readChunks(iterator: AsyncIterator<unknown>, n: number): Promise<void> {
  for (let i = 0; i < n; i++) assert.equal((await iterator.next()).done, false);
}

test('sequences join mid-way and one is aborted mid-way; the others are undisturbed', async () => {
  const model = await storiesPromise;
  const calls = storyCalls(4).map((c) => ({ ...c, options: { ...c.options, maxTokens: 24, ignoreEos: true } }));
  const expected = await oneAfterAnother(model, calls);

  const first = stream(model, calls[0].prompt, calls[0].options);
  const firstChunks = first[Symbol.asyncIterator]();
  await readChunks(firstChunks, 5);                        // the first runs alone for a while
  const abort = new AbortController();
  const second = generate(model, calls[1].prompt, { ...calls[1].options, signal: abort.signal });
  const third = stream(model, calls[2].prompt, calls[2].options);
  const thirdChunks = third[Symbol.asyncIterator]();
  await readChunks(thirdChunks, 3);
  const fourth = generate(model, calls[3].prompt, calls[3].options);  // joins later still
  await readChunks(firstChunks, 4);
  abort.abort();                                            // the second stops between two tokens
  const results = await Promise.all([first.result, second, third.result, fourth]);

  assert.deepEqual(results[0].outputIds, expected[0].outputIds);
  assert.deepEqual(results[2].outputIds, expected[2].outputIds);
  assert.deepEqual(results[3].outputIds, expected[3].outputIds);
  assert.equal(results[1].finishReason, 'abort');
  assert.ok(results[1].outputIds.length < expected[1].outputIds.length);
  assert.deepEqual(results[1].outputIds, expected[1].outputIds.slice(0, results[1].outputIds.length), 'the aborted one, up to its abort');
  assert.equal(model.batcher.size, 0, 'every seat was given back');
});

test('seeded sampling gives the same tokens batched and alone', async () => {
  const model = await storiesPromise;
  const calls: Call[] = [0, 1, 2, 3].map((i) => ({
    prompt: storyText(300).slice(50 * i),
    options: { maxTokens: 20, temperature: 0.9, topP: 0.95, topK: 40, seed: 100 + i, ignoreEos: true },
  }));
  await assertConcurrentAsAlone(model, calls);
});

test('maxBatch bounds the sequences admitted; the rest wait, and one aborted while waiting ends at once', async () => {
  const model = await Model.load(STORIES, { threads: 1, batching: { maxBatch: 2 } });
  try {
    const calls = storyCalls(4).map((c) => ({ ...c, options: { ...c.options, maxTokens: 10, ignoreEos: true } }));
    const expected = await oneAfterAnother(model, calls);
    const abort = new AbortController();
    const sizes: number[] = [];
    const running = calls.map((c, i) => generate(model, c.prompt, {
      ...c.options, ...(i === 3 ? { signal: abort.signal } : {}), onPrefillLayer: () => sizes.push(model.batcher.size),
    }));
    await new Promise((resolve) => setImmediate(resolve));
    abort.abort();
    const results = await Promise.all(running);
    for (let i = 0; i < 3; i++) assert.deepEqual(results[i].outputIds, expected[i].outputIds, `call ${i}`);
    assert.equal(results[3].finishReason, 'abort');
    assert.deepEqual(results[3].outputIds, []);
    assert.equal(model.batcher.stats.largestBatch, 2);
    assert.ok(Math.max(...sizes) <= 2, `at most two admitted: ${sizes}`);
    assert.equal(model.batcher.size, 0);
  } finally {
    await model.dispose();
  }
});

test('maxKvBytes stops admission while the admitted caches hold that much', async () => {
  const model = await Model.load(STORIES, { threads: 1, batching: { maxKvBytes: 1 } });
  try {
    await assertConcurrentAsAlone(model, storyCalls(3));
    assert.equal(model.batcher.stats.largestBatch, 1, 'one cache of any size fills the budget: sequences ran one at a time');
  } finally {
    await model.dispose();
  }
});

test('batching off: concurrent calls decode alone, with the same tokens', async () => {
  const model = await Model.load(STORIES, { threads: 1, batching: false });
  try {
    await assertConcurrentAsAlone(model, storyCalls(3));
    assert.equal(model.batcher.stats.steps, 0, 'no batched steps');
    assert.equal(model.batcher.limits, null);
  } finally {
    await model.dispose();
  }
});

test('bad batching options are refused, naming the option', async () => {
  const model = await storiesPromise;
  for (const [options, pattern] of [
    [{ maxBatch: 0 }, /maxBatch must be an integer from 1 to 64, got 0/],
    [{ maxBatch: 1.5 }, /maxBatch/],
    [{ maxBatch: 65 }, /maxBatch/],
    [{ maxKvBytes: -1 }, /maxKvBytes must be a positive number/],
    [{ maxKvBytes: Number.NaN }, /maxKvBytes/],
    [null, /batching must be an object/],
  ] as const) {
    assert.throws(() => model.setBatching(options as never), (e: unknown) => e instanceof ConfigError && pattern.test((e as Error).message));
    await assert.rejects(Model.load(STORIES, { threads: 1, batching: options as never }), pattern);
  }
});

test('non-finite logits in one sequence fail that sequence alone; the others in its step go on', async () => {
  const model = await Model.load(path.join(FIXTURES, 'tiny-llama3'), { threads: 1 });
  try {
    const c = model.config;
    const seqs = [];
    for (let s = 0; s < 3; s++) {
      const p = await prefill(model, Int32Array.from(ids(20 + 5 * s, s, c.vocabSize)), { decodeCapacity: 4 });
      seqs.push({ p, invFreq: ropeFrequencies(c, p.nextPosition + 4).invFreq, alone: p.cache.clone() });
    }
    seqs[1].p.cache.layer(0).live(0).keys.fill(Number.NaN);       // poisons the middle sequence's attention
    const seats: BatchSeat[] = [];
    for (const s of seqs) {
      const seat = await model.batcher.admit();
      seat.join(s.p.cache, s.invFreq);
      seats.push(seat);
    }
    try {
      const results = await Promise.allSettled(seqs.map((s, i) => seats[i].step(7, s.p.nextPosition)));
      assert.equal(results[1].status, 'rejected');
      assert.match(String((results[1] as PromiseRejectedResult).reason), /NaN logit/);
      for (const i of [0, 2]) {
        assert.equal(results[i].status, 'fulfilled');
        const expected = await decodeStep(model, seqs[i].alone, 7, seqs[i].p.nextPosition, seqs[i].invFreq);
        assert.ok(maxAbsDiff((results[i] as PromiseFulfilledResult<Float32Array>).value, expected) < 1e-4);
      }
      assert.equal(model.batcher.stats.largestBatch, 3, 'the three were one step');
    } finally {
      for (const seat of seats) seat.leave();
    }
  } finally {
    await model.dispose();
  }
});
