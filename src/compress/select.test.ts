import { test } from 'node:test';
import assert from 'node:assert/strict';
import { keepTopAndWindow, range, sumGroups, topK } from './select.js';
import { entriesFor, parseBudget } from './budget.js';
import { ConfigError } from '../errors.js';

/** Top-k by sorting (score desc, index asc): the definition topK must agree with. */
function topKBySort(scores: Float32Array, k: number): number[] {
  return Array.from(scores.keys()).sort((a, b) => scores[b] - scores[a] || a - b).slice(0, k).sort((a, b) => a - b);
}

test('topK agrees with a full sort, ties going to the lower index, output ascending', () => {
  let seed = 7;
  const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  for (let trial = 0; trial < 200; trial++) {
    const n = 1 + Math.floor(rand() * 60);
    // Few distinct values so that ties are common.
    const scores = Float32Array.from({ length: n }, () => Math.floor(rand() * 5));
    const k = Math.floor(rand() * (n + 3));
    assert.deepEqual(Array.from(topK(scores, k)), topKBySort(scores, k), `n=${n} k=${k} ${scores}`);
  }
});

test('topK edge cases: k <= 0 is empty, k >= n is everything', () => {
  const s = Float32Array.of(3, 1, 2);
  assert.deepEqual(Array.from(topK(s, 0)), []);
  assert.deepEqual(Array.from(topK(s, -2)), []);
  assert.deepEqual(Array.from(topK(s, 5)), [0, 1, 2]);
});

test('keepTopAndWindow keeps budget entries per head, window last, ascending', () => {
  const n = 12, w = 3, B = 6;
  const data = Float32Array.from({ length: 2 * (n - w) }, (_, i) => (i * 7919) % 13);
  const kept = keepTopAndWindow({ data, heads: 2, length: n - w }, n, B, w);
  for (const rows of kept) {
    assert.equal(rows.length, B);
    assert.deepEqual(Array.from(rows.subarray(B - w)), [9, 10, 11]);
    for (let i = 1; i < rows.length; i++) assert.ok(rows[i] > rows[i - 1]);
  }
});

test('sumGroups sums consecutive rows (query heads of one KV group)', () => {
  const m = { data: Float32Array.of(1, 2, 3, 4, 5, 6, 7, 8), heads: 4, length: 2 };
  assert.deepEqual(Array.from(sumGroups(m, 2).data), [4, 6, 12, 14]);
  assert.deepEqual(Array.from(sumGroups(m, 1).data), [16, 20]);
  assert.deepEqual(Array.from(range(2, 5)), [2, 3, 4]);
});

test('budget forms: absolute, retain rate, compression ratio; bad values name the parameter', () => {
  const fallback = { kind: 'rate', rate: 0.1 } as const;
  assert.equal(entriesFor(parseBudget('m', { budget: 64 }, 8, fallback), 1000), 64);
  assert.equal(entriesFor(parseBudget('m', { retainRate: 0.25 }, 8, fallback), 1001), 250);
  assert.equal(entriesFor(parseBudget('m', { compressionRatio: 0.75 }, 8, fallback), 1000), 250);
  assert.equal(entriesFor(parseBudget('m', {}, 8, fallback), 1000), 100);
  assert.throws(() => parseBudget('m', { budget: 8 }, 8, fallback), (e: Error) => e instanceof ConfigError && /budget 8/.test(e.message));
  assert.throws(() => parseBudget('m', { retainRate: 0 }, 8, fallback), /retainRate must be a number in \(0, 1\]/);
  assert.throws(() => parseBudget('m', { retainRate: 1.5 }, 8, fallback), /retainRate/);
  assert.throws(() => parseBudget('m', { compressionRatio: 1 }, 8, fallback), /compressionRatio/);
  assert.throws(() => parseBudget('m', { budget: 10.5 }, 8, fallback), /budget must be an integer/);
  assert.throws(() => parseBudget('m', { budget: 64, retainRate: 0.1 }, 8, fallback), /only one of/);
});
