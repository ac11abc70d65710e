/**
 * The contract every policy meets, run against each method under configurations from mild to harsh (the table
 * below): indices in range, unique and ascending; every head within its budget and the same count per head;
 * the observation window kept; original positions preserved in the cache; propagated rows ascending and ending
 * with the window; the same input giving the same output. Nothing is skipped: a method that has no
 * window (streamingllm keeps sinks and recent tokens instead) says so in its row.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Model } from '../engine/model.js';
import { prefill } from '../engine/forward.js';
import { METHODS, resolvePolicy, type CompressionSpec } from './registry.js';
import { STORIES, headScoresFile, recording, storyText } from '../../test/helpers.js';


interface Row {
  method: string;
  /** Configurations, mild to harsh. */
  configs: Record<string, unknown>[];
  /** Rows every head must keep whenever it compresses: the last `window` rows. 0 = none (see reason). */
  window: (spec: Record<string, unknown>) => number;
  reason?: string;
  /** Heads keep different counts (AdaKV, HeadKV): the budget then bounds their mean, not each head. */
  ragged?: boolean;
  /**
   * Limits from the flat budget `bound` and window `w` when they differ from it: on one layer's count (its mean
   * over heads when ragged) and on the mean over every layer and head. PyramidKV gives early layers up to twice
   * the flat budget; HeadKV's budgets are global (a layer may hold more), averaging about B + w a head.
   */
  limits?: (bound: number, w: number) => { layer: number; mean: number };
}

const scoresFile = headScoresFile(5, 8); // stories260K: 5 layers of 8 query heads

const TABLE: Row[] = [
  { method: 'full', configs: [{}], window: () => 0, reason: 'keeps everything' },
  {
    method: 'fastkv',
    configs: [{ retainRate: 0.5, tspRate: 0.5 }, {}, { retainRate: 0.05, tspRate: 0.1, kernelSize: 3, pooling: 'avg' },
      { budget: 64, tspLength: 128 }, { budget: 16, tspLength: 32, windowSize: 4, tspLayer: 0 }],
    window: (s) => (s.windowSize as number) ?? 8,
  },
  { method: 'snapkv', configs: [{ retainRate: 0.5 }, {}, { retainRate: 0.3, repeatKv: true }, { budget: 12, windowSize: 4, kernelSize: 1 }], window: (s) => (s.windowSize as number) ?? 8 },
  { method: 'pyramidkv', configs: [{ retainRate: 0.5 }, {}, { budget: 24, beta: 4, windowSize: 4 }], window: (s) => (s.windowSize as number) ?? 8,
    limits: (bound) => ({ layer: 2 * bound, mean: bound + 3 }) },
  { method: 'adakv', configs: [{ retainRate: 0.5 }, {}, { retainRate: 0.05, floorAlpha: 0.5, groupReduce: 'max' }, { budget: 16, floorAlpha: 0, normalize: true }], window: (s) => (s.windowSize as number) ?? 8, ragged: true },
  { method: 'headkv', configs: [{ retainRate: 0.5, headScores: scoresFile }, { headScores: scoresFile }, { budget: 16, beta: 2, temp: 2, windowSize: 4, headScores: scoresFile }], window: (s) => (s.windowSize as number) ?? 8, ragged: true,
    limits: (bound, w) => ({ layer: Infinity, mean: bound + w + 1 }) },
  { method: 'pyramidinfer', configs: [{}, { retainRate: 0.35 }, { recentRatio: 0.05, decayRatio: 0.1 }], window: () => 1,
    reason: 'keeps a recent block of 1 + floor(N·recentRatio) rows, checked in test/compression.test.ts; here the last row' },
  { method: 'h2o', configs: [{ retainRate: 0.5 }, {}, { budget: 12 }], window: () => 8 },
  { method: 'streamingllm', configs: [{ retainRate: 0.5 }, {}, { budget: 6, sinks: 2 }], window: () => 1, reason: 'keeps the most recent token among its recent window' },
  { method: 'gemfilter', configs: [{ retainRate: 0.5 }, {}, { budget: 16, filterLayer: 0 }], window: () => 0, reason: 'ranks every token, window included' },
];

test('the contract table covers every registered method', () => {
  assert.deepEqual(TABLE.map((r) => r.method).sort(), [...METHODS].sort());
});

const modelPromise = Model.load(STORIES, { threads: 1 });
const text = storyText(1600);

function assertAscendingInRange(rows: Int32Array, n: number, what: string): void {
  for (let i = 0; i < rows.length; i++) {
    assert.ok(rows[i] >= 0 && rows[i] < n, `${what}: ${rows[i]} outside [0, ${n})`);
    if (i > 0) assert.ok(rows[i] > rows[i - 1], `${what}: not strictly ascending at ${i}`);
  }
}

for (const row of TABLE) {
  for (const options of row.configs) {
    const spec = { method: row.method, ...options } as CompressionSpec;
    test(`contract: ${JSON.stringify(spec)}`, async () => {
      const model = await modelPromise;
      const ids = Int32Array.from(model.tokenizer.encode(text));
      const N = ids.length;
      const { policy: wrapped, layers: decisions } = recording(resolvePolicy(spec, model.config));
      const run = await prefill(model, ids, { policy: wrapped });
      const bound = Math.max((options.budget as number | undefined) ?? Math.floor(N * ((options.retainRate as number | undefined) ?? 0.1)) + 1, 9);
      const w = row.window(options);
      const limits = row.limits?.(bound, w) ?? { layer: bound, mean: bound };
      const allCounts: number[] = [];
      let cacheLayer = 0;
      for (const { input: { numRows: n, positionIds }, decision } of decisions) {
        if (decision.kind === 'restart') {
          assertAscendingInRange(decision.tokens, N, 'restart tokens');
          assert.ok(decision.tokens.length <= bound);
          cacheLayer = 0; // the restarted prefill fills the caches again from layer 0
          continue;
        }
        if (decision.keep) {
          const counts = decision.keep.map((rows) => rows.length);
          decision.keep.forEach((rows, h) => {
            assertAscendingInRange(rows, n, `head ${h}`);
            if (!row.ragged) assert.equal(rows.length, counts[0], 'every head keeps the same count');
            if (rows.length > 0 && w > 0) assert.deepEqual(Array.from(rows.subarray(rows.length - w)), Array.from({ length: w }, (_, i) => n - w + i), 'window kept');
          });
          const mean = counts.reduce((a, b) => a + b, 0) / counts.length;
          assert.ok((row.ragged ? mean : counts[0]) <= limits.layer, `kept ${counts.join(',')} > budget ${limits.layer}`);
          allCounts.push(...counts);
          // Positions preserved: slot s of head h holds the original position of row keep[h][s].
          const cache = run.restartedOn ? null : run.cache.layer(cacheLayer);
          if (cache) decision.keep.forEach((rows, h) => rows.forEach((r, s) => assert.equal(cache.headPositions(h)[s], positionIds[r])));
        }
        if (decision.kind === 'propagate') {
          assertAscendingInRange(decision.rows, n, 'propagated rows');
          assert.deepEqual(Array.from(decision.rows.subarray(decision.rows.length - w)), Array.from({ length: w }, (_, i) => n - w + i));
        }
        cacheLayer++;
      }
      if (allCounts.length > 0) {
        const mean = allCounts.reduce((a, b) => a + b, 0) / allCounts.length;
        assert.ok(mean <= limits.mean, `mean kept ${mean} > ${limits.mean}`);
      }
      // Deterministic: the same input gives the same caches.
      const again = await prefill(model, ids, { policy: resolvePolicy(spec, model.config) });
      for (let l = 0; l < model.config.numLayers; l++) {
        const [a, b] = [again.cache.layer(l), run.cache.layer(l)];
        for (let h = 0; h < a.numHeads; h++) {
          assert.deepEqual(a.headPositions(h), b.headPositions(h));
          assert.deepEqual(a.headKeys(h), b.headKeys(h));
        }
      }
    });
  }
}
