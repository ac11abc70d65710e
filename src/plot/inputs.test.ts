import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describeSpec, parseBench, parseEval, specKey } from './inputs.js';
import { planReport } from './report.js';

const FIXTURES = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'test', 'fixtures', 'report');

function write(name: string, json: unknown): string {
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'fastkv-inputs-')), name);
  fs.writeFileSync(file, JSON.stringify(json));
  return file;
}

test('a configuration is named as eval names its columns, whatever the order of its options', () => {
  assert.equal(describeSpec({ method: 'full' }), 'full');
  assert.equal(describeSpec({ method: 'fastkv', retainRate: 0.1 }), 'fastkv@0.1');
  assert.equal(describeSpec({ method: 'snapkv', budget: 512, windowSize: 16 }), 'snapkv@B=512 (windowSize 16)');
  assert.equal(describeSpec({ tspRate: 0.3, method: 'fastkv', compressionRatio: 0.5, kernelSize: 5 }), 'fastkv@cr=0.5 (kernelSize 5, tspRate 0.3)');
  assert.equal(specKey({ method: 'fastkv', retainRate: 0.1, tspRate: 0.2 }), specKey({ tspRate: 0.2, retainRate: 0.1, method: 'fastkv' }));
  assert.notEqual(specKey({ method: 'fastkv', retainRate: 0.1 }), specKey({ method: 'fastkv', retainRate: 0.2 }));
});

test('every eval column of the fixtures is named as its label says', () => {
  for (const name of ['niah.json', 'ruler.json', 'fidelity.json']) {
    for (const c of parseEval(path.join(FIXTURES, name)).columns) assert.equal(c.series, c.label, name);
  }
});

test('bench files with methods the report has never heard of and extra dimensions are read and drawn', () => {
  const json = JSON.parse(fs.readFileSync(path.join(FIXTURES, 'bench-0.1.json'), 'utf8'));
  // A new method, and a dtype dimension with two values (as a future bench --dtype might write), plus a field
  // the report does not know.
  const results = json.results.flatMap((r: Record<string, unknown>) => ['f32', 'bf16'].map((dtype) => ({
    ...r, dtype, futureField: { anything: [1, 2] },
    ...(r.method === 'snapkv' ? { method: 'pyramidkv', spec: { method: 'pyramidkv', retainRate: 0.1 } } : {}),
  })));
  const bench = parseBench(write('bench-new.json', { ...json, results, extraTopLevel: true }));
  const series = new Set(bench.points.map((p) => p.series));
  for (const s of ['full [dtype f32]', 'full [dtype bf16]', 'pyramidkv@0.1 [dtype bf16]', 'fastkv@0.1 [dtype f32]']) assert.ok(series.has(s), s);
  const plan = planReport({ bench: [bench], evals: [] });
  const ttft = plan.figures.find((f) => f.name === 'ttft-vs-length');
  assert.ok(ttft);
  const spec = JSON.stringify(ttft.spec);
  assert.ok(spec.includes('"pyramidkv"') && spec.includes('pyramidkv@0.1 [dtype bf16]'));
  assert.ok(plan.markdown.includes('| pyramidkv@0.1 [dtype f32] |'));
});

test('LongBench results.json is read by its methods and averages', () => {
  const file = write('results.json', {
    model: '/models/Qwen2.5-0.5B-Instruct', benchmark: 'longbench', placement: 'question-in-prompt',
    methods: [{ label: 'full', spec: { method: 'full' } }, { label: 'fastkv', spec: { method: 'fastkv', retainRate: 0.1 } }],
    average: { full: 31.5, fastkv: 30.25 }, scores: {}, samples: [],
  });
  const e = parseEval(file);
  assert.equal(e.kind, 'longbench');
  assert.equal(e.model, 'Qwen2.5-0.5B-Instruct');
  assert.deepEqual(e.columns.map((c) => [c.series, c.accuracy]), [['full', 31.5], ['fastkv@0.1', 30.25]]);
  const bad = write('results.json', { model: 'm', benchmark: 'longbench', methods: [{ label: 'full', spec: { method: 'full' } }], average: { full: 'n/a' } });
  assert.throws(() => parseEval(bad), (e: Error) => e.message.includes(bad) && e.message.includes('average.full must be a finite number'));
});

test('eval files alone give the heatmaps and the accuracy tables, with every column', () => {
  const evals = ['niah.json', 'ruler.json', 'fidelity.json'].map((f) => parseEval(path.join(FIXTURES, f)));
  const plan = planReport({ bench: [], evals });
  assert.deepEqual(plan.figures.map((f) => f.name), ['niah-word-recall', 'niah-string-match']);
  for (const e of evals) {
    for (const c of e.columns) assert.ok(plan.markdown.includes(`| ${c.series} | ${c.accuracy.toFixed(1)} |`), `${e.kind} ${c.series}`);
  }
});
