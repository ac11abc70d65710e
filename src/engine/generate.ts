/**
 * generate and stream: tokenize (with the chat template when asked), prefill under a compression policy, then
 * sample, check stop conditions and emit text one token at a time. Timings are taken separately for time to
 * first token and for decoding.
 * @module
 */
import { RequestError } from '../errors.js';
import { ropeFrequencies } from '../model/config.js';
import { TextStreamer, type ChatMessage } from '../model/tokenizer.js';
import type { CompressionPolicy } from '../compress/policy.js';
import { resolvePolicy, type CompressionSpec } from '../compress/registry.js';
import { continuationIds, continueContext, type CompressedContext } from './context.js';
import { decodeStep, prefill, type LayerStats } from './forward.js';
import type { Model } from './model.js';
import { Sampler, validateSampling, type SamplingOptions } from './sampling.js';
import { StopCondition, type FinishReason } from './stop.js';

/** A prompt: text, token ids (used as given, no BOS added), or chat messages (rendered by the chat template). */
export type PromptInput = string | { readonly ids: ArrayLike<number> } | { readonly messages: readonly ChatMessage[] };

export interface GenerateOptions extends SamplingOptions {
  /** Most tokens to generate (default 256). */
  maxTokens?: number;
  /** Strings that end generation; not included in the text. */
  stop?: readonly string[];
  /** Wrap a text prompt as a user message and apply the model's chat template. */
  chat?: boolean;
  /** System message, with `chat`. */
  system?: string;
  /** KV-cache compression: a policy, or `{ method, ...options }` (default: full, no compression). */
  compression?: CompressionPolicy | CompressionSpec;
  /** Longest sequence (prompt + generated) allowed; default max_position_embeddings from config.json. */
  maxContext?: number;
  /** Keep going past EOS (benchmarks). */
  ignoreEos?: boolean;
  /** Stops generation between two tokens (finish reason 'stop'). */
  signal?: AbortSignal;
  /** Prefill progress: called after each layer with the rows it processed. */
  onPrefillLayer?: (layer: number, numLayers: number, rows: number) => void;
  /**
   * Continue a compressed context (see `compressContext`): the prompt's tokens follow the context's, which is
   * left unchanged. The context's compression applies; `compression` must not be given too.
   */
  context?: CompressedContext;
}

export interface Timings {
  /** Tokens prefilled by this call (after the context's, when one is continued). */
  promptTokens: number;
  /** Tokens of the compressed context continued (0 without one). */
  contextTokens: number;
  generatedTokens: number;
  /** Prefill (all layers, policy included) plus sampling the first token. */
  timeToFirstTokenMs: number;
  prefillTokensPerSecond: number;
  /** Time of the decode steps after the first token. */
  decodeMs: number;
  /** (generated − 1) / decodeMs: the first token belongs to prefill. */
  decodeTokensPerSecond: number;
  /** Time spent in the compression policy (scoring and selection) during prefill. */
  policyMs: number;
  /** Bytes of K and V held in the cache after prefill, and at the end. */
  kvCacheBytesAfterPrefill: number;
  kvCacheBytes: number;
}

export interface GenerateResult {
  text: string;
  promptIds: number[];
  outputIds: number[];
  finishReason: FinishReason;
  timings: Timings;
  /** Per layer: rows processed in prefill and entries kept per KV head. */
  layers: LayerStats[];
  /** The method that compressed the cache. */
  method: string;
  /** The seed the sampler used (random when none was given), to repeat a run. */
  seed: number;
}

export interface StreamChunk {
  /** Text this token completed (may be '' while a character or a possible stop string is pending). */
  text: string;
  tokenId: number;
}

/** Streamed generation: iterate for the chunks; `result` resolves when generation ends. */
export interface TokenStream extends AsyncIterable<StreamChunk> {
  readonly result: Promise<GenerateResult>;
}

export function encodePrompt(model: Model, prompt: PromptInput, options: Pick<GenerateOptions, 'chat' | 'system'> = {}): number[] {
  if (typeof prompt === 'string') {
    if (!options.chat) return model.tokenizer.encode(prompt);
    const messages: ChatMessage[] = options.system ? [{ role: 'system', content: options.system }] : [];
    messages.push({ role: 'user', content: prompt });
    return model.tokenizer.encodeChat(messages, { addGenerationPrompt: true });
  }
  if ('messages' in prompt) return model.tokenizer.encodeChat(prompt.messages, { addGenerationPrompt: true });
  return Array.from(prompt.ids);
}

/** Generates a completion; resolves when it is done. */
export async function generate(model: Model, prompt: PromptInput, options: GenerateOptions = {}): Promise<GenerateResult> {
  const it = run(model, prompt, options);
  for (;;) {
    const step = await it.next();
    if (step.done) return step.value;
  }
}

/** Generates a completion as a stream of text chunks. */
export function stream(model: Model, prompt: PromptInput, options: GenerateOptions = {}): TokenStream {
  const it = run(model, prompt, options);
  let settle!: { resolve: (r: GenerateResult) => void; reject: (e: unknown) => void };
  const result = new Promise<GenerateResult>((resolve, reject) => { settle = { resolve, reject }; });
  result.catch(() => {}); // the iterator reports the error; don't also raise an unhandled rejection
  return {
    result,
    async *[Symbol.asyncIterator]() {
      try {
        for (;;) {
          const step = await it.next();
          if (step.done) { settle.resolve(step.value); return; }
          yield step.value;
        }
      } catch (e) {
        settle.reject(e);
        throw e;
      }
    },
  };
}

async function* run(model: Model, prompt: PromptInput, options: GenerateOptions): AsyncGenerator<StreamChunk, GenerateResult> {
  const config = model.config;
  const sampling = validateSampling(options);
  const context = options.context;
  if (context && options.compression !== undefined) {
    throw new RequestError('give either a context (already compressed) or compression, not both');
  }
  if (context && options.system !== undefined) {
    throw new RequestError('a system message cannot follow a context: put it in the messages the context is built from');
  }
  const policy = resolvePolicy(options.compression, config);
  const promptIds = context ? continuationIds(model, context, prompt, options.chat) : encodePrompt(model, prompt, options);
  const contextTokens = context ? context.tokens : 0;
  const maxContext = options.maxContext ?? config.maxPositionEmbeddings;
  if (!Number.isSafeInteger(maxContext) || maxContext < 1) throw new RequestError(`maxContext must be a positive integer, got ${maxContext}`);
  if (contextTokens + promptIds.length > maxContext) {
    throw new RequestError(`the prompt has ${promptIds.length} tokens${context ? ` after a context of ${contextTokens}` : ''}, ` +
      `more than the limit of ${maxContext} ` +
      `(max_position_embeddings in config.json; raise it with maxContext / --max-context at your own risk)`);
  }
  const requested = options.maxTokens ?? 256;
  if (!Number.isSafeInteger(requested) || requested < 0) throw new RequestError(`maxTokens must be an integer >= 0, got ${requested}`);
  const maxTokens = Math.min(requested, maxContext - contextTokens - promptIds.length);

  const sampler = new Sampler(sampling, config.vocabSize);
  const stop = new StopCondition({ eosTokenIds: options.ignoreEos ? [] : model.eosTokenIds, stopStrings: options.stop, maxTokens });
  const history = context ? [...context.ids, ...promptIds] : [...promptIds];
  const streamer = model.hasTokenizer ? new TextStreamer(model.tokenizer, history) : null;
  const outputIds: number[] = [];
  let text = '';

  const t0 = performance.now();
  const pre = context
    ? await continueContext(model, context, promptIds, maxTokens)
    : await prefill(model, Int32Array.from(promptIds), { policy, decodeCapacity: maxTokens, onLayer: options.onPrefillLayer });
  const prefillEnd = performance.now();
  const kvAfterPrefill = pre.cache.bytes;
  const { invFreq } = ropeFrequencies(config, pre.nextPosition + maxTokens);
  let logits = pre.logits;
  let ttft = 0;
  let decodeStart = 0;
  while (stop.finishReason === null) {
    if (outputIds.length > 0) logits = await decodeStep(model, pre.cache, outputIds[outputIds.length - 1], pre.nextPosition + outputIds.length - 1, invFreq);
    const id = sampler.sample(logits, history);
    if (outputIds.length === 0) { ttft = performance.now() - t0; decodeStart = performance.now(); }
    outputIds.push(id);
    history.push(id);
    const piece = stop.push(id, streamer ? streamer.push(id) : '');
    let chunk = piece.text;
    if (piece.finishReason !== null && piece.finishReason !== 'stop') chunk += stop.flush(streamer ? streamer.flush() : '');
    else if (piece.finishReason === null && options.signal?.aborted) chunk += stop.flush(streamer ? streamer.flush() : '');
    text += chunk;
    yield { text: chunk, tokenId: id };
    if (piece.finishReason === null && options.signal?.aborted) break;
  }
  const decodeMs = outputIds.length > 1 ? performance.now() - decodeStart : 0;
  const prefillMs = prefillEnd - t0;
  return {
    text, promptIds, outputIds,
    finishReason: stop.finishReason ?? 'stop',
    method: context ? context.method : policy.name,
    seed: sampling.seed,
    layers: pre.layers,
    timings: {
      promptTokens: promptIds.length,
      contextTokens,
      generatedTokens: outputIds.length,
      timeToFirstTokenMs: maxTokens > 0 ? ttft : prefillMs,
      prefillTokensPerSecond: prefillMs > 0 ? promptIds.length / (prefillMs / 1000) : 0,
      decodeMs,
      decodeTokensPerSecond: decodeMs > 0 ? (outputIds.length - 1) / (decodeMs / 1000) : 0,
      policyMs: pre.policyMs,
      kvCacheBytesAfterPrefill: kvAfterPrefill,
      kvCacheBytes: pre.cache.bytes,
    },
  };
}
