/**
 * generate and stream: tokenize (with the chat template when asked), prefill under a compression policy, then
 * sample, check stop conditions and emit text one token at a time. Timings are taken separately for time to
 * first token and for decoding.
 * @module
 */
import { RequestError } from '../errors.js';
import { MAX_TEXT_BYTES } from '../files.js';
import { ropeFrequencies } from '../model/config.js';
import { TextStreamer, type ChatMessage } from '../model/tokenizer.js';
import type { CompressionPolicy } from '../compress/policy.js';
import { resolvePolicy, type CompressionSpec } from '../compress/registry.js';
import { continuationIds, continueContext, type CompressedContext } from './context.js';
import { prefill, type LayerStats } from './forward.js';
import type { BatchSeat } from './batcher.js';
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
  /** Stops generation between two prefill layers or two tokens (finish reason 'abort'). */
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
  /**
   * From the call to the first token: waiting for a place in the batch (when `maxBatch` sequences already run),
   * prefill (all layers, policy included) and sampling the first token.
   */
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

/**
 * The prompt's token ids. Text is tokenized within `limit` tokens (default: max_position_embeddings): a longer
 * text is refused after tokenizing about `limit` tokens of it, whatever its size. Ids are checked, not coerced.
 * @throws RequestError for a prompt of the wrong type, an id that is not an integer of the vocabulary, or a text
 *   over the limit (naming its size and the limit).
 */
export function encodePrompt(model: Model, prompt: PromptInput,
  options: Pick<GenerateOptions, 'chat' | 'system'> & { limit?: number } = {}): number[] {
  const limit = options.limit ?? model.config.maxPositionEmbeddings;
  const hint = 'max_position_embeddings in config.json; raise it with maxContext / --max-context at your own risk';
  const within = (text: string) => model.tokenizer.encodeWithin(text, limit, { what: 'the prompt', hint, addSpecialTokens: false });
  if (options.system !== undefined && !(typeof prompt === 'string' && options.chat)) {
    throw new RequestError('system is used only with chat and a text prompt (--system needs --chat)');
  }
  if (typeof prompt === 'string') {
    if (prompt.length > MAX_TEXT_BYTES) throw new RequestError(`the prompt has ${prompt.length} characters, more than the limit of ${MAX_TEXT_BYTES}`);
    if (!options.chat) return model.tokenizer.encodeWithin(prompt, limit, { what: 'the prompt', hint });
    const messages: ChatMessage[] = options.system ? [{ role: 'system', content: String(options.system) }] : [];
    messages.push({ role: 'user', content: prompt });
    return within(model.tokenizer.applyChatTemplate(messages, { addGenerationPrompt: true }));
  }
  if (prompt === null || typeof prompt !== 'object') {
    throw new RequestError(`the prompt must be a string, { ids } or { messages }, got ${prompt === null ? 'null' : typeof prompt}`);
  }
  if ('messages' in prompt) {
    if (!Array.isArray(prompt.messages) || !prompt.messages.every((m) => m !== null && typeof m === 'object' && typeof m.role === 'string' && typeof m.content === 'string')) {
      throw new RequestError('prompt.messages must be a list of { role, content } with string role and content');
    }
    return within(model.tokenizer.applyChatTemplate(prompt.messages, { addGenerationPrompt: true }));
  }
  const ids = (prompt as { ids?: unknown }).ids;
  if (ids === null || typeof ids !== 'object' || typeof (ids as ArrayLike<number>).length !== 'number') {
    throw new RequestError('prompt.ids must be an array of token ids');
  }
  const list = ids as ArrayLike<unknown>;
  if (list.length > limit) throw new RequestError(`the prompt has ${list.length} tokens, more than the limit of ${limit} (${hint})`);
  const vocab = model.config.vocabSize;
  const out: number[] = new Array(list.length);
  for (let i = 0; i < list.length; i++) {
    const id = list[i];
    // 2**32 + 403 must not run as 403, nor 1.5 as 1, nor NaN as 0.
    if (typeof id !== 'number' || !Number.isInteger(id)) {
      throw new RequestError(`prompt.ids[${i}] is ${typeof id === 'number' ? String(id) : typeof id}, not an integer token id`);
    }
    if (id < 0 || id >= vocab) throw new RequestError(`token id ${id} at index ${i} is outside the vocabulary [0, ${vocab}) (prompt.ids[${i}])`);
    out[i] = id;
  }
  return out;
}

/** Generates a completion; resolves when it is done. */
export async function generate(model: Model, prompt: PromptInput, options: GenerateOptions = {}): Promise<GenerateResult> {
  const it = run(model, prompt, options);
  for (;;) {
    const step = await it.next();
    if (step.done) return step.value;
  }
}

/**
 * Generates a completion as a stream of text chunks, paced by the consumer: each chunk is made when the loop asks
 * for it. Breaking out of the loop ends the run (finish reason 'abort') and settles `result`. Reading `result`
 * without iterating (or before iterating to the end) lets the run go on to its end by itself, so `result` always
 * settles; the chunks still wait in order for a loop that comes later. A stream can be iterated once.
 */
export function stream(model: Model, prompt: PromptInput, options: GenerateOptions = {}): TokenStream {
  const stopReading = new AbortController();
  // (A signal that is not an AbortSignal is passed on as given, for run() to refuse.)
  const signal = options.signal === undefined ? stopReading.signal
    : options.signal instanceof AbortSignal ? AbortSignal.any([options.signal, stopReading.signal]) : options.signal;
  const queue: StreamChunk[] = [];
  let done = false;
  let failure: { error: unknown } | null = null;
  let draining = false;                     // `result` was read: run to the end without waiting for the loop
  let wanted = false;                       // the loop is waiting for the next chunk
  let demand: (() => void) | null = null;   // the pump waits here for the loop to ask
  let arrival: (() => void) | null = null;  // the loop waits here for a chunk
  const wakePump = () => { demand?.(); demand = null; };
  const wakeLoop = () => { arrival?.(); arrival = null; };

  let started: Promise<GenerateResult> | null = null;
  const start = (): Promise<GenerateResult> => started ??= (async () => {
    try {
      const it = run(model, prompt, { ...options, signal });
      for (;;) {
        while (!draining && !wanted) await new Promise<void>((resolve) => { demand = resolve; });
        wanted = false;
        const step = await it.next();
        if (step.done) return step.value;
        queue.push(step.value);
        wakeLoop();
      }
    } catch (error) {
      failure = { error };
      throw error;
    } finally {
      done = true;
      wakeLoop();
    }
  })();

  let iterated = false;
  return {
    get result() {
      draining = true;
      wakePump();
      const r = start();
      r.catch(() => {});   // the loop reports the error too; don't also raise an unhandled rejection
      return r;
    },
    async *[Symbol.asyncIterator]() {
      if (iterated) throw new RequestError('a generation stream can be iterated only once');
      iterated = true;
      start().catch(() => {});
      try {
        for (;;) {
          if (queue.length > 0) {
            yield queue.shift()!;
            continue;
          }
          if (failure) throw (failure as { error: unknown }).error;
          if (done) return;
          wanted = true;
          await new Promise<void>((resolve) => { arrival = resolve; wakePump(); });
        }
      } finally {
        // The loop ended or the consumer broke out: stop generating, and let `result` settle with what was made.
        if (!done) {
          stopReading.abort();
          draining = true;
          wakePump();
        }
      }
    },
  };
}

/** Plain greedy decoding, whatever generation_config.json sets (evaluations and benchmarks decode greedily). */
export const GREEDY: Readonly<SamplingOptions> = Object.freeze({ temperature: 0, repetitionPenalty: 1 });

/** Sampling settings: the caller's, and for any left unset, generation_config.json's. */
function samplingOf(model: Model, options: GenerateOptions): SamplingOptions {
  const given = Object.fromEntries(
    (['temperature', 'topK', 'topP', 'minP', 'repetitionPenalty', 'seed'] as const)
      .filter((k) => options[k] !== undefined).map((k) => [k, options[k]]));
  return { ...model.generationDefaults.sampling, ...given };
}

async function* run(model: Model, prompt: PromptInput, options: GenerateOptions): AsyncGenerator<StreamChunk, GenerateResult> {
  if (options === null || typeof options !== 'object') throw new RequestError(`options must be an object, got ${options === null ? 'null' : typeof options}`);
  const config = model.config;
  const sampling = validateSampling(samplingOf(model, options));
  const context = options.context;
  if (context && options.compression !== undefined) {
    throw new RequestError('give either a context (already compressed) or compression, not both');
  }
  if (context && options.system !== undefined) {
    throw new RequestError('a system message cannot follow a context: put it in the messages the context is built from');
  }
  const policy = resolvePolicy(options.compression, config);
  const maxContext = options.maxContext ?? config.maxPositionEmbeddings;
  if (!Number.isSafeInteger(maxContext) || maxContext < 1) throw new RequestError(`maxContext must be a positive integer, got ${maxContext}`);
  const requested = options.maxTokens ?? 256;
  if (!Number.isSafeInteger(requested) || requested < 0) throw new RequestError(`maxTokens must be an integer >= 0, got ${requested}`);
  const signal = options.signal;
  if (signal !== undefined && !(signal instanceof AbortSignal)) throw new RequestError('signal must be an AbortSignal');
  const contextTokens = context ? context.tokens : 0;
  const promptIds = context ? continuationIds(model, context, prompt, options.chat) : encodePrompt(model, prompt, { ...options, limit: maxContext });
  if (contextTokens + promptIds.length > maxContext) {
    throw new RequestError(`the prompt has ${promptIds.length} tokens${context ? ` after a context of ${contextTokens}` : ''}, ` +
      `more than the limit of ${maxContext} ` +
      `(max_position_embeddings in config.json; raise it with maxContext / --max-context at your own risk)`);
  }
  const maxTokens = Math.min(requested, maxContext - contextTokens - promptIds.length);

  const sampler = new Sampler(sampling, config.vocabSize);
  const stop = new StopCondition({ eosTokenIds: options.ignoreEos ? [] : model.eosTokenIds, stopStrings: options.stop, maxTokens });
  const history = context ? [...context.ids, ...promptIds] : [...promptIds];
  const streamer = model.hasTokenizer ? new TextStreamer(model.tokenizer, history) : null;
  const outputIds: number[] = [];
  let text = '';
  const aborted = (layers: LayerStats[] = []): GenerateResult => ({
    text, promptIds, outputIds, finishReason: 'abort', method: context ? context.method : policy.name, seed: sampling.seed, layers,
    timings: {
      contextTokens, promptTokens: promptIds.length, generatedTokens: 0, timeToFirstTokenMs: 0, prefillTokensPerSecond: 0, decodeMs: 0,
      decodeTokensPerSecond: 0, policyMs: 0, kvCacheBytesAfterPrefill: 0, kvCacheBytes: 0,
    },
  });

  const t0 = performance.now();
  if (signal?.aborted) return aborted();
  // A place among the sequences decoding together (waits while the batch is full).
  let seat: BatchSeat;
  try {
    seat = await model.batcher.admit(signal);
  } catch (e) {
    if (signal?.aborted) return aborted();
    throw e;
  }
  const admitted = performance.now();
  try {
    let pre: Awaited<ReturnType<typeof prefill>>;
    try {
      pre = context
        ? await continueContext(model, context, promptIds, maxTokens)
        : await prefill(model, Int32Array.from(promptIds), { policy, decodeCapacity: maxTokens, onLayer: options.onPrefillLayer, signal });
    } catch (e) {
      if (signal?.aborted) return aborted();
      throw e;
    }
    const prefillEnd = performance.now();
    const kvAfterPrefill = pre.cache.bytes;
    const { invFreq } = ropeFrequencies(config, pre.nextPosition + maxTokens);
    let logits = pre.logits;
    let ttft = 0;
    let decodeStart = 0;
    let finishReason: FinishReason | null = null;
    if (signal?.aborted) return aborted(pre.layers);
    seat.join(pre.cache, invFreq);
    while (stop.finishReason === null && finishReason === null) {
      if (outputIds.length > 0) logits = await seat.step(outputIds[outputIds.length - 1], pre.nextPosition + outputIds.length - 1);
      const id = sampler.sample(logits, history);
      if (outputIds.length === 0) { ttft = performance.now() - t0; decodeStart = performance.now(); }
      outputIds.push(id);
      history.push(id);
      const piece = stop.push(id, streamer ? streamer.push(id) : '');
      let chunk = piece.text;
      if (piece.finishReason !== null && piece.finishReason !== 'stop') chunk += stop.flush(streamer ? streamer.flush() : '');
      else if (piece.finishReason === null && signal?.aborted) {
        chunk += stop.flush(streamer ? streamer.flush() : '');
        finishReason = 'abort';
      }
      text += chunk;
      yield { text: chunk, tokenId: id };
      if (finishReason === null && stop.finishReason === null && signal?.aborted) {
        // Aborted while the consumer held the last chunk: release held-back text with that token's id.
        finishReason = 'abort';
        const rest = stop.flush(streamer ? streamer.flush() : '');
        text += rest;
        if (rest !== '') yield { text: rest, tokenId: id };
      }
    }
    const decodeMs = outputIds.length > 1 ? performance.now() - decodeStart : 0;
    const prefillMs = prefillEnd - admitted;
    return {
      text, promptIds, outputIds,
      finishReason: finishReason ?? stop.finishReason ?? 'stop',
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
  } finally {
    seat.leave();
  }
}
