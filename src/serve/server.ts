/**
 * `fastkv serve`: an OpenAI-compatible HTTP server over one loaded model, on hono (routing, body limit, CORS,
 * server-sent events) with zod schemas validating every body.
 *
 * Routes: `POST /v1/chat/completions`, `POST /v1/completions` (streamed or not, with fastkv's `kv_compression`
 * and `context_id` extensions and a `fastkv` field of timings in the response), `GET /v1/models`,
 * `POST|GET /v1/contexts`, `GET|DELETE /v1/contexts/{id}`, `GET /health`, and `GET /` (the playground page).
 * Generations run `parallel` at a time (default 4), decoding together through the model's batcher (one step
 * for all of them: see `engine/batcher.ts`); up to `maxQueue` more wait, and beyond that the answer is 429. A
 * client that goes away cancels its generation at the next token (or leaves the queue). Errors are
 * OpenAI-shaped: `{ "error": { "message", "type", "param", "code" } }`.
 * @module
 */
import { createHash, randomUUID, timingSafeEqual } from 'node:crypto';
import fs from 'node:fs';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createAdaptorServer } from '@hono/node-server';
import { Hono, type Context } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { cors } from 'hono/cors';
import { streamSSE } from 'hono/streaming';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import type { z } from 'zod';
import { ConfigError, FastKVError, RequestError } from '../errors.js';
import { resolvePolicy, type CompressionSpec } from '../compress/registry.js';
import { compressContext, continuationIds, type CompressedContext } from '../engine/context.js';
import { encodePrompt, generate, stream, type GenerateOptions, type GenerateResult } from '../engine/generate.js';
import type { Model } from '../engine/model.js';
import { validateSampling } from '../engine/sampling.js';
import type { ChatMessage } from '../model/tokenizer.js';
import { ContextLimitError, ContextStore, type StoredContext } from './contexts.js';
import { BusyError, Scheduler } from './scheduler.js';
import {
  ChatCompletionRequest, CompletionRequest, ContextRequest, compressionSpec, messageText, snakeOptions, type KvCompression,
} from './schemas.js';

const PLAYGROUND = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'src', 'serve', 'playground.html');

/** Requests generating at once by default: they share decode steps (continuous batching). */
export const DEFAULT_PARALLEL = 4;

export interface ServerOptions {
  model: Model;
  /** The id clients name the model by (default: the model folder's name). */
  modelId?: string;
  /** Require `Authorization: Bearer <apiKey>` on /v1/*. */
  apiKey?: string;
  /** Generations (and context builds) running at once (default 1). */
  parallel?: number;
  /** Requests waiting beyond those; more are answered 429 (default 16). */
  maxQueue?: number;
  /** Compression for requests that give no `kv_compression` (default: none). */
  compression?: CompressionSpec;
  /** Most tokens a request's prompt (or a context) may have (default: the model's max_position_embeddings). */
  maxPromptTokens?: number;
  /** Largest request body in bytes (default 8 MiB). */
  maxBodyBytes?: number;
  /** Save contexts here and load them at start. */
  contextDir?: string;
  /** Most contexts kept (default 32). */
  maxContexts?: number;
  /** Allow cross-origin requests from this origin (default: no CORS headers). */
  cors?: string;
  /** One line per request and warnings (default: none). */
  log?: (line: string) => void;
}

/** An error answered as OpenAI does: status, message, type, and the parameter at fault. */
class ApiError extends Error {
  constructor(readonly status: ContentfulStatusCode, message: string, readonly param: string | null = null,
    readonly code: string | null = null) {
    super(message);
  }
}

const ERROR_TYPES: Partial<Record<number, string>> = {
  400: 'invalid_request_error', 401: 'authentication_error', 404: 'invalid_request_error', 413: 'invalid_request_error',
  429: 'rate_limit_error', 500: 'server_error', 503: 'server_error',
};

function errorBody(e: ApiError) {
  return { error: { message: e.message, type: ERROR_TYPES[e.status] ?? 'server_error', param: e.param, code: e.code } };
}

/** Any thrown value as an ApiError: library errors keep their meaning, anything else is a 500. */
function toApiError(error: unknown): ApiError {
  if (error instanceof ApiError) return error;
  if (error instanceof BusyError) return new ApiError(429, error.message, null, 'server_busy');
  if (error instanceof ContextLimitError) return new ApiError(429, error.message, null, 'too_many_contexts');
  if (error instanceof ConfigError || error instanceof RequestError) return new ApiError(400, error.message);
  if (error instanceof FastKVError) return new ApiError(500, `${error.code}: ${error.message}`, null, 'backend_error');
  return new ApiError(500, `internal error: ${(error as Error)?.message ?? String(error)}`, null, 'internal_error');
}

/** Parses a JSON body against a schema; a 400 names the field at fault. */
async function parseBody<T extends z.ZodType>(c: Context, schema: T): Promise<z.infer<T>> {
  let json: unknown;
  const text = await c.req.text();
  try { json = JSON.parse(text); } catch (e) {
    throw new ApiError(400, `the request body is not valid JSON: ${(e as Error).message}`, null, 'invalid_json');
  }
  const r = schema.safeParse(json);
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  if (issue.code === 'unrecognized_keys') {
    const where = issue.path.length ? `${issue.path.join('.')}.` : '';
    const key = `${where}${issue.keys[0]}`;
    throw new ApiError(400, `unrecognized request argument supplied: ${key}`, key, 'unknown_parameter');
  }
  const param = issue.path.join('.') || null;
  throw new ApiError(400, `${param ?? 'body'}: ${issue.message}`, param, 'invalid_value');
}

/** Constant-time comparison of two secrets of any length (their SHA-256 digests are compared). */
function sameSecret(given: string, expected: string): boolean {
  const a = createHash('sha256').update(given).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b);
}

function layersOf(layers: readonly { rows: number; kept: number; keptPerHead?: number[] }[]) {
  return layers.map((l) => ({ rows: l.rows, kept_per_kv_head: l.keptPerHead ?? l.kept }));
}

function contextJson(s: StoredContext, modelId: string) {
  const ctx = s.context;
  return {
    id: s.id, object: 'context', created: s.created, model: modelId, tokens: ctx.tokens, kv_bytes: ctx.kvBytes,
    kind: ctx.messages ? 'messages' : 'text', method: ctx.method, kv_compression: { method: ctx.method, ...snakeOptions(ctx.methodOptions) },
    prefill_ms: ctx.prefillMs, layers: layersOf(ctx.layers),
  };
}

/** What the two completion endpoints have in common once the body is parsed. */
interface Job {
  ids: number[];
  options: GenerateOptions;
  context: StoredContext | null;
  stream: boolean;
  includeUsage: boolean;
}

export class FastKVServer {
  readonly app = new Hono();
  readonly modelId: string;
  private readonly scheduler: Scheduler;
  private readonly shutdown = new AbortController();
  private readonly inFlight = new Set<Promise<unknown>>();
  private http: Server | null = null;
  private readonly maxPromptTokens: number;

  private constructor(private readonly options: ServerOptions, private readonly contexts: ContextStore) {
    const model = options.model;
    this.modelId = options.modelId ?? path.basename(model.dir);
    this.scheduler = new Scheduler(options.parallel ?? DEFAULT_PARALLEL, options.maxQueue ?? 16);
    this.maxPromptTokens = options.maxPromptTokens ?? model.config.maxPositionEmbeddings;
    if (options.compression) resolvePolicy(options.compression, model.config); // a bad default fails at start
    this.routes();
  }

  static async create(options: ServerOptions): Promise<FastKVServer> {
    const contexts = await ContextStore.open(options.model, options.contextDir ?? null, options.maxContexts ?? 32,
      (line) => options.log?.(`warning: ${line}`));
    return new FastKVServer(options, contexts);
  }

  private routes(): void {
    const app = this.app;
    const { options, modelId } = this;
    app.onError((error, c) => {
      const e = toApiError(error);
      if (e.status >= 500) options.log?.(`error: ${(error as Error)?.stack ?? String(error)}`);
      if (e.status === 429) c.header('Retry-After', '1');
      return c.json(errorBody(e), e.status);
    });
    app.notFound((c) => c.json(errorBody(new ApiError(404, `no route ${c.req.method} ${c.req.path}`, null, 'unknown_route')), 404));
    if (options.cors) app.use('*', cors({ origin: options.cors }));
    app.use('*', bodyLimit({
      maxSize: options.maxBodyBytes ?? 8 * 1024 * 1024,
      onError: (c) => c.json(errorBody(new ApiError(413, `the request body is larger than ${options.maxBodyBytes ?? 8 * 1024 * 1024} bytes`, null, 'body_too_large')), 413),
    }));
    if (options.apiKey !== undefined) {
      const key = options.apiKey;
      app.use('/v1/*', async (c, next) => {
        const header = c.req.header('authorization') ?? '';
        const given = header.startsWith('Bearer ') ? header.slice(7) : null;
        if (given === null) throw new ApiError(401, 'missing API key: send Authorization: Bearer <key>', null, 'missing_api_key');
        if (!sameSecret(given, key)) throw new ApiError(401, 'incorrect API key', null, 'invalid_api_key');
        await next();
      });
    }

    app.get('/', (c) => c.html(fs.readFileSync(PLAYGROUND, 'utf8')));
    app.get('/health', (c) => c.json({ status: 'ok', model: modelId, ...this.scheduler.stats, contexts: this.contexts.size }));
    const modelJson = { id: modelId, object: 'model', created: Math.floor(fs.statSync(options.model.dir).mtimeMs / 1000), owned_by: 'fastkv' };
    app.get('/v1/models', (c) => c.json({ object: 'list', data: [modelJson] }));
    app.get('/v1/models/:id', (c) => {
      this.checkModel(c.req.param('id'), 'id');
      return c.json(modelJson);
    });

    app.post('/v1/chat/completions', async (c) => {
      const body = await parseBody(c, ChatCompletionRequest);
      const messages: ChatMessage[] = body.messages.map((m) => ({ role: m.role === 'developer' ? 'system' : m.role, content: messageText(m.content) }));
      const maxTokens = body.max_completion_tokens ?? body.max_tokens ?? undefined;
      const job = this.job(body, maxTokens, (context) => (context
        ? this.continuation(context, { messages }, true)
        : FastKVServer.tokenize(() => encodePrompt(options.model, { messages }), 'messages')));
      return this.respond(c, job, 'chat');
    });

    app.post('/v1/completions', async (c) => {
      const body = await parseBody(c, CompletionRequest);
      const prompt = typeof body.prompt === 'string' ? body.prompt
        : typeof body.prompt[0] === 'string' ? body.prompt[0] as string : { ids: body.prompt as number[] };
      const job = this.job(body, body.max_tokens ?? 16, (context) => (context
        ? this.continuation(context, prompt, false)
        : FastKVServer.tokenize(() => encodePrompt(options.model, prompt), 'prompt')));
      return this.respond(c, job, 'text');
    });

    app.post('/v1/contexts', async (c) => {
      const body = await parseBody(c, ContextRequest);
      if (body.model !== undefined) this.checkModel(body.model, 'model');
      this.contexts.checkRoom();
      const input = body.messages
        ? { messages: body.messages.map((m) => ({ role: m.role === 'developer' ? 'system' : m.role, content: messageText(m.content) })) }
        : body.text!;
      const compression = this.compression(body.kv_compression);
      const release = await this.scheduler.acquire(c.req.raw.signal);
      try {
        const ctx = await this.track(compressContext(options.model, input, { compression, maxContext: this.maxPromptTokens })
          .catch((e) => { throw /more than the limit/.test((e as Error).message) ? new ApiError(413, (e as Error).message, body.text ? 'text' : 'messages', 'prompt_too_large') : e; }));
        const stored = await this.contexts.add(ctx);
        options.log?.(`context ${stored.id}: ${ctx.tokens} tokens, ${ctx.method}, ${ctx.kvBytes} KV bytes`);
        return c.json(contextJson(stored, modelId));
      } finally {
        release();
      }
    });
    app.get('/v1/contexts', (c) => c.json({ object: 'list', data: this.contexts.list().map((s) => contextJson(s, modelId)) }));
    app.get('/v1/contexts/:id', (c) => c.json(contextJson(this.context(c.req.param('id'), 'id'), modelId)));
    app.delete('/v1/contexts/:id', async (c) => {
      const id = c.req.param('id');
      if (!(await this.contexts.delete(id))) throw new ApiError(404, `no context "${id}"`, 'id', 'context_not_found');
      return c.json({ id, object: 'context.deleted', deleted: true });
    });
  }

  /** Runs the tokenizer (or chat template); what it refuses is a 400 naming `param`. */
  private static tokenize(encode: () => number[], param: string): number[] {
    try {
      return encode();
    } catch (e) {
      throw e instanceof FastKVError && e.code !== 'BACKEND' ? new ApiError(400, e.message, param) : e;
    }
  }

  private checkModel(model: string | undefined, param: string): void {
    if (model !== undefined && model !== this.modelId) {
      throw new ApiError(404, `the model "${model}" does not exist; this server serves "${this.modelId}"`, param, 'model_not_found');
    }
  }

  private context(id: string, param: string): StoredContext {
    const s = this.contexts.get(id);
    if (!s) throw new ApiError(404, `no context "${id}"`, param, 'context_not_found');
    return s;
  }

  /** The request's compression (or the server's default), checked against the model. */
  private compression(k: KvCompression | undefined): CompressionSpec | undefined {
    const spec = k ? compressionSpec(k) : this.options.compression;
    try {
      if (spec) resolvePolicy(spec, this.options.model.config);
    } catch (e) {
      throw e instanceof ConfigError ? new ApiError(400, e.message, 'kv_compression') : e;
    }
    return spec;
  }

  private continuation(s: StoredContext, prompt: Parameters<typeof continuationIds>[2], chat: boolean): number[] {
    try {
      return continuationIds(this.options.model, s.context, prompt, chat);
    } catch (e) {
      throw e instanceof RequestError ? new ApiError(400, e.message, 'context_id') : e;
    }
  }

  /** Checks a completion request and turns it into token ids and generate options (nothing runs yet). */
  private job(body: ChatCompletionRequest | CompletionRequest, maxTokens: number | undefined,
    tokenize: (context: StoredContext | null) => number[]): Job {
    const model = this.options.model;
    this.checkModel(body.model, 'model');
    const context = body.context_id !== undefined ? this.context(body.context_id, 'context_id') : null;
    if (context && body.kv_compression) {
      throw new ApiError(400, 'kv_compression cannot be given with context_id: the context is already compressed', 'kv_compression');
    }
    const ids = tokenize(context);
    const contextTokens = context ? context.context.tokens : 0;
    if (ids.length > this.maxPromptTokens) {
      throw new ApiError(413, `the prompt has ${ids.length} tokens, more than the limit of ${this.maxPromptTokens} (--max-prompt-tokens)`, null, 'prompt_too_large');
    }
    const limit = model.config.maxPositionEmbeddings;
    if (contextTokens + ids.length >= limit) {
      throw new ApiError(413, `the prompt has ${ids.length} tokens${context ? ` after a context of ${contextTokens}` : ''}, ` +
        `leaving no room to generate within the model's ${limit} positions`, null, 'prompt_too_large');
    }
    if (ids.length === 0 && !context) throw new ApiError(400, 'the prompt has no tokens', 'prompt');
    // Checked here, not in the engine, so that a streamed request is refused before its stream starts.
    const bad = ids.findIndex((id) => id >= model.config.vocabSize);
    if (bad >= 0) throw new ApiError(400, `token id ${ids[bad]} at index ${bad} is outside the vocabulary [0, ${model.config.vocabSize})`, 'prompt');
    const stop = body.stop == null ? undefined : typeof body.stop === 'string' ? [body.stop] : body.stop;
    const options: GenerateOptions = {
      maxTokens: maxTokens ?? limit - contextTokens - ids.length,
      temperature: body.temperature ?? 1, topP: body.top_p ?? undefined, seed: body.seed ?? undefined,
      topK: body.top_k, minP: body.min_p, repetitionPenalty: body.repetition_penalty, stop,
    };
    try { validateSampling(options); } catch (e) { throw toApiError(e); }
    if (context) options.context = context.context;
    else options.compression = this.compression(body.kv_compression);
    return { ids, options, context, stream: body.stream === true, includeUsage: body.stream_options?.include_usage === true };
  }

  /** Keeps a promise in the set that shutdown waits for. */
  private track<T>(p: Promise<T>): Promise<T> {
    this.inFlight.add(p);
    p.then(() => this.inFlight.delete(p), () => this.inFlight.delete(p));
    return p;
  }

  private async respond(c: Context, job: Job, kind: 'chat' | 'text'): Promise<Response> {
    const model = this.options.model;
    const signal = AbortSignal.any([c.req.raw.signal, this.shutdown.signal]);
    const release = await this.scheduler.acquire(signal).catch((e: unknown) => {
      if (this.shutdown.signal.aborted) throw this.shutdown.signal.reason;
      if (c.req.raw.signal.aborted) throw new ApiError(400, 'the client closed the request while it waited', null, 'client_closed');
      throw e;
    });
    const id = `${kind === 'chat' ? 'chatcmpl' : 'cmpl'}-${randomUUID()}`;
    const created = Math.floor(Date.now() / 1000);
    const options = { ...job.options, signal };
    const usage = (r: GenerateResult) => ({
      prompt_tokens: job.ids.length + r.timings.contextTokens, completion_tokens: r.outputIds.length,
      total_tokens: job.ids.length + r.timings.contextTokens + r.outputIds.length,
      prompt_tokens_details: { cached_tokens: r.timings.contextTokens },
    });
    const extension = (r: GenerateResult) => ({
      method: r.method, context_id: job.context?.id ?? null, seed: r.seed,
      ttft_ms: r.timings.timeToFirstTokenMs, prefill_tokens_per_second: r.timings.prefillTokensPerSecond,
      decode_tokens_per_second: r.timings.decodeTokensPerSecond, kv_bytes: r.timings.kvCacheBytes,
      kv_bytes_after_prefill: r.timings.kvCacheBytesAfterPrefill, context_tokens: r.timings.contextTokens,
      prompt_tokens: r.timings.promptTokens, layers: layersOf(r.layers),
    });
    const finish = (r: GenerateResult) => (r.finishReason === 'length' ? 'length' : 'stop');
    const object = kind === 'chat' ? 'chat.completion' : 'text_completion';
    const log = (r: GenerateResult) => this.options.log?.(`${id}: ${r.method}, ${job.ids.length} prompt tokens, ` +
      `${r.outputIds.length} generated (${r.finishReason}), TTFT ${r.timings.timeToFirstTokenMs.toFixed(1)} ms`);

    if (!job.stream) {
      try {
        const r = await this.track(generate(model, { ids: job.ids }, options));
        log(r);
        const choice = kind === 'chat'
          ? { index: 0, message: { role: 'assistant', content: r.text, refusal: null }, logprobs: null, finish_reason: finish(r) }
          : { index: 0, text: r.text, logprobs: null, finish_reason: finish(r) };
        return c.json({ id, object, created, model: this.modelId, choices: [choice], usage: usage(r), fastkv: extension(r) });
      } finally {
        release();
      }
    }

    const chunkObject = kind === 'chat' ? 'chat.completion.chunk' : 'text_completion';
    const chunk = (choices: unknown[], extra: Record<string, unknown> = {}) =>
      JSON.stringify({ id, object: chunkObject, created, model: this.modelId, choices, ...extra });
    return streamSSE(c, async (sse) => {
      const s = stream(model, { ids: job.ids }, options);
      const done = this.track(s.result);
      try {
        if (kind === 'chat') await sse.writeSSE({ data: chunk([{ index: 0, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }]) });
        for await (const piece of s) {
          if (piece.text === '' || signal.aborted) continue;
          await sse.writeSSE({ data: chunk([kind === 'chat'
            ? { index: 0, delta: { content: piece.text }, logprobs: null, finish_reason: null }
            : { index: 0, text: piece.text, logprobs: null, finish_reason: null }]) });
        }
        const r = await done;
        log(r);
        if (c.req.raw.signal.aborted) return;
        await sse.writeSSE({ data: chunk([kind === 'chat'
          ? { index: 0, delta: {}, logprobs: null, finish_reason: finish(r) }
          : { index: 0, text: '', logprobs: null, finish_reason: finish(r) }], { fastkv: extension(r) }) });
        if (job.includeUsage) await sse.writeSSE({ data: chunk([], { usage: usage(r) }) });
        await sse.writeSSE({ data: '[DONE]' });
      } catch (error) {
        const e = toApiError(error);
        this.options.log?.(`${id}: ${e.message}`);
        if (!c.req.raw.signal.aborted) await sse.writeSSE({ data: JSON.stringify(errorBody(e)) }).catch(() => {});
      } finally {
        release();
      }
    });
  }

  /** Starts listening; resolves with the address (port 0 picks a free port). */
  listen(port = 8080, host = '127.0.0.1'): Promise<AddressInfo> {
    const server = createAdaptorServer({ fetch: this.app.fetch }) as Server;
    this.http = server;
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolve(server.address() as AddressInfo);
      });
    });
  }

  /**
   * Stops accepting connections, cancels the generations in flight (they end at their next token and their
   * streams end normally), waits for them, and closes every connection.
   */
  async close(): Promise<void> {
    const server = this.http;
    const closed = server ? new Promise<void>((resolve) => server.close(() => resolve())) : Promise.resolve();
    server?.closeIdleConnections();
    this.shutdown.abort(new ApiError(503, 'the server is shutting down', null, 'shutting_down'));
    await Promise.allSettled([...this.inFlight]);
    // Give the responses a moment to be flushed, then drop whatever connections remain.
    await new Promise((r) => setTimeout(r, 50));
    server?.closeAllConnections();
    await closed;
  }
}

/** Creates the server (loading saved contexts) without listening. */
export function createServer(options: ServerOptions): Promise<FastKVServer> {
  return FastKVServer.create(options);
}
