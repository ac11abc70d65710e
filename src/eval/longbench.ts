/**
 * LongBench (v1, THUDM/LongBench) as the FastKV paper runs it: the 16 English and code tasks, LongBench's prompt
 * templates (`config/dataset2prompt.json`) and answer lengths (`config/dataset2maxlen.json`), the chat template on
 * every task but trec, triviaqa, samsum, lsht, lcc and repobench-p, middle truncation of over-long prompts,
 * greedy decoding, and LongBench's metrics and scorer (`eval.py`): best score over the ground truths, the first
 * line only for trec/triviaqa/samsum/lsht, 100 × the mean, rounded to 2 decimals.
 *
 * The data are LongBench's own JSONL files (`<task>.jsonl`, one sample per line with `input`, `context`,
 * `answers`, `all_classes`, `length`, `_id`), which the user supplies.
 *
 * Two placements of the question:
 * - in the prompt (default, the paper's protocol): the whole filled template is prefilled and compressed;
 * - after the context (`questionAfter`, kvpress's protocol): the template is split where the question part begins
 *   (kvpress's `context_prefix` / `question_template` + `answer_prefix` split; the two parts concatenate back to
 *   LongBench's prompt), the context part is prefilled and compressed, and the question part is appended
 *   uncompressed ({@link generateWithQuestionAfter}). With a chat template the split falls inside the user turn,
 *   so the question part also carries the end of the turn and the assistant header, as in kvpress.
 *
 * Deviations from LongBench's `pred.py`, all documented in the results: the chat template is the checkpoint's own
 * (`apply_chat_template`, as FastKV's `run_longbench.py`), rendered without a second BOS; samsum does not stop
 * at the first newline during generation (LongBench adds "\n" to the EOS ids with min_length 1) — it generates up
 * to its 128 tokens and is then cut at its first line by the scorer, which gives the same answer unless the model's
 * first token is a newline; the prompt limit is maxContext − the task's max new tokens (LongBench uses a fixed
 * per-model limit such as 127500).
 * @module
 */
import fs from 'node:fs';
import path from 'node:path';
import { ConfigError, RequestError } from '../errors.js';
import { MAX_TEXT_BYTES, readTextFile } from '../files.js';
import type { CompressionSpec } from '../compress/registry.js';
import { GREEDY, generate } from '../engine/generate.js';
import type { Model } from '../engine/model.js';
import type { Tokenizer } from '../model/tokenizer.js';
import {
  bestOverAnswers, classificationScore, codeSimScore, countScore, firstLine, paragraphNumber, percentScore,
  pyRound2, qaF1, retrievalScore, rougeL, type Metric,
} from './metrics.js';
import { generateWithQuestionAfter } from './question-after.js';

// ---------------------------------------------------------------------------------------------------------------
// Task configuration

export type LongBenchMetricName = 'qa_f1' | 'rouge_l' | 'classification' | 'count' | 'retrieval' | 'code_sim';

export interface LongBenchTask {
  /** File stem and column name: `qasper`, or `qasper_e` for LongBench-E's file. */
  readonly name: string;
  /** LongBench's template (`dataset2prompt.json`), with `{context}` and `{input}`. */
  readonly prompt: string;
  /** The question part of `prompt` (for question-after) starts at this text's first occurrence in the template. */
  readonly questionStart: string;
  /** `dataset2maxlen.json`. */
  readonly maxNewTokens: number;
  readonly metric: LongBenchMetricName;
  /** Whether the chat template is applied (when the checkpoint has one). */
  readonly chat: boolean;
  /** Whether the scorer keeps only the prediction's first line. */
  readonly firstLineOnly: boolean;
}

/** The 16 tasks of the paper, in LongBench's order. */
export const LONGBENCH_TASKS: readonly string[] = [
  'narrativeqa', 'qasper', 'multifieldqa_en', 'hotpotqa', '2wikimqa', 'musique', 'gov_report', 'qmsum',
  'multi_news', 'trec', 'triviaqa', 'samsum', 'passage_count', 'passage_retrieval_en', 'lcc', 'repobench-p',
];

/** LongBench-E's tasks (files `<task>_e.jsonl`; same templates, lengths and metrics). */
export const LONGBENCH_E_TASKS: readonly string[] = [
  'qasper', 'multifieldqa_en', 'hotpotqa', '2wikimqa', 'gov_report', 'multi_news', 'trec', 'triviaqa', 'samsum',
  'passage_count', 'passage_retrieval_en', 'lcc', 'repobench-p',
];

/** LongBench's Chinese tasks: known, but not scored here (their metrics tokenize with jieba). */
export const UNSUPPORTED_TASKS: readonly string[] = ['multifieldqa_zh', 'dureader', 'vcsum', 'lsht', 'passage_retrieval_zh'];

/** Tasks prompted without the chat template (`pred.py`: "chat models are better off without build prompts"). */
export const NO_CHAT_TASKS: readonly string[] = ['trec', 'triviaqa', 'samsum', 'lsht', 'lcc', 'repobench-p'];

/** Tasks whose prediction is cut to its first line before scoring (`eval.py`). */
export const FIRST_LINE_TASKS: readonly string[] = ['trec', 'triviaqa', 'samsum', 'lsht'];

const MULTIHOP = 'Answer the question based on the given passages. Only give me the answer and do not output any other words.\n\n' +
  'The following are given passages.\n{context}\n\nAnswer the question based on the given passages. Only give me the answer ' +
  'and do not output any other words.\n\nQuestion: {input}\nAnswer:';

const QASPER_INSTRUCTION = 'Answer the question as concisely as you can, using a single phrase or sentence if possible. ' +
  'If the question cannot be answered based on the information in the article, write "unanswerable". If the question is ' +
  'a yes/no question, answer "yes", "no", or "unanswerable". Do not provide any explanation.';

const NARRATIVE_INSTRUCTION = 'asconcisely as you can, using a single phrase if possible. Do not provide any explanation.';

/** [template, question start, max new tokens, metric] per task, from LongBench's config and eval.py. */
const CONFIG: Record<string, [string, string, number, LongBenchMetricName]> = {
  // "asconcisely" (sic) is LongBench's text.
  narrativeqa: ['You are given a story, which can be either a novel or a movie script, and a question. Answer the question ' +
    `${NARRATIVE_INSTRUCTION}\n\nStory: {context}\n\nNow, answer the question based on the story ${NARRATIVE_INSTRUCTION}\n\n` +
    'Question: {input}\n\nAnswer:', 'Question: {input}', 128, 'qa_f1'],
  qasper: [`You are given a scientific article and a question. ${QASPER_INSTRUCTION}\n\nArticle: {context}\n\n ` +
    `${QASPER_INSTRUCTION.replace('Answer the question as', 'Answer the question based on the above article as')}\n\n` +
    'Question: {input}\n\nAnswer:', 'Question: {input}', 128, 'qa_f1'],
  multifieldqa_en: ['Read the following text and answer briefly.\n\n{context}\n\nNow, answer the following question based on ' +
    'the above text, only give me the answer and do not output any other words.\n\nQuestion: {input}\nAnswer:',
  'Question: {input}', 64, 'qa_f1'],
  hotpotqa: [MULTIHOP, 'Question: {input}', 32, 'qa_f1'],
  '2wikimqa': [MULTIHOP, 'Question: {input}', 32, 'qa_f1'],
  musique: [MULTIHOP, 'Question: {input}', 32, 'qa_f1'],
  gov_report: ['You are given a report by a government agency. Write a one-page summary of the report.\n\nReport:\n' +
    '{context}\n\nNow, write a one-page summary of the report.\n\nSummary:', 'Now, write a one-page summary', 512, 'rouge_l'],
  qmsum: ['You are given a meeting transcript and a query containing a question or instruction. Answer the query in one ' +
    'or more sentences.\n\nTranscript:\n{context}\n\nNow, answer the query based on the above meeting transcript in one ' +
    'or more sentences.\n\nQuery: {input}\nAnswer:', 'Query: {input}', 512, 'rouge_l'],
  multi_news: ['You are given several news passages. Write a one-page summary of all news. \n\nNews:\n{context}\n\n' +
    'Now, write a one-page summary of all the news.\n\nSummary:', 'Now, write a one-page summary', 512, 'rouge_l'],
  trec: ['Please determine the type of the question below. Here are some examples of questions.\n\n{context}\n{input}',
    '{input}', 64, 'classification'],
  triviaqa: ['Answer the question based on the given passage. Only give me the answer and do not output any other words. ' +
    'The following are some examples.\n\n{context}\n\n{input}', '{input}', 32, 'qa_f1'],
  samsum: ['Summarize the dialogue into a few short sentences. The following are some examples.\n\n{context}\n\n{input}',
    '{input}', 128, 'rouge_l'],
  passage_count: ['There are some paragraphs below sourced from Wikipedia. Some of them may be duplicates. Please carefully ' +
    'read these paragraphs and determine how many unique paragraphs there are after removing duplicates. In other words, ' +
    'how many non-repeating paragraphs are there in total?\n\n{context}\n\nPlease enter the final count of unique ' +
    'paragraphs after removing duplicates. The output format should only contain the number, such as 1, 2, 3, and so on.' +
    '\n\nThe final answer is: ', 'Please enter the final count', 32, 'count'],
  passage_retrieval_en: ['Here are 30 paragraphs from Wikipedia, along with an abstract. Please determine which paragraph ' +
    'the abstract is from.\n\n{context}\n\nThe following is an abstract.\n\n{input}\n\nPlease enter the number of the ' +
    'paragraph that the abstract is from. The answer format must be like "Paragraph 1", "Paragraph 2", etc.\n\n' +
    'The answer is: ', '{input}', 32, 'retrieval'],
  lcc: ['Please complete the code given below. \n{context}Next line of code:\n', 'Next line of code:', 64, 'code_sim'],
  'repobench-p': ['Please complete the code given below. \n{context}{input}Next line of code:\n', '{input}', 64, 'code_sim'],
};

export const TASKS: Readonly<Record<string, LongBenchTask>> = Object.fromEntries(LONGBENCH_TASKS.map((name) => {
  const [prompt, questionStart, maxNewTokens, metric] = CONFIG[name];
  return [name, {
    name, prompt, questionStart, maxNewTokens, metric,
    chat: !NO_CHAT_TASKS.includes(name), firstLineOnly: FIRST_LINE_TASKS.includes(name),
  }];
}));

/** The configuration of a task name: one of the 16, or `<task>_e` for LongBench-E's files; null if unknown. */
export function findTask(name: string): LongBenchTask | null {
  if (Object.hasOwn(TASKS, name)) return TASKS[name];
  if (name.endsWith('_e')) {
    const base = name.slice(0, -2);
    if (LONGBENCH_E_TASKS.includes(base)) return { ...TASKS[base], name };
  }
  return null;
}

function unknownTaskMessage(name: string): string {
  const why = UNSUPPORTED_TASKS.includes(name)
    ? `"${name}" is one of LongBench's Chinese tasks, whose metrics need jieba and are not implemented`
    : `unknown LongBench task "${name}"`;
  return `${why}; known: ${LONGBENCH_TASKS.join(', ')} (and LongBench-E's <task>_e files)`;
}

const METRIC_FUNCTIONS: Record<LongBenchMetricName, Metric> = {
  qa_f1: (p, t) => qaF1(p, t),
  rouge_l: (p, t) => rougeL(p, t),
  classification: (p, t, classes) => classificationScore(p, t, classes),
  count: (p, t) => countScore(p, t),
  retrieval: (p, t) => retrievalScore(p, t),
  code_sim: (p, t) => codeSimScore(p, t),
};

/** LongBench's per-sample score in [0, 1]: first-line cut where the task has one, then the best over the answers. */
export function scorePrediction(task: LongBenchTask, prediction: string, answers: readonly string[], allClasses: readonly string[]): number {
  const text = task.firstLineOnly ? firstLine(prediction) : prediction;
  return bestOverAnswers(METRIC_FUNCTIONS[task.metric], text, answers, allClasses);
}

// ---------------------------------------------------------------------------------------------------------------
// Data files

export interface LongBenchSample {
  readonly task: string;
  readonly file: string;
  /** 1-based line in the file. */
  readonly line: number;
  /** 0-based position among the file's samples. */
  readonly index: number;
  readonly id: string | null;
  readonly input: string;
  readonly context: string;
  readonly answers: readonly string[];
  readonly allClasses: readonly string[];
  /** LongBench's `length` field (words of the context); null when absent. */
  readonly length: number | null;
}

/**
 * Parses a LongBench JSONL text. Blank lines are skipped; every other line must be a JSON object with string
 * `input` and `context`, `answers` a non-empty list of strings, `all_classes` null or a list of strings (a
 * non-empty one for classification tasks), `length` a number if present, `_id` a string if present.
 * passage_retrieval_en answers must name a "Paragraph N".
 * @throws RequestError naming `file:line` and the field.
 */
export function parseLongBenchJsonl(text: string, file: string, task: LongBenchTask, limit = Infinity): LongBenchSample[] {
  const samples: LongBenchSample[] = [];
  const lines = text.split('\n');
  for (let n = 0; n < lines.length && samples.length < limit; n++) {
    const raw = lines[n].replace(/\r$/, '');
    if (raw.trim() === '') continue;
    const where = `${file}:${n + 1}`;
    let obj: unknown;
    try {
      obj = JSON.parse(raw);
    } catch (err) {
      throw new RequestError(`${where}: not valid JSON (${(err as Error).message})`);
    }
    if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) throw new RequestError(`${where}: expected a JSON object, got ${describe(obj)}`);
    const o = obj as Record<string, unknown>;
    const str = (field: string): string => {
      if (!(field in o)) throw new RequestError(`${where}: missing field "${field}"`);
      if (typeof o[field] !== 'string') throw new RequestError(`${where}: field "${field}" must be a string, got ${describe(o[field])}`);
      return o[field] as string;
    };
    const input = str('input');
    const context = str('context');
    if (!('answers' in o)) throw new RequestError(`${where}: missing field "answers"`);
    const answers = o.answers;
    if (!Array.isArray(answers) || answers.length === 0 || !answers.every((a) => typeof a === 'string')) {
      throw new RequestError(`${where}: field "answers" must be a non-empty list of strings, got ${describe(answers)}`);
    }
    let allClasses: string[] = [];
    if (o.all_classes !== undefined && o.all_classes !== null) {
      if (!Array.isArray(o.all_classes) || !o.all_classes.every((c) => typeof c === 'string')) {
        throw new RequestError(`${where}: field "all_classes" must be null or a list of strings, got ${describe(o.all_classes)}`);
      }
      allClasses = o.all_classes as string[];
    }
    if (task.metric === 'classification' && allClasses.length === 0) {
      throw new RequestError(`${where}: field "all_classes" must list the class names for ${task.name}`);
    }
    if (task.metric === 'retrieval') {
      const bad = (answers as string[]).find((a) => paragraphNumber(a) === null);
      if (bad !== undefined) throw new RequestError(`${where}: field "answers": ${JSON.stringify(bad)} has no "Paragraph N"`);
    }
    let length: number | null = null;
    if (o.length !== undefined && o.length !== null) {
      if (typeof o.length !== 'number' || !Number.isFinite(o.length)) throw new RequestError(`${where}: field "length" must be a number, got ${describe(o.length)}`);
      length = o.length;
    }
    let id: string | null = null;
    if (o._id !== undefined && o._id !== null) {
      if (typeof o._id !== 'string') throw new RequestError(`${where}: field "_id" must be a string, got ${describe(o._id)}`);
      id = o._id;
    }
    samples.push({ task: task.name, file, line: n + 1, index: samples.length, id, input, context, answers: answers as string[], allClasses, length });
  }
  if (samples.length === 0) throw new RequestError(`${file}: no samples`);
  return samples;
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return `a list of ${v.length}`;
  if (typeof v === 'string') return `a string`;
  return typeof v === 'object' ? 'an object' : `${typeof v} ${String(v)}`;
}

export interface TaskData {
  task: LongBenchTask;
  file: string;
  samples: LongBenchSample[];
}

export interface LoadDataOptions {
  /** Task names (folder data only); default: every task file present, in LongBench's order. */
  tasks?: readonly string[];
  /** At most this many samples per task, the first ones in the file. */
  limit?: number;
  /** Told about .jsonl files of a folder that are not run (Chinese tasks, LongBench-E files when not asked for). */
  onSkip?: (file: string, why: string) => void;
}

/**
 * Reads LongBench data: `dataPath` is one `<task>.jsonl` file or a folder of them.
 * @throws RequestError for a missing path or task file, an unknown task, or a malformed file.
 */
export function loadLongBenchData(dataPath: string, options: LoadDataOptions = {}): TaskData[] {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(dataPath);
  } catch {
    throw new RequestError(`--data "${dataPath}" does not exist (give a folder of LongBench .jsonl files or one .jsonl file)`);
  }
  if (!stat.isFile() && !stat.isDirectory()) {
    throw new RequestError(`--data "${dataPath}" is neither a regular file nor a folder (give a folder of LongBench .jsonl files or one .jsonl file)`);
  }
  const limit = options.limit ?? Infinity;
  const load = (task: LongBenchTask, file: string): TaskData => {
    const text = readTextFile(file, { maxBytes: MAX_TEXT_BYTES, what: file });
    return { task, file, samples: parseLongBenchJsonl(text, file, task, limit) };
  };

  if (stat.isFile()) {
    const name = path.basename(dataPath).replace(/\.jsonl$/, '');
    const task = findTask(name);
    if (!task) throw new RequestError(`${dataPath}: ${unknownTaskMessage(name)} (the file name names the task)`);
    if (options.tasks && !(options.tasks.length === 1 && options.tasks[0] === name)) {
      throw new RequestError(`--tasks ${options.tasks.join(',')} does not match the one data file ${dataPath} (task ${name})`);
    }
    return [load(task, dataPath)];
  }

  if (options.tasks) {
    const seen = new Set<string>();
    return options.tasks.map((name) => {
      const task = findTask(name);
      if (!task) throw new RequestError(`--tasks: ${unknownTaskMessage(name)}`);
      if (seen.has(name)) throw new RequestError(`--tasks: "${name}" is listed twice`);
      seen.add(name);
      const file = path.join(dataPath, `${name}.jsonl`);
      if (!fs.existsSync(file)) throw new RequestError(`--tasks ${name}: ${file} does not exist`);
      return load(task, file);
    });
  }

  const files = fs.readdirSync(dataPath).filter((f) => f.endsWith('.jsonl')).sort();
  const present = new Set(files.map((f) => f.slice(0, -'.jsonl'.length)));
  for (const f of files) {
    const name = f.slice(0, -'.jsonl'.length);
    const file = path.join(dataPath, f);
    if (LONGBENCH_TASKS.includes(name)) continue;
    if (UNSUPPORTED_TASKS.includes(name)) options.onSkip?.(file, unknownTaskMessage(name));
    else if (findTask(name)) options.onSkip?.(file, `LongBench-E file; name it with --tasks ${name} to run it`);
    else throw new RequestError(`${file}: ${unknownTaskMessage(name)} (the file name names the task; move the file away or pick tasks with --tasks)`);
  }
  const names = LONGBENCH_TASKS.filter((t) => present.has(t));
  if (names.length === 0) throw new RequestError(`${dataPath}: no LongBench task files (<task>.jsonl for ${LONGBENCH_TASKS.join(', ')})`);
  return names.map((name) => load(TASKS[name], path.join(dataPath, `${name}.jsonl`)));
}

// ---------------------------------------------------------------------------------------------------------------
// Prompts

/** Python `template.format(**sample)` for LongBench's templates: `{context}` and `{input}` replaced verbatim. */
export function fillTemplate(template: string, sample: Pick<LongBenchSample, 'context' | 'input'>): string {
  return template.replace(/\{(context|input)\}/g, (_, key: 'context' | 'input') => sample[key]);
}

/** The template's context part and question part (`context + question === prompt`). */
export function splitTemplate(task: LongBenchTask): { context: string; question: string } {
  const at = task.prompt.indexOf(task.questionStart);
  if (at <= 0) throw new ConfigError(`longbench ${task.name}: the question marker is not in the template`);
  return { context: task.prompt.slice(0, at), question: task.prompt.slice(at) };
}

/**
 * LongBench's middle truncation on token ids: when there are more than `limit`, keep the first and the last
 * floor(limit / 2) (so an odd limit keeps limit − 1).
 */
export function middleTruncate<T>(ids: readonly T[], limit: number): T[] {
  if (ids.length <= limit) return [...ids];
  const half = Math.floor(limit / 2);
  return [...ids.slice(0, half), ...ids.slice(ids.length - half)];
}

export interface BuiltPrompt {
  /** Ids prefilled (and compressed): the whole prompt, or with questionAfter its context part. */
  promptIds: number[];
  /** With questionAfter: the question part, appended after compression; empty otherwise. */
  questionIds: number[];
  /** Tokens of the filled template before truncation (BOS included, no chat markup). */
  rawTokens: number;
  truncated: boolean;
  /** Whether the chat template was applied. */
  chat: boolean;
}

export interface PromptOptions {
  /** Longest prompt + answer; the prompt is cut to maxContext − the task's max new tokens. */
  maxContext: number;
  questionAfter?: boolean;
}

const QUESTION_MARK = '\u0001fastkv:question-after\u0001';

/** Longest sample accepted, in contexts (--max-context): LongBench's longest are a few times a 32k context. */
const MAX_SAMPLE_CONTEXTS = 64;

/**
 * Fills the template, truncates it in the middle to the limit (raw text, before the chat template, as LongBench's
 * pred.py: encode, keep the first and last half of the ids, decode both halves without special tokens and join)
 * and applies the chat template where the task uses one and the checkpoint has one. The limit is lowered by the
 * chat markup's length, and again if re-encoding the truncated text comes out longer, so that prompt + answer
 * always fit in maxContext.
 * @throws RequestError when maxContext leaves no room for the prompt.
 */
export function buildPrompt(tokenizer: Tokenizer, task: LongBenchTask, sample: Pick<LongBenchSample, 'context' | 'input'>, options: PromptOptions): BuiltPrompt {
  const target = options.maxContext - task.maxNewTokens;
  const chat = task.chat && tokenizer.hasChatTemplate;
  const wrap = (text: string): number[] => chat
    ? tokenizer.encodeChat([{ role: 'user', content: text }], { addGenerationPrompt: true })
    : tokenizer.encode(text);
  const decode = (ids: readonly number[]) => tokenizer.decode(ids, { skipSpecialTokens: true });
  const overhead = Math.max(0, wrap('').length - tokenizer.encode('').length);
  const tooSmall = () => new RequestError(`longbench ${task.name}: --max-context ${options.maxContext} leaves no room for the prompt ` +
    `(${task.maxNewTokens} new tokens${chat ? ` and ${overhead} chat-template tokens` : ''})`);

  // Over-long samples are truncated in the middle, so they must be tokenized whole; but not without bound: a
  // sample of more than MAX_SAMPLE_CONTEXTS contexts is refused after tokenizing that much of it.
  const rawLimit = MAX_SAMPLE_CONTEXTS * options.maxContext;
  const encodeRaw = (text: string) => tokenizer.encodeWithin(text, rawLimit, {
    what: `longbench ${task.name}: a sample`, hint: `more than ${MAX_SAMPLE_CONTEXTS} × --max-context; LongBench samples are shorter`,
  });
  if (!options.questionAfter) {
    const raw = fillTemplate(task.prompt, sample);
    const rawIds = encodeRaw(raw);
    let limit = target - overhead;
    for (let attempt = 0; attempt < 8; attempt++) {
      if (limit < 2) throw tooSmall();
      const truncated = rawIds.length > limit;
      const half = Math.floor(limit / 2);
      const text = truncated ? decode(rawIds.slice(0, half)) + decode(rawIds.slice(rawIds.length - half)) : raw;
      const ids = wrap(text);
      if (ids.length <= target) return { promptIds: ids, questionIds: [], rawTokens: rawIds.length, truncated, chat };
      limit -= ids.length - target;
    }
    throw tooSmall();
  }

  const parts = splitTemplate(task);
  const contextText = fillTemplate(parts.context, sample);
  const questionText = fillTemplate(parts.question, sample);
  const contextIds = encodeRaw(contextText);
  const questionLength = tokenizer.encode(questionText, { addSpecialTokens: false }).length;
  const rawTokens = contextIds.length + questionLength;
  const wrapSplit = (context: string): [number[], number[]] => {
    if (!chat) return [tokenizer.encode(context), tokenizer.encode(questionText, { addSpecialTokens: false })];
    const rendered = tokenizer.applyChatTemplate([{ role: 'user', content: context + QUESTION_MARK + questionText }], { addGenerationPrompt: true });
    const at = rendered.indexOf(QUESTION_MARK);
    if (at < 0 || rendered.indexOf(QUESTION_MARK, at + 1) >= 0) {
      throw new ConfigError(`longbench ${task.name}: cannot split the chat-templated prompt into context and question`);
    }
    return [
      tokenizer.encode(rendered.slice(0, at), { addSpecialTokens: false }),
      tokenizer.encode(rendered.slice(at + QUESTION_MARK.length), { addSpecialTokens: false }),
    ];
  };
  let limit = target - overhead;
  for (let attempt = 0; attempt < 8; attempt++) {
    if (limit < 2) throw tooSmall();
    const truncated = rawTokens > limit;
    let context = contextText;
    if (truncated) {
      // As LongBench's cut of the whole prompt when the question fits in its last half; otherwise the question
      // is kept whole and the context gets the rest, half from its start and half from its end.
      const half = Math.floor(limit / 2);
      const keep = questionLength <= half ? 2 * half - questionLength : limit - questionLength;
      if (keep < 1) {
        throw new RequestError(`longbench ${task.name}: the question part alone has ${questionLength} tokens, too many for ` +
          `--max-context ${options.maxContext} with --question-after`);
      }
      const head = questionLength <= half ? half : Math.ceil(keep / 2);
      const tail = keep - head;
      context = decode(contextIds.slice(0, head)) + (tail > 0 ? decode(contextIds.slice(contextIds.length - tail)) : '');
    }
    const [promptIds, questionIds] = wrapSplit(context);
    const total = promptIds.length + questionIds.length;
    if (total <= target) return { promptIds, questionIds, rawTokens, truncated, chat };
    limit -= total - target;
  }
  throw tooSmall();
}

// ---------------------------------------------------------------------------------------------------------------
// Running

/** A compression method to evaluate, with the column label it is reported under. */
export interface MethodRun {
  readonly label: string;
  readonly spec: CompressionSpec;
}

export interface LongBenchOptions {
  /** Longest prompt + answer (default: max_position_embeddings). */
  maxContext?: number;
  /** kvpress's placement: the question after the compressed context. */
  questionAfter?: boolean;
  /** Sampler seed passed to generation (decoding is greedy; kept for the record and for repeatability). */
  seed?: number;
  /** Called after each (sample, method) generation. */
  onProgress?: (task: string, method: string) => void;
}

export interface MethodPrediction {
  /** The generated text (special tokens left out), before the first-line cut. */
  text: string;
  /** Per-sample score in [0, 1]. */
  score: number;
  generatedTokens: number;
}

export interface SampleResult {
  task: string;
  index: number;
  line: number;
  id: string | null;
  length: number | null;
  answers: readonly string[];
  allClasses: readonly string[];
  /** Tokens of the filled template before truncation. */
  rawTokens: number;
  /** Tokens prefilled (the context part with question-after). */
  promptTokens: number;
  /** Tokens appended after compression (question-after only). */
  questionTokens: number;
  truncated: boolean;
  chat: boolean;
  predictions: Record<string, MethodPrediction>;
}

export interface LongBenchResults {
  benchmark: 'longbench';
  placement: 'question-in-prompt' | 'question-after';
  maxContext: number;
  seed: number;
  methods: { label: string; spec: CompressionSpec }[];
  tasks: { name: string; file: string; samples: number; maxNewTokens: number; metric: LongBenchMetricName; chat: boolean }[];
  /** scores[task][method]: 100 × mean per-sample score, rounded to 2 decimals (LongBench's scorer). */
  scores: Record<string, Record<string, number>>;
  /** average[method]: mean of the task scores, rounded to 2 decimals. */
  average: Record<string, number>;
  samples: SampleResult[];
}

/**
 * Runs every method on every sample (tasks in the given order, samples in file order, methods in the given order)
 * and scores the answers.
 */
export async function runLongBench(model: Model, data: readonly TaskData[], methods: readonly MethodRun[], options: LongBenchOptions = {}): Promise<LongBenchResults> {
  const labels = new Set<string>();
  for (const m of methods) {
    if (labels.has(m.label)) throw new RequestError(`method "${m.label}" is listed twice`);
    labels.add(m.label);
  }
  const maxContext = options.maxContext ?? model.config.maxPositionEmbeddings;
  if (!Number.isSafeInteger(maxContext) || maxContext < 1) throw new RequestError(`maxContext must be a positive integer, got ${maxContext}`);
  const seed = options.seed ?? 42;
  const tokenizer = model.tokenizer;
  const eos = new Set(model.eosTokenIds);
  const samples: SampleResult[] = [];
  const scores: Record<string, Record<string, number>> = {};

  for (const { task, samples: taskSamples } of data) {
    const perMethod = new Map<string, number[]>(methods.map((m) => [m.label, []]));
    for (const sample of taskSamples) {
      const built = buildPrompt(tokenizer, task, sample, { maxContext, questionAfter: options.questionAfter });
      const predictions: Record<string, MethodPrediction> = {};
      for (const m of methods) {
        let outputIds: number[];
        if (options.questionAfter) {
          outputIds = (await generateWithQuestionAfter(model, built.promptIds, built.questionIds, m.spec, task.maxNewTokens)).outputIds;
        } else {
          outputIds = (await generate(model, { ids: built.promptIds }, {
            ...GREEDY, maxTokens: task.maxNewTokens, compression: m.spec, maxContext, seed,
          })).outputIds;
        }
        // As pred.py: decode the new tokens without special tokens (EOS and any other).
        const text = tokenizer.decode(outputIds.filter((id) => !eos.has(id)), { skipSpecialTokens: true });
        const score = scorePrediction(task, text, sample.answers, sample.allClasses);
        perMethod.get(m.label)!.push(score);
        predictions[m.label] = { text, score, generatedTokens: outputIds.length };
        options.onProgress?.(task.name, m.label);
      }
      samples.push({
        task: task.name, index: sample.index, line: sample.line, id: sample.id, length: sample.length,
        answers: sample.answers, allClasses: sample.allClasses, rawTokens: built.rawTokens,
        promptTokens: built.promptIds.length, questionTokens: built.questionIds.length,
        truncated: built.truncated, chat: built.chat, predictions,
      });
    }
    scores[task.name] = Object.fromEntries(methods.map((m) => [m.label, percentScore(perMethod.get(m.label)!)]));
  }

  const average: Record<string, number> = {};
  for (const m of methods) {
    const values = data.map(({ task }) => scores[task.name][m.label]);
    average[m.label] = values.length === 0 ? 0 : pyRound2(values.reduce((a, b) => a + b, 0) / values.length);
  }
  return {
    benchmark: 'longbench',
    placement: options.questionAfter ? 'question-after' : 'question-in-prompt',
    maxContext, seed,
    methods: methods.map((m) => ({ label: m.label, spec: m.spec })),
    tasks: data.map(({ task, file, samples: s }) => ({
      name: task.name, file, samples: s.length, maxNewTokens: task.maxNewTokens, metric: task.metric, chat: task.chat && tokenizer.hasChatTemplate,
    })),
    scores, average, samples,
  };
}
