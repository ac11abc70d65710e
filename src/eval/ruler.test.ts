import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { Tokenizer } from '../model/tokenizer.js';
import { Model } from '../engine/model.js';
import { FIXTURES, STORIES } from '../../test/helpers.js';
import { loadHaystack } from './haystack.js';
import { MAGIC_NUMBER_TASKS, RULER_MAX_TOKENS, RULER_TASKS, rulerSample, runRuler, splitSentences, zeta } from './ruler.js';

const RETRIEVAL = path.join(FIXTURES, 'retrieval-3M');
const tokenizer = await Tokenizer.load(STORIES);
const haystack = loadHaystack();
// cwe's smallest prompt (a one-shot example and 11 words × 6) needs ~1.3k tokens of this 512-entry vocabulary.
const LENGTH = 1536;

test('every task: deterministic per seed, different across seeds, fits the length in the model tokens', () => {
  for (const task of RULER_TASKS) {
    const a = rulerSample(tokenizer, task, 0, { length: LENGTH, haystack, seed: 1 });
    const b = rulerSample(tokenizer, task, 0, { length: LENGTH, haystack, seed: 1 });
    const c = rulerSample(tokenizer, task, 0, { length: LENGTH, haystack, seed: 2 });
    const d = rulerSample(tokenizer, task, 1, { length: LENGTH, haystack, seed: 1 });
    assert.deepEqual(a.prompt.ids, b.prompt.ids, task);
    assert.deepEqual(a.outputs, b.outputs, task);
    assert.notDeepEqual(a.outputs, c.outputs, `${task}: seeds 1 and 2 drew the same answers`);
    assert.notDeepEqual(a.outputs, d.outputs, `${task}: samples 0 and 1 drew the same answers`);
    assert.equal(a.maxTokens, RULER_MAX_TOKENS[task]);
    assert.ok(a.prompt.ids.length + a.maxTokens <= LENGTH, `${task}: ${a.prompt.ids.length} + ${a.maxTokens} > ${LENGTH}`);
    // The haystack grew until the next step would not fit: the prompt is close to the length.
    assert.ok(a.prompt.ids.length + a.maxTokens > LENGTH * 0.8, `${task}: only ${a.prompt.ids.length} tokens`);
    const text = tokenizer.decode(a.prompt.ids);
    for (const answer of a.outputs) assert.ok(text.includes(answer), `${task}: answer ${answer} is not in the prompt`);
  }
});

test('task shapes: needles, singular template, query count, vt chain, cwe/fwe answers', () => {
  const s = rulerSample(tokenizer, 'niah_single_2', 0, { length: 1024, haystack });
  const text = tokenizer.decode(s.prompt.ids);
  assert.match(text, /^<s> A special magic number is hidden within the following text\./);
  assert.match(text, /One of the special magic numbers for [a-z]+-[a-z]+ is: \d{7}\./);
  assert.match(text, /The special magic number for [a-z]+-[a-z]+ mentioned in the provided text is$/);
  const mq = rulerSample(tokenizer, 'niah_multiquery', 0, { length: 1024, haystack });
  assert.equal(mq.outputs.length, 4);
  assert.match(tokenizer.decode(mq.prompt.ids), /What are all the special magic numbers for \S+, \S+, \S+, and \S+ mentioned/);
  assert.equal(rulerSample(tokenizer, 'niah_multivalue', 0, { length: 1024, haystack }).outputs.length, 4);
  const uuid = rulerSample(tokenizer, 'niah_multikey_3', 0, { length: 1024, haystack });
  assert.match(uuid.outputs[0], /^[0-9a-f]{8}-[0-9a-f]{4}-4/);
  const vt = rulerSample(tokenizer, 'vt', 0, { length: 1024, haystack });
  assert.equal(vt.outputs.length, 5);
  const vtText = tokenizer.decode(vt.prompt.ids);
  for (let i = 1; i < 5; i++) assert.ok(vtText.includes(`VAR ${vt.outputs[i]} = VAR ${vt.outputs[i - 1]}`));
  const fwe = rulerSample(tokenizer, 'fwe', 0, { length: 1024, haystack });
  assert.equal(fwe.outputs.length, 3);
  const counts = new Map<string, number>();
  const coded = tokenizer.decode(fwe.prompt.ids).split('coded words. ')[1].split('\nQuestion')[0].split(' ');
  for (const w of coded) counts.set(w, (counts.get(w) ?? 0) + 1);
  const ranked = [...counts.entries()].sort((x, y) => y[1] - x[1]).map(([w]) => w);
  assert.equal(ranked[0], '...');
  assert.deepEqual(ranked.slice(1, 4), fwe.outputs);
});

test('magic-number format: the NIAH tasks in retrieval-3M\'s fact format; others are refused naming --tasks', () => {
  for (const task of MAGIC_NUMBER_TASKS) {
    const s = rulerSample(tokenizer, task, 0, { length: 1024, haystack, format: 'magic-number' });
    const text = tokenizer.decode(s.prompt.ids);
    const m = /What is the magic number of (\w+)\? The magic number of \1 is$/.exec(text);
    assert.ok(m, `${task}: ${text.slice(-80)}`);
    assert.match(s.outputs[0], /^\d{5}$/);
    assert.ok(text.includes(`The magic number of ${m[1]} is ${s.outputs[0]}.`), task);
    assert.ok(s.prompt.ids.length + 8 <= 1024);
  }
  assert.throws(() => rulerSample(tokenizer, 'cwe', 0, { length: 1024, haystack, format: 'magic-number' }), /--tasks/);
  assert.throws(() => rulerSample(tokenizer, 'cwe', 0, { length: 512, haystack }), /--length 512 is too short for cwe/);
});

test('helpers: sentence split, zeta(2) = π²/6', () => {
  assert.deepEqual(splitSentences('One. Two! "Three?" Four'), ['One.', 'Two!', '"Three?"', 'Four']);
  assert.ok(Math.abs(zeta(2) - Math.PI ** 2 / 6) < 1e-9);
});

test('runRuler on retrieval-3M (magic-number format): per-task and average scores; keep-all equals full', async () => {
  const model = await Model.load(RETRIEVAL, { threads: 1 });
  try {
    const columns = [
      { label: 'full', spec: { method: 'full' } },
      { label: 'fastkv@1', spec: { method: 'fastkv', retainRate: 1, tspRate: 1 } },
    ];
    const r = await runRuler(model, columns, {
      length: 384, haystack, format: 'magic-number', tasks: ['niah_single_2', 'niah_multikey_1'], samples: 2, seed: 5,
    });
    assert.deepEqual(r.tasks, ['niah_single_2', 'niah_multikey_1']);
    assert.equal(r.samples.length, 4);
    assert.ok(r.average.full >= 50, `full scored ${r.average.full}`);
    assert.deepEqual(r.scores['fastkv@1'], r.scores.full);
    for (const s of r.samples) assert.equal(s.predictions['fastkv@1'].text, s.predictions.full.text);
  } finally {
    await model.dispose();
  }
});
