/**
 * `fastkv eval niah | ruler | fidelity | longbench`: accuracy of the compression methods side by side. Each
 * subcommand loads one model, builds one column per method (× retain rate with --retain-rates), runs every
 * prompt under every column with a progress bar on stderr, prints a table on stdout and, with --out, writes
 * JSON (and for niah the SVG heatmaps).
 * @module
 */
import path from 'node:path';
import { parseArgs } from 'node:util';
import { ConfigError, RequestError, quoted } from '../errors.js';
import { own } from '../own.js';
import { MAX_TEXT_BYTES, checkOutputDir, readTextFile, writeFileAtomic } from '../files.js';
import { Model } from '../engine/model.js';
import { METHODS, resolvePolicy, specsFor, type CompressionSpec } from '../compress/registry.js';
import { fidelityWindows, runFidelity } from '../eval/fidelity.js';
import { loadHaystack } from '../eval/haystack.js';
import { heatmapSvg } from '../eval/heatmap.js';
import { DEFAULT_DEPTHS, NIAH_PRESETS, minimumNiahLength, niahCases, runNiah, type MethodColumn, type NiahOptions } from '../eval/niah.js';
import { MAGIC_NUMBER_TASKS, RULER_TASKS, runRuler, type RulerFormat, type RulerTask } from '../eval/ruler.js';
import { ProgressBar, formatTable, writeJson } from '../report.js';
import { DEFAULT_MODEL_DIR, DTYPE_HELP, dtypeFlag, numberFlag, progressDone, progressLine, threadsFlag, warnOnStderr } from './args.js';
import { COMPRESSION_FLAGS, COMPRESSION_HELP, compressionOptionsFromFlags } from './compression-flags.js';

const DEFAULT_METHODS = ['full', 'fastkv', 'snapkv', 'streamingllm', 'gemfilter'];

// `--method` picks one method elsewhere; eval takes a list.
const { method: _method, ...SHARED_COMPRESSION_FLAGS } = COMPRESSION_FLAGS;
const SHARED_COMPRESSION_HELP = COMPRESSION_HELP.split('\n')
  .filter((line) => !line.trimStart().startsWith('--method '))
  .join('\n')
  .replace('KV-cache compression:', 'KV-cache compression (applied to every method in --methods that takes the option):');

const COMMON_FLAGS = {
  model: { type: 'string' }, methods: { type: 'string' }, 'retain-rates': { type: 'string' },
  threads: { type: 'string' }, dtype: { type: 'string' }, seed: { type: 'string' }, out: { type: 'string' }, force: { type: 'boolean' },
  'max-context': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
  ...SHARED_COMPRESSION_FLAGS,
} as const;

const COMMON_HELP = `Model and methods:
  --model DIR            Hugging Face checkpoint folder (default: the bundled stories260K).
  --methods LIST         Comma-separated methods, one column each (default ${DEFAULT_METHODS.join(',')});
                         known: ${METHODS.join(', ')}.
  --retain-rates LIST    Sweep: one column per method and rate (e.g. 0.1,0.2; full appears once). Excludes
                         --retain-rate, --budget and --compression-ratio.
  --max-context N        Longest sequence allowed (default max_position_embeddings from config.json).
  --threads N            ONNX Runtime threads (default: one per core).
${DTYPE_HELP}
  --seed S               Seed of every random draw (default 42); the same seed gives the same numbers.
  --out DIR              Write the results as JSON (and heatmaps for niah) into DIR. Checked before the run:
                         results already there are kept unless --force.
  --force                Overwrite results already in --out DIR.
  -h, --help             Show this help.

${SHARED_COMPRESSION_HELP}`;

export const NIAH_HELP = `Usage: fastkv eval niah [--model DIR] [--methods LIST] [--lengths LIST] [--depths LIST] [options]

Needle in a Haystack as the FastKV reference runs it: for each length and depth, the needle is inserted at
depth% of the haystack (moved back to the previous sentence end), the question follows the context, and the
model answers greedily. Scores: the reference's word recall and RULER's string match, both in percent. Draws a
length x depth heatmap per method (SVG) with --out.

Grid:
  --lengths LIST         Total tokens per prompt, answer budget included (default: 8 lengths evenly spaced up
                         to max_position_embeddings).
  --depths LIST          Needle depths in percent (default ${DEFAULT_DEPTHS.join(',')}).
  --samples K            Prompts per (length, depth) cell, each with its own draw (default 1).
  --haystack DIR         Folder of .txt files, concatenated in name order and repeated as needed (default:
                         the built-in stories, data/stories-haystack.txt).

Needle and question ({name} and {number} in them are drawn per prompt from --seed):
  --preset NAME          ${Object.keys(NIAH_PRESETS).join(' | ')} (default reference). magic-number is the fact
                         format retrieval-3M was trained on: needle " The magic number of {name} is {number}.",
                         question " What is the magic number of {name}? The magic number of {name} is".
  --needle TEXT          The needle sentence (default: the reference's San Francisco sentence).
  --question TEXT        The question (default: the reference's, era C).
  --answer TEXT          Expected answer, for word recall and string match.
  --template TEXT        Prompt with {context} and {question} (default: the reference's "story book" prompt).
  --max-tokens N         Answer budget (default 30; 8 for magic-number). Generation stops at a newline.
  --chat                 Wrap the prompt in the model's chat template.
  --question-after       Compress the context alone, then feed the question (kvpress's protocol); default:
                         the question is inside the compressed prompt (the paper's protocol).

${COMMON_HELP}`;

export const RULER_HELP = `Usage: fastkv eval ruler [--model DIR] [--methods LIST] --length N [--samples K] [--tasks LIST] [options]

RULER's synthetic tasks, generated from --seed and sized to --length tokens of this model (prompt + answer
budget): ${RULER_TASKS.join(', ')}. Scored with string_match_all (string_match_part is in the JSON); prints the
per-task scores and their average per method.

Tasks:
  --length N             Tokens per sample, answer budget included (default: max_position_embeddings).
  --samples K            Samples per task (default 10).
  --tasks LIST           Comma-separated tasks (default: all 11; with --format magic-number: ${MAGIC_NUMBER_TASKS.join(', ')}).
  --format NAME          ruler (default) | magic-number: the NIAH tasks restated in retrieval-3M's fact format.
  --haystack DIR         Folder of .txt files for the essay haystack (default: the built-in stories).
  --max-tokens N         Answer budget for every task (default: RULER's, niah 128, vt 30, cwe 120, fwe 50; 8 for
                         magic-number).
  --chat                 Wrap the prompt in the model's chat template (FastKV's runner does).
  --question-after       Compress the context alone, then feed the question and answer prefix (kvpress).

${COMMON_HELP}`;

export const FIDELITY_HELP = `Usage: fastkv eval fidelity [--model DIR] --text FILE [--context N] [--continuation M] [options]

Label-free fidelity to the full KV cache: compress a context of N tokens of FILE, teacher-force the next M
tokens, and report per method the top-1 agreement with full (%), the mean KL(full || method) in nats, the
perplexity of the continuation, and the share of KV entries kept. Works for any model and any text.

Text:
  --text FILE            The text (UTF-8).
  --context N            Context tokens, BOS included (default 1024).
  --continuation M       Teacher-forced tokens after it (default 64).
  --windows K            Consecutive windows of N + M tokens to average over (default 1).
  --reference-dtype D    Take the full-cache run at weight format D (fp32, q8, q4, int8) as the reference while the
                         methods run at --dtype: e.g. --dtype q4 --reference-dtype fp32 --methods full measures
                         what 4-bit weights cost (a second copy of the model is loaded).

${COMMON_HELP}`;

export const EVAL_HELP = `Usage: fastkv eval <niah | ruler | fidelity | longbench> [options]

Accuracy of the compression methods, side by side:
  niah       Needle in a Haystack, length x depth heatmaps per method.
  ruler      RULER's synthetic tasks (niah_*, vt, cwe, fwe) generated for the model's tokenizer.
  fidelity   Top-1 agreement, KL and perplexity against the full cache on any text (no labels).
  longbench  LongBench tasks from local files.

Run 'fastkv eval <subcommand> --help' for its options.
`;

type Values = Record<string, string | boolean | string[] | undefined>;

function parse(argv: string[], options: Record<string, { type: 'string' | 'boolean'; short?: string }>, sub: string): Values {
  try {
    return parseArgs({ args: argv, options, strict: true, allowPositionals: false }).values as Values;
  } catch (e) {
    throw new RequestError(`${(e as Error).message} (see fastkv eval ${sub} --help)`, { cause: e });
  }
}

function list(values: Values, flag: string): string[] | undefined {
  const raw = values[flag];
  if (raw === undefined) return undefined;
  const items = String(raw).split(',').map((s) => s.trim()).filter((s) => s !== '');
  if (items.length === 0) throw new RequestError(`--${flag} must list at least one value, got "${String(raw)}"`);
  return items;
}

function numberList(values: Values, flag: string, o: { integer?: boolean; min?: number; max?: number } = {}): number[] | undefined {
  return list(values, flag)?.map((item) => {
    const n = Number(item);
    if (!Number.isFinite(n)) throw new RequestError(`--${flag}: "${item}" is not a number`);
    if (o.integer && !Number.isInteger(n)) throw new RequestError(`--${flag}: "${item}" is not an integer`);
    if (o.min !== undefined && n < o.min) throw new RequestError(`--${flag}: ${item} must be >= ${o.min}`);
    if (o.max !== undefined && n > o.max) throw new RequestError(`--${flag}: ${item} must be <= ${o.max}`);
    return n;
  });
}

/**
 * The columns of an evaluation: each method of --methods with the shared compression flags, or with
 * --retain-rates one column per method and rate (full once).
 */
export function methodColumns(values: Values): MethodColumn[] {
  const methods = [...new Set(list(values, 'methods') ?? DEFAULT_METHODS)];
  for (const m of methods) if (!METHODS.includes(m)) throw new ConfigError(`--methods: unknown method "${m}"; known: ${METHODS.join(', ')}`);
  const shared = compressionOptionsFromFlags(values);
  const rates = numberList(values, 'retain-rates');
  if (!rates) return specsFor(methods, shared).map((spec) => ({ label: spec.method, spec }));
  for (const flag of ['retain-rate', 'budget', 'compression-ratio']) {
    if (values[flag] !== undefined) throw new RequestError(`--retain-rates excludes --${flag}`);
  }
  for (const r of rates) if (!(r > 0 && r <= 1)) throw new RequestError(`--retain-rates: ${r} is not in (0, 1]`);
  const columns: MethodColumn[] = [];
  for (const method of methods) {
    if (method === 'full') { columns.push({ label: 'full', spec: { method } }); continue; }
    for (const rate of rates) {
      const [spec] = specsFor([method], { ...shared, retainRate: rate });
      columns.push({ label: `${method}@${rate}`, spec });
    }
  }
  return columns;
}

async function loadModel(values: Values): Promise<Model> {
  const threads = threadsFlag(values);
  const model = await Model.load(typeof values.model === 'string' ? values.model : DEFAULT_MODEL_DIR, {
    threads, dtype: dtypeFlag(values), onWarning: warnOnStderr, onProgress: (p) => progressLine(`loading ${p.stage} ${p.done}/${p.total}`),
  });
  progressDone();
  return model;
}

/** Checks every column's options against the model before anything long runs. */
function checkColumns(columns: readonly MethodColumn[], model: Model): void {
  for (const c of columns) resolvePolicy(c.spec as CompressionSpec, model.config);
}

/** `--out DIR`, checked before any long work: a folder (or none yet) where none of `files` exists unless --force. */
function outDir(values: Values, files: readonly string[]): string | undefined {
  if (values.out === undefined) return undefined;
  return checkOutputDir(String(values.out), files, { flag: '--out', force: values.force === true });
}

function settingsOf(values: Values, model: Model, columns: readonly MethodColumn[]): Record<string, unknown> {
  const flags = Object.fromEntries(Object.entries(values).filter(([k, v]) => v !== undefined && k !== 'help'));
  return { model: model.dir, flags, columns: columns.map((c) => ({ label: c.label, spec: c.spec })) };
}

function fileSafe(label: string): string {
  return label.replace(/[^A-Za-z0-9._-]+/g, '_');
}

function seedOf(values: Values): number {
  return numberFlag(values, 'seed', { integer: true, min: 0, max: Number.MAX_SAFE_INTEGER }) ?? 42;
}

// ---------------------------------------------------------------------------------------------------------------

/** What niah and ruler share: flags read before loading, then the model, checked against the columns. */
async function setUp(values: Values, columns: readonly MethodColumn[], files: readonly string[]) {
  const maxTokens = numberFlag(values, 'max-tokens', { integer: true, min: 1 });
  const maxContextFlag = numberFlag(values, 'max-context', { integer: true, min: 1 });
  const seed = seedOf(values);
  const haystack = loadHaystack(values.haystack as string | undefined);
  const dir = outDir(values, files);
  const model = await loadModel(values);
  try {
    checkColumns(columns, model);
  } catch (e) {
    await model.dispose();
    throw e;
  }
  return { maxTokens, seed, haystack, dir, model, maxContext: maxContextFlag ?? model.config.maxPositionEmbeddings };
}

function checkLength(what: string, length: number, maxContext: number): void {
  if (length > maxContext) {
    throw new RequestError(`${what} ${length} is more than the limit of ${maxContext} (max_position_embeddings; raise it with --max-context at your own risk)`);
  }
}

async function niahCommand(argv: string[]): Promise<void> {
  const values = parse(argv, {
    ...COMMON_FLAGS, lengths: { type: 'string' }, depths: { type: 'string' }, samples: { type: 'string' },
    haystack: { type: 'string' }, preset: { type: 'string' }, needle: { type: 'string' }, question: { type: 'string' },
    answer: { type: 'string' }, template: { type: 'string' }, 'max-tokens': { type: 'string' },
    chat: { type: 'boolean' }, 'question-after': { type: 'boolean' },
  }, 'niah');
  if (values.help) { process.stdout.write(NIAH_HELP); return; }
  const columns = methodColumns(values);
  const depths = numberList(values, 'depths', { min: 0, max: 100 });
  const lengths = numberList(values, 'lengths', { integer: true, min: 1 });
  const samples = numberFlag(values, 'samples', { integer: true, min: 1 });
  const heatmaps = columns.flatMap((c) => ['word-recall', 'string-match'].map((name) => `niah-${fileSafe(c.label)}-${name}.svg`));
  const { maxTokens, seed, haystack, dir, model, maxContext } = await setUp(values, columns, ['niah.json', ...heatmaps]);
  try {
    for (const l of lengths ?? []) checkLength('--lengths:', l, maxContext);
    const base = {
      haystack, depths, samples, seed, maxTokens, chat: values.chat === true,
      preset: values.preset as string | undefined, needle: values.needle as string | undefined,
      question: values.question as string | undefined, answer: values.answer as string | undefined,
      template: values.template as string | undefined,
      questionAfter: values['question-after'] === true, maxContext,
    };
    const options = { ...base, lengths: lengths ?? defaultNiahLengths(model, base, maxContext) };
    const cases = niahCases(model.tokenizer, options);
    const bar = new ProgressBar('niah', cases.length * columns.length);
    const result = await runNiah(model, columns, options, (note) => bar.tick(note), cases);
    const headers = ['method', 'word recall', 'string match', ...result.lengths.map((l) => `wr@${l}`)];
    const rows = columns.map((c) => {
      const s = result.summary[c.label];
      const perLength = result.lengths.map((_, li) => meanOf(s.wordRecallGrid.map((row) => row[li])));
      return [c.label, s.wordRecall, s.stringMatch, ...perLength];
    });
    process.stdout.write(`NIAH on ${path.basename(model.dir)}: ${cases.length} prompts, ${result.depths.length} depths, ` +
      `question ${options.questionAfter ? 'after the compressed context' : 'inside the compressed prompt'} (scores in %)\n`);
    process.stdout.write(formatTable(headers, rows));
    if (dir) {
      writeJson(path.join(dir, 'niah.json'), { command: 'niah', settings: settingsOf(values, model, columns), ...result });
      for (const c of columns) {
        for (const [metric, grid, name] of [
          ['word recall', result.summary[c.label].wordRecallGrid, 'word-recall'],
          ['string match', result.summary[c.label].stringMatchGrid, 'string-match'],
        ] as const) {
          const svg = heatmapSvg({
            title: `NIAH ${c.label} on ${path.basename(model.dir)}: ${metric} (avg ${result.summary[c.label][name === 'word-recall' ? 'wordRecall' : 'stringMatch'].toFixed(1)})`,
            xLabels: result.lengths, yLabels: result.depths.map((d) => `${d}`), values: grid,
          });
          writeFileAtomic(path.join(dir, `niah-${fileSafe(c.label)}-${name}.svg`), svg);
        }
      }
      process.stderr.write(`results in ${dir}/niah.json and ${dir}/niah-*.svg\n`);
    }
  } finally {
    await model.dispose();
  }
}

/**
 * 8 lengths evenly spaced up to the model's limit (at most 128k, the reference's longest), less those too short
 * to hold much haystack besides the template and needle.
 */
function defaultNiahLengths(model: Model, options: Omit<NiahOptions, 'lengths'>, maxContext: number): number[] {
  const max = Math.min(maxContext, 128_000);
  const floor = 2 * minimumNiahLength(model.tokenizer, options);
  const lengths = [...new Set(Array.from({ length: 8 }, (_, i) => Math.round((max * (i + 1)) / 8)))].filter((l) => l >= floor);
  if (lengths.length === 0) {
    throw new RequestError(`${maxContext} positions are too few for this prompt (${floor / 2} tokens without any haystack); give --lengths`);
  }
  return lengths;
}

function meanOf(xs: readonly number[]): number {
  const ok = xs.filter((x) => Number.isFinite(x));
  return ok.length === 0 ? NaN : ok.reduce((a, b) => a + b, 0) / ok.length;
}

async function rulerCommand(argv: string[]): Promise<void> {
  const values = parse(argv, {
    ...COMMON_FLAGS, length: { type: 'string' }, samples: { type: 'string' }, tasks: { type: 'string' },
    format: { type: 'string' }, haystack: { type: 'string' }, 'max-tokens': { type: 'string' },
    chat: { type: 'boolean' }, 'question-after': { type: 'boolean' },
  }, 'ruler');
  if (values.help) { process.stdout.write(RULER_HELP); return; }
  const columns = methodColumns(values);
  const format = (values.format ?? 'ruler') as RulerFormat;
  if (format !== 'ruler' && format !== 'magic-number') throw new RequestError(`--format must be ruler or magic-number, got "${String(values.format)}"`);
  const tasks = (list(values, 'tasks') ?? (format === 'magic-number' ? MAGIC_NUMBER_TASKS : RULER_TASKS)) as RulerTask[];
  for (const t of tasks) {
    if (!(RULER_TASKS as readonly string[]).includes(t)) throw new RequestError(`--tasks: unknown task "${t}"; known: ${RULER_TASKS.join(', ')}`);
    if (format === 'magic-number' && !MAGIC_NUMBER_TASKS.includes(t)) {
      throw new RequestError(`--tasks: ${t} has no magic-number form; with --format magic-number use ${MAGIC_NUMBER_TASKS.join(', ')}`);
    }
  }
  const samples = numberFlag(values, 'samples', { integer: true, min: 1 }) ?? 10;
  const lengthFlag = numberFlag(values, 'length', { integer: true, min: 1 });
  const { maxTokens, seed, haystack, dir, model, maxContext } = await setUp(values, columns, ['ruler.json']);
  try {
    const length = lengthFlag ?? maxContext;
    checkLength('--length', length, maxContext);
    const bar = new ProgressBar('ruler', tasks.length * samples * columns.length);
    const result = await runRuler(model, columns, {
      length, seed, haystack, format, chat: values.chat === true, maxTokens, tasks, samples,
      questionAfter: values['question-after'] === true, maxContext,
    }, (note) => bar.tick(note));
    process.stdout.write(`RULER on ${path.basename(model.dir)} at ${length} tokens, ${samples} samples per task, format ${format}, ` +
      `question ${values['question-after'] ? 'after the compressed context' : 'inside the compressed prompt'} (string_match_all, %)\n`);
    const rows: (string | number)[][] = tasks.map((t) => [t, ...columns.map((c) => result.scores[c.label][t].stringMatchAll)]);
    rows.push(['average', ...columns.map((c) => result.average[c.label])]);
    process.stdout.write(formatTable(['task', ...columns.map((c) => c.label)], rows));
    if (dir) {
      writeJson(path.join(dir, 'ruler.json'), { command: 'ruler', settings: settingsOf(values, model, columns), length, ...result });
      process.stderr.write(`results in ${dir}/ruler.json\n`);
    }
  } finally {
    await model.dispose();
  }
}

async function fidelityCommand(argv: string[]): Promise<void> {
  const values = parse(argv, {
    ...COMMON_FLAGS, text: { type: 'string' }, context: { type: 'string' }, continuation: { type: 'string' },
    windows: { type: 'string' }, 'reference-dtype': { type: 'string' },
  }, 'fidelity');
  if (values.help) { process.stdout.write(FIDELITY_HELP); return; }
  if (values.text === undefined) throw new RequestError('--text FILE is required (see fastkv eval fidelity --help)');
  const columns = methodColumns(values);
  const context = numberFlag(values, 'context', { integer: true, min: 2 }) ?? 1024;
  const continuation = numberFlag(values, 'continuation', { integer: true, min: 1 }) ?? 64;
  const windows = numberFlag(values, 'windows', { integer: true, min: 1 }) ?? 1;
  const maxContext = numberFlag(values, 'max-context', { integer: true, min: 1 });
  const text = readTextFile(String(values.text), { maxBytes: MAX_TEXT_BYTES, what: `--text ${quoted(String(values.text))}` });
  const referenceDtype = dtypeFlag({ dtype: values['reference-dtype'] });
  const dir = outDir(values, ['fidelity.json']);
  const model = await loadModel(values);
  const reference = referenceDtype !== undefined && referenceDtype !== model.dtype
    ? await loadModel({ ...values, dtype: referenceDtype }).catch(async (e) => { await model.dispose(); throw e; })
    : undefined;
  try {
    checkColumns(columns, model);
    const limit = maxContext ?? model.config.maxPositionEmbeddings;
    if (context + continuation > limit) {
      throw new RequestError(`--context ${context} + --continuation ${continuation} is more than the limit of ${limit} ` +
        '(max_position_embeddings; raise it with --max-context at your own risk)');
    }
    const win = fidelityWindows(model.tokenizer, text, { context, continuation, windows });
    const bar = new ProgressBar('fidelity', win.length * (columns.length + 1));
    const result = await runFidelity(model, columns, win, { maxContext: limit, reference }, (note) => bar.tick(note));
    process.stdout.write(`Fidelity on ${path.basename(model.dir)} (${model.dtype} weights, reference: full cache at ${reference?.dtype ?? model.dtype}): ` +
      `context ${context}, continuation ${continuation}, ${windows} window(s) of ${path.basename(String(values.text))}\n`);
    process.stdout.write(formatTable(['method', 'top-1 agree %', 'KL(full||m)', 'perplexity', 'KV kept %'],
      columns.map((c) => {
        const s = result.scores[c.label];
        return [c.label, s.top1Agreement, s.meanKL, s.perplexity, s.keptPercent];
      })));
    if (dir) {
      writeJson(path.join(dir, 'fidelity.json'), {
        command: 'fidelity', settings: settingsOf(values, model, columns), dtype: model.dtype, referenceDtype: reference?.dtype ?? model.dtype, ...result,
      });
      process.stderr.write(`results in ${dir}/fidelity.json\n`);
    }
  } finally {
    await model.dispose();
    await reference?.dispose();
  }
}

const SUBCOMMANDS: Record<string, (argv: string[]) => Promise<void>> = {
  niah: niahCommand,
  ruler: rulerCommand,
  fidelity: fidelityCommand,
  longbench: async (argv) => (await import('./eval-longbench.js')).longbenchCommand(argv),
};

/** `fastkv eval <subcommand> ...`. */
export async function evalCommand(argv: string[]): Promise<void> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === '--help' || sub === '-h' || sub === 'help') {
    const help = rest[0] === undefined ? undefined : own(SUBCOMMANDS, rest[0]);
    if (sub === 'help' && help) return help(['--help']);
    process.stdout.write(EVAL_HELP);
    return;
  }
  const run = own(SUBCOMMANDS, sub);
  if (!run) throw new RequestError(`unknown eval subcommand ${quoted(sub)}; known: ${Object.keys(SUBCOMMANDS).join(', ')}`);
  await run(rest);
}
