/**
 * HeadKV (ReasonKV, arXiv 2410.19258): head-level budgets from offline head-importance scores, then SnapKV's
 * window scoring inside each head. Heads that matter for retrieval and reasoning get more cache, the rest less.
 * Reference: FYYFU/HeadKV and KVCache-Factory `HeadKVCluster` (`baselines.md` §2.4). With the score of each
 * (layer, query head) = the mean of its list in the score file, normalised over all L·H heads (raised to the
 * power `temp`, renormalised):
 *
 *   pool = (B // β) · L · H;  base = B − B // β;  cap[l, h] = round(score[l, h] · pool + base)
 *
 * prefix tokens plus the window (so a head averages about B + w entries, as in KVCache-Factory). KV-head mode: a
 * KV head's capacity is the mean of its group's query-head capacities, rounded half to even (Python `round`).
 * Window scores summed over each KV group's query heads before pooling. Defaults β = 1.01, temp 1, window 8,
 * kernel 7, maxpool. Scores come from a JSON file in the HeadKV repository's format (`"layer-head": [scores]`,
 * query-head indices), e.g. written by `fastkv profile-heads`.
 * Deviations: fp32 scores; a head's capacity is capped at the prefix it has.
 */
import fs from 'node:fs';
import { ConfigError } from '../errors.js';
import { writeFileAtomic } from '../files.js';
import type { ModelConfig } from '../model/config.js';
import { entriesFor, parseBudget, parseWindowOptions, type BudgetOptions, type WindowOptions } from './budget.js';
import type { CompressionPolicy } from './policy.js';
import { checkBeta } from './pyramidkv.js';
import { snapScoring } from './scoring.js';
import { keepTopAndWindowPerHead, roundHalfEven } from './select.js';

export interface HeadKVOptions extends BudgetOptions, WindowOptions {
  /** Path of the head-score JSON (`"layer-head": [scores...]`). Required. */
  headScores?: string;
  /** β: B // β of every head's budget goes to the shared pool (reference `beta`, default 1.01). */
  beta?: number;
  /** Exponent applied to the normalised head scores (reference `temp`, default 1). */
  temp?: number;
}

/** Largest head-score file read (a 128-layer, 128-head model with long lists is well under this). */
const MAX_SCORE_FILE_BYTES = 64 << 20;

export const PROFILE_HINT = 'make one with `fastkv profile-heads --model DIR --out FILE` and pass it with --head-scores FILE';

/**
 * Reads a head-score file for a model with `layers` layers of `heads` query heads: [layers][heads] mean scores.
 * Every problem is a ConfigError naming the file.
 */
export function readHeadScores(file: string, layers: number, heads: number): Float64Array[] {
  const fail = (problem: string): never => { throw new ConfigError(`headkv: head-score file "${file}" ${problem}`); };
  let stat: fs.Stats;
  try { stat = fs.statSync(file); } catch { return fail(`does not exist; ${PROFILE_HINT}`); }
  if (!stat.isFile()) fail('is not a regular file');
  if (stat.size > MAX_SCORE_FILE_BYTES) fail(`is ${stat.size} bytes, more than the ${MAX_SCORE_FILE_BYTES} allowed`);
  let parsed: unknown;
  try { parsed = JSON.parse(fs.readFileSync(file, 'utf8')); } catch (e) { return fail(`is not valid JSON (${(e as Error).message.slice(0, 200)})`); }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return fail('must be a JSON object of "layer-head": [scores] entries');
  const scores = Array.from({ length: layers }, () => new Float64Array(heads).fill(NaN));
  for (const [key, value] of Object.entries(parsed)) {
    const m = /^(0|[1-9]\d{0,5})-(0|[1-9]\d{0,5})$/.exec(key);
    const shown = JSON.stringify(key.slice(0, 40));
    if (!m) fail(`has key ${shown}; keys must be "layer-head"`);
    const [l, h] = [Number(m![1]), Number(m![2])];
    if (l >= layers || h >= heads) fail(`has key ${shown} but the model has ${layers} layers of ${heads} query heads (a file for another model?)`);
    if (!Array.isArray(value) || value.length === 0 || !value.every((x) => typeof x === 'number' && Number.isFinite(x) && x >= 0)) {
      fail(`entry ${shown} must be a non-empty list of finite non-negative numbers`);
    }
    const list = value as number[];
    scores[l][h] = list.reduce((a, b) => a + b, 0) / list.length;
  }
  for (let l = 0; l < layers; l++) {
    for (let h = 0; h < heads; h++) if (Number.isNaN(scores[l][h])) fail(`has no entry "${l}-${h}" (the model has ${layers} layers of ${heads} query heads; a file for another model?)`);
  }
  return scores;
}

/**
 * Writes a head-score file in HeadKV's format: `"layer-head": scores(layer, head)` for every query head, through
 * a temporary file renamed into place.
 */
export function writeHeadScores(file: string, layers: number, heads: number, scores: (layer: number, head: number) => readonly number[]): void {
  const out: Record<string, readonly number[]> = {};
  for (let l = 0; l < layers; l++) for (let h = 0; h < heads; h++) out[`${l}-${h}`] = scores(l, h);
  writeFileAtomic(file, `${JSON.stringify(out)}\n`);
}

/**
 * Prefix-token capacities [layers][kvHeads] for budget B: HeadKV's pool formula per query head, then each KV
 * head gets its group's mean, rounded half to even.
 */
export function headCapacities(scores: readonly Float64Array[], B: number, beta: number, temp: number, kvHeads: number): Int32Array[] {
  const layers = scores.length;
  const heads = scores[0].length;
  let total = 0;
  for (const s of scores) for (const x of s) total += x;
  // Normalise, raise to temp, renormalise (all-zero scores: every head equal).
  const powered = scores.map((s) => Float64Array.from(s, (x) => (total > 0 ? x / total : 1 / (layers * heads)) ** temp));
  let sum = 0;
  for (const s of powered) for (const x of s) sum += x;
  const share = Math.floor(B / beta);
  const pool = share * layers * heads;
  const base = B - share;
  const G = heads / kvHeads;
  return powered.map((s) => {
    const perQuery = Array.from(s, (x) => roundHalfEven((x / sum) * pool + base));
    return Int32Array.from({ length: kvHeads }, (_, k) => {
      let m = 0;
      for (let g = 0; g < G; g++) m += perQuery[k * G + g];
      return roundHalfEven(m / G);
    });
  });
}

export function headkv(options: HeadKVOptions, config: ModelConfig): CompressionPolicy {
  const { windowSize: w, kernelSize, pooling } = parseWindowOptions('headkv', options);
  const budget = parseBudget('headkv', options, w, { kind: 'rate', rate: 0.1 });
  const beta = checkBeta('headkv', options.beta, 1.01);
  const temp = options.temp ?? 1;
  if (typeof temp !== 'number' || !Number.isFinite(temp) || temp <= 0) throw new ConfigError(`headkv: temp must be a number > 0, got ${String(temp)}`);
  if (options.headScores === undefined) throw new ConfigError(`headkv needs head-importance scores: ${PROFILE_HINT}`);
  if (typeof options.headScores !== 'string') throw new ConfigError(`headkv: headScores must be a file path, got ${typeof options.headScores}`);
  const scores = readHeadScores(options.headScores, config.numLayers, config.numHeads);
  const scoring = { ...snapScoring(w, kernelSize, pooling, config.headDim), groupBeforePool: true };
  return {
    name: 'headkv',
    queryWindow: w,
    begin: (_config, N) => {
      // The prompt length fixes B (and so every capacity) for the whole request.
      const B = entriesFor(budget, N);
      const caps = headCapacities(scores, Math.max(B, 1), beta, temp, config.numKvHeads);
      return {
        async layer({ layer, numRows: n, scorer }) {
          if (n <= B || n <= w) return { kind: 'keep', keep: null };
          return { kind: 'keep', keep: keepTopAndWindowPerHead(await scorer.window(scoring), n, caps[layer], w) };
        },
      };
    },
  };
}
