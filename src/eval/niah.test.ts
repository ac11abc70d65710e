import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { Model } from '../engine/model.js';
import { Tokenizer } from '../model/tokenizer.js';
import { FIXTURES, STORIES } from '../../test/helpers.js';
import { loadHaystack } from './haystack.js';
import { DEFAULT_DEPTHS, MAGIC_NAMES, niahCases, runNiah, scoreNiah } from './niah.js';

const RETRIEVAL = path.join(FIXTURES, 'retrieval-3M');
const tokenizer = await Tokenizer.load(STORIES);
const haystack = loadHaystack();

test('reference defaults: 10 depths 0..100', () => {
  assert.deepEqual(DEFAULT_DEPTHS, [0, 11, 22, 33, 44, 56, 67, 78, 89, 100]);
});

test('niahCases: deterministic per seed, different across seeds', () => {
  const o = { haystack, lengths: [300], depths: [30, 70], preset: 'magic-number', samples: 2 };
  const a = niahCases(tokenizer, { ...o, seed: 1 });
  const b = niahCases(tokenizer, { ...o, seed: 1 });
  const c = niahCases(tokenizer, { ...o, seed: 2 });
  assert.deepEqual(a.map((x) => x.prompt.ids), b.map((x) => x.prompt.ids));
  assert.notDeepEqual(a.map((x) => x.prompt.ids), c.map((x) => x.prompt.ids));
  assert.notDeepEqual(a.map((x) => x.answer), c.map((x) => x.answer));
  for (const x of a) {
    assert.match(x.answer, /^\d{5}\.$/);
    assert.deepEqual(x.matchAnswers, [x.answer.slice(0, 5)]);
    const text = tokenizer.decode(x.prompt.ids);
    const name = /magic number of (\w+) is \d{5}\./.exec(text)![1];
    assert.ok(MAGIC_NAMES.includes(name));
    assert.ok(text.endsWith(`What is the magic number of ${name}? The magic number of ${name} is`), text.slice(-80));
    assert.ok(text.includes(`The magic number of ${name} is ${x.matchAnswers[0]}.`));
  }
});

for (const [label, dir] of [['stories260K', STORIES], ['retrieval-3M', RETRIEVAL]] as const) {
  test(`niahCases (${label}): prompts fit the length in the model's tokens; the needle sits at the depth`, async () => {
    const tok = await Tokenizer.load(dir);
    for (const preset of ['reference', 'magic-number']) {
      const lengths = [256, 512, 1024];
      const cases = niahCases(tok, { haystack, lengths, preset });
      assert.equal(cases.length, lengths.length * DEFAULT_DEPTHS.length);
      const maxTokens = preset === 'reference' ? 30 : 8;
      for (const c of cases) {
        const where = `${preset} ${c.length}/${c.depth}`;
        const room = c.length - maxTokens;
        assert.ok(c.prompt.ids.length <= room, `${where}: ${c.prompt.ids.length} > ${room}`);
        // The prompt fills the length, less at most the sentence the magic-number preset drops at the end.
        assert.ok(c.prompt.ids.length >= room - (preset === 'reference' ? 4 : 150), `${where}: only ${c.prompt.ids.length}`);
        assert.ok(c.needleOffset >= c.prompt.contextStart, `${where}: needle found at ${c.needleOffset}`);
        const contextTokens = c.prompt.contextEnd - c.prompt.contextStart;
        // Moved back to a sentence end: never later than asked, and by less than one sentence.
        const slack = (100 * 150) / contextTokens;
        assert.ok(c.actualDepth <= c.depth + 1 && c.actualDepth >= c.depth - slack, `${where}: actual ${c.actualDepth}`);
      }
      const depth100 = cases.filter((c) => c.depth === 100);
      for (const c of depth100) assert.ok(c.actualDepth > 99);
    }
  });
}

test('scoreNiah: word recall as the reference, string match as RULER', () => {
  const s = scoreNiah(' Eat a sandwich and sit in Dolores Park', 'eat a sandwich and sit in Dolores Park on a sunny day.', ['sunny day']);
  assert.ok(Math.abs(s.wordRecall - (100 * 8) / 11) < 1e-9); // 8 of the 11 distinct words ("a" counts once)
  assert.equal(s.stringMatch, 0);
  assert.deepEqual(scoreNiah('  12345.', '12345.', ['12345']), { wordRecall: 100, stringMatch: 100 });
});

test('runNiah on retrieval-3M: full finds the magic number; a method that keeps every entry scores the same', async () => {
  const model = await Model.load(RETRIEVAL, { threads: 1 });
  try {
    const columns = [
      { label: 'full', spec: { method: 'full' } },
      { label: 'snapkv@1', spec: { method: 'snapkv', retainRate: 1 } },
    ];
    const r = await runNiah(model, columns, { haystack, lengths: [384], depths: [20, 80], preset: 'magic-number', seed: 3 });
    assert.equal(r.summary.full.stringMatch, 100);
    for (const c of r.cases) assert.equal(c.results['snapkv@1'].text, c.results.full.text);
    assert.deepEqual(r.summary['snapkv@1'], r.summary.full);
    assert.deepEqual(r.summary.full.wordRecallGrid, [[100], [100]]);
  } finally {
    await model.dispose();
  }
});
