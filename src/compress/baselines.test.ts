/**
 * The budget rules of PyramidKV, AdaKV and HeadKV on cases worked by hand, and HeadKV's score-file checks.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pyramidPrefixBudgets } from './pyramidkv.js';
import { adaptiveCounts } from './adakv.js';
import { headCapacities, readHeadScores } from './headkv.js';
import { keepTopAndWindowPerHead, roundHalfEven } from './select.js';
import { ConfigError } from '../errors.js';

test('pyramidkv: per-layer budgets follow the KVCache-Factory rule; the mean is the flat budget', () => {
  // B = 48, w = 8, β = 20, L = 5: base 40, min = 40 // 20 = 2, max = 80 − 2 = 78, step = 76 // 4 = 19.
  assert.deepEqual(pyramidPrefixBudgets(48, 8, 20, 200, 5), [78, 59, 40, 21, 2]);
  // n − w = 72 ≤ max: max = 72, min = 80 − 72 = 8, step = 64 // 4 = 16.
  assert.deepEqual(pyramidPrefixBudgets(48, 8, 20, 80, 5), [72, 56, 40, 24, 8]);
  for (const budgets of [pyramidPrefixBudgets(48, 8, 20, 200, 5)!, pyramidPrefixBudgets(48, 8, 20, 80, 5)!]) {
    assert.equal(budgets.reduce((a, b) => a + b, 0) / budgets.length, 40);
  }
  // n < 2(B − w): every layer keeps B − w (SnapKV); n < B: nothing is compressed.
  assert.deepEqual(pyramidPrefixBudgets(48, 8, 20, 79, 5), [40, 40, 40, 40, 40]);
  assert.equal(pyramidPrefixBudgets(48, 8, 20, 47, 5), null);
});

test('adakv: per-head counts follow the flattened top-k rule, each at least the floor, total H·B\'', () => {
  // Three heads, six prefix scores each; B' = 4, α = 0.5 (floor 2). The 12 largest scores: all six of head 0,
  // all six of head 2, none of head 1. cap = round(c·(1 − α) + 2) = 5, 2, 5.
  const data = Float32Array.from([9, 8, 7, 6, 5, 4, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 3, 2.5, 1, 0.9, 0.8, 0.7]);
  const scores = { data, heads: 3, length: 6 };
  const counts = adaptiveCounts(scores, 4, 0.5);
  assert.deepEqual(counts, [5, 2, 5]);
  assert.equal(counts.reduce((a, b) => a + b, 0), 3 * 4);
  for (const c of counts) assert.ok(c >= 2);
  // Each head keeps its own top count and the window (n = 6 + 2 rows, window 2).
  const keep = keepTopAndWindowPerHead(scores, 8, counts, 2);
  assert.deepEqual(keep.map((k) => Array.from(k)), [[0, 1, 2, 3, 4, 6, 7], [4, 5, 6, 7], [0, 1, 2, 3, 4, 6, 7]]);
  // α = 1: every head exactly B' (uniform SnapKV).
  assert.deepEqual(adaptiveCounts(scores, 4, 1), [4, 4, 4]);
});

function writeScores(content: string): string {
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'fastkv-headkv-')), 'scores.json');
  fs.writeFileSync(file, content);
  return file;
}

test('headkv: per-head budgets follow the pool formula on a hand-made score file', () => {
  // Means: layer 0 heads (2, 6), layer 1 heads (8, 4); total 20 → shares .1 .3 .4 .2.
  const file = writeScores(JSON.stringify({ '0-0': [1, 3], '0-1': [6], '1-0': [8, 8], '1-1': [4] }));
  const scores = readHeadScores(file, 2, 2);
  // B = 10, β = 2: B // β = 5, pool = 5 · 2 layers · 2 heads = 20, base = 5; cap = round(share · 20 + 5).
  assert.deepEqual(headCapacities(scores, 10, 2, 1, 2).map((c) => Array.from(c)), [[7, 11], [13, 9]]);
  // One KV head for both query heads: the group's mean, rounded half to even: (7 + 11)/2, (13 + 9)/2.
  assert.deepEqual(headCapacities(scores, 10, 2, 1, 1).map((c) => Array.from(c)), [[9], [11]]);
  // Half to even: shares .1 .15 .35 .4 give query-head caps 7, 8, 12, 13; the KV-head means 7.5 and 12.5
  // round to the even neighbours 8 and 12 (Python's round), not 8 and 13.
  const halves = readHeadScores(writeScores(JSON.stringify({ '0-0': [2], '0-1': [3], '1-0': [7], '1-1': [8] })), 2, 2);
  assert.deepEqual(headCapacities(halves, 10, 2, 1, 2).map((c) => Array.from(c)), [[7, 8], [12, 13]]);
  assert.deepEqual(headCapacities(halves, 10, 2, 1, 1).map((c) => Array.from(c)), [[8], [12]]);
  assert.equal(roundHalfEven(7.5), 8);
  assert.equal(roundHalfEven(8.5), 8);
  assert.equal(roundHalfEven(-2.5), -2);
});

test('headkv: a missing, malformed or mismatched score file gets an error naming the file and the problem', () => {
  const cases: [string, RegExp][] = [
    [path.join(os.tmpdir(), 'no-such-dir-fastkv', 'scores.json'), /does not exist; make one with `fastkv profile-heads/],
    [os.tmpdir(), /is not a regular file/],
    [writeScores('{"0-0": [1], '), /is not valid JSON/],
    [writeScores('[1, 2]'), /must be a JSON object/],
    [writeScores(JSON.stringify({ 'layer0-head0': [1] })), /keys must be "layer-head"/],
    [writeScores(JSON.stringify({ '00-1': [1] })), /keys must be "layer-head"/],
    [writeScores(JSON.stringify({ '0-0': [1], '0-1': [1], '1-0': [1], '1-1': 'x' })), /entry "1-1" must be a non-empty list/],
    [writeScores(JSON.stringify({ '0-0': [1], '0-1': [1], '1-0': [1], '1-1': [] })), /entry "1-1" must be a non-empty list/],
    [writeScores(JSON.stringify({ '0-0': [1], '0-1': [1], '1-0': [1], '1-1': [1], '2-0': [1] })), /has key "2-0" but the model has 2 layers of 2 query heads/],
    [writeScores(JSON.stringify({ '0-0': [1], '0-1': [1], '1-0': [1] })), /has no entry "1-1"/],
  ];
  for (const [file, pattern] of cases) {
    assert.throws(() => readHeadScores(file, 2, 2), (e: Error) => e instanceof ConfigError && e.message.includes(file) && pattern.test(e.message), file);
  }
});
