/**
 * LongBench: the task table, data-file validation, middle truncation, the question-after path, and an end-to-end
 * run of `fastkv eval longbench` on the tiny fixture set with the bundled stories260K.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { DEFAULT_MODEL_DIR } from '../cli/args.js';
import { longbenchCommand } from '../cli/eval-longbench.js';
import { Model } from '../engine/model.js';
import { generate } from '../engine/generate.js';
import {
  FIRST_LINE_TASKS, LONGBENCH_TASKS, NO_CHAT_TASKS, TASKS, buildPrompt, fillTemplate, findTask, loadLongBenchData,
  middleTruncate, parseLongBenchJsonl, scorePrediction, splitTemplate,
} from './longbench.js';
import { generateWithQuestionAfter } from './question-after.js';

const FIXTURE = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'test', 'fixtures', 'longbench');

function tmpDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'fastkv-longbench-'));
}

const GOOD = JSON.stringify({ input: 'q?', context: 'c.', answers: ['a'], all_classes: null, length: 1, _id: 'x' });

test('task table: 16 tasks with LongBench\'s max new tokens, metrics, chat and first-line rules', () => {
  assert.equal(LONGBENCH_TASKS.length, 16);
  const maxNew = Object.fromEntries(LONGBENCH_TASKS.map((t) => [t, TASKS[t].maxNewTokens]));
  assert.deepEqual(maxNew, {
    narrativeqa: 128, qasper: 128, multifieldqa_en: 64, hotpotqa: 32, '2wikimqa': 32, musique: 32,
    gov_report: 512, qmsum: 512, multi_news: 512, trec: 64, triviaqa: 32, samsum: 128, passage_count: 32,
    passage_retrieval_en: 32, lcc: 64, 'repobench-p': 64,
  });
  const byMetric = (m: string) => LONGBENCH_TASKS.filter((t) => TASKS[t].metric === m);
  assert.deepEqual(byMetric('qa_f1'), ['narrativeqa', 'qasper', 'multifieldqa_en', 'hotpotqa', '2wikimqa', 'musique', 'triviaqa']);
  assert.deepEqual(byMetric('rouge_l'), ['gov_report', 'qmsum', 'multi_news', 'samsum']);
  assert.deepEqual(byMetric('classification'), ['trec']);
  assert.deepEqual(byMetric('count'), ['passage_count']);
  assert.deepEqual(byMetric('retrieval'), ['passage_retrieval_en']);
  assert.deepEqual(byMetric('code_sim'), ['lcc', 'repobench-p']);
  assert.deepEqual(LONGBENCH_TASKS.filter((t) => !TASKS[t].chat), NO_CHAT_TASKS.filter((t) => t !== 'lsht'));
  assert.deepEqual(LONGBENCH_TASKS.filter((t) => TASKS[t].firstLineOnly), FIRST_LINE_TASKS.filter((t) => t !== 'lsht'));
  for (const t of LONGBENCH_TASKS) {
    const { context, question } = splitTemplate(TASKS[t]);
    assert.equal(context + question, TASKS[t].prompt, t);
    assert.ok(context.includes('{context}') && !question.includes('{context}'), t);
  }
  assert.equal(TASKS.trec.prompt, 'Please determine the type of the question below. Here are some examples of questions.\n\n{context}\n{input}');
  assert.equal(fillTemplate(TASKS.lcc.prompt, { context: 'x = {input}\n', input: '$&' }), 'Please complete the code given below. \nx = {input}\nNext line of code:\n');
  assert.equal(findTask('qasper_e')?.maxNewTokens, 128);
  assert.equal(findTask('narrativeqa_e'), null); // not a LongBench-E task
  // First-line cut: trec scores only the first line.
  assert.equal(scorePrediction(TASKS.trec, '\nAnimal\nFood Color', ['Animal'], ['Animal', 'Food', 'Color']), 1);
  // qasper keeps every line: "no lady" vs "lady" → P = 1/2, R = 1, F1 = 2/3.
  assert.ok(Math.abs(scorePrediction(TASKS.qasper, 'no\nthe lady', ['the lady'], []) - 2 / 3) < 1e-12);
});

test('data files: malformed lines are reported with file:line and field', () => {
  const task = TASKS.qasper;
  assert.throws(() => parseLongBenchJsonl(`${GOOD}\n{"input": "q", oops}\n`, 'qasper.jsonl', task),
    (e: Error) => e.message.startsWith('qasper.jsonl:2: not valid JSON'));
  assert.throws(() => parseLongBenchJsonl(`${GOOD}\n\n{"input": "q", "context": "c"}\n`, 'qasper.jsonl', task),
    (e: Error) => e.message.includes('qasper.jsonl:3') && e.message.includes('missing field "answers"'));
  assert.throws(() => parseLongBenchJsonl('{"input": "q", "context": "c", "answers": "a"}', 'f.jsonl', task),
    /f\.jsonl:1: field "answers" must be a non-empty list of strings/);
  assert.throws(() => parseLongBenchJsonl('{"input": 3, "context": "c", "answers": ["a"]}', 'f.jsonl', task),
    /f\.jsonl:1: field "input" must be a string/);
  assert.throws(() => parseLongBenchJsonl('{"context": "c", "answers": ["a"]}', 'f.jsonl', task), /f\.jsonl:1: missing field "input"/);
  assert.throws(() => parseLongBenchJsonl('[1, 2]', 'f.jsonl', task), /f\.jsonl:1: expected a JSON object/);
  assert.throws(() => parseLongBenchJsonl('{"input": "q", "context": "c", "answers": ["a"], "length": "long"}', 'f.jsonl', task),
    /field "length" must be a number/);
  assert.throws(() => parseLongBenchJsonl('{"input": "q", "context": "c", "answers": ["a"], "all_classes": null}', 'trec.jsonl', TASKS.trec),
    /trec\.jsonl:1: field "all_classes"/);
  assert.throws(() => parseLongBenchJsonl('{"input": "q", "context": "c", "answers": ["the second"]}', 'p.jsonl', TASKS.passage_retrieval_en),
    /p\.jsonl:1: field "answers": "the second" has no "Paragraph N"/);
  assert.throws(() => parseLongBenchJsonl('\n\n', 'empty.jsonl', task), /empty\.jsonl: no samples/);

  const samples = parseLongBenchJsonl(`${GOOD}\n${GOOD}\r\n${GOOD}\n`, 'qasper.jsonl', task, 2);
  assert.equal(samples.length, 2);
  assert.deepEqual(samples.map((s) => [s.line, s.index, s.id, s.length]), [[1, 0, 'x', 1], [2, 1, 'x', 1]]);
});

test('data files: unknown tasks are named; folders and --tasks are resolved', () => {
  const dir = tmpDir();
  try {
    const unknown = path.join(dir, 'my_task.jsonl');
    fs.writeFileSync(unknown, `${GOOD}\n`);
    assert.throws(() => loadLongBenchData(unknown), (e: Error) => e.message.includes(unknown) && e.message.includes('unknown LongBench task "my_task"'));
    assert.throws(() => loadLongBenchData(dir), (e: Error) => e.message.includes('my_task.jsonl') && e.message.includes('unknown LongBench task'));
    assert.throws(() => loadLongBenchData(FIXTURE, { tasks: ['trec', 'nosuch'] }), /--tasks: unknown LongBench task "nosuch"/);
    assert.throws(() => loadLongBenchData(FIXTURE, { tasks: ['lsht'] }), /Chinese tasks/);
    assert.throws(() => loadLongBenchData(FIXTURE, { tasks: ['hotpotqa'] }), /hotpotqa\.jsonl does not exist/);
    assert.throws(() => loadLongBenchData(path.join(dir, 'missing')), /does not exist/);

    fs.rmSync(unknown);
    fs.writeFileSync(path.join(dir, 'lsht.jsonl'), `${GOOD}\n`);
    fs.writeFileSync(path.join(dir, 'trec_e.jsonl'), `${GOOD}\n`);
    fs.copyFileSync(path.join(FIXTURE, 'qasper.jsonl'), path.join(dir, 'qasper.jsonl'));
    const skipped: string[] = [];
    const data = loadLongBenchData(dir, { onSkip: (file) => skipped.push(path.basename(file)) });
    assert.deepEqual(data.map((d) => d.task.name), ['qasper']);
    assert.deepEqual(skipped.sort(), ['lsht.jsonl', 'trec_e.jsonl']);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  // Folder order is LongBench's, not the file system's.
  assert.deepEqual(loadLongBenchData(FIXTURE).map((d) => d.task.name), ['qasper', 'trec', 'passage_retrieval_en']);
  assert.deepEqual(loadLongBenchData(FIXTURE, { tasks: ['trec', 'qasper'], limit: 1 }).map((d) => [d.task.name, d.samples.length]),
    [['trec', 1], ['qasper', 1]]);
});

test('middle truncation keeps the head and the tail', () => {
  const ids = Array.from({ length: 10 }, (_, i) => i);
  assert.deepEqual(middleTruncate(ids, 6), [0, 1, 2, 7, 8, 9]);
  assert.deepEqual(middleTruncate(ids, 5), [0, 1, 8, 9]); // floor(5/2) from each end, as LongBench
  assert.deepEqual(middleTruncate(ids, 10), ids);
  assert.deepEqual(middleTruncate(ids, 50), ids);
});

test('prompts: truncated to fit with the answer, head and tail kept, question split off for question-after', async () => {
  const model = await Model.load(DEFAULT_MODEL_DIR, { threads: 1 });
  try {
    const tok = model.tokenizer;
    const [long] = loadLongBenchData(path.join(FIXTURE, 'qasper.jsonl')).map((d) => d.samples[1]);
    const task = TASKS.qasper;
    const built = buildPrompt(tok, task, long, { maxContext: 600 });
    assert.ok(built.truncated && built.chat);
    assert.ok(built.rawTokens > 600);
    assert.ok(built.promptIds.length <= 600 - task.maxNewTokens, `${built.promptIds.length}`);
    assert.ok(built.promptIds.length >= 600 - task.maxNewTokens - 8, `${built.promptIds.length}`);
    const text = tok.decode(built.promptIds, { skipSpecialTokens: true });
    assert.ok(text.startsWith('User: You are given a scientific article and a question.'), text.slice(0, 80));
    assert.ok(text.endsWith(`Question: ${long.input}\n\nAnswer:\nAssistant:`), text.slice(-80));
    assert.ok(!text.includes(long.context.slice(1000, 1100))); // the middle is gone

    const after = buildPrompt(tok, task, long, { maxContext: 600, questionAfter: true });
    assert.ok(after.truncated);
    assert.ok(after.promptIds.length + after.questionIds.length <= 600 - task.maxNewTokens);
    assert.equal(tok.decode(after.questionIds), `Question: ${long.input}\n\nAnswer:\nAssistant:`);
    assert.ok(tok.decode(after.promptIds, { skipSpecialTokens: true }).startsWith('User: You are given a scientific article'));

    const short = buildPrompt(tok, TASKS.trec, { context: 'Question: Why?\nType: Reason\n', input: 'Question: Who?\nType:' }, { maxContext: 600 });
    assert.ok(!short.truncated && !short.chat);
    assert.deepEqual(short.promptIds, tok.encode(fillTemplate(TASKS.trec.prompt, { context: 'Question: Why?\nType: Reason\n', input: 'Question: Who?\nType:' })));
    assert.throws(() => buildPrompt(tok, task, long, { maxContext: 130 }), /--max-context 130 leaves no room/);
  } finally {
    await model.dispose();
  }
});

test('question-after with the full cache continues exactly like one prefill', async () => {
  const model = await Model.load(DEFAULT_MODEL_DIR, { threads: 1 });
  try {
    const ids = model.tokenizer.encode('Once upon a time, there was a little girl named Lily. She loved to play with her ball in the park.');
    const whole = await generate(model, { ids }, { maxTokens: 24 });
    const split = await generateWithQuestionAfter(model, ids.slice(0, 15), ids.slice(15), { method: 'full' }, 24);
    assert.deepEqual(split.outputIds, whole.outputIds);
    assert.equal(split.text, model.tokenizer.decode(whole.outputIds.filter((id) => !model.eosTokenIds.includes(id)), { skipSpecialTokens: true }));
    const none = await generateWithQuestionAfter(model, ids, [], { method: 'fastkv' }, 0);
    assert.deepEqual(none.outputIds, []);
    const compressed = await generateWithQuestionAfter(model, ids.slice(0, 20), ids.slice(20), { method: 'snapkv', budget: 12 }, 5);
    assert.ok(compressed.outputIds.length >= 1 && compressed.outputIds.length <= 5);
  } finally {
    await model.dispose();
  }
});

interface Results {
  placement: string;
  maxContext: number;
  seed: number;
  methods: { label: string; spec: { method: string } }[];
  tasks: { name: string; samples: number }[];
  scores: Record<string, Record<string, number>>;
  average: Record<string, number>;
  samples: { task: string; index: number; truncated: boolean; promptTokens: number; predictions: Record<string, { text: string; score: number; generatedTokens: number }> }[];
}

async function runCommand(args: string[]): Promise<Results> {
  const out = tmpDir();
  try {
    await longbenchCommand([...args, '--out', out]);
    return JSON.parse(fs.readFileSync(path.join(out, 'results.json'), 'utf8')) as Results;
  } finally {
    fs.rmSync(out, { recursive: true, force: true });
  }
}

test('fastkv eval longbench: end to end on the fixture, complete results, same seed → same numbers', async () => {
  const args = ['--data', FIXTURE, '--max-context', '1024', '--limit', '2', '--threads', '1', '--seed', '7', '--retain-rate', '0.3'];
  const first = await runCommand(args);
  assert.equal(first.placement, 'question-in-prompt');
  assert.equal(first.maxContext, 1024);
  assert.equal(first.seed, 7);
  assert.deepEqual(first.methods.map((m) => m.label), ['full', 'fastkv']);
  assert.deepEqual(first.methods[1].spec, { method: 'fastkv', retainRate: 0.3 });
  assert.deepEqual(first.tasks.map((t) => [t.name, t.samples]), [['qasper', 2], ['trec', 2], ['passage_retrieval_en', 2]]);
  for (const task of ['qasper', 'trec', 'passage_retrieval_en']) {
    for (const m of ['full', 'fastkv']) {
      const s = first.scores[task][m];
      assert.ok(typeof s === 'number' && s >= 0 && s <= 100, `${task} ${m}: ${s}`);
    }
  }
  for (const m of ['full', 'fastkv']) assert.ok(first.average[m] >= 0 && first.average[m] <= 100);
  assert.equal(first.samples.length, 6);
  assert.ok(first.samples.some((s) => s.truncated), 'the long qasper sample is truncated');
  for (const s of first.samples) {
    assert.ok(s.promptTokens <= 1024);
    for (const m of ['full', 'fastkv']) {
      const p = s.predictions[m];
      assert.equal(typeof p.text, 'string');
      assert.ok(p.score >= 0 && p.score <= 1);
      assert.ok(p.generatedTokens >= 1 && p.generatedTokens <= TASKS[s.task].maxNewTokens);
    }
  }

  const second = await runCommand(args);
  assert.deepEqual(second.scores, first.scores);
  assert.deepEqual(second.average, first.average);
  assert.deepEqual(second.samples, first.samples);

  const after = await runCommand(['--data', FIXTURE, '--tasks', 'qasper', '--max-context', '1024', '--limit', '1',
    '--threads', '1', '--methods', 'full,snapkv', '--retain-rates', '0.3,0.5', '--question-after']);
  assert.equal(after.placement, 'question-after');
  assert.deepEqual(Object.keys(after.scores), ['qasper']);
  assert.deepEqual(Object.keys(after.scores.qasper), ['full', 'snapkv@0.3', 'snapkv@0.5']);
  assert.deepEqual(after.methods[2].spec, { method: 'snapkv', retainRate: 0.5 });
  assert.equal(after.samples.length, 1);

  await assert.rejects(longbenchCommand(['--data', FIXTURE, '--methods', 'full,nosuch']), /nosuch/);
  await assert.rejects(longbenchCommand(['--data', FIXTURE, '--method', 'fastkv']), /--methods/);
  await assert.rejects(longbenchCommand(['--data', FIXTURE, '--methods', 'full', '--tsp-rate', '0.2']), /--tsp-rate is not used by any of --methods full/);
  await assert.rejects(longbenchCommand(['--max-context', '1024']), /--data PATH is required/);
});

test('a sample far longer than any LongBench sample is refused after tokenizing a bounded part of it', async () => {
  const { Tokenizer } = await import('../model/tokenizer.js');
  const tok = Tokenizer.load(DEFAULT_MODEL_DIR);
  const huge = { context: 'The cat sat on the mat and looked at the sun. '.repeat(200_000), input: 'Where did the cat sit?' };  // ~9 MB
  for (const questionAfter of [false, true]) {
    const t0 = performance.now();
    assert.throws(() => buildPrompt(tok, TASKS.qasper, huge, { maxContext: 128, questionAfter }),
      /longbench qasper: a sample has more than 8192 tokens/);
    assert.ok(performance.now() - t0 < 10_000);
  }
});

test('--data that is a FIFO or a device is refused, not listed as a folder (found by the fuzz suite)', async () => {
  const { execFileSync } = await import('node:child_process');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fastkv-lb-'));
  try {
    execFileSync('mkfifo', [path.join(dir, 'fifo')]);
    for (const data of [path.join(dir, 'fifo'), '/dev/null']) {
      assert.throws(() => loadLongBenchData(data), /neither a regular file nor a folder/);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
