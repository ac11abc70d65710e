/**
 * The method comparison of the FastKV paper, on one machine in one run: for each prompt length, time to first
 * token and decode throughput of every method against full KV, with the speedup that arithmetic allows beside
 * each measured one:
 * - TTFT bound = full's prefill FLOPs / the method's, from the rows each layer actually processed (FastKV's
 *   propagation, GemFilter's two passes);
 * - decode bound = (weight bytes + full KV bytes) / (weight bytes + the method's KV bytes), decoding being a
 *   read of every weight and every cache entry per token.
 * Also the KV bytes kept and the share of prefill time spent scoring and selecting.
 * @module
 */
import type { Model } from '../engine/model.js';
import { GREEDY, generate } from '../engine/generate.js';
import type { LayerStats } from '../engine/forward.js';
import type { ModelConfig } from '../model/config.js';
import type { CompressionSpec } from '../compress/registry.js';
import { formatTable } from '../report.js';
import { randomPrompt } from './prefill-decode.js';

export interface MethodsBenchOptions {
  lengths: readonly number[];
  /** The methods to compare; full is added first if missing (it is the baseline). */
  methods: readonly CompressionSpec[];
  /** Greedy tokens decoded after prefill (default 128, as the paper's throughput runs). */
  decodeTokens?: number;
  seed?: number;
  onProgress?: (text: string) => void;
}

export interface MethodResult {
  tokens: number;
  method: string;
  /** The spec as given (method and options). */
  spec: CompressionSpec;
  ttftSeconds: number;
  ttftSpeedup: number;
  ttftBound: number;
  decodeTokensPerSecond: number;
  decodeSpeedup: number;
  decodeBound: number;
  kvBytes: number;
  /** Scoring and selection time over prefill time. */
  policyShare: number;
  prefillFlops: number;
  /** Rows each prefill layer processed and entries it kept per KV head. */
  layers: LayerStats[];
}

/** Parameters of one decoder layer. */
function layerParameters(c: ModelConfig): number {
  const qkvRows = (c.numHeads + 2 * c.numKvHeads) * c.headDim;
  return c.hiddenSize * qkvRows + (c.qkvBias ? qkvRows : 0) + c.hiddenSize * c.numHeads * c.headDim
    + 3 * c.hiddenSize * c.intermediateSize + 2 * c.hiddenSize + (c.qkNorm ? 2 * c.headDim : 0);
}

/** FLOPs of a prefill from the rows each layer processed: 2·params·rows + 2·rows²·headDim·heads (causal attention). */
export function flopsOfLayers(c: ModelConfig, layers: readonly LayerStats[]): number {
  const p = layerParameters(c);
  return layers.reduce((sum, l) => sum + 2 * p * l.rows + 2 * l.rows * l.rows * c.headDim * c.numHeads, 0);
}

export async function runMethodsBench(model: Model, options: MethodsBenchOptions): Promise<MethodResult[]> {
  const c = model.config;
  const decodeTokens = options.decodeTokens ?? 128;
  const progress = options.onProgress ?? (() => {});
  const methods = options.methods.some((m) => m.method === 'full') ? [...options.methods] : [{ method: 'full' }, ...options.methods];
  methods.sort((a, b) => Number(b.method === 'full') - Number(a.method === 'full'));
  // Bytes a decode step reads besides the cache: every layer's weights and the head, in the model's dtype.
  const weightBytes = model.decodeWeightBytes;

  // Warm-up, not timed: each method once on a short prompt (graph creation, first runs), then full once at the
  // first length, so that the first timed run does not pay for growing the process's memory alone.
  const warm = randomPrompt(Math.min(256, ...options.lengths), c.vocabSize, 7);
  for (const spec of methods) await generate(model, { ids: warm }, { ...GREEDY, compression: spec, maxTokens: 2, ignoreEos: true, maxContext: Number.MAX_SAFE_INTEGER });
  progress('warm-up: full at the first length');
  await generate(model, { ids: randomPrompt(options.lengths[0], c.vocabSize, 7) }, { ...GREEDY, maxTokens: 2, ignoreEos: true, maxContext: Number.MAX_SAFE_INTEGER });

  const results: MethodResult[] = [];
  for (const n of options.lengths) {
    const ids = randomPrompt(n, c.vocabSize, options.seed ?? 0);
    let full: MethodResult | undefined;
    for (const spec of methods) {
      progress(`${n} tokens: ${spec.method}`);
      const r = await generate(model, { ids }, {
        ...GREEDY, compression: spec, maxTokens: decodeTokens, ignoreEos: true, maxContext: Number.MAX_SAFE_INTEGER,
        onPrefillLayer: (l, L, rows) => progress(`${n} tokens: ${spec.method}: prefill layer ${l + 1}/${L} (${rows} rows)`),
      });
      const t = r.timings;
      const flops = flopsOfLayers(c, r.layers);
      const ttftSeconds = t.timeToFirstTokenMs / 1000;
      const kvBytes = t.kvCacheBytesAfterPrefill;
      const row: MethodResult = {
        tokens: n, method: spec.method, spec, ttftSeconds,
        ttftSpeedup: full ? full.ttftSeconds / ttftSeconds : 1,
        ttftBound: full ? full.prefillFlops / flops : 1,
        decodeTokensPerSecond: t.decodeTokensPerSecond,
        decodeSpeedup: full ? t.decodeTokensPerSecond / full.decodeTokensPerSecond : 1,
        decodeBound: full ? (weightBytes + full.kvBytes) / (weightBytes + kvBytes) : 1,
        kvBytes,
        policyShare: t.policyMs / t.timeToFirstTokenMs,
        prefillFlops: flops,
        layers: r.layers,
      };
      full ??= row;
      results.push(row);
    }
  }
  return results;
}

const MiB = 1024 * 1024;

export function formatMethods(results: readonly MethodResult[]): string {
  const pct = (x: number) => `${(100 * x).toFixed(0)}%`;
  const rows = results.map((r) => [
    String(r.tokens), r.method, r.ttftSeconds.toFixed(2), `${r.ttftSpeedup.toFixed(2)}x`, `${r.ttftBound.toFixed(2)}x`,
    pct(r.ttftSpeedup / r.ttftBound), r.decodeTokensPerSecond.toFixed(2), `${r.decodeSpeedup.toFixed(2)}x`,
    `${r.decodeBound.toFixed(2)}x`, pct(r.decodeSpeedup / r.decodeBound), (r.kvBytes / MiB).toFixed(1), `${(100 * r.policyShare).toFixed(2)}%`,
  ]);
  // The paper's headline comparison (v1 abstract): FastKV's time to first token against HeadKV's.
  const headline = [...new Set(results.map((r) => r.tokens))].flatMap((n) => {
    const fast = results.find((r) => r.tokens === n && r.method === 'fastkv');
    const head = results.find((r) => r.tokens === n && r.method === 'headkv');
    return fast && head ? [`FastKV TTFT speedup over HeadKV at ${n} tokens: ${(head.ttftSeconds / fast.ttftSeconds).toFixed(2)}x (decode: ${(fast.decodeTokensPerSecond / head.decodeTokensPerSecond).toFixed(2)}x)\n`] : [];
  }).join('');
  return formatTable(['tokens', 'method', 'TTFT s', 'TTFT speedup', 'bound', 'of bound', 'decode tok/s', 'decode speedup',
    'bound', 'of bound', 'KV MiB', 'scoring % of prefill'], rows)
    + '\nTTFT bound: full prefill FLOPs / the method\'s, from the rows each layer processed (2·params·rows + 2·rows²·headDim·heads).\n'
    + 'decode bound: (weight bytes + full KV bytes) / (weight bytes + kept KV bytes), weights in the model\'s dtype, KV f32.\n'
    + 'scoring: time inside the policy (window scores on ONNX Runtime, top-k and gathers in JS) over time to first token.\n'
    + headline;
}
