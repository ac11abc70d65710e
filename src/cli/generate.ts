/**
 * `fastkv generate`: stream a completion to stdout, or print one JSON object with `--json`.
 * @module
 */
import { parseArgs } from 'node:util';
import { RequestError, quoted } from '../errors.js';
import { MAX_TEXT_BYTES, readStreamText, readTextFile } from '../files.js';
import { Model } from '../engine/model.js';
import { stream, type GenerateOptions } from '../engine/generate.js';
import { loadContext } from '../engine/context-file.js';
import { DEFAULT_MODEL_DIR, DTYPE_HELP, dtypeFlag, numberFlag, progressDone, progressLine, threadsFlag, warnOnStderr } from './args.js';
import { COMPRESSION_FLAGS, COMPRESSION_HELP, compressionFromFlags } from './compression-flags.js';

export const GENERATE_HELP = `Usage: fastkv generate [--model DIR] (--prompt TEXT | --prompt-file FILE) [options]

Generates text from a prompt, streaming it to stdout (progress and timings go to stderr).

Model and prompt:
  --model DIR            Hugging Face checkpoint folder (config.json, *.safetensors, tokenizer.json).
                         Default: the bundled stories260K.
  --prompt TEXT          The prompt.
  --prompt-file FILE     Read the prompt from FILE ('-' for stdin); a regular file of at most 256 MiB.
  --chat                 Apply the model's chat template (the prompt becomes a user message).
  --system TEXT          System message (needs --chat).
  --max-context N        Longest prompt + output allowed (default: max_position_embeddings).
  --context FILE         Continue a compressed context saved by 'fastkv compress': the prompt follows the
                         context's tokens (with --chat, as a user message after the context's messages).

Sampling:
  --max-tokens N         Most tokens to generate (default 256).
  --temperature T        0 = greedy. Unset sampling options take the model's generation_config.json values
                         (as transformers: greedy unless it sets do_sample), else greedy.
  --top-k K              Keep the K most likely tokens (0 = off).
  --top-p P              Nucleus sampling mass, (0, 1] (1 = off).
  --min-p P              Drop tokens below P × the top probability, [0, 1) (0 = off).
  --repetition-penalty R Penalize tokens already seen, > 0 (1 = off).
  --seed S               Sampler seed (default: random; printed with --json).
  --stop TEXT            Stop when TEXT appears (repeatable).
  --ignore-eos           Keep generating past the end-of-sequence token.

${COMPRESSION_HELP}
Output:
  --threads N            ONNX Runtime threads (default: one per core).
${DTYPE_HELP}
  --json                 Print one JSON object: text, prompt_ids, output_ids, finish_reason, timings, layers.
  -h, --help             Show this help.
`;

export async function generateCommand(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      model: { type: 'string' }, prompt: { type: 'string' }, 'prompt-file': { type: 'string' },
      chat: { type: 'boolean' }, system: { type: 'string' }, 'max-context': { type: 'string' },
      'max-tokens': { type: 'string' }, temperature: { type: 'string' }, 'top-k': { type: 'string' },
      'top-p': { type: 'string' }, 'min-p': { type: 'string' }, 'repetition-penalty': { type: 'string' },
      seed: { type: 'string' }, stop: { type: 'string', multiple: true }, 'ignore-eos': { type: 'boolean' },
      threads: { type: 'string' }, dtype: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' },
      context: { type: 'string' },
      ...COMPRESSION_FLAGS,
    },
    strict: true,
  });
  if (values.help) { process.stdout.write(GENERATE_HELP); return; }
  if ((values.prompt === undefined) === (values['prompt-file'] === undefined)) {
    throw new RequestError('give exactly one of --prompt TEXT or --prompt-file FILE (see fastkv generate --help)');
  }
  if (values.system !== undefined && !values.chat) throw new RequestError('--system needs --chat (the system message goes through the chat template)');
  const prompt = values.prompt ?? await readPromptFile(values['prompt-file']!);
  if (values.context !== undefined && values.method !== undefined) {
    throw new RequestError('--context continues an already compressed context; leave out --method and its options');
  }
  const options: GenerateOptions = {
    chat: values.chat, system: values.system, stop: values.stop, ignoreEos: values['ignore-eos'],
    maxTokens: numberFlag(values, 'max-tokens', { integer: true, min: 0 }),
    maxContext: numberFlag(values, 'max-context', { integer: true, min: 1 }),
    temperature: numberFlag(values, 'temperature', { min: 0 }),
    topK: numberFlag(values, 'top-k', { integer: true, min: 0 }),
    topP: numberFlag(values, 'top-p'),
    minP: numberFlag(values, 'min-p'),
    repetitionPenalty: numberFlag(values, 'repetition-penalty'),
    seed: numberFlag(values, 'seed', { integer: true }),
    compression: compressionFromFlags(values),
    onPrefillLayer: (l, L, rows) => (l + 1 < L ? progressLine(`prefill: layer ${l + 1}/${L} (${rows} tokens)`) : progressDone()),
  };
  const threads = threadsFlag(values);
  const model = await Model.load(values.model ?? DEFAULT_MODEL_DIR, {
    threads, dtype: dtypeFlag(values), onWarning: warnOnStderr,
    onProgress: (p) => progressLine(`loading ${p.stage} ${p.done}/${p.total}`),
  });
  progressDone();
  if (values.context !== undefined) options.context = await loadContext(model, values.context);

  const tokens = stream(model, prompt, options);
  for await (const chunk of tokens) if (!values.json) process.stdout.write(chunk.text);
  const r = await tokens.result;
  if (values.json) {
    process.stdout.write(JSON.stringify({
      text: r.text, prompt_ids: r.promptIds, output_ids: r.outputIds, finish_reason: r.finishReason,
      method: r.method, seed: r.seed, context_tokens: r.timings.contextTokens, timings: r.timings,
      layers: r.layers.map((l) => ({ rows: l.rows, kept_per_kv_head: l.keptPerHead ?? l.kept })),
    }, null, 2) + '\n');
  } else {
    process.stdout.write('\n');
    const t = r.timings;
    process.stderr.write(`[${r.method}] ${t.promptTokens} prompt tokens, ${t.generatedTokens} generated (${r.finishReason}); ` +
      `TTFT ${t.timeToFirstTokenMs.toFixed(1)} ms, prefill ${t.prefillTokensPerSecond.toFixed(1)} tok/s, ` +
      `decode ${t.decodeTokensPerSecond.toFixed(1)} tok/s, KV cache ${(t.kvCacheBytes / 1024).toFixed(1)} KiB\n`);
  }
  await model.dispose();
}

/** The prompt file, or stdin for '-': bounded, so /dev/zero, a FIFO or endless stdin cannot grow memory forever. */
export async function readPromptFile(file: string): Promise<string> {
  if (file === '-') return readStreamText(process.stdin, { maxBytes: MAX_TEXT_BYTES, what: '--prompt-file - (standard input)' });
  return readTextFile(file, { maxBytes: MAX_TEXT_BYTES, what: `--prompt-file ${quoted(file)}` });
}
