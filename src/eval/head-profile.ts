/**
 * Head-importance profiling for HeadKV: which attention heads retrieve (and reason over) information from the
 * context. Reference: FYYFU/HeadKV `Important_Head/retrieval_head_detection_r2.py` ("retrieval-reasoning
 * heads", `baselines.md` §2.4), itself after Wu et al.'s retrieval-head detection (arXiv 2404.15574).
 *
 * For each needle prompt (the NIAH generator: a haystack the user names or the built-in one, a needle at a
 * spread of depths), the model answers greedily with the full cache. Only samples it answers correctly (token
 * F1 > 0.5 against the expected answer) count. For each answer step, every (layer, query head)'s attention from
 * the query producing that token is taken; of its top-k positions (k = the needle's length in tokens), each
 * one inside the needle span adds its attention weight / k to the head's score for the sample. A head's list
 * holds its score per counted sample; HeadKV ranks by the list's mean. Output: HeadKV's JSON format,
 * `"layer-head": [scores...]`.
 *
 * Deviations: the needles are this project's NIAH presets (the reference's detection haystack and reasoning
 * needles are not bundled); the attention is recomputed by ONNX Runtime from one prefill of prompt + answer (the
 * same values the decode steps attend with); correctness uses LongBench's token F1 (the reference: ROUGE-based
 * F1 > 50).
 * @module
 */
import fs from 'node:fs';
import path from 'node:path';
import { RequestError } from '../errors.js';
import type { Model } from '../engine/model.js';
import { prefill } from '../engine/forward.js';
import { createScorer, type WindowScoreRequest } from '../compress/scoring.js';
import type { CompressionPolicy } from '../compress/policy.js';
import { topK } from '../compress/select.js';
import { SafetensorsStore } from '../model/safetensors.js';
import { writeSafetensors, type TensorToWrite } from '../model/safetensors-write.js';
import type { Haystack } from './haystack.js';
import { qaF1 } from './metrics.js';
import { answerPrompt, niahCases, resolveNiahOptions, type NiahCase } from './niah.js';

export interface HeadProfileOptions {
  haystack: Haystack;
  /** Needle prompts, at depths spread evenly over 0..100% (default 10). */
  samples?: number;
  /** Tokens per prompt, answer budget included. */
  length: number;
  /** NIAH preset of the needle, question and template (default "reference"). */
  preset?: string;
  seed?: number;
  /** Called after each sample. */
  onSample?: (done: number, total: number, counted: number) => void;
}

export interface HeadProfile {
  /** [layer][query head]: the head's score in each counted sample. */
  scores: number[][][];
  /** Samples answered correctly (the ones counted) and samples run. */
  counted: number;
  total: number;
}

/** The last query row's attention over every key, per query head, as probabilities. */
const LAST_QUERY_ATTENTION = (headDim: number): WindowScoreRequest => ({
  window: 1, softmax: true, scale: 1 / Math.sqrt(headDim), aggregate: 'sum', pooling: 'none', kernel: 1,
  groupReduce: 'none', includeWindowKeys: true,
});

/**
 * Adds one sample's scores: attention of the queries at prompt rows N−1 .. N−1+A−1 (the ones that produced the
 * A answer tokens), recomputed from a prefill of the prompt and the answer's first A−1 tokens.
 */
async function sampleScores(model: Model, c: NiahCase, answerIds: readonly number[]): Promise<Float64Array[]> {
  const cfg = model.config;
  const { numLayers: L, numHeads: H, numKvHeads: Hkv, headDim: d } = cfg;
  const N = c.prompt.ids.length;
  const A = answerIds.length;
  const k = c.needleLength;
  const start = c.needleOffset;
  const scores = Array.from({ length: L }, () => new Float64Array(H));
  const request = LAST_QUERY_ATTENTION(d);
  const recorder: CompressionPolicy = {
    name: 'head-profile',
    queryWindow: A,
    begin: () => ({
      async layer({ layer, numRows: n, keys, windowQueries }) {
        const qWidth = H * d;
        for (let s = 0; s < A; s++) {
          // The query of row N−1+s sees keys 0..N−1+s: a prefix of every KV head's keys.
          const visible = N + s;
          const prefixKeys = new Float32Array(Hkv * visible * d);
          for (let h = 0; h < Hkv; h++) prefixKeys.set(keys.subarray(h * n * d, (h * n + visible) * d), h * visible * d);
          const query = windowQueries.subarray(s * qWidth, (s + 1) * qWidth);
          const attention = await createScorer(model, prefixKeys, visible, query).window(request); // [H, visible]
          for (let h = 0; h < H; h++) {
            const row = attention.data.subarray(h * visible, (h + 1) * visible);
            for (const j of topK(row, k)) if (j >= start && j < start + k) scores[layer][h] += row[j] / k;
          }
        }
        return { kind: 'keep', keep: null };
      },
    }),
  };
  await prefill(model, Int32Array.from([...c.prompt.ids, ...answerIds.slice(0, A - 1)]), { policy: recorder });
  return scores;
}

/** Runs the needle prompts and returns every head's per-sample scores. */
export async function profileHeads(model: Model, options: HeadProfileOptions): Promise<HeadProfile> {
  const samples = options.samples ?? 10;
  if (!Number.isInteger(samples) || samples < 1) throw new RequestError(`--samples must be an integer >= 1, got ${samples}`);
  const { numLayers: L, numHeads: H } = model.config;
  const depths = Array.from({ length: samples }, (_, i) => (samples === 1 ? 50 : Math.round((100 * i) / (samples - 1))));
  const niah = { haystack: options.haystack, lengths: [options.length], depths, preset: options.preset, seed: options.seed ?? 42 };
  const { maxTokens, stop } = resolveNiahOptions(niah);
  const cases = niahCases(model.tokenizer, niah);
  const scores = Array.from({ length: L }, () => Array.from({ length: H }, () => [] as number[]));
  let counted = 0;
  for (const [i, c] of cases.entries()) {
    const r = await answerPrompt(model, c.prompt, { method: 'full' }, { maxTokens, stop, maxContext: c.length });
    if (c.needleOffset >= 0 && r.outputIds.length > 0 && qaF1(r.text, c.answer) > 0.5) {
      const s = await sampleScores(model, c, r.outputIds);
      for (let l = 0; l < L; l++) for (let h = 0; h < H; h++) scores[l][h].push(s[l][h]);
      counted++;
    }
    options.onSample?.(i + 1, cases.length, counted);
  }
  return { scores, counted, total: cases.length };
}

/** Heads by mean score, highest first. */
export function rankHeads(scores: readonly (readonly (readonly number[])[])[]): { layer: number; head: number; score: number }[] {
  const out: { layer: number; head: number; score: number }[] = [];
  scores.forEach((heads, layer) => heads.forEach((list, head) => {
    out.push({ layer, head, score: list.length === 0 ? 0 : list.reduce((a, b) => a + b, 0) / list.length });
  }));
  // Stable: equal scores keep (layer, head) order.
  return out.sort((a, b) => b.score - a.score);
}

/**
 * The `n` lowest-ranked heads outside layer 0, lowest last: the control set for an ablation. Layer 0's heads
 * score near zero for retrieval, yet every later head reads through them (on retrieval-3M, silencing a single
 * layer-0 head drops NIAH from 100% to 50–67%), so silencing them measures something other than retrieval.
 */
export function bottomHeads<T extends { layer: number }>(ranked: readonly T[], n: number): T[] {
  const deeper = ranked.filter((h) => h.layer > 0);
  return (deeper.length >= n ? deeper : ranked).slice(-n);
}

/**
 * Writes a copy of a Llama-family checkpoint (f32) in which the listed query heads are silenced: their columns
 * of o_proj are zero, so they contribute nothing to the residual stream. Config and tokenizer files are copied.
 * For measuring whether heads matter (ablation), never for inference.
 */
export function writeHeadMaskedCheckpoint(srcDir: string, dstDir: string, heads: readonly { layer: number; head: number }[], headDim: number): void {
  fs.mkdirSync(dstDir, { recursive: true });
  for (const f of fs.readdirSync(srcDir)) {
    if (f.endsWith('.json') && !f.endsWith('.index.json')) fs.copyFileSync(path.join(srcDir, f), path.join(dstDir, f));
  }
  const store = SafetensorsStore.open(srcDir);
  const tensors: TensorToWrite[] = store.names().map((name) => {
    const { shape } = store.info(name);
    const data = store.readF32(name);
    const m = /^model\.layers\.(\d+)\.self_attn\.o_proj\.weight$/.exec(name);
    if (m) {
      const cols = shape[1];
      for (const { layer, head } of heads) {
        if (layer !== Number(m[1])) continue;
        for (let r = 0; r < shape[0]; r++) data.fill(0, r * cols + head * headDim, r * cols + (head + 1) * headDim);
      }
    }
    return { name, dtype: 'F32', shape: [...shape], data };
  });
  writeSafetensors(path.join(dstDir, 'model.safetensors'), tensors);
}
