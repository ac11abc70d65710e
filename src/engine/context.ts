/**
 * Compressed contexts: a long document prefilled and compressed once, then continued by any number of
 * questions, concurrently too. A context keeps the compressed cache, the token ids and the logits of its last
 * row; `generate(model, question, { context })` copies the cache and feeds the question after it at positions
 * N, N+1, ... (kvpress's question-after protocol), so the context itself is never written.
 * Saving and loading live in `context-file.ts`.
 * @module
 */
import { RequestError } from '../errors.js';
import { ropeFrequencies } from '../model/config.js';
import type { ChatMessage } from '../model/tokenizer.js';
import type { CompressionPolicy } from '../compress/policy.js';
import { resolvePolicy, type CompressionSpec } from '../compress/registry.js';
import { decodeStep, prefill, type LayerStats, type PrefillResult } from './forward.js';
import type { KvCache } from './kv-cache.js';
import type { Model } from './model.js';

/** What a context is built from: text (BOS added), token ids (used as given), or chat messages. */
export type ContextInput = string | { readonly ids: ArrayLike<number> } | { readonly messages: readonly ChatMessage[] };

export interface ContextOptions {
  /** KV-cache compression: a policy, or `{ method, ...options }` (default: full, no compression). */
  compression?: CompressionPolicy | CompressionSpec;
  /** Most tokens the context may have; default max_position_embeddings from config.json. */
  maxContext?: number;
  /** Prefill progress: called after each layer with the rows it processed. */
  onPrefillLayer?: (layer: number, numLayers: number, rows: number) => void;
}

/** The parts a context is made of, as `compressContext` computes them or `loadContext` reads them. */
export interface ContextParts {
  ids: readonly number[];
  /** Chat contexts: the messages. */
  messages: readonly ChatMessage[] | null;
  /** The text `ids` encode: the document, or the chat template's rendering of `messages`; null when built from ids. */
  text: string | null;
  cache: KvCache;
  /** [vocab] logits of the context's last row: what an empty question continues from. */
  logits: Float32Array;
  /** Position id the first continuation token takes. */
  nextPosition: number;
  method: string;
  /** The method's options as given (`{}` when a policy object was passed). */
  methodOptions: Readonly<Record<string, unknown>>;
  layers: readonly LayerStats[];
  prefillMs: number;
  policyMs: number;
}

export class CompressedContext implements ContextParts {
  readonly ids: readonly number[];
  readonly messages: readonly ChatMessage[] | null;
  readonly text: string | null;
  readonly cache: KvCache;
  readonly logits: Float32Array;
  readonly nextPosition: number;
  readonly method: string;
  readonly methodOptions: Readonly<Record<string, unknown>>;
  readonly layers: readonly LayerStats[];
  readonly prefillMs: number;
  readonly policyMs: number;

  constructor(readonly model: Model, parts: ContextParts) {
    this.ids = Object.freeze([...parts.ids]);
    this.messages = parts.messages ? Object.freeze(parts.messages.map((m) => Object.freeze({ ...m }))) : null;
    this.text = parts.text;
    this.cache = parts.cache;
    this.logits = parts.logits;
    this.nextPosition = parts.nextPosition;
    this.method = parts.method;
    this.methodOptions = Object.freeze({ ...parts.methodOptions });
    this.layers = Object.freeze(parts.layers.map((l) => Object.freeze({ ...l })));
    this.prefillMs = parts.prefillMs;
    this.policyMs = parts.policyMs;
  }

  /** Tokens the context holds (before compression). */
  get tokens(): number { return this.ids.length; }

  /** Bytes of K and V the compressed cache holds. */
  get kvBytes(): number { return this.cache.bytes; }

  /** Writes the context to `file` (through a temporary file renamed into place); see `loadContext`. */
  async save(file: string): Promise<void> {
    const { saveContext } = await import('./context-file.js');
    await saveContext(this, file);
  }
}

/**
 * Prefills `input` under `options.compression` and keeps the compressed cache: the context that
 * `generate(model, question, { context })` continues.
 */
export async function compressContext(model: Model, input: ContextInput, options: ContextOptions = {}): Promise<CompressedContext> {
  const config = model.config;
  const policy = resolvePolicy(options.compression, config);
  let ids: number[];
  let messages: ChatMessage[] | null = null;
  let text: string | null = null;
  if (typeof input === 'string') {
    text = input;
    ids = model.tokenizer.encode(text);
  } else if ('messages' in input) {
    messages = input.messages.map((m) => ({ ...m }));
    text = model.tokenizer.applyChatTemplate(messages, { addGenerationPrompt: false });
    ids = model.tokenizer.encode(text, { addSpecialTokens: false });
  } else ids = Array.from(input.ids);
  const maxContext = options.maxContext ?? config.maxPositionEmbeddings;
  if (!Number.isSafeInteger(maxContext) || maxContext < 1) throw new RequestError(`maxContext must be a positive integer, got ${maxContext}`);
  if (ids.length > maxContext) {
    throw new RequestError(`the context has ${ids.length} tokens, more than the limit of ${maxContext} ` +
      '(max_position_embeddings in config.json, or maxContext)');
  }
  const t0 = performance.now();
  const pre = await prefill(model, Int32Array.from(ids), { policy, onLayer: options.onPrefillLayer });
  const methodOptions: Record<string, unknown> = {};
  if (options.compression && !('begin' in options.compression)) {
    for (const [key, value] of Object.entries(options.compression)) if (key !== 'method') methodOptions[key] = value;
  }
  return new CompressedContext(model, {
    ids, messages, text, cache: pre.cache, logits: pre.logits, nextPosition: pre.nextPosition,
    method: policy.name, methodOptions, layers: pre.layers, prefillMs: performance.now() - t0, policyMs: pre.policyMs,
  });
}

/**
 * The token ids a prompt adds after a context. Token ids are used as given. Text continues the context's text:
 * the whole is encoded as the context was, and the ids after the context's are taken (so that a tokenizer that
 * prepends a space to every text, as Llama 2's does, does not insert one at the seam). Messages continue a
 * context built from messages: the whole conversation is rendered by the chat template, and the ids after the
 * context's are taken. `chat` turns a text prompt into one user message. Where the tokens at the seam merge
 * (the context's last token would change), the continuation is encoded on its own.
 */
export function continuationIds(model: Model, context: CompressedContext, prompt: string | { readonly ids: ArrayLike<number> } | { readonly messages: readonly ChatMessage[] }, chat = false): number[] {
  if (typeof prompt !== 'string' && 'ids' in prompt) return Array.from(prompt.ids);
  const tokenizer = model.tokenizer;
  const chatContext = context.messages !== null;
  let full: string;
  if (typeof prompt === 'string' && !chat) {
    if (context.text === null) return tokenizer.encode(prompt, { addSpecialTokens: false });
    full = context.text + prompt;
  } else {
    const messages = typeof prompt === 'string' ? [{ role: 'user', content: prompt }] : prompt.messages;
    if (!chatContext || context.text === null) {
      throw new RequestError('this context was built from text, so it cannot be continued with chat messages; ' +
        'continue it with text, or build the context from messages');
    }
    full = tokenizer.applyChatTemplate([...context.messages!, ...messages], { addGenerationPrompt: true });
    if (!full.startsWith(context.text)) {
      throw new RequestError('the chat template renders the context\'s messages differently when more messages follow, ' +
        'so the conversation cannot continue the saved context');
    }
  }
  const ids = tokenizer.encode(full, { addSpecialTokens: !chatContext });
  const n = context.ids.length;
  if (ids.length >= n && context.ids.every((id, i) => ids[i] === id)) return ids.slice(n);
  return tokenizer.encode(full.slice(context.text.length), { addSpecialTokens: false });
}

/**
 * The state generation starts from when it continues `context` with `ids`: a copy of the context's cache (which
 * grows as the question and the answer come), and the question fed through it one token at a time at the positions
 * that follow the context.
 */
export async function continueContext(model: Model, context: CompressedContext, ids: readonly number[], maxTokens: number): Promise<PrefillResult> {
  if (context.model !== model) {
    throw new RequestError(`this context was built with the model in "${context.model.dir}", not the one in "${model.dir}"; ` +
      'load the context file into this model with loadContext');
  }
  const cache = context.cache.clone(); // grows with the question and the answer, as tokens come
  const { invFreq } = ropeFrequencies(model.config, context.nextPosition + ids.length + maxTokens);
  let logits = context.logits;
  let position = context.nextPosition;
  for (const id of ids) logits = await decodeStep(model, cache, id, position++, invFreq);
  return { logits, cache, nextPosition: position, layers: [...context.layers], policyMs: 0 };
}
