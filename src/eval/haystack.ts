/**
 * What the long-context generators share: haystack text (a folder of `.txt` files, or the built-in stories),
 * its tokens repeated to any length, a needle placed at a depth and moved back to a sentence end as the
 * Needle-in-a-Haystack reference does, prompts assembled from a template and measured in the model's tokens,
 * and a seeded random source so that a seed gives the same samples on every run.
 *
 * Reference (FastKV `eval/run_needle_in_haystack.py`, adapted from FranxYao/Long-Context-Data-Engineering): the
 * haystack tokens are trimmed to the context size, the insertion point is depth% of them, moved back until
 * the token before it is a sentence-ending period, and depth 100 appends the needle at the end. The context
 * is decoded to text and the whole prompt encoded again.
 * @module
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { RequestError, quoted } from '../errors.js';
import { MAX_TEXT_BYTES, readTextFile } from '../files.js';
import type { Tokenizer } from '../model/tokenizer.js';
import { Xoshiro128 } from '../random.js';

/** `data/stories-haystack.txt`: 100k tokens of stories260K's stories (see data/README.md). */
export const BUILTIN_HAYSTACK = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'data', 'stories-haystack.txt');

// ---------------------------------------------------------------------------------------------------------------
// Seeded random draws

/** FNV-1a over a string, for turning seed labels into 32-bit seeds. */
function hashString(text: string, h = 0x811c9dc5): number {
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

/**
 * The project's PRNG (`src/random.ts`) seeded from a seed and labels: `new SeededRandom(seed, 'ruler', task, i)`
 * gives a stream that depends on the seed and every label, so samples can be drawn independently of order.
 */
export class SeededRandom extends Xoshiro128 {
  constructor(seed: number, ...labels: (string | number)[]) {
    let h = hashString(String(seed));
    for (const label of labels) h = hashString(`\u0000${label}`, h);
    super(h);
  }

  /** Uniform in [0, 1). */
  next(): number {
    return this.uint32() / 4294967296;
  }

  /** Uniform integer in [lo, hi] (both included). */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new RangeError('pick from an empty list');
    return items[Math.floor(this.next() * items.length)];
  }

  /** Shuffles in place (Fisher–Yates) and returns the array. */
  shuffle<T>(items: T[]): T[] {
    for (let i = items.length - 1; i > 0; i--) {
      const j = Math.floor(this.next() * (i + 1));
      [items[i], items[j]] = [items[j], items[i]];
    }
    return items;
  }

  /** k distinct items, in draw order. */
  sample<T>(items: readonly T[], k: number): T[] {
    if (k > items.length) throw new RangeError(`cannot sample ${k} of ${items.length} items`);
    const pool = items.slice();
    for (let i = 0; i < k; i++) {
      const j = i + Math.floor(this.next() * (pool.length - i));
      [pool[i], pool[j]] = [pool[j], pool[i]];
    }
    return pool.slice(0, k);
  }

  /** A random (version 4) UUID string. */
  uuid(): string {
    const hex = Array.from({ length: 4 }, () => this.uint32().toString(16).padStart(8, '0')).join('');
    const variant = ((parseInt(hex[16], 16) & 0x3) | 0x8).toString(16);
    return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-4${hex.slice(13, 16)}-${variant}${hex.slice(17, 20)}-${hex.slice(20, 32)}`;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Haystacks

export interface Haystack {
  /** Where the text came from (a folder, or the built-in file). */
  readonly source: string;
  readonly text: string;
}

/**
 * Loads a haystack: every `.txt` file of `dir` concatenated in sorted name order (as the NIAH reference
 * concatenates the essays), or, with no folder, the built-in stories.
 * @throws RequestError naming `--haystack` when the folder is missing, unreadable or has no text.
 */
export function loadHaystack(dir?: string): Haystack {
  if (dir === undefined) return { source: BUILTIN_HAYSTACK, text: readHaystackFile(BUILTIN_HAYSTACK) };
  let names: string[];
  try {
    if (!fs.statSync(dir).isDirectory()) throw new Error('not a folder');
    names = fs.readdirSync(dir).filter((n) => n.toLowerCase().endsWith('.txt')).sort();
  } catch (cause) {
    throw new RequestError(`--haystack "${dir}" is not a readable folder of .txt files: ${(cause as Error).message}`, { cause });
  }
  if (names.length === 0) throw new RequestError(`--haystack "${dir}" holds no .txt files`);
  const text = names.map((n) => readHaystackFile(path.join(dir, n))).join('');
  if (text.trim() === '') throw new RequestError(`--haystack "${dir}": its .txt files are empty`);
  return { source: path.resolve(dir), text };
}

function readHaystackFile(file: string): string {
  return readTextFile(file, { maxBytes: MAX_TEXT_BYTES, what: `haystack file ${quoted(file)}` });
}

const tokenCache = new WeakMap<Tokenizer, Map<string, number[]>>();

/**
 * The haystack's tokens (no special tokens), repeated until there are at least `minTokens`. Encoding is done
 * once per tokenizer and haystack.
 */
export function haystackTokens(tokenizer: Tokenizer, haystack: Haystack, minTokens = 0): number[] {
  let perTokenizer = tokenCache.get(tokenizer);
  if (!perTokenizer) { perTokenizer = new Map(); tokenCache.set(tokenizer, perTokenizer); }
  let ids = perTokenizer.get(haystack.text);
  if (!ids) {
    ids = tokenizer.encode(haystack.text, { addSpecialTokens: false });
    if (ids.length === 0) throw new RequestError(`the haystack from ${haystack.source} encodes to no tokens`);
    perTokenizer.set(haystack.text, ids);
  }
  if (ids.length >= minTokens) return ids;
  const out: number[] = new Array(Math.ceil(minTokens / ids.length) * ids.length);
  for (let i = 0; i < out.length; i++) out[i] = ids[i % ids.length];
  return out;
}

const periodCache = new WeakMap<Tokenizer, Set<number>>();

/**
 * Token ids that end a sentence: those that decode to text ending in '.' (LLaMA 3: [13, ...]; the SentencePiece
 * tokenizers: '.', '▁.'). The reference hard-codes them per model; here they come from the vocabulary.
 */
export function periodTokenIds(tokenizer: Tokenizer): Set<number> {
  let ids = periodCache.get(tokenizer);
  if (ids) return ids;
  ids = new Set();
  for (let id = 0; id < tokenizer.vocabSize; id++) {
    const piece = tokenizer.tokenToText(id);
    if (piece === undefined || !piece.includes('.')) continue;
    if (tokenizer.decode([id]).endsWith('.')) ids.add(id);
  }
  periodCache.set(tokenizer, ids);
  return ids;
}

/** The ids `piece` gets when it follows `before` in running text (no dummy prefix, merges as in context). */
export function encodeInContext(tokenizer: Tokenizer, before: string, piece: string): number[] {
  const head = tokenizer.encode(before, { addSpecialTokens: false });
  const all = tokenizer.encode(before + piece, { addSpecialTokens: false });
  if (all.length >= head.length && head.every((id, i) => all[i] === id)) return all.slice(head.length);
  return tokenizer.encode(piece, { addSpecialTokens: false });
}

export interface NeedleContext {
  /** The context tokens with the needle in them (no special tokens). */
  ids: number[];
  /** The context as text (the ids decoded), ready for a prompt template. */
  text: string;
  /** Index in `ids` of the needle's first token. */
  needleStart: number;
  needleLength: number;
  /** Where the needle ended up: tokens before it / haystack tokens, in percent. */
  depthPercent: number;
}

/**
 * Haystack tokens with `needle` inserted at `depthPercent` of them, moved back to just after the previous
 * sentence-ending token (depth 100 appends it at the end). `haystackTokenCount` tokens of haystack are used,
 * taken from `offset` (wrapping around a repeated haystack); with `endAtSentence` they are first cut back to the
 * last sentence end.
 */
export function insertNeedle(
  tokenizer: Tokenizer, haystack: Haystack, needle: string,
  options: { haystackTokenCount: number; depthPercent: number; offset?: number; endAtSentence?: boolean },
): NeedleContext {
  const { haystackTokenCount: count, depthPercent } = options;
  let n = count;
  if (!(depthPercent >= 0 && depthPercent <= 100)) throw new RequestError(`depth must be in [0, 100], got ${depthPercent}`);
  if (!Number.isInteger(n) || n < 0) throw new RequestError(`haystack token count must be a non-negative integer, got ${n}`);
  const offset = options.offset ?? 0;
  const source = haystackTokens(tokenizer, haystack, offset + n);
  let context = source.slice(offset, offset + n);
  const periods = periodTokenIds(tokenizer);
  if (options.endAtSentence) {
    // Cut the haystack back to its last sentence end, so that what follows the context starts a sentence.
    let end = n;
    while (end > 0 && !periods.has(context[end - 1])) end--;
    if (end > 0) { context = context.slice(0, end); n = end; }
  }
  const needleIds = encodeInContext(tokenizer, '.', needle);
  let at = depthPercent >= 100 ? n : Math.floor(n * (depthPercent / 100));
  if (depthPercent < 100) while (at > 0 && !periods.has(context[at - 1])) at--;
  const ids = [...context.slice(0, at), ...needleIds, ...context.slice(at)];
  return {
    ids, text: tokenizer.decode(ids), needleStart: at, needleLength: needleIds.length,
    depthPercent: n === 0 ? 0 : (100 * at) / n,
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Prompts

/** A prompt in parts: text before the context, the context (the part a query-agnostic press compresses), text after. */
export interface PromptParts {
  before: string;
  context: string;
  /** The question, still inside the user's turn when a chat template is used. */
  after: string;
  /** Appended after the question (and after the assistant cue with a chat template): "Answer:", RULER's prefixes. */
  answerPrefix?: string;
}

export interface BuiltPrompt {
  /** The whole prompt's ids (BOS included where the tokenizer or chat template adds it). */
  ids: number[];
  /** ids[contextStart, contextEnd) are the context's tokens; ids[contextEnd..] the question (for --question-after). */
  contextStart: number;
  contextEnd: number;
}

/**
 * Encodes the prompt as one text (so tokens merge as the model saw them in training) and finds where the
 * context starts and ends in its tokens. With `chat`, the user's turn is before + context + after, rendered by
 * the model's chat template with the assistant cue, then the answer prefix.
 */
export function buildPrompt(tokenizer: Tokenizer, parts: PromptParts, options: { chat?: boolean } = {}): BuiltPrompt {
  const prefix = parts.answerPrefix ?? '';
  let text: string;
  let start: number;
  let special: boolean;
  if (options.chat) {
    const content = parts.before + parts.context + parts.after;
    const rendered = tokenizer.applyChatTemplate([{ role: 'user', content }], { addGenerationPrompt: true });
    const at = rendered.indexOf(content);
    if (at < 0) throw new RequestError('the chat template changed the prompt text; run without --chat');
    text = rendered + prefix;
    start = at + parts.before.length;
    special = false;
  } else {
    text = parts.before + parts.context + parts.after + prefix;
    start = parts.before.length;
    special = true;
  }
  const end = start + parts.context.length;
  const ids = tokenizer.encode(text, { addSpecialTokens: special });
  const boundary = (chars: number) => commonPrefix(tokenizer.encode(text.slice(0, chars), { addSpecialTokens: special }), ids);
  return { ids, contextStart: boundary(start), contextEnd: boundary(end) };
}

function commonPrefix(a: readonly number[], b: readonly number[]): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return i;
}

/** Index of the first occurrence of `run` in `ids` at or after `from`; -1 if none. */
export function indexOfRun(ids: readonly number[], run: readonly number[], from = 0): number {
  if (run.length === 0) return -1;
  outer: for (let i = Math.max(0, from); i + run.length <= ids.length; i++) {
    for (let j = 0; j < run.length; j++) if (ids[i + j] !== run[j]) continue outer;
    return i;
  }
  return -1;
}

/**
 * The largest size n in [lo, hi] for which `fits(n)` holds, assuming it holds for small n and fails past some
 * point; -1 if not even `lo` fits. Binary search, so a generator that measures its prompt with the tokenizer
 * encodes O(log(hi − lo)) prompts.
 */
export function largestFitting(lo: number, hi: number, fits: (n: number) => boolean): number {
  if (!fits(lo)) return -1;
  // Gallop up from lo (steps 1, 2, 4, ...), then bisect between the last size that fit and the first that did not.
  let good = lo;
  let bad = hi + 1;
  for (let step = 1; good + step < bad; step *= 2) {
    if (fits(good + step)) good += step;
    else { bad = good + step; break; }
  }
  while (bad - good > 1) {
    const mid = Math.floor((good + bad) / 2);
    if (fits(mid)) good = mid; else bad = mid;
  }
  return good;
}

/** Cuts generated text at the first stop string. */
export function cutAtStop(text: string, stops: readonly string[]): string {
  let end = text.length;
  for (const s of stops) {
    const i = s === '' ? -1 : text.indexOf(s);
    if (i >= 0 && i < end) end = i;
  }
  return text.slice(0, end);
}
