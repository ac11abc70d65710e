/** `fastkv eval`: help, errors that name the flag, columns, and short end-to-end runs with --out. */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { FIXTURES, ROOT } from '../../test/helpers.js';
import { evalCommand, methodColumns } from './eval.js';

const CLI = path.join(ROOT, 'dist', 'src', 'cli', 'main.js');
const RETRIEVAL = path.join(FIXTURES, 'retrieval-3M');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fastkv-eval-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

function fastkv(...args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('eval help lists the subcommands; each subcommand\'s help describes its flags', () => {
  const top = fastkv('eval', '--help');
  assert.equal(top.code, 0, top.stderr);
  for (const sub of ['niah', 'ruler', 'fidelity', 'longbench']) assert.ok(top.stdout.includes(sub), sub);
  const common = ['--model', '--methods', '--retain-rates', '--threads', '--seed', '--out', '--max-context', '--retain-rate', '--tsp-rate'];
  const flags: Record<string, string[]> = {
    niah: [...common, '--lengths', '--depths', '--samples', '--haystack', '--preset', '--needle', '--question', '--answer',
      '--template', '--max-tokens', '--chat', '--question-after'],
    ruler: [...common, '--length', '--samples', '--tasks', '--format', '--haystack', '--max-tokens', '--chat', '--question-after'],
    fidelity: [...common, '--text', '--context', '--continuation', '--windows'],
  };
  for (const [sub, list] of Object.entries(flags)) {
    const help = fastkv('eval', sub, '--help');
    assert.equal(help.code, 0, help.stderr);
    for (const flag of list) assert.ok(help.stdout.includes(flag), `eval ${sub} --help lacks ${flag}`);
  }
});

test('eval errors name the flag', async () => {
  // Through the real command line: the message and exit code reach the user.
  for (const [args, pattern] of [[['eval', 'frobnicate'], /frobnicate/], [['eval', 'niah', '--bogus'], /bogus/]] as const) {
    const r = fastkv(...args);
    assert.equal(r.code, 2, `${args.join(' ')} should fail with exit code 2`);
    assert.match(r.stderr, pattern, `${args.join(' ')}: ${r.stderr}`);
  }
  const stories = path.join(ROOT, 'data', 'stories-haystack.txt');
  const cases: [string[], RegExp][] = [
    [['niah', '--lengths', '12x'], /--lengths/],
    [['niah', '--depths', '120'], /--depths/],
    [['niah', '--methods', 'full,nosuch'], /--methods.*nosuch/],
    [['niah', '--retain-rates', '0.1', '--retain-rate', '0.2'], /--retain-rate/],
    [['niah', '--retain-rates', '1.5'], /--retain-rates/],
    [['niah', '--haystack', '/nonexistent/essays'], /--haystack/],
    [['niah', '--preset', 'nope', '--model', RETRIEVAL], /--preset/],
    [['niah', '--template', 'no placeholders', '--model', RETRIEVAL], /--template/],
    [['niah', '--model', RETRIEVAL, '--lengths', '4096'], /--lengths.*--max-context/],
    [['ruler', '--tasks', 'niah_single_1,qa_9'], /--tasks.*qa_9/],
    [['ruler', '--format', 'nope'], /--format/],
    [['ruler', '--format', 'magic-number', '--tasks', 'cwe'], /--tasks/],
    [['ruler', '--samples', '0'], /--samples/],
    [['fidelity'], /--text/],
    [['fidelity', '--text', '/nonexistent/text.txt'], /--text/],
    [['fidelity', '--text', path.join(ROOT, 'data', 'README.md'), '--context', '400'], /--text has \d+ tokens/],
    [['fidelity', '--text', stories, '--context', '1024'], /--max-context/],
    [['fidelity', '--text', stories, '--methods', 'snapkv', '--window', '0'], /windowSize/],
  ];
  for (const [args, pattern] of cases) await assert.rejects(evalCommand(args), pattern, args.join(' '));
});

test('methodColumns: one column per method, or per method and rate with --retain-rates (full once)', () => {
  assert.deepEqual(methodColumns({ methods: 'full,snapkv', 'retain-rate': '0.2', window: '4' }), [
    { label: 'full', spec: { method: 'full' } },
    { label: 'snapkv', spec: { method: 'snapkv', retainRate: 0.2, windowSize: 4 } },
  ]);
  const sweep = methodColumns({ methods: 'full,fastkv,gemfilter', 'retain-rates': '0.1,0.2', 'tsp-rate': '0.2' });
  assert.deepEqual(sweep.map((c) => c.label), ['full', 'fastkv@0.1', 'fastkv@0.2', 'gemfilter@0.1', 'gemfilter@0.2']);
  assert.deepEqual(sweep[1].spec, { method: 'fastkv', retainRate: 0.1, tspRate: 0.2 });
  assert.deepEqual(sweep[3].spec, { method: 'gemfilter', retainRate: 0.1 });
  assert.deepEqual(methodColumns({}).map((c) => c.label), ['full', 'fastkv', 'snapkv', 'streamingllm', 'gemfilter']);
});

test('eval niah on retrieval-3M: table, JSON and one SVG heatmap per method and metric; a re-run gives the same numbers', () => {
  const args = ['eval', 'niah', '--model', RETRIEVAL, '--preset', 'magic-number', '--lengths', '256,384', '--depths', '25,75',
    '--methods', 'full,snapkv', '--retain-rates', '0.5', '--threads', '1', '--seed', '7'];
  const a = fastkv(...args, '--out', path.join(tmp, 'a'));
  assert.equal(a.code, 0, a.stderr);
  assert.match(a.stdout, /full\s+100\s+100/);
  assert.match(a.stderr, /niah \[#+\s*\] 8\/8/);
  const json = JSON.parse(fs.readFileSync(path.join(tmp, 'a', 'niah.json'), 'utf8'));
  assert.deepEqual(json.lengths, [256, 384]);
  assert.deepEqual(json.columns, ['full', 'snapkv@0.5']);
  assert.equal(json.cases.length, 4);
  for (const f of ['niah-full-word-recall.svg', 'niah-full-string-match.svg', 'niah-snapkv_0.5-word-recall.svg']) {
    assert.match(fs.readFileSync(path.join(tmp, 'a', f), 'utf8'), /^<\?xml[\s\S]*<\/svg>\n$/);
  }
  const b = fastkv(...args, '--out', path.join(tmp, 'b'));
  assert.equal(b.code, 0, b.stderr);
  assert.equal(b.stdout, a.stdout);
  assert.deepEqual(JSON.parse(fs.readFileSync(path.join(tmp, 'b', 'niah.json'), 'utf8')).cases, json.cases);
});

test('eval ruler and eval fidelity end to end', () => {
  const r = fastkv('eval', 'ruler', '--model', RETRIEVAL, '--format', 'magic-number', '--tasks', 'niah_single_1', '--length', '256',
    '--samples', '2', '--methods', 'full', '--threads', '1', '--question-after', '--out', path.join(tmp, 'r'));
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /niah_single_1\s+\d+/);
  assert.match(r.stdout, /average/);
  assert.equal(JSON.parse(fs.readFileSync(path.join(tmp, 'r', 'ruler.json'), 'utf8')).samples.length, 2);
  const f = fastkv('eval', 'fidelity', '--text', path.join(ROOT, 'data', 'stories-haystack.txt'), '--context', '128', '--continuation', '8',
    '--methods', 'full,streamingllm', '--retain-rate', '0.5', '--threads', '1', '--out', path.join(tmp, 'f'));
  assert.equal(f.code, 0, f.stderr);
  assert.match(f.stdout, /full\s+100\s+0\s/);
  const json = JSON.parse(fs.readFileSync(path.join(tmp, 'f', 'fidelity.json'), 'utf8'));
  assert.equal(json.scores.full.top1Agreement, 100);
  assert.ok(json.scores.streamingllm.keptPercent < 60);
});
