/**
 * `fastkv compress`: prefill and compress a document once and save the context, for `fastkv generate --context`
 * and the server's contexts to continue.
 * @module
 */
import { parseArgs } from 'node:util';
import { RequestError } from '../errors.js';
import { Model } from '../engine/model.js';
import { compressContext } from '../engine/context.js';
import { checkOutputPath } from '../engine/context-file.js';
import { DEFAULT_MODEL_DIR, DTYPE_HELP, dtypeFlag, numberFlag, progressDone, progressLine, threadsFlag, warnOnStderr } from './args.js';
import { COMPRESSION_FLAGS, COMPRESSION_HELP, compressionFromFlags } from './compression-flags.js';
import { readPromptFile } from './generate.js';

export const COMPRESS_HELP = `Usage: fastkv compress [--model DIR] (--prompt TEXT | --prompt-file FILE) --out FILE [options]

Prefills a document once under a compression method and saves the compressed KV cache, its positions and the
token ids to FILE, with a fingerprint of the model. Continue it with
  fastkv generate --context FILE --prompt "question"
Prints the tokens, the KV bytes kept and the time the prefill took.

  --model DIR            Hugging Face checkpoint folder (default: the bundled stories260K).
  --prompt TEXT          The document.
  --prompt-file FILE     Read the document from FILE ('-' for stdin).
  --out FILE             Where to save the context (written through a temporary file renamed into place).
  --chat                 Make the document a user message (with --system, after a system message); continue
                         it with 'fastkv generate --context FILE --chat --prompt QUESTION'.
  --system TEXT          System message (with --chat).
  --max-context N        Most tokens the document may have (default: max_position_embeddings).
  --threads N            ONNX Runtime threads (default: one per core).
${DTYPE_HELP}
                         (a context continues only on a model loaded with the same --dtype)
  --json                 Print one JSON object instead of a line.

${COMPRESSION_HELP}`;

export async function compressCommand(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      model: { type: 'string' }, prompt: { type: 'string' }, 'prompt-file': { type: 'string' }, out: { type: 'string' },
      chat: { type: 'boolean' }, system: { type: 'string' }, 'max-context': { type: 'string' },
      threads: { type: 'string' }, dtype: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' },
      ...COMPRESSION_FLAGS,
    },
    strict: true,
  });
  if (values.help) { process.stdout.write(COMPRESS_HELP); return; }
  if ((values.prompt === undefined) === (values['prompt-file'] === undefined)) {
    throw new RequestError('give exactly one of --prompt TEXT or --prompt-file FILE (see fastkv compress --help)');
  }
  if (values.out === undefined) throw new RequestError('give --out FILE, where the context is saved');
  if (values.system !== undefined && !values.chat) throw new RequestError('--system needs --chat');
  checkOutputPath(values.out);
  const document = values.prompt ?? await readPromptFile(values['prompt-file']!);
  const compression = compressionFromFlags(values);
  const maxContext = numberFlag(values, 'max-context', { integer: true, min: 1 });
  const model = await Model.load(values.model ?? DEFAULT_MODEL_DIR, {
    threads: threadsFlag(values), dtype: dtypeFlag(values), onWarning: warnOnStderr,
    onProgress: (p) => progressLine(`loading ${p.stage} ${p.done}/${p.total}`),
  });
  progressDone();
  const messages = values.system !== undefined ? [{ role: 'system', content: values.system }] : [];
  const input = values.chat ? { messages: [...messages, { role: 'user', content: document }] } : document;
  const ctx = await compressContext(model, input, {
    compression, maxContext,
    onPrefillLayer: (l, L, rows) => (l + 1 < L ? progressLine(`prefill: layer ${l + 1}/${L} (${rows} tokens)`) : progressDone()),
  });
  const t0 = performance.now();
  await ctx.save(values.out);
  const saveMs = performance.now() - t0;
  if (values.json) {
    process.stdout.write(JSON.stringify({
      file: values.out, tokens: ctx.tokens, kv_bytes: ctx.kvBytes, method: ctx.method, method_options: ctx.methodOptions,
      prefill_ms: ctx.prefillMs, policy_ms: ctx.policyMs, save_ms: saveMs,
      layers: ctx.layers.map((l) => ({ rows: l.rows, kept_per_kv_head: l.keptPerHead ?? l.kept })),
    }, null, 2) + '\n');
  } else {
    process.stdout.write(`[${ctx.method}] ${ctx.tokens} tokens, KV cache ${(ctx.kvBytes / 1024).toFixed(1)} KiB, ` +
      `TTFT (prefill) ${ctx.prefillMs.toFixed(1)} ms, saved to ${values.out} in ${saveMs.toFixed(1)} ms\n`);
  }
  await model.dispose();
}
