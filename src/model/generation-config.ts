/**
 * `generation_config.json`, read as transformers reads it: its end-of-sequence ids (instruct models often name
 * their end-of-turn token only here) and its default sampling settings, used for whatever the caller leaves unset.
 * @module
 */
import * as path from 'node:path';
import { ConfigError, printable } from '../errors.js';
import { MAX_JSON_BYTES, readJsonFile } from '../files.js';
import type { SamplingOptions } from '../engine/sampling.js';

export interface GenerationDefaults {
  /** `eos_token_id` (one id or a list). */
  readonly eosTokenIds: readonly number[];
  /**
   * The sampling defaults it implies: greedy (temperature 0) unless `do_sample` is true, then its temperature,
   * top_k, top_p and min_p with transformers' defaults (1, 50, 1, none); repetition_penalty either way.
   */
  readonly sampling: Readonly<SamplingOptions>;
}

export const NO_GENERATION_DEFAULTS: GenerationDefaults = Object.freeze({ eosTokenIds: [], sampling: Object.freeze({}) });

/** Parses the JSON of a `generation_config.json`; `source` names it in errors. */
export function parseGenerationConfig(json: unknown, source: string): GenerationDefaults {
  if (json === null || typeof json !== 'object' || Array.isArray(json)) throw new ConfigError(`${source} must hold a JSON object`);
  const o = json as Record<string, unknown>;
  const bad = (key: string, what: string): never => {
    throw new ConfigError(`${source}: "${key}" must be ${what}, got ${printable(JSON.stringify(o[key]) ?? 'nothing', 60)}`);
  };
  const absent = (key: string) => o[key] === undefined || o[key] === null;
  const num = (key: string, ok: (v: number) => boolean, what: string): number | undefined =>
    absent(key) ? undefined : typeof o[key] === 'number' && Number.isFinite(o[key]) && ok(o[key] as number) ? (o[key] as number) : bad(key, what);

  let eosTokenIds: number[] = [];
  if (!absent('eos_token_id')) {
    const v = o.eos_token_id;
    eosTokenIds = Array.isArray(v) ? v : [v] as number[];
    if (!eosTokenIds.every((id) => Number.isSafeInteger(id) && id >= 0)) bad('eos_token_id', 'a token id or a list of them');
  }
  if (!absent('do_sample') && typeof o.do_sample !== 'boolean') bad('do_sample', 'true or false');
  const sampling: SamplingOptions = {};
  const penalty = num('repetition_penalty', (v) => v > 0, 'a number > 0');
  if (penalty !== undefined) sampling.repetitionPenalty = penalty;
  if (o.do_sample === true) {
    sampling.temperature = num('temperature', (v) => v >= 0, 'a number >= 0') ?? 1;
    sampling.topK = num('top_k', (v) => Number.isSafeInteger(v) && v >= 0, 'an integer >= 0') ?? 50;
    sampling.topP = num('top_p', (v) => v > 0 && v <= 1, 'a number in (0, 1]') ?? 1;
    const minP = num('min_p', (v) => v >= 0 && v < 1, 'a number in [0, 1)');
    if (minP !== undefined) sampling.minP = minP;
  } else {
    sampling.temperature = 0;
  }
  return Object.freeze({ eosTokenIds: Object.freeze(eosTokenIds), sampling: Object.freeze(sampling) });
}

/** Reads `dir/generation_config.json`; no file means no defaults. */
export function loadGenerationConfig(dir: string): GenerationDefaults {
  const file = path.join(dir, 'generation_config.json');
  const json = readJsonFile(file, { maxBytes: MAX_JSON_BYTES, what: file, error: ConfigError, missingOk: true });
  return json === undefined ? NO_GENERATION_DEFAULTS : parseGenerationConfig(json, file);
}
