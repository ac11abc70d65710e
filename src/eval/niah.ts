/**
 * Needle in a Haystack, as the FastKV reference runs it (spec §5.2): for each context length and depth, a
 * needle sentence sits at depth% of the haystack (moved back to a sentence end), the question follows the
 * context, and the model answers greedily. Scores: the reference's word recall (share of the expected answer's
 * words found in the response) and RULER's string match (the expected strings contained in the response).
 *
 * Defaults are the reference's (needle, era-C question and prompt template, 30 new tokens stopping at a
 * newline, 10 depths 0..100). `{name}` and `{number}` in the needle, question and answers are filled per case
 * from a seeded draw: that is how the `magic-number` preset speaks the fact format retrieval-3M was trained on.
 * @module
 */
import { RequestError, quoted } from '../errors.js';
import { own } from '../own.js';
import { GREEDY, generate } from '../engine/generate.js';
import type { Model } from '../engine/model.js';
import type { CompressionSpec } from '../compress/registry.js';
import type { Tokenizer } from '../model/tokenizer.js';
import { generateWithQuestionAfter } from './question-after.js';
import { niahWordRecall, stringMatchAll } from './metrics.js';
import {
  SeededRandom, buildPrompt, cutAtStop, indexOfRun, insertNeedle, type BuiltPrompt, type Haystack,
} from './haystack.js';

/** The reference needle (with the newlines it is wrapped in). */
export const DEFAULT_NEEDLE = '\nThe best thing to do in San Francisco is eat a sandwich and sit in Dolores Park on a sunny day.\n';
/** Era C's question (`eval/run_needle_in_haystack.py`); eras A/B asked "What is the best thing to do in San Francisco?". */
export const DEFAULT_QUESTION = 'The best thing to do in San Francisco is: ';
/** What the reference's word recall compares with. */
export const DEFAULT_ANSWER = 'eat a sandwich and sit in Dolores Park on a sunny day.';
/** The reference prompt; `{context}` and `{question}` are filled in. */
export const DEFAULT_TEMPLATE = '<|im_start|> This is a very long story book: <book> {context} </book>.\n Based on the content of the book, Question: {question}\nAnswer:';
/** Ten depths, linear from 0 to 100 and rounded, as the reference. */
export const DEFAULT_DEPTHS: readonly number[] = Array.from({ length: 10 }, (_, i) => Math.round((100 * i) / 9));
export const DEFAULT_MAX_TOKENS = 30;
export const DEFAULT_STOP: readonly string[] = ['\n'];

/** Names retrieval-3M saw in training (test/fixtures/retrieval-3M, models README). */
export const MAGIC_NAMES: readonly string[] = [
  'Tom', 'Lily', 'Max', 'Sue', 'Ben', 'Anna', 'Sam', 'Mia', 'Jack', 'Lucy', 'Tim', 'Zoe', 'Bob', 'Amy', 'Leo',
  'Kim', 'Dan', 'Eve', 'Joe', 'Ivy', 'Ted', 'Rose', 'Finn', 'Jill', 'Ned', 'Kate', 'Roy', 'Nina', 'Gus', 'Pam',
];

export interface NiahPreset {
  needle: string;
  question: string;
  template: string;
  /** Expected answer for word recall. */
  answer: string;
  /** Strings that string match looks for (default: the answer). */
  matchAnswers?: string[];
  maxTokens: number;
  stop: readonly string[];
  /** Cut the haystack back to a sentence end, so that the question starts a sentence. */
  endAtSentence?: boolean;
}

export const NIAH_PRESETS: Readonly<Record<string, NiahPreset>> = {
  reference: {
    needle: DEFAULT_NEEDLE, question: DEFAULT_QUESTION, template: DEFAULT_TEMPLATE, answer: DEFAULT_ANSWER,
    maxTokens: DEFAULT_MAX_TOKENS, stop: DEFAULT_STOP,
  },
  /** retrieval-3M's training format: a fact after a sentence end, the question right after the text. */
  'magic-number': {
    needle: ' The magic number of {name} is {number}.',
    question: ' What is the magic number of {name}? The magic number of {name} is',
    template: '{context}{question}',
    answer: '{number}.',
    matchAnswers: ['{number}'],
    maxTokens: 8,
    stop: DEFAULT_STOP,
    endAtSentence: true,
  },
};

export interface NiahOptions {
  haystack: Haystack;
  /** Total tokens per case: prompt + answer budget (maxTokens), as RULER counts. */
  lengths: readonly number[];
  /** Requested depths in percent. */
  depths?: readonly number[];
  needle?: string;
  question?: string;
  /** Expected answer (word recall; also string match unless matchAnswers is given). */
  answer?: string;
  matchAnswers?: readonly string[];
  /** Must contain `{context}` and `{question}`. */
  template?: string;
  /** Defaults for the five fields above and maxTokens/stop (default "reference"). */
  preset?: string;
  /** Cases per (length, depth) cell, each with its own draw of {name}/{number} and haystack offset (default 1). */
  samples?: number;
  seed?: number;
  maxTokens?: number;
  stop?: readonly string[];
  /** Apply the model's chat template (the reference does for its Mistral runs). */
  chat?: boolean;
}

/** One prompt of the grid. */
export interface NiahCase {
  length: number;
  depth: number;
  sample: number;
  prompt: BuiltPrompt;
  /** Index in prompt.ids of the needle's first token (-1 if the re-encoded prompt split it differently). */
  needleOffset: number;
  /** Tokens of the needle (its span is needleOffset .. needleOffset + needleLength − 1). */
  needleLength: number;
  /** Where the needle sits within the context, in percent of the context's non-needle tokens. */
  actualDepth: number;
  answer: string;
  matchAnswers: string[];
}

interface ResolvedNiah {
  needle: string; question: string; template: string; answer: string; matchAnswers: readonly string[] | undefined;
  maxTokens: number; stop: readonly string[]; depths: readonly number[]; samples: number; seed: number;
  endAtSentence: boolean;
}

export function resolveNiahOptions(o: NiahOptions): ResolvedNiah {
  const presetName = o.preset ?? 'reference';
  const preset = own(NIAH_PRESETS, presetName);
  if (!preset) throw new RequestError(`--preset must be one of ${Object.keys(NIAH_PRESETS).join(', ')}, got ${quoted(presetName)}`);
  const template = o.template ?? preset.template;
  if (!template.includes('{context}') || !template.includes('{question}')) {
    throw new RequestError(`--template must contain {context} and {question}, got ${JSON.stringify(template)}`);
  }
  if (template.indexOf('{question}') < template.indexOf('{context}')) {
    throw new RequestError('--template: {question} must come after {context}');
  }
  const depths = o.depths ?? DEFAULT_DEPTHS;
  for (const d of depths) if (!(d >= 0 && d <= 100)) throw new RequestError(`--depths: ${d} is not in [0, 100]`);
  const samples = o.samples ?? 1;
  if (!Number.isInteger(samples) || samples < 1) throw new RequestError(`--samples must be an integer >= 1, got ${samples}`);
  const maxTokens = o.maxTokens ?? preset.maxTokens;
  if (!Number.isInteger(maxTokens) || maxTokens < 1) throw new RequestError(`--max-tokens must be an integer >= 1, got ${maxTokens}`);
  const needle = o.needle ?? preset.needle;
  if (needle.trim() === '') throw new RequestError('--needle must not be empty');
  // An empty answer is found in every output: it would score 100 whatever the model says.
  if (o.answer !== undefined && o.answer.trim() === '') throw new RequestError('--answer must not be empty');
  if (o.matchAnswers?.some((a) => a.trim() === '')) throw new RequestError('matchAnswers must not hold an empty answer');
  return {
    needle, question: o.question ?? preset.question, template,
    answer: o.answer ?? preset.answer,
    matchAnswers: o.matchAnswers ?? (o.answer !== undefined ? undefined : preset.matchAnswers),
    maxTokens, stop: o.stop ?? preset.stop, depths, samples, seed: o.seed ?? 42,
    endAtSentence: preset.endAtSentence ?? false,
  };
}

function fill(text: string, vars: Record<string, string>): string {
  return text.replace(/\{(name|number)\}/g, (_, key: string) => vars[key]);
}

/**
 * The grid's prompts: for each length, depth and sample, the haystack trimmed so that prompt + maxTokens fits
 * the length in the model's tokens (measured, then shrunk by the excess), the needle at the depth.
 * @throws RequestError when a length is too short for the template, question and needle.
 */
export function niahCases(tokenizer: Tokenizer, options: NiahOptions): NiahCase[] {
  const o = resolveNiahOptions(options);
  const [head, tail] = o.template.split('{context}', 2);
  const cases: NiahCase[] = [];
  for (const length of options.lengths) {
    for (const depth of o.depths) {
      for (let sample = 0; sample < o.samples; sample++) {
        const rng = new SeededRandom(o.seed, 'niah', length, depth, sample);
        const vars = { name: rng.pick(MAGIC_NAMES), number: String(rng.int(10000, 99999)) };
        const needle = fill(o.needle, vars);
        const question = fill(o.question, vars);
        // (A function, so that '$' in the question is not read as a replacement pattern.)
        const before = head.replaceAll('{question}', () => question);
        const after = tail.replaceAll('{question}', () => question);
        // Samples after the first start at a different place in the haystack.
        const offset = sample === 0 ? 0 : rng.int(0, 50_000);
        const target = length - o.maxTokens;
        const empty = buildPrompt(tokenizer, { before, context: needle, after }, { chat: options.chat }).ids.length;
        let haystackTokens = target - empty;
        if (haystackTokens < 1) {
          throw new RequestError(`--lengths: ${length} tokens leave no room for the haystack (the template, question and ` +
            `needle take ${empty} tokens and the answer ${o.maxTokens})`);
        }
        let built: { prompt: BuiltPrompt; ctx: ReturnType<typeof insertNeedle> } | null = null;
        for (let attempt = 0; attempt < 8; attempt++) {
          const ctx = insertNeedle(tokenizer, options.haystack, needle, {
            haystackTokenCount: haystackTokens, depthPercent: depth, offset, endAtSentence: o.endAtSentence,
          });
          const prompt = buildPrompt(tokenizer, { before, context: ctx.text, after }, { chat: options.chat });
          built = { prompt, ctx };
          const excess = prompt.ids.length - target;
          if (excess <= 0) break;
          haystackTokens -= excess;
          if (haystackTokens < 1) throw new RequestError(`--lengths: ${length} is too short for this prompt`);
        }
        const { prompt, ctx } = built!;
        if (prompt.ids.length > target) throw new RequestError(`could not fit the NIAH prompt in ${length} tokens`);
        const needleOffset = locateNeedle(prompt, ctx.ids.slice(ctx.needleStart, ctx.needleStart + ctx.needleLength), ctx.needleStart);
        const contextTokens = prompt.contextEnd - prompt.contextStart - ctx.needleLength;
        const actualDepth = needleOffset < 0 ? ctx.depthPercent
          : contextTokens <= 0 ? 0 : Math.min(100, (100 * (needleOffset - prompt.contextStart)) / contextTokens);
        const answer = fill(o.answer, vars);
        const matchAnswers = (o.matchAnswers ?? [o.answer]).map((a) => fill(a, vars));
        cases.push({ length, depth, sample, prompt, needleOffset, needleLength: ctx.needleLength, actualDepth, answer, matchAnswers });
      }
    }
  }
  return cases;
}

/** Tokens a NIAH prompt needs without any haystack (template, question, needle) plus the answer budget. */
export function minimumNiahLength(tokenizer: Tokenizer, options: Omit<NiahOptions, 'lengths'>): number {
  const o = resolveNiahOptions({ ...options, lengths: [] });
  const vars = { name: MAGIC_NAMES[0], number: '12345' };
  const [head, tail] = o.template.split('{context}', 2);
  const question = fill(o.question, vars);
  const parts = { before: head, context: fill(o.needle, vars), after: tail.replaceAll('{question}', () => question) };
  return buildPrompt(tokenizer, parts, { chat: options.chat }).ids.length + o.maxTokens;
}

/** Finds the needle's tokens in the re-encoded prompt (its first and last tokens may merge with neighbours). */
function locateNeedle(prompt: BuiltPrompt, needleIds: number[], expectedInContext: number): number {
  const expected = prompt.contextStart + expectedInContext;
  const from = Math.max(0, expected - 8);
  let at = indexOfRun(prompt.ids, needleIds, from);
  if (at >= 0 && at <= expected + 8) return at;
  if (needleIds.length > 2) {
    at = indexOfRun(prompt.ids, needleIds.slice(1, -1), from);
    if (at >= 0 && at <= expected + 9) return at - 1;
  }
  return -1;
}

// ---------------------------------------------------------------------------------------------------------------
// Running prompts and scoring

/** A column of an evaluation table: a label and the compression it runs. */
export interface MethodColumn {
  label: string;
  spec: CompressionSpec;
}

export interface AnswerOptions {
  maxTokens: number;
  stop: readonly string[];
  /** Compress the context alone and append the question afterwards (kvpress's protocol). */
  questionAfter?: boolean;
  /** Longest sequence allowed (default max_position_embeddings). */
  maxContext?: number;
}

/** Greedy answer to a built prompt under one compression spec; the text is cut at the first stop string. */
export async function answerPrompt(model: Model, prompt: BuiltPrompt, spec: CompressionSpec, o: AnswerOptions): Promise<{ text: string; outputIds: number[] }> {
  if (o.questionAfter) {
    const r = await generateWithQuestionAfter(model, prompt.ids.slice(0, prompt.contextEnd), prompt.ids.slice(prompt.contextEnd), spec, o.maxTokens);
    return { text: cutAtStop(r.text, o.stop), outputIds: r.outputIds };
  }
  // Greedy whatever generation_config.json says: the protocol decodes greedily.
  const r = await generate(model, { ids: prompt.ids }, { ...GREEDY, maxTokens: o.maxTokens, compression: spec, stop: o.stop, maxContext: o.maxContext });
  return { text: cutAtStop(r.text, o.stop), outputIds: r.outputIds };
}

export interface NiahCellResult {
  text: string;
  /** Reference word recall × 100. */
  wordRecall: number;
  /** RULER string_match_all × 100. */
  stringMatch: number;
}

export interface NiahCaseResult {
  length: number;
  depth: number;
  sample: number;
  actualDepth: number;
  promptTokens: number;
  needleOffset: number;
  answer: string;
  results: Record<string, NiahCellResult>;
}

export interface NiahSummary {
  /** Means over every case, × 100. */
  wordRecall: number;
  stringMatch: number;
  /** grid[depthIndex][lengthIndex]: mean word recall × 100 over the cell's samples. */
  wordRecallGrid: number[][];
  stringMatchGrid: number[][];
}

export interface NiahResult {
  lengths: number[];
  depths: number[];
  columns: string[];
  cases: NiahCaseResult[];
  summary: Record<string, NiahSummary>;
}

/** Scores a response against a case's answers (both × 100). */
export function scoreNiah(text: string, answer: string, matchAnswers: readonly string[]): { wordRecall: number; stringMatch: number } {
  return { wordRecall: 100 * niahWordRecall(text, answer), stringMatch: 100 * stringMatchAll(text, matchAnswers) };
}

/** Runs every case under every column. `onStep` is called after each (case, column) run. */
export async function runNiah(
  model: Model, columns: readonly MethodColumn[], options: NiahOptions & { questionAfter?: boolean; maxContext?: number },
  onStep: (done: string) => void = () => {},
  cases: NiahCase[] = niahCases(model.tokenizer, options),
): Promise<NiahResult> {
  const o = resolveNiahOptions(options);
  const out: NiahCaseResult[] = [];
  for (const c of cases) {
    const results: Record<string, NiahCellResult> = {};
    for (const col of columns) {
      const r = await answerPrompt(model, c.prompt, col.spec, {
        maxTokens: o.maxTokens, stop: o.stop, questionAfter: options.questionAfter, maxContext: options.maxContext ?? c.length,
      });
      results[col.label] = { text: r.text, ...scoreNiah(r.text, c.answer, c.matchAnswers) };
      onStep(`${col.label} ${c.length}/${c.depth}%`);
    }
    out.push({
      length: c.length, depth: c.depth, sample: c.sample, actualDepth: c.actualDepth, promptTokens: c.prompt.ids.length,
      needleOffset: c.needleOffset, answer: c.answer, results,
    });
  }
  const lengths = [...new Set(cases.map((c) => c.length))];
  const depths = [...new Set(cases.map((c) => c.depth))];
  const summary: Record<string, NiahSummary> = {};
  for (const col of columns) {
    const grid = (key: 'wordRecall' | 'stringMatch') => depths.map((d) => lengths.map((l) => {
      const cell = out.filter((c) => c.length === l && c.depth === d).map((c) => c.results[col.label][key]);
      return cell.length === 0 ? NaN : mean(cell);
    }));
    summary[col.label] = {
      wordRecall: mean(out.map((c) => c.results[col.label].wordRecall)),
      stringMatch: mean(out.map((c) => c.results[col.label].stringMatch)),
      wordRecallGrid: grid('wordRecall'),
      stringMatchGrid: grid('stringMatch'),
    };
  }
  return { lengths, depths, columns: columns.map((c) => c.label), cases: out, summary };
}

export function mean(xs: readonly number[]): number {
  return xs.length === 0 ? NaN : xs.reduce((a, b) => a + b, 0) / xs.length;
}
