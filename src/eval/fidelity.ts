/**
 * Label-free fidelity of a compressed KV cache: prefill a context of N tokens under a method's policy, then
 * teacher-force the next M tokens of the same text and compare the M next-token distributions with those of
 * the full cache. Per method: top-1 agreement with full (share of positions where both pick the same token),
 * mean KL(full ‖ method) in nats, and the perplexity of the continuation under the method. Needs no labels, so
 * it works for any model and any text.
 *
 * The first row comes from prefill's logits (predicting continuation token 0); each decode step then feeds
 * continuation token j at position nextPosition + j (the method's positions: GemFilter's are compacted) and
 * gives the row that predicts token j + 1.
 * @module
 */
import { RequestError } from '../errors.js';
import { resolvePolicy } from '../compress/registry.js';
import { decodeStep, prefill } from '../engine/forward.js';
import type { Model } from '../engine/model.js';
import { ropeFrequencies } from '../model/config.js';
import type { Tokenizer } from '../model/tokenizer.js';
import { mean, type MethodColumn } from './niah.js';

export interface FidelityWindow {
  /** [N] the context, BOS first where the tokenizer adds one. */
  context: Int32Array;
  /** [M] the tokens that follow it in the text. */
  continuation: Int32Array;
}

export interface FidelityWindowOptions {
  /** N: context tokens (BOS included). */
  context: number;
  /** M: continuation tokens, >= 1. */
  continuation: number;
  /** Windows taken one after another from the text (default 1). */
  windows?: number;
}

/**
 * Cuts the text's tokens into `windows` consecutive (context, continuation) windows, each context starting with
 * the tokenizer's BOS (if it adds one).
 * @throws RequestError naming --text, --context or --continuation when the text is too short or a size is bad.
 */
export function fidelityWindows(tokenizer: Tokenizer, text: string, o: FidelityWindowOptions): FidelityWindow[] {
  const windows = o.windows ?? 1;
  if (!Number.isInteger(o.context) || o.context < 2) throw new RequestError(`--context must be an integer >= 2, got ${o.context}`);
  if (!Number.isInteger(o.continuation) || o.continuation < 1) throw new RequestError(`--continuation must be an integer >= 1, got ${o.continuation}`);
  if (!Number.isInteger(windows) || windows < 1) throw new RequestError(`--windows must be an integer >= 1, got ${windows}`);
  const bare = tokenizer.encode('a', { addSpecialTokens: false });
  const withSpecial = tokenizer.encode('a');
  const prefix = withSpecial.slice(0, Math.max(0, withSpecial.indexOf(bare[0])));
  const per = o.context - prefix.length + o.continuation;
  // Only as much of the text as the windows need is tokenized: a huge --text costs what the windows cost.
  const ids = tokenizer.encodePrefix(text, per * windows);
  if (ids.length < per * windows) {
    throw new RequestError(`--text has ${ids.length} tokens; ${windows} window(s) of --context ${o.context} + --continuation ${o.continuation} need ${per * windows}`);
  }
  return Array.from({ length: windows }, (_, w) => {
    const start = w * per;
    const ctx = ids.slice(start, start + o.context - prefix.length);
    return {
      context: Int32Array.from([...prefix, ...ctx]),
      continuation: Int32Array.from(ids.slice(start + ctx.length, start + per)),
    };
  });
}

/** log-softmax of a logits row, in float64 (max subtracted first). */
export function logSoftmax(logits: ArrayLike<number>): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i] > max) max = logits[i];
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i] - max);
  const lse = max + Math.log(sum);
  const out = new Float64Array(logits.length);
  for (let i = 0; i < logits.length; i++) out[i] = logits[i] - lse;
  return out;
}

/** KL(p ‖ q) from log-probabilities, in nats. Terms with p = 0 contribute 0. */
export function klDivergence(logP: Float64Array, logQ: Float64Array): number {
  let kl = 0;
  for (let i = 0; i < logP.length; i++) {
    const p = Math.exp(logP[i]);
    if (p > 0) kl += p * (logP[i] - logQ[i]);
  }
  return Math.max(0, kl);
}

function argmaxF64(a: Float64Array): number {
  let best = 0;
  for (let i = 1; i < a.length; i++) if (a[i] > a[best]) best = i;
  return best;
}

/**
 * The M next-token logits rows of a window under one compression spec (or full): prefill, then teacher-forced
 * decode steps. Also returns the cache entries kept per KV head, per layer, after prefill.
 */
export async function continuationLogits(model: Model, window: FidelityWindow, spec: MethodColumn['spec'] | undefined): Promise<{ rows: Float32Array[]; kept: number[] }> {
  const M = window.continuation.length;
  const pre = await prefill(model, window.context, { policy: resolvePolicy(spec, model.config), decodeCapacity: M });
  // GemFilter reports its discarded first pass too; the last numLayers entries describe the cache kept.
  const kept = pre.layers.slice(-model.config.numLayers).map((l) => l.kept);
  const { invFreq } = ropeFrequencies(model.config, pre.nextPosition + M);
  const rows: Float32Array[] = [Float32Array.from(pre.logits.subarray(0, model.config.vocabSize))];
  for (let j = 0; j < M - 1; j++) {
    rows.push(await decodeStep(model, pre.cache, window.continuation[j], pre.nextPosition + j, invFreq));
  }
  return { rows, kept };
}

export interface FidelityScores {
  /** Share of positions where the method's top-1 token equals full's, in percent. */
  top1Agreement: number;
  /** Mean over positions of KL(full ‖ method), nats. */
  meanKL: number;
  /** exp(mean negative log-likelihood of the continuation) under the method. */
  perplexity: number;
  /** Mean over layers and windows of cache entries kept per KV head / context tokens, in percent. */
  keptPercent: number;
  positions: number;
}

export interface FidelityResult {
  columns: string[];
  context: number;
  continuation: number;
  windows: number;
  scores: Record<string, FidelityScores>;
}

export interface FidelityRunOptions {
  /** Longest context + continuation allowed (default max_position_embeddings). */
  maxContext?: number;
  /**
   * The model whose full-cache run is the reference (default `model` itself): e.g. the same checkpoint at fp32,
   * to measure what q8/q4 weights cost, alone (column full) or with compression.
   */
  reference?: Model;
}

/** Runs full once per window as the reference, then every column; `onStep` after each (window, column). */
export async function runFidelity(
  model: Model, columns: readonly MethodColumn[], windows: readonly FidelityWindow[], o: FidelityRunOptions = {},
  onStep: (note: string) => void = () => {},
): Promise<FidelityResult> {
  if (windows.length === 0) throw new RequestError('fidelity needs at least one window');
  const N = windows[0].context.length;
  const M = windows[0].continuation.length;
  const limit = o.maxContext ?? model.config.maxPositionEmbeddings;
  if (N + M > limit) {
    throw new RequestError(`--context ${N} + --continuation ${M} = ${N + M} tokens, more than the limit of ${limit} ` +
      `(max_position_embeddings in config.json; raise it with --max-context at your own risk)`);
  }
  const acc = new Map<string, { agree: number; kl: number; nll: number; kept: number[]; n: number }>();
  for (const col of columns) acc.set(col.label, { agree: 0, kl: 0, nll: 0, kept: [], n: 0 });
  for (const window of windows) {
    const reference = (await continuationLogits(o.reference ?? model, window, undefined)).rows.map(logSoftmax);
    const refTop = reference.map(argmaxF64);
    onStep('reference');
    for (const col of columns) {
      const a = acc.get(col.label)!;
      const { rows, kept } = await continuationLogits(model, window, col.spec);
      rows.forEach((row, j) => {
        const lq = logSoftmax(row);
        if (argmaxF64(lq) === refTop[j]) a.agree++;
        a.kl += klDivergence(reference[j], lq);
        a.nll -= lq[window.continuation[j]];
        a.n++;
      });
      a.kept.push(...kept.map((k) => (100 * k) / window.context.length));
      onStep(col.label);
    }
  }
  const scores: Record<string, FidelityScores> = {};
  for (const col of columns) {
    const a = acc.get(col.label)!;
    scores[col.label] = {
      top1Agreement: (100 * a.agree) / a.n, meanKL: a.kl / a.n, perplexity: Math.exp(a.nll / a.n),
      keptPercent: mean(a.kept), positions: a.n,
    };
  }
  return { columns: columns.map((c) => c.label), context: N, continuation: M, windows: windows.length, scores };
}
