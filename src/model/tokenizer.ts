/**
 * The tokenizer of a Hugging Face checkpoint: `tokenizer.json` run by `@huggingface/tokenizers`, the special
 * tokens and `add_bos_token` / `add_eos_token` from `tokenizer_config.json`, and the chat template (rendered by
 * `@huggingface/jinja`). {@link TextStreamer} turns generated ids into text piece by piece.
 *
 * Two places where this differs from calling `@huggingface/tokenizers` directly, both to match transformers:
 * - `ByteFallback` decoding: tokenizers.js turns a run of `<0xNN>` tokens into text with a lenient
 *   `TextDecoder`. The Rust `tokenizers` crate (what transformers runs) turns a run that is not valid UTF-8 into
 *   one U+FFFD per byte. {@link Tokenizer.decode} follows Rust; the streamer uses the lenient form, which never
 *   rewrites text it has already produced. Both agree whenever the bytes are valid UTF-8.
 * - Ids out of the vocabulary are dropped by `decode` (Rust), not turned into `<unk>`; an empty id list
 *   decodes to `''` (tokenizers.js throws).
 * @module
 */

import * as path from 'node:path';
import * as hfTokenizers from '@huggingface/tokenizers';
import { ConfigError, ModelLoadError, RequestError, printable } from '../errors.js';
import { MAX_JSON_BYTES, readTextFile } from '../files.js';
import { ChatTemplate } from './chat-template.js';

/** One chat turn, as chat templates expect it. */
export interface ChatMessage {
  role: 'system' | 'user' | 'assistant' | string;
  content: string;
}

export interface ChatTemplateOptions {
  /** Append the cue for the assistant's turn (the template's `add_generation_prompt`). Default false. */
  addGenerationPrompt?: boolean;
  /** More variables for the template (e.g. Qwen3's `enable_thinking`). The standard ones win on a clash. */
  variables?: Readonly<Record<string, unknown>>;
}

// The package's .d.ts files use extension-less relative imports, which NodeNext resolution cannot follow: its
// `Tokenizer` type comes out as `any` and the decoder classes are missing. These describe what is used here.
interface HfEncoding { ids: number[] }
interface HfDecoder { decode_chain(tokens: string[]): string[] }
interface HfSequenceDecoder extends HfDecoder { decoders: HfDecoder[] }
interface HfTokenizer {
  decoder: HfDecoder | null;
  encode(text: string, options: { add_special_tokens: boolean }): HfEncoding;
  decode(ids: number[], options: { skip_special_tokens: boolean }): string;
  token_to_id(token: string): number | undefined;
  id_to_token(id: number): string | undefined;
  get_vocab(withAddedTokens: boolean): Map<string, number>;
}
const hf = hfTokenizers as unknown as {
  Tokenizer: new (tokenizerJson: object, tokenizerConfig: object) => HfTokenizer;
  ByteFallbackDecoder: abstract new (...args: never[]) => HfDecoder;
  SequenceDecoder: abstract new (...args: never[]) => HfSequenceDecoder;
};

/** Where a loaded tokenizer came from: used in error messages. */
interface Sources {
  readonly tokenizerJson: string;
  readonly tokenizerConfig: string;
  /** `chat_template.jinja`, `tokenizer_config.json`, or null when there is no template. */
  readonly chatTemplate: string | null;
}

/** Switch shared by the replaced ByteFallback steps: false while the streamer decodes. */
interface ByteMode { strict: boolean }

let decodeLenient: (tokenizer: Tokenizer, ids: readonly number[], skipSpecialTokens: boolean) => string;

export class Tokenizer {
  /** Id of `bos_token` from `tokenizer_config.json`; null when there is none. */
  readonly bosTokenId: number | null;
  /** Id of `eos_token` from `tokenizer_config.json` (generation_config.json's list is merged elsewhere). */
  readonly eosTokenIds: readonly number[];
  /** Highest token id + 1, added tokens included. May be smaller than the model's `vocab_size`. */
  readonly vocabSize: number;
  readonly hasChatTemplate: boolean;

  readonly #hf: HfTokenizer;
  readonly #byteMode: ByteMode = { strict: true };
  /** Special ids that `encode` puts before / after the text when asked to add special tokens. */
  readonly #prefixIds: readonly number[];
  readonly #suffixIds: readonly number[];
  readonly #specialTokens: Readonly<Record<string, string>>;
  readonly #chatTemplateText: string | null;
  #chatTemplate: ChatTemplate | null = null;
  readonly #sources: Sources;

  static {
    decodeLenient = (t, ids, skip) => t.#decode(ids, skip, false);
  }

  /**
   * Reads `dir/tokenizer.json` (required), `dir/tokenizer_config.json` (optional) and `dir/chat_template.jinja`
   * (optional; the newer layout, preferred over `chat_template` in `tokenizer_config.json`).
   * @throws ModelLoadError when tokenizer.json is missing, a file is unreadable or not JSON, or the tokenizer
   *   uses a component `@huggingface/tokenizers` does not know.
   */
  static load(dir: string): Tokenizer {
    const tokenizerPath = path.join(dir, 'tokenizer.json');
    const configPath = path.join(dir, 'tokenizer_config.json');
    const templatePath = path.join(dir, 'chat_template.jinja');
    const tokenizerJson = readJsonObject(tokenizerPath, true)!;
    const config = readJsonObject(configPath, false) ?? {};
    const jinja = readText(templatePath);
    return Tokenizer.fromJSON(tokenizerJson, config, {
      chatTemplate: jinja ?? undefined,
      sources: { tokenizerJson: tokenizerPath, tokenizerConfig: configPath, chatTemplate: templatePath },
    });
  }

  /**
   * Builds a tokenizer from already-parsed `tokenizer.json` and `tokenizer_config.json` contents.
   * `options.chatTemplate` overrides the config's `chat_template`.
   */
  static fromJSON(
    tokenizerJson: Record<string, unknown>,
    tokenizerConfig: Record<string, unknown>,
    options: { chatTemplate?: string; sources?: Partial<Sources> } = {},
  ): Tokenizer {
    const sources = {
      tokenizerJson: options.sources?.tokenizerJson ?? 'tokenizer.json',
      tokenizerConfig: options.sources?.tokenizerConfig ?? 'tokenizer_config.json',
      chatTemplate: options.sources?.chatTemplate ?? null,
    };
    let template: string | null = null;
    let templateSource: string | null = null;
    if (options.chatTemplate !== undefined) {
      template = options.chatTemplate;
      templateSource = sources.chatTemplate ?? 'chat_template.jinja';
    } else {
      template = pickChatTemplate(tokenizerConfig.chat_template);
      templateSource = template === null ? null : sources.tokenizerConfig;
    }
    checkTokenIds(tokenizerJson, sources.tokenizerJson);
    let inner: HfTokenizer;
    try {
      inner = new hf.Tokenizer(tokenizerJson, tokenizerConfig);
    } catch (err) {
      throw new ModelLoadError(`cannot build a tokenizer from ${sources.tokenizerJson}: ${printable(errorText(err), 200)}`, { cause: err });
    }
    try {
      return new Tokenizer(inner, tokenizerConfig, template, { ...sources, chatTemplate: templateSource });
    } catch (err) {
      if (err instanceof ModelLoadError) throw err;
      throw new ModelLoadError(`cannot use the tokenizer from ${sources.tokenizerJson}: ${printable(errorText(err), 200)}`, { cause: err });
    }
  }

  private constructor(hf: HfTokenizer, config: Record<string, unknown>, template: string | null, sources: Sources) {
    this.#hf = hf;
    this.#sources = sources;
    this.#chatTemplateText = template;
    this.hasChatTemplate = template !== null;
    replaceByteFallback(hf.decoder, this.#byteMode);

    const special: Record<string, string> = {};
    for (const key of ['bos_token', 'eos_token', 'unk_token', 'pad_token']) {
      const content = tokenContent(config[key]);
      if (content !== null) special[key] = content;
    }
    this.#specialTokens = special;
    this.bosTokenId = special.bos_token === undefined ? null : (hf.token_to_id(special.bos_token) ?? null);
    const eos = special.eos_token === undefined ? undefined : hf.token_to_id(special.eos_token);
    this.eosTokenIds = eos === undefined ? [] : [eos];

    let maxId = -1;
    for (const id of hf.get_vocab(true).values()) if (id > maxId) maxId = id;
    this.vocabSize = maxId + 1;

    // What the post-processor adds around a text, then tokenizer_config's add_bos_token / add_eos_token on top
    // (transformers rebuilds the post-processor from those flags when they are set).
    const withSpecial = hf.encode('a', { add_special_tokens: true }).ids;
    const bare = hf.encode('a', { add_special_tokens: false }).ids;
    const at = indexOfRun(withSpecial, bare);
    let prefix = at < 0 ? [] : withSpecial.slice(0, at);
    let suffix = at < 0 ? [] : withSpecial.slice(at + bare.length);
    const eosId = this.eosTokenIds[0] ?? null;
    prefix = applyFlag(prefix, config.add_bos_token, this.bosTokenId, 'start');
    suffix = applyFlag(suffix, config.add_eos_token, eosId, 'end');
    this.#prefixIds = prefix;
    this.#suffixIds = suffix;
  }

  /**
   * Text -> token ids. With `addSpecialTokens` (default true) the BOS/EOS that the tokenizer's post-processor
   * and `add_bos_token`/`add_eos_token` call for are added; special-token strings inside `text` (`<s>`) are
   * always read as those tokens, as transformers does.
   */
  encode(text: string, options: { addSpecialTokens?: boolean } = {}): number[] {
    if (typeof text !== 'string') throw new RequestError(`text to encode must be a string, got ${typeof text}`);
    const ids = this.#encodeIds(text);
    if (options.addSpecialTokens === false) return ids;
    if (this.#prefixIds.length === 0 && this.#suffixIds.length === 0) return ids;
    return [...this.#prefixIds, ...ids, ...this.#suffixIds];
  }

  /**
   * `encode`, refusing a text of more than `limit` tokens after tokenizing only about `limit` tokens of it: a long
   * text is first counted piece by piece (pieces of 64k characters cut at whitespace), and the count stops as soon
   * as it passes the limit, so a 50 MB prompt costs what `limit` tokens cost instead of minutes and gigabytes.
   * A text within the limit is then encoded whole, exactly as `encode` does. The result may still be a few tokens
   * over `limit` (the caller's exact check reports those).
   * @param what names the text in the error, e.g. "the prompt".
   * @throws RequestError with the tokens counted, the characters they took, and the limit.
   */
  encodeWithin(text: string, limit: number, options: { addSpecialTokens?: boolean; what?: string; hint?: string } = {}): number[] {
    if (typeof text !== 'string') throw new RequestError(`text to encode must be a string, got ${typeof text}`);
    if (text.length > PIECE_CHARS) {
      let counted = 0;
      let pieces = 0;
      for (let at = 0; at < text.length;) {
        const end = pieceEnd(text, at);
        counted += this.#encodeIds(text.slice(at, end)).length;
        pieces++;
        at = end;
        // Each cut may change a token or two at the seam; only a count clearly past the limit refuses.
        if (counted - 2 * pieces > limit) {
          throw new RequestError(`${options.what ?? 'the text'} has more than ${limit} tokens, the limit: its first ${at} of ` +
            `${text.length} characters already make ${counted}${options.hint ? ` (${options.hint})` : ''}`);
        }
      }
    }
    return this.encode(text, options);
  }

  /**
   * The tokens (no special tokens) of a prefix of `text` long enough to hold at least `minTokens` of them, or of
   * all of it: a long text is counted piece by piece and only what is needed (plus a margin of a piece, so the
   * tokens at the cut do not matter) is encoded whole. The first `minTokens` ids equal those of encoding all of it.
   */
  encodePrefix(text: string, minTokens: number): number[] {
    if (typeof text !== 'string') throw new RequestError(`text to encode must be a string, got ${typeof text}`);
    let counted = 0;
    let at = 0;
    while (at < text.length && counted < minTokens + 64) {
      const end = pieceEnd(text, at);
      counted += this.#encodeIds(text.slice(at, end)).length;
      at = end;
    }
    if (at < text.length) at = pieceEnd(text, at);      // one more piece: the margin past the cut
    return this.encode(text.slice(0, at), { addSpecialTokens: false });
  }

  /**
   * Token ids -> text, as transformers' `decode`. `skipSpecialTokens` (default false, as in transformers)
   * drops special tokens such as BOS and EOS. Ids outside the vocabulary are dropped.
   */
  decode(ids: ArrayLike<number>, options: { skipSpecialTokens?: boolean } = {}): string {
    return this.#decode(ids, options.skipSpecialTokens ?? false, true);
  }

  /** The vocabulary entry of an id (`▁Once`, `<0x0A>`, `<s>`); undefined outside the vocabulary. */
  tokenToText(id: number): string | undefined {
    return this.#hf.id_to_token(id);
  }

  /** The id of a vocabulary entry or added token; undefined if there is none. */
  tokenToId(token: string): number | undefined {
    return this.#hf.token_to_id(token);
  }

  /**
   * Renders messages with the checkpoint's chat template. The template sees `messages`,
   * `add_generation_prompt` and the special tokens (`bos_token`, `eos_token`, `unk_token`, `pad_token`).
   * The result usually starts with BOS already: encode it with `addSpecialTokens: false` (see {@link encodeChat}).
   * @throws ConfigError when there is no template or it does not parse; RequestError when rendering fails
   *   (templates reject bad role orders with `raise_exception`).
   */
  applyChatTemplate(messages: readonly ChatMessage[], options: ChatTemplateOptions = {}): string {
    const template = this.#compiledTemplate();
    const context: Record<string, unknown> = {
      ...options.variables,
      ...this.#specialTokens,
      messages: messages.map((m) => ({ ...m })),
      add_generation_prompt: options.addGenerationPrompt ?? false,
    };
    try {
      return template.render(context);
    } catch (err) {
      throw new RequestError(
        `the chat template from ${this.#sources.chatTemplate} cannot render these messages: ${errorText(err)}`,
        { cause: err },
      );
    }
  }

  /** `applyChatTemplate` then `encode` without adding special tokens (the template writes them), as transformers. */
  encodeChat(messages: readonly ChatMessage[], options: ChatTemplateOptions = {}): number[] {
    return this.encode(this.applyChatTemplate(messages, options), { addSpecialTokens: false });
  }

  #compiledTemplate(): ChatTemplate {
    if (this.#chatTemplate !== null) return this.#chatTemplate;
    if (this.#chatTemplateText === null) {
      throw new ConfigError(
        `no chat template: ${this.#sources.tokenizerConfig} has no chat_template and there is no chat_template.jinja`,
      );
    }
    try {
      this.#chatTemplate = new ChatTemplate(this.#chatTemplateText);
    } catch (err) {
      throw new ConfigError(`the chat template in ${this.#sources.chatTemplate} does not parse: ${errorText(err)}`, {
        cause: err,
      });
    }
    return this.#chatTemplate;
  }

  /** The library's encode; its failures (a tokenizer.json it accepted but cannot run) name the file. */
  #encodeIds(text: string): number[] {
    try {
      return this.#hf.encode(text, { add_special_tokens: false }).ids;
    } catch (err) {
      throw new ModelLoadError(`the tokenizer from ${this.#sources.tokenizerJson} failed to encode text: ${printable(errorText(err), 200)}`, { cause: err });
    }
  }

  #decode(ids: ArrayLike<number>, skipSpecialTokens: boolean, strictBytes: boolean): string {
    const known: number[] = [];
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      if (this.#hf.id_to_token(id) !== undefined) known.push(id);
    }
    if (known.length === 0) return '';
    this.#byteMode.strict = strictBytes;
    try {
      return this.#hf.decode(known, { skip_special_tokens: skipSpecialTokens });
    } catch (err) {
      throw new ModelLoadError(`the tokenizer from ${this.#sources.tokenizerJson} failed to decode: ${printable(errorText(err), 200)}`, { cause: err });
    } finally {
      this.#byteMode.strict = true;
    }
  }
}

/**
 * Incremental detokenizer for streaming. `push` each generated id and get back the text it completes. Text is
 * held back while it ends in an incomplete UTF-8 character (byte-fallback or byte-level pieces) and released
 * once the character is complete; `flush` releases whatever is left.
 *
 * Each piece is the difference between decoding a short window of recent ids with and without the new ones,
 * so leading-space rules (SentencePiece's dummy prefix, `Strip` decoders) come out as in a full decode.
 * Concatenated output equals `decode(promptIds ++ pushed)` minus `decode(promptIds)` (or `decode(pushed)`
 * without a prompt) whenever decoding is prefix-stable, which holds for valid UTF-8 without
 * `clean_up_tokenization_spaces` rewriting a space already emitted.
 */
export class TextStreamer {
  static readonly #CONTEXT = 6;
  readonly #tokenizer: Tokenizer;
  readonly #skipSpecialTokens: boolean;
  /** Window of ids: [0, #read) was already turned into text (its text is #readText); [#read, end) is pending. */
  #ids: number[];
  #read: number;
  #readText: string;

  /**
   * @param promptIds the ids the generated ones follow; the last few give the first piece its leading space.
   * @param options.skipSpecialTokens default true: BOS, EOS and other special tokens produce no text.
   */
  constructor(tokenizer: Tokenizer, promptIds: readonly number[] = [], options: { skipSpecialTokens?: boolean } = {}) {
    this.#tokenizer = tokenizer;
    this.#skipSpecialTokens = options.skipSpecialTokens ?? true;
    this.#ids = promptIds.slice(Math.max(0, promptIds.length - TextStreamer.#CONTEXT));
    this.#read = this.#ids.length;
    this.#readText = this.#decode(this.#ids);
  }

  /** Adds one id; returns the newly completed text ('' while held back). */
  push(id: number): string {
    this.#ids.push(id);
    return this.#advance(false);
  }

  /** Returns all pending text, even an incomplete character (as U+FFFD). */
  flush(): string {
    return this.#advance(true);
  }

  #advance(force: boolean): string {
    if (this.#read === this.#ids.length) return '';
    const text = this.#decode(this.#ids);
    if (text.length <= this.#readText.length && !force) return '';
    if (text.endsWith('\uFFFD') && !force) return '';
    let start = this.#readText.length;
    if (!text.startsWith(this.#readText)) start = commonPrefixLength(text, this.#readText);
    const piece = text.slice(start);
    // The ids just decoded become the context of the next window.
    this.#ids = this.#ids.slice(this.#read);
    this.#read = this.#ids.length;
    this.#readText = this.#decode(this.#ids);
    return piece;
  }

  #decode(ids: readonly number[]): string {
    return decodeLenient(this.#tokenizer, ids, this.#skipSpecialTokens);
  }
}

// ---------------------------------------------------------------------------------------------------------------

/**
 * ByteFallback as the Rust crate does it: a byte run that is not valid UTF-8 becomes one U+FFFD per byte
 * (`mode.strict`); otherwise (the streamer) a lenient decode, which tokenizers.js always uses.
 */
function byteFallbackChain(tokens: string[], mode: ByteMode): string[] {
  const out: string[] = [];
  let run: number[] = [];
  const flushRun = (): void => {
    if (run.length === 0) return;
    const bytes = Uint8Array.from(run);
    if (!mode.strict) {
      out.push(LENIENT_UTF8.decode(bytes));
    } else {
      try {
        out.push(FATAL_UTF8.decode(bytes));
      } catch {
        for (let i = 0; i < run.length; i++) out.push('\uFFFD');
      }
    }
    run = [];
  };
  for (const token of tokens) {
    const byte = byteToken(token);
    if (byte !== null) {
      run.push(byte);
    } else {
      flushRun();
      out.push(token);
    }
  }
  flushRun();
  return out;
}

const FATAL_UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const LENIENT_UTF8 = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });

/** `<0x0A>` -> 10; null for any other token. */
function byteToken(token: string): number | null {
  if (token.length !== 6 || !token.startsWith('<0x') || token[5] !== '>') return null;
  const hex = token.slice(3, 5);
  if (!/^[0-9A-Fa-f]{2}$/.test(hex)) return null;
  return parseInt(hex, 16);
}

/** Swaps the decode step of every ByteFallback decoder (top level or inside a Sequence) for {@link byteFallbackChain}. */
function replaceByteFallback(decoder: unknown, mode: ByteMode): void {
  if (decoder instanceof hf.ByteFallbackDecoder) {
    decoder.decode_chain = (tokens: string[]) => byteFallbackChain(tokens, mode);
  } else if (decoder instanceof hf.SequenceDecoder) {
    for (const child of decoder.decoders) replaceByteFallback(child, mode);
  }
}

/** tokenizer_config special tokens are a string or an AddedToken dict (`{"content": "<s>", ...}`). */
function tokenContent(value: unknown): string | null {
  if (typeof value === 'string') return value;
  if (value !== null && typeof value === 'object' && typeof (value as { content?: unknown }).content === 'string') {
    return (value as { content: string }).content;
  }
  return null;
}

/** `chat_template` is a string, or a list of `{name, template}` of which `default` is the one to use. */
function pickChatTemplate(value: unknown): string | null {
  if (typeof value === 'string') return value;
  if (Array.isArray(value)) {
    const named = value.filter(
      (t): t is { name: string; template: string } =>
        t !== null && typeof t === 'object' && typeof t.name === 'string' && typeof t.template === 'string',
    );
    return (named.find((t) => t.name === 'default') ?? named[0])?.template ?? null;
  }
  return null;
}

function applyFlag(ids: number[], flag: unknown, id: number | null, where: 'start' | 'end'): number[] {
  if (id === null || typeof flag !== 'boolean') return ids;
  const has = ids.includes(id);
  if (flag && !has) return where === 'start' ? [id, ...ids] : [...ids, id];
  if (!flag && has) return ids.filter((x) => x !== id);
  return ids;
}

function indexOfRun(haystack: readonly number[], run: readonly number[]): number {
  outer: for (let i = 0; i + run.length <= haystack.length; i++) {
    for (let j = 0; j < run.length; j++) if (haystack[i + j] !== run[j]) continue outer;
    return i;
  }
  return -1;
}

function commonPrefixLength(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a.charCodeAt(i) === b.charCodeAt(i)) i++;
  return i;
}

/** Characters per piece when a long text is counted piece by piece. */
const PIECE_CHARS = 1 << 16;

/** Where the piece starting at `at` ends: about PIECE_CHARS on, just before a whitespace character if one is near. */
function pieceEnd(text: string, at: number): number {
  const end = at + PIECE_CHARS;
  if (end >= text.length) return text.length;
  for (let i = end; i > end - 4096; i--) if (/\s/.test(text[i])) return i;
  // No whitespace near: cut anywhere but inside a surrogate pair.
  const c = text.charCodeAt(end - 1);
  return c >= 0xd800 && c <= 0xdbff ? end + 1 : end;
}

/**
 * Token ids in tokenizer.json must be non-negative integers: the library takes any JSON number and fails later,
 * at decode, with a TypeError (an added token with id 1.5).
 */
function checkTokenIds(json: Record<string, unknown>, source: string): void {
  const vocab = (json.model as { vocab?: unknown } | undefined)?.vocab;
  const added = json.added_tokens;
  // Ids are dense in real tokenizers; the library walks every id up to the largest, so an id of 1e9 would hang it.
  const entries = (Array.isArray(added) ? added.length : 0)
    + (Array.isArray(vocab) ? vocab.length : vocab !== null && typeof vocab === 'object' ? Object.keys(vocab).length : 0);
  const maxId = 2 * entries + 65536;
  const ok = (id: unknown) => Number.isSafeInteger(id) && (id as number) >= 0 && (id as number) < maxId;
  if (added !== undefined && added !== null) {
    if (!Array.isArray(added)) throw new ModelLoadError(`${source}: "added_tokens" must be a list`);
    for (const [i, t] of added.entries()) {
      const id = (t as { id?: unknown } | null)?.id;
      if (!ok(id) || typeof (t as { content?: unknown }).content !== 'string') {
        throw new ModelLoadError(`${source}: added_tokens[${i}] needs a string "content" and an integer "id" from 0 to ${maxId - 1}, ` +
          `got ${printable(JSON.stringify(t) ?? String(t), 100)}`);
      }
    }
  }
  if (vocab !== null && typeof vocab === 'object' && !Array.isArray(vocab)) {
    for (const [token, id] of Object.entries(vocab)) {
      if (!ok(id)) throw new ModelLoadError(`${source}: model.vocab gives ${printable(JSON.stringify(token), 60)} the id ${printable(String(JSON.stringify(id)), 40)}; ids are integers from 0 to ${maxId - 1}`);
    }
  }
}

/** Reads a JSON object; null if the file is absent and not required. */
function readJsonObject(file: string, required: boolean): Record<string, unknown> | null {
  const text = readText(file);
  if (text === null) {
    if (required) throw new ModelLoadError(`tokenizer file not found: ${file}`);
    return null;
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new ModelLoadError(`${file} is not valid JSON: ${printable(errorText(err), 200)}`, { cause: err });
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new ModelLoadError(`${file} must hold a JSON object`);
  }
  return value as Record<string, unknown>;
}

/** A file's text (a regular file of at most 64 MiB); null if it does not exist. */
function readText(file: string): string | null {
  return readTextFile(file, { maxBytes: MAX_JSON_BYTES, what: file, error: ModelLoadError, missingOk: true });
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
