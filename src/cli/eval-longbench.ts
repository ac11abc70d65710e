/**
 * `fastkv eval longbench`: LongBench accuracy of each compression method on the user's LongBench JSONL files.
 * @module
 */
import path from 'node:path';
import { parseArgs } from 'node:util';
import { RequestError } from '../errors.js';
import { Model } from '../engine/model.js';
import { METHOD_OPTIONS, resolvePolicy } from '../compress/registry.js';
import { LONGBENCH_TASKS, loadLongBenchData, runLongBench } from '../eval/longbench.js';
import { ProgressBar, formatTable, writeJson } from '../report.js';
import { DEFAULT_MODEL_DIR, DTYPE_HELP, dtypeFlag, numberFlag, progressDone, progressLine, threadsFlag, warnOnStderr } from './args.js';
import { COMPRESSION_FLAGS, COMPRESSION_HELP, OPTION_FLAGS, compressionOptionsFromFlags } from './compression-flags.js';
import { methodColumns } from './eval.js';
import { checkOutputDir } from '../files.js';

export const LONGBENCH_HELP = `Usage: fastkv eval longbench --data PATH [--model DIR] [options]

Scores KV-cache compression methods on LongBench (v1): LongBench's prompt templates and max new tokens per task,
middle truncation of long prompts, the chat template except on trec, triviaqa, samsum, lcc and repobench-p,
greedy decoding, and LongBench's metrics (token F1, ROUGE-L, classification, count, retrieval, code edit
similarity). Scores are 100 x the mean per-sample score; Avg is the mean over tasks.

Data:
  --data PATH            A folder of LongBench JSONL files (<task>.jsonl, e.g. from LongBench's data.zip), or one
                         such file. Tasks: ${LONGBENCH_TASKS.slice(0, 6).join(', ')},
                         ${LONGBENCH_TASKS.slice(6, 13).join(', ')},
                         ${LONGBENCH_TASKS.slice(13).join(', ')}.
                         LongBench-E files (<task>_e.jsonl) run when named with --tasks.
  --tasks a,b            Tasks to run (default: every task file present in the folder).
  --limit N              At most N samples per task (the first N in the file).

Model and protocol:
  --model DIR            Hugging Face checkpoint folder (default: the bundled stories260K).
  --methods a,b          Compression methods to compare (default full,fastkv); the options below are shared,
                         each method taking the ones it knows.
  --retain-rates R1,R2   One column per method and retain rate (method@rate; full once).
  --max-context N        Longest prompt + answer (default: max_position_embeddings); longer prompts keep their
                         first and last halves.
  --question-after       kvpress's protocol: compress the context alone, then append the question uncompressed.
                         Default: the paper's protocol, the question is part of the compressed prompt.
  --seed S               Sampler seed (default 42; decoding is greedy).
  --threads N            ONNX Runtime threads (default: one per core).
${DTYPE_HELP}

${COMPRESSION_HELP}  (Here --methods replaces --method.)

Output:
  --out DIR              Write DIR/results.json: settings, per-task and average scores per method, and every
                         sample's predictions and scores. Checked before the run; kept unless --force.
  --force                Overwrite an existing DIR/results.json.
  -h, --help             Show this help.
`;

export async function longbenchCommand(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      model: { type: 'string' }, data: { type: 'string' }, tasks: { type: 'string' }, methods: { type: 'string' },
      'retain-rates': { type: 'string' },
      'max-context': { type: 'string' }, limit: { type: 'string' }, 'question-after': { type: 'boolean' },
      threads: { type: 'string' }, dtype: { type: 'string' }, out: { type: 'string' }, force: { type: 'boolean' }, seed: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
      ...COMPRESSION_FLAGS,
    },
    strict: true,
  });
  if (values.help) { process.stdout.write(LONGBENCH_HELP); return; }
  if (values.data === undefined) throw new RequestError('--data PATH is required: a folder of LongBench .jsonl files or one such file (see fastkv eval longbench --help)');
  if (values.method !== undefined) throw new RequestError('--method is not used by eval longbench; list the methods to compare with --methods (e.g. --methods full,fastkv)');

  const methodValues = { ...values, methods: values.methods ?? 'full,fastkv' };
  const columns = methodColumns(methodValues); // as the other eval commands: labels "method" or "method@rate"
  const methods = list(methodValues.methods, 'methods');
  const shared = compressionOptionsFromFlags(values);
  for (const key of Object.keys(shared)) {
    if (!methods.some((m) => METHOD_OPTIONS[m]?.includes(key))) {
      throw new RequestError(`--${OPTION_FLAGS[key]?.flag ?? key} is not used by any of --methods ${methods.join(',')}`);
    }
  }
  const maxContext = numberFlag(values, 'max-context', { integer: true, min: 1 });
  const limit = numberFlag(values, 'limit', { integer: true, min: 1 });
  const seed = numberFlag(values, 'seed', { integer: true }) ?? 42;
  const threads = threadsFlag(values);
  const tasks = values.tasks === undefined ? undefined : list(values.tasks, 'tasks');
  const out = values.out === undefined ? undefined : checkOutputDir(values.out, ['results.json'], { flag: '--out', force: values.force });

  const data = loadLongBenchData(values.data, {
    tasks, limit,
    onSkip: (file, why) => process.stderr.write(`skipping ${file}: ${why}\n`),
  });
  const modelDir = values.model ?? DEFAULT_MODEL_DIR;
  const model = await Model.load(modelDir, { threads, dtype: dtypeFlag(values), onWarning: warnOnStderr, onProgress: (p) => progressLine(`loading ${p.stage} ${p.done}/${p.total}`) });
  progressDone();
  try {
    for (const c of columns) resolvePolicy(c.spec, model.config); // bad options fail before hours of generation
    const total = data.reduce((n, d) => n + d.samples.length, 0) * columns.length;
    const bar = new ProgressBar('longbench', total);
    const results = await runLongBench(model, data, columns, {
      maxContext, questionAfter: values['question-after'] ?? false, seed,
      onProgress: (task, method) => bar.tick(`${task} ${method}`),
    });

    const labels = results.methods.map((m) => m.label);
    const rows: (string | number)[][] = results.tasks.map((t) => [t.name, ...labels.map((l) => results.scores[t.name][l])]);
    rows.push(['Avg', ...labels.map((l) => results.average[l])]);
    process.stdout.write(`LongBench, ${path.basename(model.dir)}, ${results.placement}, max context ${results.maxContext}, ` +
      `${data.reduce((n, d) => n + d.samples.length, 0)} samples\n`);
    process.stdout.write(formatTable(['task', ...labels], rows));
    if (out !== undefined) {
      const file = writeJson(path.join(out, 'results.json'), {
        model: model.dir, data: path.resolve(values.data), limit: limit ?? null, ...results,
      });
      process.stderr.write(`results: ${file}\n`);
    }
  } finally {
    await model.dispose();
  }
}

/** A comma-separated flag value as a list of non-empty names. */
function list(value: string, flag: string): string[] {
  const items = value.split(',').map((s) => s.trim()).filter((s) => s.length > 0);
  if (items.length === 0) throw new RequestError(`--${flag} needs at least one name, got "${value}"`);
  return items;
}
