/**
 * Reads the JSON that `fastkv bench --json` and `fastkv eval ... --out` write, for `fastkv report`: checks every
 * field the report uses (an error names the file and the field), ignores fields it does not use, and names each
 * configuration the same way everywhere: a method with its options (`fastkv@0.1` for a retain rate of 0.1).
 *
 * Bench files come in two forms: the method comparison (`--methods`: one result per length and method, with the
 * arithmetic bounds) and the plain prefill/decode benchmark (one result per length, the full cache). Eval files
 * are niah.json, ruler.json and fidelity.json (field `command`) and LongBench's results.json (`benchmark`).
 * @module
 */
import fs from 'node:fs';
import path from 'node:path';
import { RequestError, quoted } from '../errors.js';
import { readJsonFile as readBoundedJson } from '../files.js';
import type { CompressionSpec } from '../compress/registry.js';

/** Largest input file read (an eval file with every sample's text is a few MB). */
export const MAX_INPUT_BYTES = 64 * 1024 * 1024;

/** One measured point of a bench file: a configuration at one prompt length. */
export interface SpeedPoint {
  /** The configuration's name, e.g. `fastkv@0.1` (see {@link describeSpec}). */
  series: string;
  method: string;
  spec: CompressionSpec;
  tokens: number;
  ttftSeconds: number;
  /** Null when the run decoded nothing. */
  decodeTokensPerSecond: number | null;
  /** Full's prefill FLOPs / this configuration's (method comparison only). */
  ttftBound: number | null;
  /** (weights + full KV bytes) / (weights + kept KV bytes) (method comparison only). */
  decodeBound: number | null;
  kvBytes: number | null;
}

export interface MachineInfo { cpu: string; cores: number | null }

export interface BenchInput {
  file: string;
  /** What was benchmarked: the checkpoint's folder name or the generated shape. */
  label: string;
  threads: number | null;
  machine: MachineInfo | null;
  date: string | null;
  /** Whether the file compares methods (and so has bounds). */
  methods: boolean;
  points: SpeedPoint[];
}

export type EvalKind = 'niah' | 'ruler' | 'fidelity' | 'longbench';

/** The headline accuracy of each eval kind: what the report plots against speed. */
export const EVAL_METRICS: Readonly<Record<EvalKind, string>> = {
  niah: 'NIAH word recall (%)',
  ruler: 'RULER string_match_all, task average (%)',
  fidelity: 'Top-1 agreement with full KV (%)',
  longbench: 'LongBench score, task average',
};

export interface EvalColumn {
  /** The column's label in the eval file. */
  label: string;
  series: string;
  method: string;
  spec: CompressionSpec;
  accuracy: number;
}

export interface NiahGrids {
  series: string;
  /** [depth][length], in percent; NaN where the file has null. */
  wordRecall: number[][];
  stringMatch: number[][];
}

export interface EvalInput {
  file: string;
  kind: EvalKind;
  /** The checkpoint folder's name. */
  model: string;
  columns: EvalColumn[];
  /** niah only. */
  niah?: { lengths: number[]; depths: number[]; grids: NiahGrids[] };
}

type Json = unknown;

/** A field path for messages: results[3].ttftSeconds. */
class Reader {
  constructor(readonly file: string) {}
  fail(field: string, problem: string): never {
    throw new RequestError(`${this.file}: ${field} ${problem}`);
  }
  object(value: Json, field: string): Record<string, Json> {
    if (typeof value !== 'object' || value === null || Array.isArray(value)) this.fail(field, `must be an object, got ${show(value)}`);
    return value as Record<string, Json>;
  }
  array(value: Json, field: string, nonEmpty = true): Json[] {
    if (!Array.isArray(value)) this.fail(field, `must be an array, got ${show(value)}`);
    if (nonEmpty && value.length === 0) this.fail(field, 'is empty');
    return value;
  }
  string(value: Json, field: string): string {
    if (typeof value !== 'string' || value === '') this.fail(field, `must be a non-empty string, got ${show(value)}`);
    return value;
  }
  number(value: Json, field: string, o: { min?: number; positive?: boolean; integer?: boolean; max?: number } = {}): number {
    if (typeof value !== 'number' || !Number.isFinite(value)) this.fail(field, `must be a finite number, got ${show(value)}`);
    if (o.integer && !Number.isSafeInteger(value)) this.fail(field, `must be an integer, got ${value}`);
    if (o.positive && !(value > 0)) this.fail(field, `must be > 0, got ${value}`);
    if (o.min !== undefined && value < o.min) this.fail(field, `must be >= ${o.min}, got ${value}`);
    if (o.max !== undefined && value > o.max) this.fail(field, `must be <= ${o.max}, got ${value}`);
    return value;
  }
  /** A number, or null where JSON wrote NaN/Infinity as null (a run that decoded nothing). */
  numberOrNull(value: Json, field: string, o: { positive?: boolean; min?: number } = {}): number | null {
    return value === null || value === undefined ? null : this.number(value, field, o);
  }
  /** A property that must be there, looked up as an own property. */
  own(obj: Record<string, Json>, key: string, field: string): Json {
    if (!Object.hasOwn(obj, key)) this.fail(field ? `${field}.${key}` : key, 'is missing');
    return obj[key];
  }
  spec(value: Json, field: string): CompressionSpec {
    const o = this.object(value, field);
    this.string(this.own(o, 'method', field), `${field}.method`);
    for (const [k, v] of Object.entries(o)) {
      if (!['number', 'string', 'boolean'].includes(typeof v)) this.fail(`${field}.${k}`, `must be a number, string or boolean, got ${show(v)}`);
    }
    return o as CompressionSpec;
  }
}

function show(value: Json): string {
  if (value === undefined) return 'nothing';
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 40 ? `${text.slice(0, 40)}...` : text;
}

/** Reads and parses one input file: a regular file of at most MAX_INPUT_BYTES holding JSON (the shared bounded reader). */
export function readJsonFile(file: string, what: string): Json {
  return readBoundedJson(file, { maxBytes: MAX_INPUT_BYTES, what: `${what} ${quoted(file)}` }) as Json;
}

// ---- names ----------------------------------------------------------------------------------------------------

/** A spec as one canonical string: the method and its options sorted by name. Equal configurations, equal keys. */
export function specKey(spec: CompressionSpec): string {
  return JSON.stringify(Object.keys(spec).sort().map((k) => [k, spec[k]]));
}

/**
 * A configuration's name, as eval's columns read: the method, `@rate` for a retain rate, `@B` for a budget in
 * entries written `B=512`, `@cr=C` for a compression ratio, then any other option in parentheses.
 */
export function describeSpec(spec: CompressionSpec): string {
  const { method, retainRate, budget, compressionRatio, ...rest } = spec;
  let name = method;
  if (retainRate !== undefined) name += `@${String(retainRate)}`;
  if (budget !== undefined) name += `@B=${String(budget)}`;
  if (compressionRatio !== undefined) name += `@cr=${String(compressionRatio)}`;
  const others = Object.keys(rest).sort().map((k) => `${k} ${String(rest[k])}`);
  return others.length > 0 ? `${name} (${others.join(', ')})` : name;
}

// ---- bench ----------------------------------------------------------------------------------------------------

/** Fields of a method-comparison result that are measurements or bookkeeping, never a dimension of the run. */
const BENCH_RESULT_FIELDS = new Set(['method', 'spec']);

/** Reads a `fastkv bench --json` file (either form). */
export function parseBench(file: string): BenchInput {
  const r = new Reader(file);
  const top = r.object(readJsonFile(file, '--bench'), 'the file');
  const label = r.string(r.own(top, 'label', ''), 'label');
  const results = r.array(r.own(top, 'results', ''), 'results');
  const threads = Object.hasOwn(top, 'threads') ? r.number(top.threads, 'threads', { integer: true, positive: true }) : null;
  let machine: MachineInfo | null = null;
  if (Object.hasOwn(top, 'machine')) {
    const m = r.object(top.machine, 'machine');
    machine = {
      cpu: r.string(r.own(m, 'cpu', 'machine'), 'machine.cpu'),
      cores: Object.hasOwn(m, 'cores') ? r.number(m.cores, 'machine.cores', { integer: true, positive: true }) : null,
    };
  }
  const date = Object.hasOwn(top, 'date') ? r.string(top.date, 'date') : null;
  const first = r.object(results[0], 'results[0]');
  const methods = Object.hasOwn(first, 'method');

  // Dimensions besides the method (e.g. a dtype): string fields of the results whose values differ.
  const rows = results.map((x, i) => r.object(x, `results[${i}]`));
  const dimensions = Object.keys(first).filter((k) => !BENCH_RESULT_FIELDS.has(k) && typeof first[k] === 'string'
    && new Set(rows.map((row) => row[k])).size > 1);

  const points = rows.map((row, i): SpeedPoint => {
    const at = `results[${i}]`;
    const tokens = r.number(r.own(row, 'tokens', at), `${at}.tokens`, { integer: true, positive: true });
    const ttftSeconds = r.number(r.own(row, 'ttftSeconds', at), `${at}.ttftSeconds`, { positive: true });
    const decode = r.numberOrNull(r.own(row, 'decodeTokensPerSecond', at), `${at}.decodeTokensPerSecond`, { min: 0 });
    let spec: CompressionSpec = { method: 'full' };
    if (methods) {
      const method = r.string(r.own(row, 'method', at), `${at}.method`);
      spec = Object.hasOwn(row, 'spec') ? r.spec(row.spec, `${at}.spec`) : { method };
      if (spec.method !== method) r.fail(`${at}.spec.method`, `is "${spec.method}" but ${at}.method is "${method}"`);
    } else if (Object.hasOwn(row, 'method')) {
      r.fail(`${at}.method`, 'is present, but results[0] has none (a file mixes the two bench forms)');
    }
    const extra = dimensions.map((k) => `${k} ${r.string(r.own(row, k, at), `${at}.${k}`)}`);
    const name = describeSpec(spec);
    return {
      series: extra.length > 0 ? `${name} [${extra.join(', ')}]` : name,
      method: spec.method, spec, tokens, ttftSeconds,
      decodeTokensPerSecond: decode === 0 ? null : decode,
      ttftBound: methods ? r.numberOrNull(row.ttftBound, `${at}.ttftBound`, { positive: true }) : null,
      decodeBound: methods ? r.numberOrNull(row.decodeBound, `${at}.decodeBound`, { positive: true }) : null,
      kvBytes: r.numberOrNull(row.kvBytes, `${at}.kvBytes`, { min: 0 }),
    };
  });
  const seen = new Set<string>();
  points.forEach((p, i) => {
    const key = `${p.series}\u0000${p.tokens}`;
    if (seen.has(key)) r.fail(`results[${i}]`, `repeats ${p.series} at ${p.tokens} tokens`);
    seen.add(key);
  });
  return { file, label, threads, machine, date, methods, points };
}

// ---- eval -----------------------------------------------------------------------------------------------------

/** Reads a niah.json, ruler.json, fidelity.json or LongBench results.json. */
export function parseEval(file: string): EvalInput {
  const r = new Reader(file);
  const top = r.object(readJsonFile(file, '--eval'), 'the file');
  const kind = evalKind(r, top);
  // The columns: label and spec of each.
  let modelPath: string;
  let rawColumns: Json[];
  let columnsField: string;
  if (kind === 'longbench') {
    modelPath = r.string(r.own(top, 'model', ''), 'model');
    rawColumns = r.array(r.own(top, 'methods', ''), 'methods');
    columnsField = 'methods';
  } else {
    const settings = r.object(r.own(top, 'settings', ''), 'settings');
    modelPath = r.string(r.own(settings, 'model', 'settings'), 'settings.model');
    rawColumns = r.array(r.own(settings, 'columns', 'settings'), 'settings.columns');
    columnsField = 'settings.columns';
  }

  const accuracyOf = (label: string): number => {
    if (kind === 'niah' || kind === 'fidelity') {
      const table = r.object(r.own(top, kind === 'niah' ? 'summary' : 'scores', ''), kind === 'niah' ? 'summary' : 'scores');
      const field = `${kind === 'niah' ? 'summary' : 'scores'}.${label}`;
      const entry = r.object(r.own(table, label, kind === 'niah' ? 'summary' : 'scores'), field);
      const metric = kind === 'niah' ? 'wordRecall' : 'top1Agreement';
      return r.number(r.own(entry, metric, field), `${field}.${metric}`, { min: 0, max: 100 });
    }
    const average = r.object(r.own(top, 'average', ''), 'average');
    return r.number(r.own(average, label, 'average'), `average.${label}`, { min: 0, max: 100 });
  };

  const labels = new Set<string>();
  const columns = rawColumns.map((c, i): EvalColumn => {
    const at = `${columnsField}[${i}]`;
    const o = r.object(c, at);
    const label = r.string(r.own(o, 'label', at), `${at}.label`);
    if (labels.has(label)) r.fail(`${at}.label`, `repeats "${label}"`);
    labels.add(label);
    const spec = r.spec(r.own(o, 'spec', at), `${at}.spec`);
    return { label, series: describeSpec(spec), method: spec.method, spec, accuracy: accuracyOf(label) };
  });

  const input: EvalInput = { file, kind, model: path.basename(modelPath), columns };
  if (kind === 'niah') input.niah = niahGrids(r, top, columns);
  return input;
}

function evalKind(r: Reader, top: Record<string, Json>): EvalKind {
  if (Object.hasOwn(top, 'command')) {
    const command = r.string(top.command, 'command');
    if (command === 'niah' || command === 'ruler' || command === 'fidelity') return command;
    r.fail('command', `must be niah, ruler or fidelity, got "${command}"`);
  }
  if (Object.hasOwn(top, 'benchmark') && top.benchmark === 'longbench') return 'longbench';
  return r.fail('command', 'is missing (expected the niah.json, ruler.json or fidelity.json of fastkv eval --out, or LongBench\'s results.json)');
}

function niahGrids(r: Reader, top: Record<string, Json>, columns: readonly EvalColumn[]): EvalInput['niah'] {
  const lengths = r.array(r.own(top, 'lengths', ''), 'lengths').map((x, i) => r.number(x, `lengths[${i}]`, { integer: true, positive: true }));
  const depths = r.array(r.own(top, 'depths', ''), 'depths').map((x, i) => r.number(x, `depths[${i}]`, { min: 0, max: 100 }));
  const summary = r.object(top.summary, 'summary');
  const grid = (value: Json, field: string): number[][] => {
    const rows = r.array(value, field);
    if (rows.length !== depths.length) r.fail(field, `has ${rows.length} rows, but there are ${depths.length} depths`);
    return rows.map((row, d) => {
      const cells = r.array(row, `${field}[${d}]`);
      if (cells.length !== lengths.length) r.fail(`${field}[${d}]`, `has ${cells.length} cells, but there are ${lengths.length} lengths`);
      return cells.map((v, l) => r.numberOrNull(v, `${field}[${d}][${l}]`, { min: 0 }) ?? NaN);
    });
  };
  const grids = columns.map((c) => {
    const s = r.object(summary[c.label], `summary.${c.label}`);
    return {
      series: c.series,
      wordRecall: grid(r.own(s, 'wordRecallGrid', `summary.${c.label}`), `summary.${c.label}.wordRecallGrid`),
      stringMatch: grid(r.own(s, 'stringMatchGrid', `summary.${c.label}`), `summary.${c.label}.stringMatchGrid`),
    };
  });
  return { lengths, depths, grids };
}
