/**
 * The bundled real model against llama2.c's greedy outputs (reproduced by Hugging Face transformers):
 * prompt encoding, a 60-token greedy continuation, and a 257-token run from BOS alone.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Model } from '../src/engine/model.js';
import { generate } from '../src/engine/generate.js';
import { STORIES } from './helpers.js';

const reference = JSON.parse(fs.readFileSync(path.join(STORIES, 'reference_greedy.json'), 'utf8'));

test('stories260K: prompt encoding and greedy runs reproduce the reference', async () => {
  const model = await Model.load(STORIES, { threads: 1 });
  assert.deepEqual(model.tokenizer.encode(reference.prompt), reference.prompt_ids);

  const expected: number[] = reference.greedy_ids;
  const promptLength = reference.prompt_ids.length;
  const run = await generate(model, reference.prompt, { maxTokens: expected.length - promptLength });
  assert.deepEqual([...run.promptIds, ...run.outputIds], expected);
  assert.equal(run.finishReason, 'length');

  const fromBos: number[] = reference.empty_prompt_greedy_257_ids;
  const long = await generate(model, { ids: [model.tokenizer.bosTokenId ?? 1] }, { maxTokens: fromBos.length - 1 });
  assert.deepEqual([1, ...long.outputIds], fromBos);
  assert.equal(long.text, reference.empty_prompt_greedy_257_text);
  await model.dispose();
});
