/**
 * `fastkv report`: from bench and eval JSON files, the pictures people look at (SVG and PNG) and a Markdown
 * report with them and their tables:
 * - accuracy against time to first token and decode throughput, per method and budget, one figure per eval kind
 *   (niah, ruler, fidelity, longbench); a configuration is matched between the files by its spec;
 * - time to first token and decode tokens/s against prompt length, per method, with the arithmetic bounds of
 *   the method comparison dashed: full's measurement divided (TTFT) or multiplied (decode) by the bound;
 * - NIAH heatmaps, one panel per configuration, word recall and string match.
 * @module
 */
import fs from 'node:fs';
import path from 'node:path';
import { RequestError } from '../errors.js';
import { writeFileAtomic } from '../files.js';
import { EVAL_METRICS, type BenchInput, type EvalInput, type SpeedPoint } from './inputs.js';
import { accuracySpeedChart, lengthChart, niahHeatmapChart, type AccuracyRow, type Caption, type HeatmapRow, type LengthRow } from './charts.js';
import { renderSvg, svgToPng } from './render.js';
import type { TopLevelSpec } from 'vega-lite';

export interface ReportInputs {
  bench: readonly BenchInput[];
  evals: readonly EvalInput[];
  /** Prompt length of the speed axis of accuracy-vs-speed (default: the longest every matched configuration has). */
  tokens?: number;
}

export interface Figure {
  /** File stem: NAME.svg and NAME.png. */
  name: string;
  title: string;
  spec: TopLevelSpec;
}

export interface ReportPlan {
  figures: Figure[];
  /** report.md, its pictures referenced by file name. */
  markdown: string;
}

const MiB = 1024 * 1024;

/** The Markdown report and the figures' specs; throws RequestError for inputs that disagree. */
export function planReport(inputs: ReportInputs): ReportPlan {
  const { bench, evals } = inputs;
  if (bench.length === 0 && evals.length === 0) throw new RequestError('report needs at least one --bench or --eval file');
  checkBenchAgree(bench);
  checkEvalsAgree(evals);

  const methods = methodOrder(bench, evals);
  const speedCaption = bench.length > 0 ? benchCaption(bench) : undefined;
  const evalModel = evals[0]?.model;
  const figures: Figure[] = [];
  const md: string[] = ['# fastkv report', ''];
  if (speedCaption) md.push(`- Speed: ${speedCaption} (${bench.map((b) => `\`${path.basename(b.file)}\``).join(', ')})`);
  if (evalModel) md.push(`- Accuracy: ${evalModel} (${evals.map((e) => `\`${path.basename(e.file)}\``).join(', ')})`);
  md.push('');

  // Accuracy against speed, one figure per eval kind.
  const kinds = [...new Set(evals.map((e) => e.kind))];
  if (bench.length > 0 && kinds.length > 0) {
    const speeds = meanSpeeds(bench);
    const tokens = inputs.tokens ?? defaultTokens(evals, speeds, bench);
    if (![...speeds.values()].some((m) => m.has(tokens))) {
      throw new RequestError(`--length ${tokens}: no bench file has results at ${tokens} tokens (they have ${[...new Set(bench.flatMap((b) => b.points.map((p) => p.tokens)))].sort((a, b) => a - b).join(', ')})`);
    }
    for (const kind of kinds) {
      const files = evals.filter((e) => e.kind === kind);
      const rows: AccuracyRow[] = [];
      const unmatched: string[] = [];
      for (const c of files.flatMap((e) => e.columns)) {
        const speed = speeds.get(c.series)?.get(tokens);
        if (!speed) { unmatched.push(c.series); continue; }
        rows.push({ series: c.series, method: c.method, budget: budgetOf(c.series, c.method), accuracy: c.accuracy, ...speed });
      }
      if (rows.length === 0) {
        throw new RequestError(`no configuration of ${files.map((f) => f.file).join(', ')} (${files.flatMap((e) => e.columns.map((c) => c.series)).join(', ')}) ` +
          `was benchmarked at ${tokens} tokens in ${bench.map((b) => b.file).join(', ')} (${[...speeds.keys()].join(', ')}); check the methods and budgets, or give --length`);
      }
      const metric = EVAL_METRICS[kind];
      const name = `accuracy-vs-speed-${kind}`;
      const caption: Caption = {
        title: `${metric.replace(/ \(%\)$/, '')} against speed, per method and budget`,
        lines: [`accuracy: ${evalModel}; speed: ${speedCaption}`, `speed at ${tokens} tokens; labels give the budget (retain rate, or B= entries per KV head)`],
      };
      figures.push({ name, title: caption.title, spec: accuracySpeedChart(rows, metric, tokens, methods, caption) });
      md.push(`## ${caption.title} (${kind})`, '', picture(name, caption.title), '');
      md.push(table(['configuration', metric, `TTFT at ${tokens} tokens (s)`, `decode at ${tokens} tokens (tokens/s)`],
        rows.map((r) => [r.series, fixed(r.accuracy, 1), fixed(r.ttftSeconds, 3), r.decodeTokensPerSecond === null ? '-' : fixed(r.decodeTokensPerSecond, 1)])));
      if (unmatched.length > 0) md.push('', `Not benchmarked at ${tokens} tokens, so not drawn: ${unmatched.join(', ')}.`);
      md.push('');
    }
  }

  // Latency and throughput against prompt length.
  if (bench.length > 0) {
    const runs = runNames(bench);
    const ttft: LengthRow[] = [];
    const decode: LengthRow[] = [];
    const tableRows: string[][] = [];
    bench.forEach((b, i) => {
      const full = new Map(b.points.filter((p) => p.method === 'full').map((p) => [p.tokens, p]));
      for (const p of b.points) {
        const base = { run: runs[i], series: p.series, method: p.method, tokens: p.tokens };
        ttft.push({ ...base, value: p.ttftSeconds, line: 'measured' });
        if (p.decodeTokensPerSecond !== null) decode.push({ ...base, value: p.decodeTokensPerSecond, line: 'measured' });
        const f = full.get(p.tokens);
        const ttftBound = f && p.method !== 'full' && p.ttftBound !== null ? f.ttftSeconds / p.ttftBound : null;
        const decodeBound = f && p.method !== 'full' && p.decodeBound !== null && f.decodeTokensPerSecond !== null ? f.decodeTokensPerSecond * p.decodeBound : null;
        if (ttftBound !== null) ttft.push({ ...base, value: ttftBound, line: 'arithmetic bound' });
        if (decodeBound !== null) decode.push({ ...base, value: decodeBound, line: 'arithmetic bound' });
        tableRows.push([String(p.tokens), p.series, fixed(p.ttftSeconds, 3), ttftBound === null ? '-' : fixed(ttftBound, 3),
          p.decodeTokensPerSecond === null ? '-' : fixed(p.decodeTokensPerSecond, 1), decodeBound === null ? '-' : fixed(decodeBound, 1),
          p.kvBytes === null ? '-' : fixed(p.kvBytes / MiB, 2), runs[i]]);
      }
    });
    const bounded = bench.some((b) => b.methods);
    const plain = 'the full KV cache alone (plain benchmark, no bounds)';
    const ttftCaption: Caption = {
      title: 'Time to first token against prompt length',
      lines: [`${speedCaption}`, bounded ? 'dashed: arithmetic bound, full\'s TTFT × the method\'s prefill FLOPs / full\'s (methods with equal bounds overlap)' : plain],
    };
    const decodeCaption: Caption = {
      title: 'Decode throughput against prompt length',
      lines: [`${speedCaption}`, bounded ? 'dashed: arithmetic bound, full\'s rate × full\'s bytes read per token / the method\'s (weights + KV); equal KV, equal bound' : plain],
    };
    figures.push({ name: 'ttft-vs-length', title: ttftCaption.title, spec: lengthChart(ttft, 'Time to first token (s)', methods, runs, ttftCaption) });
    md.push(`## ${ttftCaption.title}`, '', picture('ttft-vs-length', ttftCaption.title), '');
    if (decode.length > 0) {
      figures.push({ name: 'decode-vs-length', title: decodeCaption.title, spec: lengthChart(decode, 'Decode throughput (tokens/s)', methods, runs, decodeCaption) });
      md.push(`## ${decodeCaption.title}`, '', picture('decode-vs-length', decodeCaption.title), '');
    }
    md.push(table(['tokens', 'configuration', 'TTFT (s)', 'TTFT bound (s)', 'decode (tokens/s)', 'decode bound (tokens/s)', 'KV (MiB)', 'run'], tableRows), '');
    if (bounded) {
      md.push('Bounds: TTFT if time followed the prefill FLOPs the method skips (full\'s TTFT × the method\'s FLOPs / full\'s); ' +
        'decode rate if decoding followed the bytes read per token (weights + KV cache). See `fastkv bench --help`.', '');
    }
  }

  // NIAH heatmaps.
  const niah = evals.filter((e) => e.kind === 'niah' && e.niah);
  if (niah.length > 0) {
    const series = niah.flatMap((e) => e.niah!.grids.map((g) => g.series));
    for (const [metric, field, name] of [['word recall (%)', 'wordRecall', 'niah-word-recall'], ['string match (%)', 'stringMatch', 'niah-string-match']] as const) {
      const rows: HeatmapRow[] = niah.flatMap((e) => e.niah!.grids.flatMap((g) => g[field].flatMap((row, d) => row.map((v, l) => ({
        series: g.series, tokens: e.niah!.lengths[l], depth: e.niah!.depths[d], value: Number.isFinite(v) ? v : null,
      })))));
      const caption: Caption = { title: `Needle in a haystack: ${metric}`, lines: [`${evalModel}; one panel per configuration; each cell the mean over its samples`] };
      figures.push({ name, title: caption.title, spec: niahHeatmapChart(rows, metric, series, caption) });
      md.push(`## ${caption.title}`, '', picture(name, caption.title), '');
    }
    const lengths = [...new Set(niah.flatMap((e) => e.niah!.lengths))].sort((a, b) => a - b);
    md.push(table(['configuration', 'word recall (%)', 'string match (%)', ...lengths.map((l) => `word recall at ${l}`)],
      niah.flatMap((e) => e.columns.map((c, i) => {
        const g = e.niah!.grids[i];
        const s = e.niah!;
        const perLength = lengths.map((l) => {
          const li = s.lengths.indexOf(l);
          return li < 0 ? '-' : fixed(mean(g.wordRecall.map((row) => row[li])), 1);
        });
        return [c.series, fixed(c.accuracy, 1), fixed(mean(g.stringMatch.flat()), 1), ...perLength];
      }))), '');
  }

  // Accuracy tables of the other kinds when there is no bench file to plot them against.
  if (bench.length === 0) {
    for (const kind of kinds.filter((k) => k !== 'niah')) {
      md.push(`## ${EVAL_METRICS[kind]}`, '', table(['configuration', EVAL_METRICS[kind]],
        evals.filter((e) => e.kind === kind).flatMap((e) => e.columns.map((c) => [c.series, fixed(c.accuracy, 1)]))), '');
    }
  }
  if (bench.length > 1) md.push('A configuration benchmarked in several files (full is in every method comparison) is drawn at the mean of its runs in accuracy-vs-speed.', '');
  md.push(`Made by \`fastkv report\`; every picture is also in SVG (same name). Absolute times depend on the machine and its load; ratios within one run mean more.`, '');
  return { figures, markdown: md.join('\n') };
}

/** Renders every figure to SVG and PNG and writes them with report.md into `dir` (each through a temporary file). */
export async function writeReport(dir: string, plan: ReportPlan, onFile: (file: string) => void = () => {}): Promise<string[]> {
  const written: string[] = [];
  const put = (name: string, data: string | Buffer) => {
    const file = path.join(dir, name);
    writeFileAtomic(file, data);
    written.push(file);
    onFile(file);
  };
  for (const f of plan.figures) {
    const svg = await renderSvg(f.spec);
    put(`${f.name}.svg`, svg);
    put(`${f.name}.png`, await svgToPng(svg));
  }
  put('report.md', plan.markdown);
  return written;
}

// ---- checks ---------------------------------------------------------------------------------------------------

function checkBenchAgree(bench: readonly BenchInput[]): void {
  const [first, ...rest] = bench;
  for (const b of rest) {
    const disagree = (field: string, a: unknown, c: unknown) => {
      throw new RequestError(`--bench files disagree on ${field}: ${first.file} has ${JSON.stringify(a)}, ${b.file} has ${JSON.stringify(c)} (one report is one model on one machine)`);
    };
    if (b.label !== first.label) disagree('label (the model)', first.label, b.label);
    if (b.machine && first.machine && (b.machine.cpu !== first.machine.cpu || b.machine.cores !== first.machine.cores)) {
      disagree('machine', first.machine, b.machine);
    }
    if (b.threads !== null && first.threads !== null && b.threads !== first.threads) disagree('threads', first.threads, b.threads);
  }
}

function checkEvalsAgree(evals: readonly EvalInput[]): void {
  const [first, ...rest] = evals;
  for (const e of rest) {
    if (e.model !== first.model) {
      throw new RequestError(`--eval files disagree on the model: ${first.file} ran ${first.model}, ${e.file} ran ${e.model}`);
    }
  }
  // The same configuration in two files of one kind would be two different answers to one question.
  const seen = new Map<string, string>();
  for (const e of evals) {
    for (const c of e.columns) {
      const key = `${e.kind}\u0000${c.series}`;
      const other = seen.get(key);
      if (other !== undefined) throw new RequestError(`--eval files ${other} and ${e.file} both have ${e.kind} results for ${c.series} (column "${c.label}")`);
      seen.set(key, e.file);
    }
  }
}

// ---- helpers --------------------------------------------------------------------------------------------------

/** full first, then methods in the order they first appear. */
function methodOrder(bench: readonly BenchInput[], evals: readonly EvalInput[]): string[] {
  const all = [...bench.flatMap((b) => b.points.map((p) => p.method)), ...evals.flatMap((e) => e.columns.map((c) => c.method))];
  const unique = [...new Set(all)];
  return unique.includes('full') ? ['full', ...unique.filter((m) => m !== 'full')] : unique;
}

function benchCaption(bench: readonly BenchInput[]): string {
  const b = bench[0];
  const machine = b.machine ? `${b.machine.cpu}${b.machine.cores !== null ? `, ${b.machine.cores} cores` : ''}` : 'machine not recorded';
  const threads = b.threads !== null ? `, ${b.threads} ONNX Runtime threads` : '';
  const dates = [...new Set(bench.map((x) => x.date?.slice(0, 10)).filter((d): d is string => d !== undefined))];
  return `${b.label} on ${machine}${threads}${dates.length > 0 ? ` (${dates.join(', ')})` : ''}`;
}

/** Per configuration and prompt length, the mean over bench files (full is in every method comparison). */
function meanSpeeds(bench: readonly BenchInput[]): Map<string, Map<number, { ttftSeconds: number; decodeTokensPerSecond: number | null }>> {
  const groups = new Map<string, Map<number, SpeedPoint[]>>();
  for (const p of bench.flatMap((b) => b.points)) {
    const byTokens = groups.get(p.series) ?? new Map<number, SpeedPoint[]>();
    groups.set(p.series, byTokens);
    byTokens.set(p.tokens, [...(byTokens.get(p.tokens) ?? []), p]);
  }
  const out = new Map<string, Map<number, { ttftSeconds: number; decodeTokensPerSecond: number | null }>>();
  for (const [series, byTokens] of groups) {
    out.set(series, new Map([...byTokens].map(([tokens, ps]) => {
      const decodes = ps.map((p) => p.decodeTokensPerSecond).filter((d): d is number => d !== null);
      return [tokens, { ttftSeconds: mean(ps.map((p) => p.ttftSeconds)), decodeTokensPerSecond: decodes.length > 0 ? mean(decodes) : null }];
    })));
  }
  return out;
}

/** The longest prompt length that every eval configuration found in the bench files was measured at. */
function defaultTokens(evals: readonly EvalInput[], speeds: ReturnType<typeof meanSpeeds>, bench: readonly BenchInput[]): number {
  const matched = evals.flatMap((e) => e.columns).map((c) => speeds.get(c.series)).filter((m) => m !== undefined);
  if (matched.length === 0) {
    throw new RequestError(`no configuration of ${evals.map((e) => e.file).join(', ')} (${[...new Set(evals.flatMap((e) => e.columns.map((c) => c.series)))].join(', ')}) ` +
      `appears in ${bench.map((b) => b.file).join(', ')} (${[...speeds.keys()].join(', ')}); run bench with the same methods and budgets`);
  }
  const common = [...matched[0].keys()].filter((t) => matched.every((m) => m.has(t)));
  if (common.length === 0) throw new RequestError('the matched configurations share no prompt length in the bench files; give --length N');
  return Math.max(...common);
}

/** One name per bench file for its panel: the options its compressed configurations share, else the file name. */
function runNames(bench: readonly BenchInput[]): string[] {
  const names = bench.map((b) => {
    const specs = b.points.filter((p) => p.method !== 'full').map((p) => p.spec);
    if (specs.length === 0) return path.basename(b.file);
    const shared = Object.entries(specs[0]).filter(([k, v]) => k !== 'method' && specs.every((s) => Object.hasOwn(s, k) && s[k] === v));
    return shared.length > 0 ? shared.map(([k, v]) => `${k} ${String(v)}`).join(', ') : path.basename(b.file);
  });
  return names.map((n, i) => (names.indexOf(n) !== i || names.lastIndexOf(n) !== i ? `${n} (${path.basename(bench[i].file)})` : n));
}

function budgetOf(series: string, method: string): string {
  return series.slice(method.length).replace(/^@/, '');
}

function mean(xs: readonly number[]): number {
  const ok = xs.filter((x) => Number.isFinite(x));
  return ok.length === 0 ? NaN : ok.reduce((a, b) => a + b, 0) / ok.length;
}

function fixed(x: number, digits: number): string {
  return Number.isFinite(x) ? x.toFixed(digits) : '-';
}

function picture(name: string, alt: string): string {
  return `![${alt}](${name}.png)\n\n[SVG](${name}.svg)`;
}

/** A Markdown table; pipes in cells are escaped. */
function table(headers: readonly string[], rows: readonly (readonly string[])[]): string {
  const cell = (s: string) => s.replace(/\|/g, '\\|');
  return [
    `| ${headers.map(cell).join(' | ')} |`,
    `| ${headers.map(() => '---').join(' | ')} |`,
    ...rows.map((r) => `| ${r.map(cell).join(' | ')} |`),
  ].join('\n');
}
