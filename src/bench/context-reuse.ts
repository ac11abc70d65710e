/**
 * `fastkv bench --context-reuse`: what a saved context buys. Per method: time to first token of document +
 * question prefilled together, against building the context once (prefill, compress, save), loading the file,
 * and asking the question on it (the question's tokens fed after the context, then the first token).
 * @module
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { CompressionSpec } from '../compress/registry.js';
import { compressContext } from '../engine/context.js';
import { loadContext } from '../engine/context-file.js';
import { generate } from '../engine/generate.js';
import type { Model } from '../engine/model.js';
import { randomPrompt } from './prefill-decode.js';

export interface ContextReuseOptions {
  contextTokens: number;
  questionTokens: number;
  methods: readonly CompressionSpec[];
  seed: number;
  onProgress?: (text: string) => void;
}

export interface ContextReuseResult {
  method: string;
  contextTokens: number;
  questionTokens: number;
  /** TTFT of document + question in one prefill. */
  wholeTtftMs: number;
  /** Prefill (and compression) of the document alone, and writing the file. */
  buildMs: number;
  saveMs: number;
  fileBytes: number;
  kvBytes: number;
  /** Reading and checking the file. */
  loadMs: number;
  /** From calling generate with the loaded context to the first token: cache copy, question tokens, sampling. */
  questionTtftMs: number;
}

export async function runContextReuseBench(model: Model, options: ContextReuseOptions): Promise<ContextReuseResult[]> {
  const vocab = model.config.vocabSize;
  const doc = Array.from(randomPrompt(options.contextTokens, vocab, options.seed));
  const question = Array.from(randomPrompt(options.questionTokens, vocab, options.seed + 1));
  const progress = options.onProgress ?? (() => {});
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fastkv-context-bench-'));
  progress('warm-up');
  await generate(model, { ids: doc.slice(0, 256) }, { maxTokens: 1 });
  const results: ContextReuseResult[] = [];
  try {
    for (const spec of options.methods) {
      progress(`${spec.method}: document + question`);
      const whole = await generate(model, { ids: [...doc, ...question] }, { maxTokens: 1, compression: spec, ignoreEos: true });
      progress(`${spec.method}: building the context`);
      let t0 = performance.now();
      const ctx = await compressContext(model, { ids: doc }, { compression: spec });
      const buildMs = performance.now() - t0;
      const file = path.join(dir, `${spec.method}.kv`);
      t0 = performance.now();
      await ctx.save(file);
      const saveMs = performance.now() - t0;
      progress(`${spec.method}: loading and asking`);
      t0 = performance.now();
      const loaded = await loadContext(model, file);
      const loadMs = performance.now() - t0;
      t0 = performance.now();
      await generate(model, { ids: question }, { maxTokens: 1, context: loaded, ignoreEos: true });
      const questionTtftMs = performance.now() - t0;
      results.push({
        method: spec.method, contextTokens: doc.length, questionTokens: question.length,
        wholeTtftMs: whole.timings.timeToFirstTokenMs, buildMs, saveMs, fileBytes: fs.statSync(file).size,
        kvBytes: ctx.kvBytes, loadMs, questionTtftMs,
      });
      fs.rmSync(file);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return results;
}

export function formatContextReuse(results: readonly ContextReuseResult[]): string {
  const MiB = (b: number) => (b / 2 ** 20).toFixed(1);
  const rows = results.map((r) => `| ${r.method} | ${r.contextTokens} + ${r.questionTokens} | ${r.wholeTtftMs.toFixed(0)} | ` +
    `${r.buildMs.toFixed(0)} | ${r.saveMs.toFixed(0)} | ${MiB(r.fileBytes)} | ${MiB(r.kvBytes)} | ${r.loadMs.toFixed(0)} | ` +
    `${r.questionTtftMs.toFixed(0)} | ${(r.wholeTtftMs / r.questionTtftMs).toFixed(1)}x | ${(r.wholeTtftMs / (r.loadMs + r.questionTtftMs)).toFixed(1)}x |`);
  return [
    '| method | tokens (context + question) | TTFT document + question (ms) | build context (ms) | save (ms) | file (MiB) | KV (MiB) | load (ms) | TTFT question on loaded context (ms) | speedup | speedup incl. load |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
    ...rows, '',
  ].join('\n');
}
