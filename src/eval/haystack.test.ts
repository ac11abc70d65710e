import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Tokenizer } from '../model/tokenizer.js';
import { FastKVError } from '../errors.js';
import { FIXTURES, STORIES } from '../../test/helpers.js';
import {
  SeededRandom, buildPrompt, cutAtStop, haystackTokens, insertNeedle, largestFitting, loadHaystack, periodTokenIds,
} from './haystack.js';

const tokenizer = await Tokenizer.load(STORIES);
const builtin = loadHaystack();

test('SeededRandom: the same seed and labels give the same stream; other seeds or labels another', () => {
  const draw = (seed: number, ...labels: (string | number)[]) => {
    const r = new SeededRandom(seed, ...labels);
    return Array.from({ length: 8 }, () => r.uint32());
  };
  assert.deepEqual(draw(42, 'a', 1), draw(42, 'a', 1));
  assert.notDeepEqual(draw(42, 'a', 1), draw(43, 'a', 1));
  assert.notDeepEqual(draw(42, 'a', 1), draw(42, 'a', 2));
  const r = new SeededRandom(7);
  for (let i = 0; i < 1000; i++) {
    const x = r.next();
    assert.ok(x >= 0 && x < 1);
    const k = r.int(3, 5);
    assert.ok(k >= 3 && k <= 5 && Number.isInteger(k));
  }
  const s = r.sample([1, 2, 3, 4, 5, 6], 4);
  assert.equal(new Set(s).size, 4);
  assert.match(r.uuid(), /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
});

test('loadHaystack: the built-in stories, or a folder of .txt files in name order; errors name --haystack', () => {
  assert.ok(builtin.text.length > 200_000);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fastkv-hay-'));
  try {
    fs.writeFileSync(path.join(dir, 'b.txt'), 'Second file.');
    fs.writeFileSync(path.join(dir, 'a.txt'), 'First file. ');
    fs.writeFileSync(path.join(dir, 'notes.md'), 'ignored');
    assert.equal(loadHaystack(dir).text, 'First file. Second file.');
    assert.throws(() => loadHaystack(path.join(dir, 'missing')), /--haystack/);
    fs.rmSync(path.join(dir, 'a.txt')); fs.rmSync(path.join(dir, 'b.txt'));
    assert.throws(() => loadHaystack(dir), (e: unknown) => e instanceof FastKVError && /no \.txt files/.test(e.message));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('haystackTokens repeats the haystack to any length; period tokens decode ending in "."', () => {
  const ids = haystackTokens(tokenizer, builtin);
  const long = haystackTokens(tokenizer, builtin, ids.length * 2 + 5);
  assert.ok(long.length >= ids.length * 2 + 5);
  assert.deepEqual(long.slice(ids.length, ids.length + 50), ids.slice(0, 50));
  const periods = periodTokenIds(tokenizer);
  assert.ok(periods.size > 0);
  for (const id of periods) assert.ok(tokenizer.decode([id]).endsWith('.'));
});

test('insertNeedle: the needle sits at the requested depth, just after a sentence end', () => {
  const periods = periodTokenIds(tokenizer);
  const needle = ' The magic number of Tom is 12345.';
  const n = 1000;
  for (const depth of [0, 10, 25, 50, 77, 90, 100]) {
    const ctx = insertNeedle(tokenizer, builtin, needle, { haystackTokenCount: n, depthPercent: depth });
    assert.equal(ctx.ids.length, n + ctx.needleLength);
    assert.ok(ctx.text.includes(needle.trim()), `depth ${depth}`);
    const requested = depth === 100 ? n : Math.floor((n * depth) / 100);
    // Moved back, never forward, and at most one sentence (the longest gap between periods here is < 150 tokens).
    assert.ok(ctx.needleStart <= requested && requested - ctx.needleStart < 150, `depth ${depth}: at ${ctx.needleStart}`);
    assert.ok(Math.abs(ctx.depthPercent - (100 * ctx.needleStart) / n) < 1e-9);
    if (ctx.needleStart > 0 && depth < 100) assert.ok(periods.has(ctx.ids[ctx.needleStart - 1]));
  }
  const cut = insertNeedle(tokenizer, builtin, needle, { haystackTokenCount: 500, depthPercent: 50, endAtSentence: true });
  assert.ok(periods.has(cut.ids[cut.ids.length - 1]));
  assert.throws(() => insertNeedle(tokenizer, builtin, needle, { haystackTokenCount: 10, depthPercent: 101 }), /depth/);
});

test('buildPrompt: one encoding of the whole text, with the context boundaries in tokens', () => {
  const parts = { before: 'Read this.', context: ' Once upon a time there was a cat.', after: ' What was there?', answerPrefix: ' A' };
  const p = buildPrompt(tokenizer, parts);
  assert.deepEqual(p.ids, tokenizer.encode(parts.before + parts.context + parts.after + parts.answerPrefix));
  assert.equal(tokenizer.decode(p.ids.slice(p.contextStart, p.contextEnd), { skipSpecialTokens: true }).trim(), parts.context.trim());
  assert.match(tokenizer.decode(p.ids.slice(p.contextEnd)), /What was there\? A$/);
  const chat = buildPrompt(tokenizer, parts, { chat: true });
  assert.ok(chat.ids.length > p.ids.length);
  assert.equal(tokenizer.decode(chat.ids.slice(chat.contextStart, chat.contextEnd)).trim(), parts.context.trim());
});

test('largestFitting finds the last size that fits; cutAtStop cuts at the first stop', () => {
  for (const limit of [1, 2, 7, 100, 1000, 4097]) assert.equal(largestFitting(1, 5000, (n) => n <= limit), limit);
  assert.equal(largestFitting(1, 50, (n) => n <= 1000), 50);
  assert.equal(largestFitting(5, 50, () => false), -1);
  assert.equal(cutAtStop('a b\nc', ['\n']), 'a b');
  assert.equal(cutAtStop('abc', []), 'abc');
});

test('retrieval-3M shares the stories tokenizer', async () => {
  const other = await Tokenizer.load(path.join(FIXTURES, 'retrieval-3M'));
  assert.deepEqual(other.encode('The magic number of Tom is 12345.'), tokenizer.encode('The magic number of Tom is 12345.'));
});
