/** The generate / stream API on the bundled model: streaming, stops, seeds, chat, limits. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Model } from '../src/engine/model.js';
import { generate, stream } from '../src/engine/generate.js';
import { RequestError } from '../src/errors.js';
import { STORIES } from './helpers.js';

const modelPromise = Model.load(STORIES, { threads: 1 });

test('streamed chunks add up to the result, and match generate', async () => {
  const model = await modelPromise;
  const s = stream(model, 'Once upon a time', { maxTokens: 40 });
  let text = '';
  let count = 0;
  for await (const chunk of s) { text += chunk.text; count++; }
  const r = await s.result;
  assert.equal(text, r.text);
  assert.equal(count, r.outputIds.length);
  assert.deepEqual((await generate(model, 'Once upon a time', { maxTokens: 40 })).outputIds, r.outputIds);
});

test('prefill reports progress after every layer', async () => {
  const model = await modelPromise;
  const seen: string[] = [];
  await generate(model, 'Once upon a time', { maxTokens: 1, onPrefillLayer: (l, L, rows) => seen.push(`${l}/${L}:${rows}`) });
  assert.deepEqual(seen, Array.from({ length: model.config.numLayers }, (_, l) => `${l}/${model.config.numLayers}:5`));
});

test('a stop string ends generation and is left out of the text', async () => {
  const model = await modelPromise;
  const free = await generate(model, 'Once upon a time', { maxTokens: 40 });
  const stopAt = free.text.indexOf('Lily');
  assert.ok(stopAt > 0, free.text);
  const r = await generate(model, 'Once upon a time', { maxTokens: 40, stop: ['Lily'] });
  assert.equal(r.finishReason, 'stop');
  assert.equal(r.text, free.text.slice(0, stopAt));
});

test('sampling with a seed is repeatable, and different seeds differ', async () => {
  const model = await modelPromise;
  const opts = { maxTokens: 30, temperature: 1, topP: 0.95, topK: 40, minP: 0.02, repetitionPenalty: 1.1 };
  const a = await generate(model, 'The cat', { ...opts, seed: 5 });
  const b = await generate(model, 'The cat', { ...opts, seed: 5 });
  const c = await generate(model, 'The cat', { ...opts, seed: 6 });
  assert.deepEqual(a.outputIds, b.outputIds);
  assert.notDeepEqual(a.outputIds, c.outputIds);
  assert.equal(a.seed, 5);
});

test('the chat template wraps the prompt', async () => {
  const model = await modelPromise;
  const r = await generate(model, 'Tell me a story.', { chat: true, maxTokens: 5 });
  assert.deepEqual(r.promptIds, model.tokenizer.encode('User: Tell me a story.\nAssistant:', { addSpecialTokens: true }));
});

test('generation stops at the context limit, and an abort signal stops it early', async () => {
  const model = await modelPromise;
  const r = await generate(model, { ids: [1] }, { maxTokens: 100, maxContext: 20 });
  assert.equal(r.outputIds.length, 19);
  assert.equal(r.finishReason, 'length');
  const controller = new AbortController();
  let seen = 0;
  const s = stream(model, 'Once upon a time', { maxTokens: 50, signal: controller.signal });
  for await (const _ of s) if (++seen === 3) controller.abort();
  assert.equal((await s.result).outputIds.length, 3);
  await assert.rejects(generate(model, 'x', { temperature: -1 }), (e: Error) => e instanceof RequestError && /temperature/.test(e.message));
  await assert.rejects(generate(model, 'x', { maxTokens: 1.5 }), /maxTokens/);
  await assert.rejects(generate(model, { ids: [1, 9999] }), /token id 9999 at index 1 is outside the vocabulary \[0, 512\)/);
  await assert.rejects(generate(model, { ids: [] }), /no tokens/);
});
