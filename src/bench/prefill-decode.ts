/**
 * The prefill/decode benchmark: for each prompt length, time to first token, prefill throughput (tokens/s and
 * effective GFLOP/s, also as a share of the matmul rate ONNX Runtime reaches in the same process), greedy decode
 * throughput, KV-cache bytes and memory. Prompts are seeded random token ids, so any checkpoint works, with or
 * without a tokenizer. Ratios within one run mean more than absolute times on a shared machine.
 * @module
 */

import os from 'node:os';
import { Model } from '../engine/model.js';
import { decodeStep, prefill } from '../engine/forward.js';
import { argmax } from '../engine/sampling.js';
import { ropeFrequencies, type ModelConfig } from '../model/config.js';
import { RequestError } from '../errors.js';
import { countParameters, type ParameterCount } from './random-checkpoint.js';
import { measureMatmul, type MatmulRate } from './matmul-rate.js';
import { measureBandwidth } from './bandwidth.js';
import type { WeightDtype } from '../graph/linear.js';
import { formatTable } from '../report.js';

export const DEFAULT_LENGTHS: readonly number[] = [1024, 4096, 8192];
export const DEFAULT_DECODE_TOKENS = 64;
/** Rows of the reference matmul: a long prompt's worth of rows through the largest projection. */
export const MATMUL_ROWS = 4096;
const MATMUL_REPEATS = 5;

export interface BenchOptions {
  /** Prompt lengths in tokens (default 1024, 4096, 8192). */
  lengths?: readonly number[];
  /** Greedy tokens decoded after each prefill (default 64). */
  decodeTokens?: number;
  /** ONNX Runtime intra-op threads (default: one per core). */
  threads?: number;
  /** Weight format of the linear layers (default fp32). */
  dtype?: WeightDtype;
  /** Seed of the random prompts (default 0). */
  seed?: number;
  /** A label for the report (e.g. the shape name). */
  label?: string;
  /** Progress messages (loading, each length). */
  onProgress?: (text: string) => void;
}

/** Seconds spent in each graph (session runs, wall clock). */
export interface Breakdown {
  /** Prefill: the projection branch and the attention graph. Decode: the whole-layer decode graph. */
  attention: number;
  mlp: number;
  head: number;
  /** Time outside the graphs: embedding, copies into the cache, tensor wrapping, the policy, sampling. */
  other: number;
}

export interface LengthResult {
  tokens: number;
  /** Wall time of prefill alone. */
  prefillSeconds: number;
  /** Prefill plus argmax of the first token. */
  ttftSeconds: number;
  prefillTokensPerSecond: number;
  /** Floating-point operations counted for the prefill (see {@link prefillFlops}). */
  prefillFlops: number;
  prefillGflops: number;
  /** The reference matmul rate: the mean of `matmulBeforeAfter`. */
  matmulGflops: number;
  /** The reference matmul rate measured just before and just after this length's prefill. */
  matmulBeforeAfter: [number, number];
  /** prefillGflops as a percentage of matmulGflops. */
  percentOfMatmul: number;
  prefillBreakdown: Breakdown;
  decodeTokens: number;
  decodeSeconds: number;
  decodeTokensPerSecond: number;
  /** Seconds spent in each graph over all decode steps. */
  decodeBreakdown: Breakdown;
  /** KV-cache bytes after decoding (prompt and generated entries, f32). */
  kvBytes: number;
  /** Memory read bandwidth measured right after this length's decode (GB/s, a streaming reduction in ORT). */
  bandwidthGBs: number;
  /** Bytes read per decoded token: the weights of every layer and the head, plus the KV cache. */
  decodeBytesPerToken: number;
  /** bandwidthGBs / decodeBytesPerToken: the decode rate memory bandwidth allows. */
  decodeBoundTokensPerSecond: number;
  /** Resident set size after this length's decode, cache still held. */
  rssBytes: number;
  /** Process-wide maximum RSS so far (includes every earlier length and the load). */
  peakRssBytes: number;
}

export interface BenchReport {
  label: string;
  model: string;
  architecture: string;
  config: {
    layers: number; hidden: number; heads: number; kvHeads: number; headDim: number; intermediate: number; vocab: number;
  };
  parameters: ParameterCount;
  /** Weight format of the linear layers. */
  dtype: WeightDtype;
  /** Weight bytes handed to ONNX Runtime (linears in `dtype`, norms, the embedding table as stored). */
  weightBytes: number;
  /** Of those, the bytes read per decoded token (all but the embedding table). */
  decodeWeightBytes: number;
  /** RSS right after loading (after a GC when node runs with --expose-gc). */
  loadRssBytes: number;
  threads: number;
  seed: number;
  loadSeconds: number;
  /** The reference matmul x [m, k] · Wᵀ, W [n, k]; `gflops` lists every rate measured, in order. */
  matmul: { m: number; k: number; n: number; what: string; threads: number; repeats: number; gflops: number[] };
  results: LengthResult[];
  machine: MachineInfo;
  date: string;
}

/** The machine a benchmark ran on, written into its JSON (and the captions of `fastkv report`). */
export interface MachineInfo { cpu: string; cores: number; totalMemoryBytes: number; node: string; platform: string }

export function machineInfo(): MachineInfo {
  return {
    cpu: os.cpus()[0]?.model ?? 'unknown', cores: os.availableParallelism(), totalMemoryBytes: os.totalmem(),
    node: process.version, platform: `${process.platform}-${process.arch}`,
  };
}

/**
 * FLOPs counted for a prefill of `n` tokens: 2 × (non-embedding parameters) × n for the projections, plus per
 * layer 2 × n² × headDim × query heads for causal attention (QKᵀ and AV, each n²/2 · headDim · heads multiply-adds).
 *
 * Non-embedding parameters are the per-layer weights (projections, biases, norms) plus the final norm. The
 * embedding lookup is a gather, and the LM head runs on the last row only (2 × vocab × hidden FLOPs, negligible
 * next to the rest), so neither is counted, tied or not. Norms, biases, RoPE and SwiGLU's element-wise work are
 * counted only through their parameters' 2 FLOPs per token, which understates them slightly: an honest
 * lower bound of the work done.
 */
export function prefillFlops(config: ModelConfig, n: number, nonEmbeddingParameters = countParameters(config).nonEmbedding): number {
  return 2 * nonEmbeddingParameters * n + config.numLayers * 2 * n * n * config.headDim * config.numHeads;
}

/** The largest projection the engine runs on every prompt row, as [rows of W, cols of W] = [n, k]. */
export function largestProjection(c: ModelConfig): { what: string; n: number; k: number } {
  const q = c.numHeads * c.headDim;
  const candidates = [
    { what: 'qkv', n: (c.numHeads + 2 * c.numKvHeads) * c.headDim, k: c.hiddenSize },
    { what: 'o_proj', n: c.hiddenSize, k: q },
    { what: 'gate+up', n: 2 * c.intermediateSize, k: c.hiddenSize },
    { what: 'down_proj', n: c.hiddenSize, k: c.intermediateSize },
  ];
  return candidates.reduce((a, b) => (b.n * b.k > a.n * a.k ? b : a));
}

/** Seeded prompt of `n` token ids in [0, vocab). */
export function randomPrompt(n: number, vocab: number, seed: number): Int32Array {
  const ids = new Int32Array(n);
  let s = ((seed >>> 0) ^ Math.imul(Math.floor(seed / 2 ** 32) >>> 0, 0x85ebca6b) ^ 0x5bd1e995) >>> 0;
  for (let i = 0; i < n; i++) {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    z = (z ^ (z >>> 16)) >>> 0;
    ids[i] = z % vocab;
  }
  return ids;
}

/**
 * Seconds spent in each graph between two calls, from the sessions' own run timers. A decode step runs each
 * whole layer (attention and MLP) in one decode graph; its time is reported under `attention`.
 */
function graphTimer(model: Model): () => Breakdown {
  let last = model.graphMs();
  return () => {
    const now = model.graphMs();
    const d = (k: keyof typeof now) => (now[k] - last[k]) / 1000;
    const out = { attention: d('attention') + d('decode'), mlp: d('mlp'), head: d('head'), other: 0 };
    last = now;
    return out;
  };
}

function rssNow(): number {
  return process.memoryUsage.rss();
}
/** maxRSS is in kilobytes (libuv's ru_maxrss). */
export function peakRss(): number {
  return process.resourceUsage().maxRSS * 1024;
}

/** Loads the checkpoint at `dir` (no tokenizer needed) and runs the benchmark. */
export async function runPrefillDecodeBench(dir: string, options: BenchOptions = {}): Promise<BenchReport> {
  const lengths = [...(options.lengths ?? DEFAULT_LENGTHS)];
  const decodeTokens = options.decodeTokens ?? DEFAULT_DECODE_TOKENS;
  const seed = options.seed ?? 0;
  const progress = options.onProgress ?? (() => {});
  if (lengths.length === 0) throw new RequestError('no prompt lengths to benchmark');
  for (const n of lengths) if (!Number.isSafeInteger(n) || n < 1) throw new RequestError(`prompt length must be a positive integer, got ${n}`);
  if (!Number.isSafeInteger(decodeTokens) || decodeTokens < 0) throw new RequestError(`decode tokens must be an integer >= 0, got ${decodeTokens}`);

  const t0 = performance.now();
  const model = await Model.load(dir, {
    threads: options.threads,
    dtype: options.dtype,
    withoutTokenizer: true,
    onProgress: (p) => progress(`loading ${p.stage}${p.total > 1 ? ` ${p.done}/${p.total}` : ''}`),
  });
  const loadSeconds = (performance.now() - t0) / 1000;
  (globalThis as { gc?: () => void }).gc?.();
  const loadRssBytes = rssNow();
  try {
    const c = model.config;
    for (const n of lengths) {
      if (n + decodeTokens > c.maxPositionEmbeddings) {
        throw new RequestError(`prompt length ${n} + ${decodeTokens} decode tokens exceeds max_position_embeddings ${c.maxPositionEmbeddings}`);
      }
    }
    const parameters = countParameters(c);
    const proj = largestProjection(c);
    const measure = async (when: string): Promise<MatmulRate> => {
      progress(`matmul rate ${when}: [${MATMUL_ROWS}, ${proj.k}] x [${proj.n}, ${proj.k}]^T (${proj.what})`);
      return measureMatmul(MATMUL_ROWS, proj.k, proj.n, model.threads, MATMUL_REPEATS);
    };
    const matmulRuns: number[] = [];

    const smallest = Math.min(...lengths);
    progress(`warm-up: prefill ${smallest} tokens`);
    {
      const ids = randomPrompt(smallest, c.vocabSize, (seed % 2 ** 32) + 1_000_003);
      const r = await prefill(model, ids, { decodeCapacity: 2 });
      const { invFreq } = ropeFrequencies(c, smallest + 2);
      let token = argmax(r.logits);
      for (let i = 0; i < 2; i++) token = argmax(await decodeStep(model, r.cache, token, r.nextPosition + i, invFreq));
    }

    const results: LengthResult[] = [];
    const takeGraphSeconds = graphTimer(model);
    {
      for (const n of lengths) {
        (globalThis as { gc?: () => void }).gc?.();
        const ids = randomPrompt(n, c.vocabSize, seed);
        // The reference rate brackets each prefill (measured just before and just after it): on a shared machine
        // the rate drifts, and the mean of the two is the best estimate of what ONNX Runtime reached meanwhile.
        const before = await measure(`before ${n} tokens`);
        progress(`${n} tokens: prefill`);
        takeGraphSeconds();
        const start = performance.now();
        const pre = await prefill(model, ids, { decodeCapacity: decodeTokens });
        const afterPrefill = performance.now();
        const seconds = takeGraphSeconds();
        let token = argmax(pre.logits);
        const firstToken = performance.now();
        const after = await measure(`after ${n} tokens`);
        const rate = (before.gflops + after.gflops) / 2;
        matmulRuns.push(before.gflops, after.gflops);
        const prefillSeconds = (afterPrefill - start) / 1000;
        const ttftSeconds = (firstToken - start) / 1000;

        const { invFreq } = ropeFrequencies(c, n + decodeTokens);
        const d0 = performance.now();
        for (let i = 0; i < decodeTokens; i++) {
          if (i % 8 === 0) progress(`${n} tokens: decode ${i}/${decodeTokens}`);
          token = argmax(await decodeStep(model, pre.cache, token, pre.nextPosition + i, invFreq));
        }
        const decodeSeconds = (performance.now() - d0) / 1000;
        const decodeGraphs = takeGraphSeconds();
        const rssAfterDecode = rssNow();
        progress(`${n} tokens: memory bandwidth`);
        const bandwidth = await measureBandwidth(model.threads);
        const decodeBytesPerToken = model.decodeWeightBytes + pre.cache.bytes;

        const flops = prefillFlops(c, n, parameters.nonEmbedding);
        const gflops = flops / prefillSeconds / 1e9;
        const inGraphs = seconds.attention + seconds.mlp + seconds.head;
        results.push({
          tokens: n,
          prefillSeconds,
          ttftSeconds,
          prefillTokensPerSecond: n / prefillSeconds,
          prefillFlops: flops,
          prefillGflops: gflops,
          matmulGflops: rate,
          matmulBeforeAfter: [before.gflops, after.gflops],
          percentOfMatmul: (100 * gflops) / rate,
          prefillBreakdown: { ...seconds, other: Math.max(0, prefillSeconds - inGraphs) },
          decodeTokens,
          decodeSeconds,
          decodeTokensPerSecond: decodeTokens > 0 ? decodeTokens / decodeSeconds : 0,
          decodeBreakdown: {
            ...decodeGraphs,
            other: Math.max(0, decodeSeconds - decodeGraphs.attention - decodeGraphs.mlp - decodeGraphs.head),
          },
          kvBytes: pre.cache.bytes,
          bandwidthGBs: bandwidth.gbPerSecond,
          decodeBytesPerToken,
          decodeBoundTokensPerSecond: (bandwidth.gbPerSecond * 1e9) / decodeBytesPerToken,
          rssBytes: rssAfterDecode,
          peakRssBytes: peakRss(),
        });
      }
    }

    const matmul = { m: MATMUL_ROWS, k: proj.k, n: proj.n, what: proj.what, threads: model.threads, repeats: MATMUL_REPEATS, gflops: matmulRuns };
    return {
      label: options.label ?? model.config.architecture,
      model: model.dir,
      architecture: c.architecture,
      config: {
        layers: c.numLayers, hidden: c.hiddenSize, heads: c.numHeads, kvHeads: c.numKvHeads, headDim: c.headDim,
        intermediate: c.intermediateSize, vocab: c.vocabSize,
      },
      parameters,
      dtype: model.dtype,
      weightBytes: model.weightBytes,
      decodeWeightBytes: model.decodeWeightBytes,
      loadRssBytes,
      threads: model.threads,
      seed,
      loadSeconds,
      matmul,
      results,
      machine: machineInfo(),
      date: new Date().toISOString(),
    };
  } finally {
    await model.dispose();
  }
}

// ---- output ---------------------------------------------------------------------------------------------------

const MiB = 1024 * 1024;

function fmt(x: number, digits: number): string {
  return x.toFixed(digits);
}


export function formatReport(r: BenchReport): string {
  const c = r.config;
  const lines = [
    `model     ${r.label} (${r.architecture}: ${c.layers} layers, hidden ${c.hidden}, ${c.heads}/${c.kvHeads} heads x ${c.headDim}, MLP ${c.intermediate}, vocab ${c.vocab})`,
    `          ${r.model}`,
    `params    ${(r.parameters.total / 1e6).toFixed(1)}M (${(r.parameters.nonEmbedding / 1e6).toFixed(1)}M non-embedding); dtype ${r.dtype}: weights ${(r.weightBytes / MiB).toFixed(0)} MiB (${(r.decodeWeightBytes / MiB).toFixed(0)} MiB read per token); loaded in ${r.loadSeconds.toFixed(1)} s, RSS after load ${(r.loadRssBytes / MiB).toFixed(0)} MiB`,
    `machine   ${r.machine.cpu}, ${r.machine.cores} cores; ${r.threads} ORT threads; ${r.machine.node}`,
    `matmul    [${r.matmul.m}, ${r.matmul.k}] x [${r.matmul.n}, ${r.matmul.k}]^T (${r.matmul.what}, Gemm transB), median of ${r.matmul.repeats}, measured before and after each prefill`,
    '',
  ];
  const headers = [
    'tokens', 'TTFT s', 'prefill tok/s', 'GFLOP/s', 'matmul before/after', '% matmul', 'attn s', 'mlp s', 'other s',
    'decode tok/s', 'GB/s', 'bound tok/s', '% bound', 'KV MiB', 'RSS MiB', 'peak RSS MiB',
  ];
  const rows: string[][] = [];
  for (const x of r.results) {
    rows.push([
      String(x.tokens), fmt(x.ttftSeconds, 2), fmt(x.prefillTokensPerSecond, 0), fmt(x.prefillGflops, 1),
      `${fmt(x.matmulBeforeAfter[0], 0)}/${fmt(x.matmulBeforeAfter[1], 0)}`, `${fmt(x.percentOfMatmul, 0)}%`, fmt(x.prefillBreakdown.attention, 2), fmt(x.prefillBreakdown.mlp, 2),
      fmt(x.prefillBreakdown.other + x.prefillBreakdown.head, 2), x.decodeTokens > 0 ? fmt(x.decodeTokensPerSecond, 2) : '-',
      fmt(x.bandwidthGBs, 1), fmt(x.decodeBoundTokensPerSecond, 1),
      x.decodeTokens > 0 ? `${fmt((100 * x.decodeTokensPerSecond) / x.decodeBoundTokensPerSecond, 0)}%` : '-',
      fmt(x.kvBytes / MiB, 1), fmt(x.rssBytes / MiB, 0), fmt(x.peakRssBytes / MiB, 0),
    ]);
  }
  lines.push(formatTable(headers, rows).trimEnd());
  lines.push('', 'GFLOP/s counts 2 x non-embedding params x tokens + 2 x tokens^2 x headDim x heads per layer (causal attention).',
    '% matmul: prefill GFLOP/s over the mean of the matmul rates measured just before and after that prefill.',
    'attn s / mlp s: prefill time in the attention graphs (norm, QKV, RoPE; GQA) and the MLP graph (o_proj, MLP); other: head + JS work.',
    'GB/s: memory read bandwidth measured after each decode (ReduceSum streaming 512 MiB); bound tok/s = GB/s / bytes read per',
    'token (weights of every layer and the head + KV cache); % bound: decode tok/s over that bound.');
  return `${lines.join('\n')}\n`;
}
