/**
 * `fastkv serve`: the OpenAI-compatible server (`src/serve/server.ts`) from the command line, until SIGINT or
 * SIGTERM, which cancel the generations in flight and exit cleanly.
 * @module
 */
import path from 'node:path';
import { parseArgs } from 'node:util';
import { RequestError } from '../errors.js';
import { Model } from '../engine/model.js';
import { DEFAULT_PARALLEL, createServer } from '../serve/server.js';
import { MAX_BATCH } from '../engine/batcher.js';
import { DEFAULT_MODEL_DIR, DTYPE_HELP, dtypeFlag, numberFlag, progressDone, progressLine, threadsFlag, warnOnStderr } from './args.js';
import { COMPRESSION_FLAGS, COMPRESSION_HELP, compressionFromFlags } from './compression-flags.js';

export const SERVE_HELP = `Usage: fastkv serve [--model DIR] [--host 127.0.0.1] [--port 8080] [options]

An OpenAI-compatible HTTP server: POST /v1/chat/completions and /v1/completions (streamed with server-sent
events or not), GET /v1/models, compressed contexts (POST/GET /v1/contexts, GET/DELETE /v1/contexts/{id}),
GET /health, and a playground page at /. Per-request compression through the "kv_compression" field,
contexts through "context_id"; timings in the "fastkv" field of each response.

  --model DIR              Hugging Face checkpoint folder (default: the bundled stories260K).
  --host HOST              Address to bind (default 127.0.0.1: this machine only).
  --port N                 Port (default 8080; 0 picks a free one).
  --api-key KEY            Require 'Authorization: Bearer KEY' on /v1/* (also read from FASTKV_API_KEY).
  --parallel N             Requests generating at once (default 4); they decode together, one step for all.
  --max-queue N            Requests waiting beyond those; more are answered 429 (default 16).
  --max-prompt-tokens N    Most tokens a prompt or context may have (default: max_position_embeddings).
  --max-body-bytes N       Largest request body (default 8388608).
  --context-dir DIR        Save contexts here and load them again at start.
  --max-contexts N         Most contexts kept (default 32).
  --cors ORIGIN            Allow cross-origin requests from ORIGIN (default: none).
  --threads N              ONNX Runtime threads (default: one per core).
${DTYPE_HELP}
  --quiet                  No request log on stderr.
  -h, --help               Show this help.

Default compression for requests that give no "kv_compression" (--method and its options):
${COMPRESSION_HELP}`;

export async function serveCommand(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      model: { type: 'string' }, host: { type: 'string' }, port: { type: 'string' }, 'api-key': { type: 'string' },
      parallel: { type: 'string' }, 'max-queue': { type: 'string' }, 'max-prompt-tokens': { type: 'string' },
      'max-body-bytes': { type: 'string' }, 'context-dir': { type: 'string' }, 'max-contexts': { type: 'string' },
      cors: { type: 'string' }, threads: { type: 'string' }, dtype: { type: 'string' }, quiet: { type: 'boolean' }, help: { type: 'boolean', short: 'h' },
      ...COMPRESSION_FLAGS,
    },
    strict: true,
  });
  if (values.help) { process.stdout.write(SERVE_HELP); return; }
  const port = numberFlag(values, 'port', { integer: true, min: 0, max: 65535 }) ?? 8080;
  const host = values.host ?? '127.0.0.1';
  const apiKey = values['api-key'] ?? process.env.FASTKV_API_KEY;
  if (apiKey !== undefined && apiKey.length === 0) throw new RequestError('--api-key must not be empty');
  const options = {
    parallel: numberFlag(values, 'parallel', { integer: true, min: 1 }),
    maxQueue: numberFlag(values, 'max-queue', { integer: true, min: 0 }),
    maxPromptTokens: numberFlag(values, 'max-prompt-tokens', { integer: true, min: 1 }),
    maxBodyBytes: numberFlag(values, 'max-body-bytes', { integer: true, min: 1024 }),
    maxContexts: numberFlag(values, 'max-contexts', { integer: true, min: 0 }),
    compression: compressionFromFlags(values),
  };
  const threads = threadsFlag(values);
  const log = values.quiet ? undefined : (line: string) => process.stderr.write(`${new Date().toISOString()} ${line}\n`);
  const model = await Model.load(values.model ?? DEFAULT_MODEL_DIR, {
    threads, dtype: dtypeFlag(values), onWarning: warnOnStderr, onProgress: (p) => progressLine(`loading ${p.stage} ${p.done}/${p.total}`),
    // Requests generating at once decode together: the batch holds them all (up to its limit).
    batching: { maxBatch: Math.min(options.parallel ?? DEFAULT_PARALLEL, MAX_BATCH) },
  });
  progressDone();
  const server = await createServer({
    model, apiKey, cors: values.cors, log, ...options,
    contextDir: values['context-dir'] === undefined ? undefined : path.resolve(values['context-dir']),
  });
  const address = await server.listen(port, host);
  // One line on stdout that scripts (and the load test) read for the port.
  process.stdout.write(`fastkv serve: ${server.modelId} on http://${address.address}:${address.port}\n`);

  await new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      log?.(`${signal}: cancelling requests in flight and shutting down`);
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      server.close().then(resolve, resolve);
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
  await model.dispose();
}
