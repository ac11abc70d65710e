/**
 * RULER's synthetic tasks (hsiehjackson/RULER `scripts/synthetic.yaml`, `scripts/data/synthetic/*.py`),
 * generated here from a seed and sized to a length in the model's own tokens: the haystack grows until
 * prompt + answer budget would pass the length (measured with the tokenizer, then a binary search).
 *
 * Tasks: niah_single_1..3, niah_multikey_1..3, niah_multivalue, niah_multiquery (needle "One of the special
 * magic {numbers|uuids|words} for {key} is: {value}." in noise, essay or needle haystacks), vt (variable
 * tracking, 1 chain of 4 hops, with a one-shot example), cwe (common words, with a one-shot example), fwe
 * (frequent "coded" words drawn by a zeta(2) law). Templates and answer prefixes are RULER's (base model
 * template; `chat` wraps them in the model's chat template, as FastKV's runner does). Scoring: string_match_all;
 * string_match_part is reported beside it.
 *
 * Words: RULER draws keys (adjective-noun pairs) and cwe's words from the `wonderwords` lists; here both come
 * from the `random-words` package's list of ~1,950 common English words (keys are two of them joined by '-').
 * "Essay" haystacks are the haystack the user gives (the built-in stories by default), split into words as RULER
 * splits Paul Graham's essays. The per-sample RNG replaces RULER's global seeding; RULER's few fixed-seed
 * shuffles become per-sample draws.
 *
 * `format: 'magic-number'` restates the NIAH tasks that have an equivalent in the fact format of retrieval-3M
 * (" The magic number of NAME is DDDDD." / " What is the magic number of NAME? The magic number of NAME is"),
 * a model that understands nothing else.
 * @module
 */
import * as randomWords from 'random-words';
import { RequestError } from '../errors.js';
import type { Model } from '../engine/model.js';
import type { Tokenizer } from '../model/tokenizer.js';
import { stringMatchAll, stringMatchPart } from './metrics.js';
import {
  SeededRandom, buildPrompt, largestFitting, type BuiltPrompt, type Haystack, type PromptParts,
} from './haystack.js';
import { MAGIC_NAMES, answerPrompt, mean, type MethodColumn } from './niah.js';

// The package's .d.ts names the list `wordsList`; the module exports `wordList`.
const WORDS: readonly string[] = (randomWords as unknown as { wordList: readonly string[] }).wordList;

export const RULER_TASKS = [
  'niah_single_1', 'niah_single_2', 'niah_single_3', 'niah_multikey_1', 'niah_multikey_2', 'niah_multikey_3',
  'niah_multivalue', 'niah_multiquery', 'vt', 'cwe', 'fwe',
] as const;
export type RulerTask = (typeof RULER_TASKS)[number];

export type RulerFormat = 'ruler' | 'magic-number';

type KeyKind = 'words' | 'numbers' | 'uuids';
interface NiahConfig {
  haystack: 'repeat' | 'essay' | 'needle';
  keyKind: KeyKind;
  valueKind: KeyKind;
  numKeys: number;
  numValues: number;
  numQueries: number;
}

/** synthetic.yaml. */
const NIAH: Partial<Record<RulerTask, NiahConfig>> = {
  niah_single_1: { haystack: 'repeat', keyKind: 'words', valueKind: 'numbers', numKeys: 1, numValues: 1, numQueries: 1 },
  niah_single_2: { haystack: 'essay', keyKind: 'words', valueKind: 'numbers', numKeys: 1, numValues: 1, numQueries: 1 },
  niah_single_3: { haystack: 'essay', keyKind: 'words', valueKind: 'uuids', numKeys: 1, numValues: 1, numQueries: 1 },
  niah_multikey_1: { haystack: 'essay', keyKind: 'words', valueKind: 'numbers', numKeys: 4, numValues: 1, numQueries: 1 },
  niah_multikey_2: { haystack: 'needle', keyKind: 'words', valueKind: 'numbers', numKeys: 1, numValues: 1, numQueries: 1 },
  niah_multikey_3: { haystack: 'needle', keyKind: 'uuids', valueKind: 'uuids', numKeys: 1, numValues: 1, numQueries: 1 },
  niah_multivalue: { haystack: 'essay', keyKind: 'words', valueKind: 'numbers', numKeys: 1, numValues: 4, numQueries: 1 },
  niah_multiquery: { haystack: 'essay', keyKind: 'words', valueKind: 'numbers', numKeys: 1, numValues: 1, numQueries: 4 },
};

/** Tasks that have an equivalent in the magic-number fact format (one name → one 5-digit number, one question). */
export const MAGIC_NUMBER_TASKS: readonly RulerTask[] = ['niah_single_1', 'niah_single_2', 'niah_multikey_1', 'niah_multikey_2'];

/** RULER's answer budgets (scripts/data/synthetic/constants.py). */
export const RULER_MAX_TOKENS: Readonly<Record<RulerTask, number>> = {
  niah_single_1: 128, niah_single_2: 128, niah_single_3: 128, niah_multikey_1: 128, niah_multikey_2: 128,
  niah_multikey_3: 128, niah_multivalue: 128, niah_multiquery: 128, vt: 30, cwe: 120, fwe: 50,
};
const MAGIC_MAX_TOKENS = 8;

const NOISE = 'The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.';
/** RULER's 40 insertion depths: linspace(0, 100, 40), rounded. */
const DEPTHS: readonly number[] = Array.from({ length: 40 }, (_, i) => Math.round((100 * i) / 39));

const NIAH_TEMPLATE = {
  before: 'Some special magic {v} are hidden within the following text. Make sure to memorize it. I will quiz you about the {v} afterwards.\n',
  after: '\nWhat are all the special magic {v} for {query} mentioned in the provided text?',
  answerPrefix: ' The special magic {v} for {query} mentioned in the provided text are',
};
const VT_TEMPLATE = {
  before: 'Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n',
  after: '\nQuestion: Find all variables that are assigned the value {query} in the text above.',
  // "assgined" is RULER's spelling.
  answerPrefix: ' Answer: According to the chain(s) of variable assignment in the text above, {num_v} variables are assgined the value {query}, they are: ',
};
const CWE_TEMPLATE = {
  before: 'Below is a numbered list of words. In these words, some appear more often than others. Memorize the ones that appear most often.\n',
  after: '\nQuestion: What are the 10 most common words in the above list?',
  answerPrefix: ' Answer: The top 10 words that appear most often in the list are:',
};
const FWE_TEMPLATE = {
  before: 'Read the following coded text and track the frequency of each coded word. Find the three most frequently appeared coded words. ',
  after: "\nQuestion: Do not provide any explanation. Please ignore the dots '....'. What are the three most frequently appeared words in the above coded text?",
  answerPrefix: ' Answer: According to the coded text above, the three most frequently appeared words are:',
};

export interface RulerOptions {
  /** Prompt + answer budget, in the model's tokens. */
  length: number;
  seed?: number;
  /** Haystack for the "essay" tasks. */
  haystack: Haystack;
  format?: RulerFormat;
  chat?: boolean;
  /** Overrides the task's answer budget. */
  maxTokens?: number;
}

export interface RulerSample {
  task: RulerTask;
  index: number;
  prompt: BuiltPrompt;
  /** Reference strings (all must appear for string_match_all). */
  outputs: string[];
  maxTokens: number;
  /** Prompt tokens + maxTokens (<= the requested length). */
  length: number;
}

/** What a generator makes for a given haystack size: the prompt in parts and the references. */
interface Draft { parts: PromptParts; outputs: string[] }
type Generator = (size: number, rng: SeededRandom) => Draft;

function fillTemplate(t: { before: string; after: string; answerPrefix: string }, vars: Record<string, string>): Omit<PromptParts, 'context'> {
  const f = (s: string) => s.replace(/\{(\w+)\}/g, (m, k: string) => vars[k] ?? m);
  return { before: f(t.before), after: f(t.after), answerPrefix: f(t.answerPrefix) };
}

function randomKey(kind: KeyKind, rng: SeededRandom): string {
  if (kind === 'numbers') return String(rng.int(1_000_000, 9_999_999));
  if (kind === 'uuids') return rng.uuid();
  return `${rng.pick(WORDS)}-${rng.pick(WORDS)}`;
}

/** Splits text into sentences after . ! or ? (and a closing quote or bracket) followed by whitespace. */
export function splitSentences(text: string): string[] {
  return text.split(/(?<=[.!?]["'”’)\]]?)\s+/).filter((s) => s !== '');
}

/** The haystack as RULER's essay words (whitespace collapsed), repeated to at least n words. */
function essayWords(haystack: Haystack, cache: Map<Haystack, string[]>, n: number): string[] {
  let words = cache.get(haystack);
  if (!words) { words = haystack.text.split(/\s+/).filter((w) => w !== ''); cache.set(haystack, words); }
  if (words.length >= n) return words.slice(0, n);
  const out: string[] = new Array(n);
  for (let i = 0; i < n; i++) out[i] = words[i % words.length];
  return out;
}

function joinQuery(queries: string[]): string {
  return queries.length > 1 ? `${queries.slice(0, -1).join(', ')}, and ${queries[queries.length - 1]}` : queries[0];
}

function niahGenerator(cfg: NiahConfig, haystack: Haystack, format: RulerFormat, words: Map<Haystack, string[]>): Generator {
  const numKeys = Math.max(cfg.numKeys, cfg.numQueries);
  const magic = format === 'magic-number';
  return (size, rng) => {
    // Keys and values first, so they do not depend on the haystack size.
    const keys: string[] = [];
    const values: string[][] = [];
    const needles: string[] = [];
    const names = magic ? rng.sample(MAGIC_NAMES, numKeys) : [];
    for (let k = 0; k < numKeys; k++) {
      keys.push(magic ? names[k] : randomKey(cfg.keyKind, rng));
      const vs: string[] = [];
      for (let v = 0; v < cfg.numValues; v++) {
        vs.push(magic ? String(rng.int(10000, 99999)) : randomKey(cfg.valueKind, rng));
        needles.push(needleText(keys[k], vs[v]));
      }
      values.push(vs);
    }
    rng.shuffle(needles);
    const queryIndices = rng.sample(Array.from({ length: numKeys }, (_, i) => i), cfg.numQueries);
    const queries = queryIndices.map((i) => keys[i]);
    const outputs = queryIndices.flatMap((i) => values[i]);

    function needleText(key: string, value: string): string {
      if (magic) return ` The magic number of ${key} is ${value}.`;
      return `One of the special magic ${cfg.valueKind} for ${key} is: ${value}.`;
    }

    let context: string;
    if (cfg.haystack === 'essay') {
      const sentences = splitSentences(essayWords(haystack, words, size).join(' ').trim());
      // retrieval-3M reads its question after a finished sentence: drop a trailing fragment.
      if (magic && sentences.length > 1 && !/[.!?]["'”’)\]]?$/.test(sentences[sentences.length - 1])) sentences.pop();
      const at = rng.sample(DEPTHS, needles.length).map((d) => Math.floor(sentences.length * (d / 100))).sort((a, b) => a - b);
      const pieces: string[] = [];
      let last = 0;
      at.forEach((pos, i) => {
        pieces.push(sentences.slice(last, pos).join(' '));
        pieces.push(needles[i]);
        last = pos;
      });
      pieces.push(sentences.slice(last).join(' '));
      // The magic-number needle brings its own leading space, as in retrieval-3M's training text.
      context = magic ? pieces.filter((p) => p !== '').map((p, i) => (i === 0 || p.startsWith(' ') ? p : ` ${p}`)).join('')
        : pieces.filter((p) => p !== '').join(' ');
    } else {
      let sentences: string[];
      if (cfg.haystack === 'repeat') {
        sentences = Array.from({ length: size }, () => NOISE);
      } else {
        // A haystack made of other needles (never the queried keys).
        sentences = Array.from({ length: size }, () => {
          let key = magic ? rng.pick(MAGIC_NAMES) : randomKey(cfg.keyKind, rng);
          while (keys.includes(key)) key = magic ? rng.pick(MAGIC_NAMES) : randomKey(cfg.keyKind, rng);
          const value = magic ? String(rng.int(10000, 99999)) : randomKey(cfg.valueKind, rng);
          return magic ? needleText(key, value).trimStart() : needleText(key, value);
        });
      }
      const positions = rng.sample(Array.from({ length: size }, (_, i) => i), Math.min(size, needles.length)).sort((a, b) => b - a);
      positions.forEach((pos, i) => sentences.splice(pos, 0, magic ? needles[i].trimStart() : needles[i]));
      for (let i = positions.length; i < needles.length; i++) sentences.push(magic ? needles[i].trimStart() : needles[i]);
      context = magic ? sentences.join(' ') : sentences.join('\n');
    }

    if (magic) {
      const name = queries[0];
      return { parts: { before: '', context, after: ` What is the magic number of ${name}? The magic number of ${name} is` }, outputs };
    }
    // RULER's singular forms when a single value is asked for.
    let t = { ...NIAH_TEMPLATE };
    let v: string = cfg.valueKind;
    if (cfg.numQueries * cfg.numValues === 1) {
      const sing = (s: string) => s.replace('Some', 'A').replaceAll('are all', 'is').replaceAll('are', 'is').replaceAll('answers', 'answer');
      t = { before: sing(t.before), after: sing(t.after), answerPrefix: sing(t.answerPrefix) };
      v = v.slice(0, -1);
    }
    return { parts: { ...fillTemplate(t, { v, query: joinQuery(queries) }), context }, outputs };
  };
}

function vtDraft(size: number, rng: SeededRandom, nameLength: number, hops = 4): Draft {
  const letters = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ';
  const names = new Set<string>();
  while (names.size < hops + 1) names.add(Array.from({ length: nameLength }, () => rng.pick([...letters])).join(''));
  const vars = [...names];
  const value = String(rng.int(10000, 99998));
  const chain = [`VAR ${vars[0]} = ${value}`, ...Array.from({ length: hops }, (_, j) => `VAR ${vars[j + 1]} = VAR ${vars[j]} `)];
  let sentences = Array.from({ length: size }, () => `${NOISE}\n`);
  if (sentences.length <= chain.length) {
    sentences = sentences.flatMap((s) => s.split('.')).map((s) => (s.trim().length > 0 ? `${s}.` : s));
  }
  const positions = rng.sample(Array.from({ length: sentences.length }, (_, i) => i), Math.min(chain.length, sentences.length)).sort((a, b) => a - b);
  positions.forEach((pos, j) => sentences.splice(pos + j, 0, chain[j]));
  const context = sentences.join(' ').replaceAll('. \n', '.\n');
  return { parts: { ...fillTemplate(VT_TEMPLATE, { query: value, num_v: String(hops + 1) }), context }, outputs: vars };
}

function cweDraft(numWords: number, rng: SeededRandom, repeats: [number, number], pool: readonly string[]): Draft {
  const chosen = rng.sample(pool, Math.min(numWords, pool.length));
  const common = chosen.slice(0, 10);
  const list = rng.shuffle([
    ...Array.from({ length: repeats[0] }, () => common).flat(),
    ...Array.from({ length: repeats[1] }, () => chosen.slice(10)).flat(),
  ]);
  const context = list.map((w, i) => `${i + 1}. ${w}`).join(' ');
  return { parts: { ...fillTemplate(CWE_TEMPLATE, {}), context }, outputs: common };
}

/** Riemann zeta(s) for s > 1: 19 terms, then the Euler–Maclaurin tail (error ~1e-12 at s = 2). */
export function zeta(s: number): number {
  const n = 20;
  let sum = 0;
  for (let k = 1; k < n; k++) sum += k ** -s;
  return sum + n ** (1 - s) / (s - 1) + 0.5 * n ** -s + (s * n ** (-s - 1)) / 12 - (s * (s + 1) * (s + 2) * n ** (-s - 3)) / 720;
}

function fweDraft(numWords: number, rng: SeededRandom, vocabSize: number, alpha = 2): Draft {
  const letters = 'abcdefghijklmnopqrstuvwxyz';
  const vocabSet = new Set<string>();
  while (vocabSet.size < vocabSize) vocabSet.add(Array.from({ length: 6 }, () => letters[rng.int(0, 25)]).join(''));
  const vocab = rng.shuffle([...vocabSet].sort());
  vocab[0] = '...'; // the top-ranked "word" is noise
  const z = zeta(alpha);
  const sampled: string[] = [];
  vocab.forEach((w, i) => {
    const count = Math.floor((numWords * (i + 1) ** -alpha) / z);
    for (let c = 0; c < count; c++) sampled.push(w);
  });
  rng.shuffle(sampled);
  return { parts: { ...fillTemplate(FWE_TEMPLATE, {}), context: sampled.join(' ') }, outputs: vocab.slice(1, 4) };
}

function promptText(d: Draft): string {
  return d.parts.before + d.parts.context + d.parts.after + (d.parts.answerPrefix ?? '');
}

/**
 * Sample `index` of `task`: deterministic in (seed, task, index, length, haystack, tokenizer). The haystack
 * size is the largest whose prompt + answer budget fits `length` tokens.
 * @throws RequestError when even the smallest haystack does not fit.
 */
export function rulerSample(tokenizer: Tokenizer, task: RulerTask, index: number, options: RulerOptions): RulerSample {
  const format = options.format ?? 'ruler';
  const seed = options.seed ?? 42;
  const length = options.length;
  if (format === 'magic-number' && !MAGIC_NUMBER_TASKS.includes(task)) {
    throw new RequestError(`--tasks: ${task} has no magic-number form; with --format magic-number use ${MAGIC_NUMBER_TASKS.join(', ')}`);
  }
  const maxTokens = options.maxTokens ?? (format === 'magic-number' ? MAGIC_MAX_TOKENS : RULER_MAX_TOKENS[task]);
  const build = (parts: PromptParts) => buildPrompt(tokenizer, parts, { chat: options.chat });
  const rngFor = (...labels: (string | number)[]) => new SeededRandom(seed, 'ruler', format, task, index, ...labels);
  const wordCache = new Map<Haystack, string[]>();

  // One-shot examples (vt, cwe), made once and put before the task.
  let shot = '';
  let generator: Generator;
  const niah = NIAH[task];
  if (niah) {
    generator = niahGenerator(niah, options.haystack, format, wordCache);
  } else if (task === 'vt') {
    // RULER sizes its example to 500 tokens with 3-letter names; here at most a quarter of the length.
    const exampleBudget = Math.min(500, Math.floor(length / 4));
    const exampleSize = largestFitting(1, exampleBudget, (n) => tokenizer.encode(promptText(vtDraft(n, rngFor('shot'), 3))).length + 30 <= exampleBudget);
    const ex = vtDraft(Math.max(1, exampleSize), rngFor('shot'), 3);
    shot = `${promptText(ex)} ${ex.outputs.join(' ')}\n\n`;
    generator = (n, rng) => vtDraft(n, rng, 5);
  } else if (task === 'cwe') {
    const short = length < 4096;
    const pool = rngFor('words').shuffle(WORDS.slice());
    const ex = cweDraft(short ? 20 : 40, rngFor('shot'), short ? [3, 1] : [10, 3], pool);
    shot = `${promptText(ex)} ${ex.outputs.map((w, i) => `${i + 1}. ${w}`).join(' ')}\n`;
    generator = (n, rng) => cweDraft(n, rng, short ? [6, 1] : [30, 3], pool);
  } else {
    const vocabSize = Math.max(8, Math.floor(length / 50));
    generator = (n, rng) => fweDraft(n, rng, vocabSize);
  }

  const draft = (size: number): Draft => {
    const d = generator(size, rngFor('sample'));
    return shot === '' ? d : { ...d, parts: { ...d.parts, before: shot + d.parts.before } };
  };
  const tokens = (size: number) => (options.chat ? build(draft(size).parts).ids.length : tokenizer.encode(promptText(draft(size))).length);
  const budget = length - maxTokens;
  const minSize = task === 'cwe' ? 11 : 1;
  const maxSize = task === 'cwe' ? WORDS.length : Math.max(minSize, budget);
  // Estimate the size from a small draft, then search near it.
  const probe = Math.min(maxSize, Math.max(minSize, 16));
  const probeTokens = tokens(probe);
  const base = tokens(minSize);
  const perUnit = Math.max(1e-3, (probeTokens - base) / Math.max(1, probe - minSize));
  const guess = Math.max(minSize, Math.min(maxSize, Math.floor(minSize + (0.9 * (budget - base)) / perUnit)));
  const fits = (size: number) => tokens(size) <= budget;
  const start = fits(guess) ? guess : minSize;
  const size = largestFitting(start, maxSize, fits);
  if (size < 0) throw new RequestError(`--length ${length} is too short for ${task}: its smallest prompt needs ${base} tokens + ${maxTokens} to answer (drop it from --tasks or raise --length)`);
  const final = draft(size);
  const prompt = build(final.parts);
  if (prompt.ids.length > budget) {
    throw new RequestError(`${task}: the prompt has ${prompt.ids.length} tokens with the chat template, more than ${budget}; lower --length or drop --chat`);
  }
  return { task, index, prompt, outputs: final.outputs, maxTokens, length: prompt.ids.length + maxTokens };
}

// ---------------------------------------------------------------------------------------------------------------
// Running

export interface RulerTaskResult {
  /** string_match_all × 100, mean over samples. */
  stringMatchAll: number;
  /** string_match_part × 100. */
  stringMatchPart: number;
}

export interface RulerResult {
  tasks: RulerTask[];
  columns: string[];
  /** scores[column][task]. */
  scores: Record<string, Record<string, RulerTaskResult>>;
  /** Mean of the per-task string_match_all, per column. */
  average: Record<string, number>;
  samples: {
    task: RulerTask; index: number; promptTokens: number; outputs: string[];
    predictions: Record<string, { text: string; stringMatchAll: number; stringMatchPart: number }>;
  }[];
}

export interface RulerRunOptions extends RulerOptions {
  tasks: readonly RulerTask[];
  samples: number;
  questionAfter?: boolean;
  maxContext?: number;
}

/** Generates every task's samples and runs them under every column. `onStep` after each (sample, column). */
export async function runRuler(model: Model, columns: readonly MethodColumn[], o: RulerRunOptions, onStep: (note: string) => void = () => {}): Promise<RulerResult> {
  // Generate everything first, so that a task that cannot fit the length fails before any model run.
  const generated = o.tasks.flatMap((task) => Array.from({ length: o.samples }, (_, index) => rulerSample(model.tokenizer, task, index, o)));
  const samples: RulerResult['samples'] = [];
  for (const s of generated) {
    const { task, index } = s;
    {
      const predictions: RulerResult['samples'][number]['predictions'] = {};
      for (const col of columns) {
        const r = await answerPrompt(model, s.prompt, col.spec, {
          maxTokens: s.maxTokens, stop: [], questionAfter: o.questionAfter, maxContext: o.maxContext ?? Math.max(o.length, s.length),
        });
        predictions[col.label] = { text: r.text, stringMatchAll: 100 * stringMatchAll(r.text, s.outputs), stringMatchPart: 100 * stringMatchPart(r.text, s.outputs) };
        onStep(`${task} #${index} ${col.label}`);
      }
      samples.push({ task, index, promptTokens: s.prompt.ids.length, outputs: s.outputs, predictions });
    }
  }
  const scores: RulerResult['scores'] = {};
  const average: Record<string, number> = {};
  for (const col of columns) {
    scores[col.label] = {};
    for (const task of o.tasks) {
      const mine = samples.filter((s) => s.task === task).map((s) => s.predictions[col.label]);
      scores[col.label][task] = { stringMatchAll: mean(mine.map((p) => p.stringMatchAll)), stringMatchPart: mean(mine.map((p) => p.stringMatchPart)) };
    }
    average[col.label] = mean(o.tasks.map((t) => scores[col.label][t].stringMatchAll));
  }
  return { tasks: [...o.tasks], columns: columns.map((c) => c.label), scores, average, samples };
}
