/**
 * `fastkv bench --concurrency 1,2,4,8`: what continuous batching buys. Per method, the prompts are prefilled
 * once (each its own seeded random ids); then, for each concurrency c, c sequences (copies of the first c
 * caches) decode the same number of greedy tokens together through the model's batcher, the path concurrent
 * `generate()` calls take. Aggregate tokens/s = c · tokens / wall time; per sequence = tokens / wall time.
 * @module
 */
import type { CompressionSpec } from '../compress/registry.js';
import { resolvePolicy } from '../compress/registry.js';
import { prefill } from '../engine/forward.js';
import type { Model } from '../engine/model.js';
import { ropeFrequencies } from '../model/config.js';
import { argmax } from '../engine/sampling.js';
import type { BatchSeat } from '../engine/batcher.js';
import { formatTable } from '../report.js';
import { peakRss, randomPrompt } from './prefill-decode.js';

export interface ConcurrencyOptions {
  promptTokens: number;
  levels: readonly number[];
  methods: readonly CompressionSpec[];
  decodeTokens: number;
  seed: number;
  onProgress?: (text: string) => void;
}

export interface ConcurrencyResult {
  method: string;
  concurrency: number;
  promptTokens: number;
  decodeTokens: number;
  /** Wall time of the c sequences' decode, from the second step (the first is a warm-up) to the last. */
  decodeMs: number;
  aggregateTokensPerSecond: number;
  perSequenceTokensPerSecond: number;
  /** Aggregate over the same method's single sequence (levels always start with 1). */
  speedup: number;
  /** Mean rows per batched step (c when every step took every sequence). */
  meanBatch: number;
  /** Bytes of K and V held by the c caches at the end. */
  kvBytes: number;
  rssBytes: number;
  peakRssBytes: number;
}

export async function runConcurrencyBench(model: Model, options: ConcurrencyOptions): Promise<ConcurrencyResult[]> {
  const c = model.config;
  const progress = options.onProgress ?? (() => {});
  const levels = [...new Set([1, ...options.levels])].sort((a, b) => a - b);
  const most = levels[levels.length - 1];
  const results: ConcurrencyResult[] = [];
  progress('warm-up');
  await prefill(model, randomPrompt(256, c.vocabSize, options.seed), {});
  for (const spec of options.methods) {
    const policy = resolvePolicy(spec, c);
    const prefilled = [];
    for (let s = 0; s < most; s++) {
      progress(`${spec.method}: prefilling prompt ${s + 1}/${most} (${options.promptTokens} tokens)`);
      prefilled.push(await prefill(model, randomPrompt(options.promptTokens, c.vocabSize, options.seed + 1 + s), {
        policy, decodeCapacity: options.decodeTokens,
      }));
    }
    let single = 0;
    for (const level of levels) {
      progress(`${spec.method}: ${level} sequence${level > 1 ? 's' : ''} decoding ${options.decodeTokens} tokens`);
      const before = { ...model.batcher.stats };
      const caches = prefilled.slice(0, level).map((p) => ({ ...p, cache: p.cache.clone() }));
      // Every sequence takes its seat and joins first, so that the first step already has all of them.
      const seats: BatchSeat[] = [];
      for (const p of caches) {
        const seat = await model.batcher.admit();
        seat.join(p.cache, ropeFrequencies(c, p.nextPosition + options.decodeTokens).invFreq);
        seats.push(seat);
      }
      let t0 = 0;
      try {
        // One untimed step first: it compiles the attention graph of this batch's cache layout.
        const tokens = await Promise.all(caches.map(async (p, s) => argmax(await seats[s].step(argmax(p.logits), p.nextPosition))));
        t0 = performance.now();
        await Promise.all(caches.map(async (p, s) => {
          let token = tokens[s];
          for (let i = 1; i <= options.decodeTokens; i++) token = argmax(await seats[s].step(token, p.nextPosition + i));
        }));
      } finally {
        for (const seat of seats) seat.leave();
      }
      const decodeMs = performance.now() - t0;
      const aggregate = (level * options.decodeTokens) / (decodeMs / 1000);
      if (level === 1) single = aggregate;
      const steps = model.batcher.stats.steps - before.steps;
      results.push({
        method: spec.method, concurrency: level, promptTokens: options.promptTokens, decodeTokens: options.decodeTokens, decodeMs,
        aggregateTokensPerSecond: aggregate, perSequenceTokensPerSecond: options.decodeTokens / (decodeMs / 1000),
        speedup: aggregate / single,
        meanBatch: steps > 0 ? (model.batcher.stats.rows - before.rows) / steps : 0,
        kvBytes: caches.reduce((a, p) => a + p.cache.bytes, 0),
        rssBytes: process.memoryUsage().rss, peakRssBytes: peakRss(),
      });
    }
  }
  return results;
}

export function formatConcurrency(results: readonly ConcurrencyResult[]): string {
  const MiB = (b: number) => (b / 2 ** 20).toFixed(1);
  return formatTable(
    ['method', 'sequences', 'prompt tokens', 'decode tokens', 'aggregate tok/s', 'per sequence tok/s', 'speedup vs 1', 'mean batch', 'KV MiB', 'RSS MiB', 'peak RSS MiB'],
    results.map((r) => [
      r.method, String(r.concurrency), String(r.promptTokens), String(r.decodeTokens), r.aggregateTokensPerSecond.toFixed(2),
      r.perSequenceTokensPerSecond.toFixed(2), `${r.speedup.toFixed(2)}x`, r.meanBatch.toFixed(2), MiB(r.kvBytes), MiB(r.rssBytes), MiB(r.peakRssBytes),
    ]));
}
