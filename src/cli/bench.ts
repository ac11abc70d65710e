/**
 * `fastkv bench`: the prefill/decode benchmark on a generated random-weight checkpoint of a real model's shape,
 * or on a checkpoint the user points to.
 * @module
 */
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { RequestError, quoted } from '../errors.js';
import { hasOwn } from '../own.js';
import { checkOutputFile, writeFileAtomic } from '../files.js';
import { SHAPES, writeRandomCheckpoint } from '../bench/random-checkpoint.js';
import { DEFAULT_DECODE_TOKENS, DEFAULT_LENGTHS, formatReport, machineInfo, runPrefillDecodeBench, type BenchReport } from '../bench/prefill-decode.js';
import { runMethodsBench, formatMethods } from '../bench/methods.js';
import { formatContextReuse, runContextReuseBench } from '../bench/context-reuse.js';
import { formatConcurrency, runConcurrencyBench } from '../bench/concurrency.js';
import { MAX_BATCH } from '../engine/batcher.js';
import { Model } from '../engine/model.js';
import { loadConfig } from '../model/config.js';
import { resolvePolicy, specsFor } from '../compress/registry.js';
import { writeHeadScores } from '../compress/headkv.js';
import { dtypeList, numberFlag, parseIntegerList, progressDone, progressLine, threadsFlag, warnOnStderr } from './args.js';
import { formatTable } from '../report.js';
import type { WeightDtype } from '../graph/linear.js';
import { COMPRESSION_FLAGS, compressionOptionsFromFlags, optionFlagNames } from './compression-flags.js';

const DEFAULT_SHAPE = 'qwen2.5-0.5b';
const DEFAULT_CACHE_DIR = '.bench-models';
const METHOD_LENGTHS = [4096, 8192, 16384];

export const BENCH_HELP = `Usage: fastkv bench [options]

Measures prefill and decode speed: for each prompt length, time to first token, prefill tokens/s and effective
GFLOP/s (also as a % of the matmul rate ONNX Runtime reaches in the same run on the model's largest projection),
greedy decode tokens/s, KV-cache size and memory (RSS). Prompts are seeded random token ids, so no tokenizer
is needed. By default the model is a checkpoint of a real model's shape with seeded random weights (timing does
not depend on weight values), generated once into the cache folder.

Options:
  --shape NAME          model shape to generate: ${Object.keys(SHAPES).join(' | ')} (default ${DEFAULT_SHAPE})
  --model DIR           benchmark this checkpoint (config.json + *.safetensors) instead of a generated one
  --lengths LIST        comma-separated prompt lengths in tokens (default ${DEFAULT_LENGTHS.join(',')})
  --decode-tokens N     greedy tokens decoded after each prefill (default ${DEFAULT_DECODE_TOKENS}; 0 = none)
  --threads N           ONNX Runtime intra-op threads (default: one per core)
  --dtype LIST          weight formats to compare, e.g. fp32,q8,q4,int8 (default fp32): one model load and one
                        table per format, then a summary with the memory-bandwidth bound on decode
  --seed S              seed of the random weights and prompts (default 0)
  --cache-dir DIR       where generated checkpoints go (default ./${DEFAULT_CACHE_DIR}; BF16, about 1 GB for
                        qwen2.5-0.5b, 2.5 GB for llama-3.2-1b, 16 GB for llama-3.1-8b; never commit them)
  --methods LIST        compare methods against full instead (e.g. full,fastkv,snapkv,pyramidkv,adakv,headkv,
                        gemfilter,streamingllm): TTFT and decode speedups with their arithmetic bounds, KV
                        bytes, scoring share, FastKV's TTFT over HeadKV's (headkv gets equal head scores on a
                        generated checkpoint unless --head-scores is given);
                        lengths default to ${METHOD_LENGTHS.join(',')} and decode tokens to 128
  --context-reuse       time a question on a saved context instead: per method (--methods, default full,fastkv),
                        TTFT of document + question prefilled together vs building the context, saving it,
                        loading the file and asking the question on it (--lengths: the context length,
                        default 8192; --question-tokens N, default 32)
  --question-tokens N   question length for --context-reuse
  --concurrency LIST    continuous batching instead: per method (--methods, default full,fastkv), 1 and each
                        listed number of sequences (e.g. 1,2,4,8) decode --decode-tokens tokens (default 32)
                        together after prompts of --lengths tokens (one length, default 4096): aggregate and
                        per-sequence decode tokens/s, KV bytes, RSS
  --retain-rate R, --tsp-rate R, --budget B, ...   method options, as in fastkv generate --help
  --json FILE           also write the results as JSON to FILE (checked before the run; an existing FILE is
                        kept unless --force); "--json -" prints JSON instead of the table
  --force               overwrite an existing --json FILE
  -h, --help            show this help

Progress goes to stderr (on a terminal); the table or JSON to stdout. Expect minutes on a laptop-class CPU:
an 8192-token prefill of qwen2.5-0.5b is about 9 TFLOP.
`;

export async function benchCommand(argv: string[]): Promise<void> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        shape: { type: 'string' },
        model: { type: 'string' },
        lengths: { type: 'string' },
        'decode-tokens': { type: 'string' },
        threads: { type: 'string' },
        dtype: { type: 'string' },
        seed: { type: 'string' },
        'cache-dir': { type: 'string' },
        json: { type: 'string' },
        force: { type: 'boolean' },
        methods: { type: 'string' },
        'context-reuse': { type: 'boolean' },
        'question-tokens': { type: 'string' },
        concurrency: { type: 'string' },
        ...COMPRESSION_FLAGS,
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (e) {
    throw new RequestError(`${(e as Error).message} (see fastkv bench --help)`, { cause: e });
  }
  if (values.help) {
    process.stdout.write(BENCH_HELP);
    return;
  }
  if (values.model !== undefined && values.shape !== undefined) {
    throw new RequestError('--model and --shape exclude each other: --shape generates a checkpoint, --model uses one');
  }
  const shape = values.shape ?? DEFAULT_SHAPE;
  if (!hasOwn(SHAPES, shape)) throw new RequestError(`--shape must be one of ${Object.keys(SHAPES).join(', ')}, got ${quoted(shape)}`);
  const lengths = values.lengths !== undefined ? parseIntegerList('--lengths', values.lengths, 'prompt length') : [...DEFAULT_LENGTHS];
  const decodeTokens = numberFlag(values, 'decode-tokens', { integer: true, min: 0 }) ?? DEFAULT_DECODE_TOKENS;
  const threads = threadsFlag(values);
  const seed = numberFlag(values, 'seed', { integer: true, min: 0, max: Number.MAX_SAFE_INTEGER }) ?? 0;
  const dtypes: WeightDtype[] = dtypeList(values) ?? ['fp32'];
  const jsonTarget = values.json;
  if (jsonTarget === '') throw new RequestError('--json needs a file name, or - for stdout');
  // Every output path is checked before minutes of benchmarking, not after.
  const jsonFile = jsonTarget === undefined || jsonTarget === '-' ? undefined : checkOutputFile(jsonTarget, { flag: '--json', force: values.force });
  if (values.method !== undefined) throw new RequestError('bench compares methods with --methods LIST (e.g. --methods full,fastkv), not --method');
  // The checkpoint's folder names the default calibration file of --tsp-layer auto.
  const checkpointDir = values.model !== undefined ? path.resolve(values.model) : path.join(path.resolve(values['cache-dir'] ?? DEFAULT_CACHE_DIR), `${shape}-seed${seed}`);
  const sharedOptions = compressionOptionsFromFlags(values, checkpointDir);
  const concurrency = values.concurrency !== undefined ? parseIntegerList('--concurrency', values.concurrency, 'number of sequences', MAX_BATCH) : undefined;
  if (concurrency && values['context-reuse']) throw new RequestError('--concurrency and --context-reuse are separate benchmarks: give one');
  if (values.methods === undefined && !values['context-reuse'] && !concurrency && Object.keys(sharedOptions).length > 0) {
    throw new RequestError(`${optionFlagNames(sharedOptions).join(', ')}: method options need --methods (see fastkv bench --help)`);
  }

  let dir: string;
  let label: string;
  if (values.model !== undefined) {
    dir = path.resolve(values.model);
    label = path.basename(dir);
  } else {
    const cacheDir = path.resolve(values['cache-dir'] ?? DEFAULT_CACHE_DIR);
    dir = path.join(cacheDir, `${shape}-seed${seed}`);
    label = `${shape} (random weights, seed ${seed})`;
    let lastPercent = -1;
    const written = writeRandomCheckpoint(dir, shape, seed, (p) => {
      const percent = Math.floor((100 * p.done) / p.total);
      if (percent !== lastPercent) progressLine(`generating ${shape} in ${dir}: ${percent}%`);
      lastPercent = percent;
    });
    progressDone();
    if (written.written) process.stderr.write(`wrote ${shape} checkpoint (${(written.bytes / 2 ** 30).toFixed(2)} GiB) to ${dir}\n`);
  }

  if (values['context-reuse']) {
    const methods = specsFor((values.methods ?? 'full,fastkv').split(',').map((m) => m.trim()).filter(Boolean), sharedOptions);
    if (dtypes.length !== 1) throw new RequestError('--context-reuse takes one --dtype');
    const model = await Model.load(dir, { threads, dtype: dtypes[0], withoutTokenizer: true, onWarning: warnOnStderr, onProgress: (p) => progressLine(`loading ${p.stage} ${p.done}/${p.total}`) });
    for (const spec of methods) resolvePolicy(spec, model.config);
    const contextLengths = values.lengths !== undefined ? lengths : [8192];
    if (contextLengths.length !== 1) throw new RequestError('--context-reuse takes one context length in --lengths');
    const results = await runContextReuseBench(model, {
      contextTokens: contextLengths[0], methods, seed,
      questionTokens: numberFlag(values, 'question-tokens', { integer: true, min: 1 }) ?? 32,
      onProgress: (text) => progressLine(`${label}: ${text}`),
    });
    progressDone();
    await model.dispose();
    const out = { label, model: dir, threads: model.threads, results };
    if (jsonTarget === '-') { process.stdout.write(`${JSON.stringify(out, null, 2)}\n`); return; }
    if (jsonFile !== undefined) writeFileAtomic(jsonFile, `${JSON.stringify(out, null, 2)}\n`);
    process.stdout.write(`${label}, ${model.threads} ONNX Runtime threads\n\n${formatContextReuse(results)}`);
    return;
  }

  if (concurrency) {
    const methods = specsFor((values.methods ?? 'full,fastkv').split(',').map((m) => m.trim()).filter(Boolean), sharedOptions);
    if (dtypes.length !== 1) throw new RequestError('--concurrency takes one --dtype');
    const promptLengths = values.lengths !== undefined ? lengths : [4096];
    if (promptLengths.length !== 1) throw new RequestError('--concurrency takes one prompt length in --lengths');
    const model = await Model.load(dir, {
      threads, dtype: dtypes[0], withoutTokenizer: true, onWarning: warnOnStderr, batching: { maxBatch: Math.max(...concurrency) },
      onProgress: (p) => progressLine(`loading ${p.stage} ${p.done}/${p.total}`),
    });
    for (const spec of methods) resolvePolicy(spec, model.config);
    let results;
    try {
      results = await runConcurrencyBench(model, {
        promptTokens: promptLengths[0], levels: concurrency, methods, seed,
        decodeTokens: numberFlag(values, 'decode-tokens', { integer: true, min: 1 }) ?? 32,
        onProgress: (text) => progressLine(`${label} ${dtypes[0]}: ${text}`),
      });
    } finally {
      progressDone();
      await model.dispose();
    }
    const out = { label, model: dir, dtype: dtypes[0], threads: model.threads, machine: machineInfo(), date: new Date().toISOString(), results };
    if (jsonTarget === '-') { process.stdout.write(`${JSON.stringify(out, null, 2)}\n`); return; }
    if (jsonFile !== undefined) writeFileAtomic(jsonFile, `${JSON.stringify(out, null, 2)}\n`);
    process.stdout.write(`${label}, ${dtypes[0]} weights, ${model.threads} ONNX Runtime threads\n\n${formatConcurrency(results)}`);
    return;
  }

  if (values.methods !== undefined) {
    let methods = specsFor(values.methods.split(',').map((m) => m.trim()).filter(Boolean), sharedOptions);
    if (values.model === undefined && methods.some((m) => m.method === 'headkv' && m.headScores === undefined)) {
      // Random weights have no important heads to find: equal scores give every head the same budget, which
      // times HeadKV's prefill and decode as well as any (its cost does not depend on which heads get more).
      const config = loadConfig(dir);
      const file = path.join(dir, 'uniform-head-scores.json');
      writeHeadScores(file, config.numLayers, config.numHeads, () => [1]);
      process.stderr.write(`headkv: random weights, so equal head scores (${file})\n`);
      methods = methods.map((m) => (m.method === 'headkv' && m.headScores === undefined ? { ...m, headScores: file } : m));
    }
    const runs: { dtype: WeightDtype; threads: number; results: Awaited<ReturnType<typeof runMethodsBench>> }[] = [];
    for (const dtype of dtypes) {
      const model = await Model.load(dir, { threads, dtype, withoutTokenizer: true, onWarning: warnOnStderr, onProgress: (p) => progressLine(`loading ${dtype} ${p.stage} ${p.done}/${p.total}`) });
      try {
        for (const spec of methods) resolvePolicy(spec, model.config); // check every option before the long run
        const results = await runMethodsBench(model, {
          lengths: values.lengths !== undefined ? lengths : METHOD_LENGTHS,
          methods, seed,
          decodeTokens: numberFlag(values, 'decode-tokens', { integer: true, min: 0 }) ?? 128,
          onProgress: (text) => progressLine(`${label} ${dtype}: ${text}`),
        });
        runs.push({ dtype, threads: model.threads, results });
      } finally {
        await model.dispose();
      }
    }
    progressDone();
    // One format: the same JSON as before formats existed (what `fastkv report` reads), plus its dtype.
    const jsonRun = (run: typeof runs[number]) => ({
      label, model: dir, dtype: run.dtype, threads: run.threads, machine: machineInfo(), date: new Date().toISOString(),
      results: run.results.map(({ layers, ...r }) => ({ ...r, rowsPerLayer: layers.map((l) => l.rows), keptPerLayer: layers.map((l) => l.keptPerHead ?? l.kept) })),
    });
    const out = runs.length === 1 ? jsonRun(runs[0]) : { runs: runs.map(jsonRun) };
    if (jsonTarget === '-') { process.stdout.write(`${JSON.stringify(out, null, 2)}\n`); return; }
    if (jsonFile !== undefined) writeFileAtomic(jsonFile, `${JSON.stringify(out, null, 2)}\n`);
    for (const run of runs) process.stdout.write(`${label}, ${run.dtype} weights, ${run.threads} ONNX Runtime threads\n\n${formatMethods(run.results)}\n`);
    return;
  }

  const reports: BenchReport[] = [];
  if (dtypes.length === 1) {
    reports.push(await runPrefillDecodeBench(dir, {
      lengths, decodeTokens, threads, seed, label, dtype: dtypes[0],
      onProgress: (text) => progressLine(`${label} ${dtypes[0]}: ${text}`),
    }));
    progressDone();
  } else {
    // One child process per format, one after the other: each gets a fresh heap, and its own peak RSS.
    for (const dtype of dtypes) reports.push(benchInChild(argv, dtype));
  }

  const json = `${JSON.stringify(reports.length === 1 ? reports[0] : reports, null, 2)}\n`;
  if (jsonTarget === '-') {
    process.stdout.write(json);
    return;
  }
  if (jsonFile !== undefined) writeFileAtomic(jsonFile, json);
  process.stdout.write(reports.map(formatReport).join('\n'));
  if (reports.length > 1) process.stdout.write(`\n${formatDtypeSummary(reports)}`);
}

const MiB = 1024 * 1024;

/** Runs this bench command again in a child process with `--dtype dtype --json -` and returns its report. */
function benchInChild(argv: readonly string[], dtype: WeightDtype): BenchReport {
  const args: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--dtype' || a === '--json') { i++; continue; }
    if (a.startsWith('--dtype=') || a.startsWith('--json=')) continue;
    args.push(a);
  }
  const child = spawnSync(process.execPath, [...process.execArgv, process.argv[1], 'bench', ...args, '--dtype', dtype, '--json', '-'], {
    stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 64 * 1024 * 1024,
  });
  if (child.status !== 0) throw new RequestError(`the ${dtype} benchmark failed (exit status ${child.status ?? child.signal})`);
  return JSON.parse(child.stdout.toString('utf8')) as BenchReport;
}

/** One row per (dtype, length): the numbers the weight formats are compared on. */
function formatDtypeSummary(reports: readonly BenchReport[]): string {
  const rows: string[][] = [];
  for (const r of reports) {
    for (const x of r.results) {
      rows.push([
        r.dtype, String(x.tokens), x.ttftSeconds.toFixed(2), x.prefillTokensPerSecond.toFixed(0),
        x.decodeTokens > 0 ? x.decodeTokensPerSecond.toFixed(2) : '-', x.decodeBoundTokensPerSecond.toFixed(1),
        x.decodeTokens > 0 ? `${((100 * x.decodeTokensPerSecond) / x.decodeBoundTokensPerSecond).toFixed(0)}%` : '-',
        (r.decodeWeightBytes / MiB).toFixed(0), (r.loadRssBytes / MiB).toFixed(0), (x.peakRssBytes / MiB).toFixed(0),
      ]);
    }
  }
  return `summary (one process per dtype, run one after the other)\n` + formatTable(
    ['dtype', 'tokens', 'TTFT s', 'prefill tok/s', 'decode tok/s', 'bound tok/s', '% bound', 'MiB read/token', 'RSS after load MiB', 'peak RSS MiB'], rows);
}
