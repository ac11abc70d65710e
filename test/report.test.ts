/**
 * `fastkv report` end to end, from the real bench and eval JSON in test/fixtures/report: the files it writes,
 * what their pictures say (every method, axis title, model and machine in the SVG text), PNGs of the right size
 * with the methods' colours in them, the Markdown tables against the inputs, and errors that name the file and
 * field of bad or mismatched inputs.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PNG } from 'pngjs';
import { FIXTURES, ROOT } from './helpers.js';
import { methodColors } from '../src/plot/charts.js';
import { PNG_SCALE } from '../src/plot/render.js';

const BIN = path.join(ROOT, 'bin', 'fastkv.js');
const DIR = path.join(FIXTURES, 'report');
const BENCH = ['bench-0.1.json', 'bench-0.2.json'].map((f) => path.join(DIR, f));
const EVALS = ['niah.json', 'ruler.json', 'fidelity.json'].map((f) => path.join(DIR, f));

function fastkv(...args: string[]) {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function tmpDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'fastkv-report-'));
}

const read = (file: string) => JSON.parse(fs.readFileSync(file, 'utf8'));

/** The text a reader sees in an SVG: the contents of its <text> elements, entities decoded. */
function svgText(svg: string): string {
  return [...svg.matchAll(/<text\b[^>]*>([\s\S]*?)<\/text>/g)]
    .map((m) => m[1].replace(/<[^>]+>/g, '').replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&quot;/g, '"')
      .replace(/&#(?:39|x27);|&apos;/g, "'").replace(/&amp;/g, '&'))
    .join('\n');
}

function svgSize(svg: string): { width: number; height: number } {
  const m = /<svg\b[^>]*\bwidth="([\d.]+)"[^>]*\bheight="([\d.]+)"/.exec(svg);
  assert.ok(m, 'the SVG has a width and a height');
  return { width: Number(m[1]), height: Number(m[2]) };
}

/** Pixels of the PNG within a small distance of `hex` (anti-aliasing blends edges, not line centres). */
function pixelsNear(png: PNG, hex: string, tolerance = 12): number {
  const [r, g, b] = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
  let n = 0;
  for (let i = 0; i < png.data.length; i += 4) {
    if (Math.abs(png.data[i] - r) <= tolerance && Math.abs(png.data[i + 1] - g) <= tolerance && Math.abs(png.data[i + 2] - b) <= tolerance) n++;
  }
  return n;
}

// One report for the tests below (rendering takes a few seconds).
const OUT = tmpDir();
const run = fastkv('report', ...BENCH.flatMap((f) => ['--bench', f]), ...EVALS.flatMap((f) => ['--eval', f]), '--out', OUT);

const benchJson = BENCH.map(read);
const evalJson = EVALS.map(read);
const methods = [...new Set<string>(benchJson.flatMap((b) => b.results.map((r: { method: string }) => r.method)))];
const columns = (e: { settings: { columns: { label: string }[] } }) => e.settings.columns.map((c) => c.label);
const longest = Math.max(...benchJson.flatMap((b) => b.results.map((r: { tokens: number }) => r.tokens)));

test('report writes an SVG and a PNG per figure and report.md', () => {
  assert.equal(run.code, 0, run.stderr);
  const expected = ['accuracy-vs-speed-niah', 'accuracy-vs-speed-ruler', 'accuracy-vs-speed-fidelity', 'ttft-vs-length',
    'decode-vs-length', 'niah-word-recall', 'niah-string-match'];
  for (const name of expected) {
    for (const ext of ['svg', 'png']) assert.ok(fs.statSync(path.join(OUT, `${name}.${ext}`)).size > 1000, `${name}.${ext}`);
  }
  assert.deepEqual(fs.readdirSync(OUT).sort(), [...expected.flatMap((n) => [`${n}.png`, `${n}.svg`]), 'report.md'].sort(), 'no temporary files left');
});

test('each SVG names every method, its axes, the model and the machine', () => {
  const machine = benchJson[0].machine.cpu;
  const model = benchJson[0].label;
  const checks: [string, string[]][] = [
    ['accuracy-vs-speed-niah', [`Time to first token at ${longest} tokens (s)`, `Decode throughput at ${longest} tokens (tokens/s)`, 'NIAH word recall (%)', machine]],
    ['accuracy-vs-speed-ruler', [`Time to first token at ${longest} tokens (s)`, 'RULER string_match_all, task average (%)', machine]],
    ['accuracy-vs-speed-fidelity', [`Time to first token at ${longest} tokens (s)`, 'Top-1 agreement with full KV (%)', machine]],
    ['ttft-vs-length', ['Prompt length (tokens)', 'Time to first token (s)', 'arithmetic bound', 'measured', machine]],
    ['decode-vs-length', ['Prompt length (tokens)', 'Decode throughput (tokens/s)', 'arithmetic bound', machine]],
    ['niah-word-recall', ['Context length (tokens)', 'Needle depth (%)', ...columns(evalJson[0])]],
    ['niah-string-match', ['Context length (tokens)', 'Needle depth (%)', ...columns(evalJson[0])]],
  ];
  for (const [name, labels] of checks) {
    const text = svgText(fs.readFileSync(path.join(OUT, `${name}.svg`), 'utf8'));
    for (const label of [...labels, model, ...(name.startsWith('niah') ? [] : methods)]) {
      assert.ok(text.includes(label), `${name}.svg lacks "${label}"`);
    }
  }
});

test('each PNG is the SVG at twice the size, with the methods drawn in their colours', () => {
  const colors = methodColors(['full', ...methods.filter((m) => m !== 'full')]);
  for (const name of ['accuracy-vs-speed-niah', 'ttft-vs-length', 'decode-vs-length', 'niah-word-recall']) {
    const size = svgSize(fs.readFileSync(path.join(OUT, `${name}.svg`), 'utf8'));
    const png = PNG.sync.read(fs.readFileSync(path.join(OUT, `${name}.png`)));
    assert.equal(png.width, Math.round(size.width * PNG_SCALE), `${name}.png width`);
    assert.equal(png.height, Math.round(size.height * PNG_SCALE), `${name}.png height`);
    const total = png.width * png.height;
    const white = pixelsNear(png, '#ffffff', 3);
    assert.ok(white < 0.97 * total && white > 0.3 * total, `${name}.png: ${white} of ${total} pixels white`);
    const dark = pixelsNear(png, '#000000', 60);
    assert.ok(dark > 500, `${name}.png has text and axes (${dark} dark pixels)`);
    if (!name.startsWith('niah')) {
      colors.domain.forEach((m, i) => assert.ok(pixelsNear(png, colors.range[i]) > 50, `${name}.png: ${m}'s colour ${colors.range[i]}`));
    } else {
      assert.ok(pixelsNear(png, '#0cd79f') > 1000 && pixelsNear(png, '#f0496e') > 1000, `${name}.png has green and red cells`);
    }
  }
});

test('report.md holds every picture and the joined numbers of the inputs', () => {
  const md = fs.readFileSync(path.join(OUT, 'report.md'), 'utf8');
  for (const name of ['accuracy-vs-speed-niah', 'ttft-vs-length', 'decode-vs-length', 'niah-word-recall']) {
    assert.ok(md.includes(`](${name}.png)`) && md.includes(`(${name}.svg)`), name);
  }
  // fastkv at 0.1: its NIAH word recall from niah.json, its TTFT from bench-0.1.json at the longest length.
  const recall = evalJson[0].summary['fastkv@0.1'].wordRecall as number;
  const ttft = benchJson[0].results.find((r: { method: string; tokens: number }) => r.method === 'fastkv' && r.tokens === longest).ttftSeconds as number;
  assert.ok(md.includes(`| fastkv@0.1 | ${recall.toFixed(1)} | ${ttft.toFixed(3)} |`), `fastkv@0.1 row: recall ${recall}, TTFT ${ttft}`);
  // full is in both bench files: the mean of the two.
  const fullTtft = benchJson.map((b) => b.results.find((r: { method: string; tokens: number }) => r.method === 'full' && r.tokens === longest).ttftSeconds as number);
  assert.ok(md.includes(`| full | 100.0 | ${((fullTtft[0] + fullTtft[1]) / 2).toFixed(3)} |`), 'full row');
  // The TTFT bound of fastkv: full's TTFT over the FLOP ratio of the same run.
  const r = benchJson[0].results;
  const fastkv = r.find((x: { method: string; tokens: number }) => x.method === 'fastkv' && x.tokens === 512);
  const full = r.find((x: { method: string; tokens: number }) => x.method === 'full' && x.tokens === 512);
  assert.ok(md.includes(`| 512 | fastkv@0.1 | ${fastkv.ttftSeconds.toFixed(3)} | ${(full.ttftSeconds / fastkv.ttftBound).toFixed(3)} |`), 'bound row');
});

test('a plain bench file alone draws the full cache against length, without bounds', () => {
  const out = tmpDir();
  const r = fastkv('report', '--bench', path.join(DIR, 'bench-plain.json'), '--out', out);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(fs.readdirSync(out).sort(), ['decode-vs-length.png', 'decode-vs-length.svg', 'report.md', 'ttft-vs-length.png', 'ttft-vs-length.svg']);
  const text = svgText(fs.readFileSync(path.join(out, 'ttft-vs-length.svg'), 'utf8'));
  assert.ok(text.includes('full') && text.includes('no bounds'), text);
});

/** Writes a changed copy of a fixture and returns its path. */
function variant(name: string, change: (json: Record<string, any>) => void, dir = tmpDir()): string {
  const json = read(path.join(DIR, name));
  change(json);
  const file = path.join(dir, name);
  fs.writeFileSync(file, JSON.stringify(json));
  return file;
}

test('malformed and mismatched inputs get errors naming the file and the field, and nothing is written', () => {
  const dir = tmpDir();
  const notJson = path.join(dir, 'broken.json');
  fs.writeFileSync(notJson, '{"label": "x", "results": [');
  const cases: [string[], RegExp[]][] = [
    [['--bench', notJson], [/broken\.json/, /not valid JSON/]],
    [['--bench', dir], [/is not a regular file/]],
    [['--bench', path.join(dir, 'missing.json')], [/missing\.json/]],
    [['--bench', variant('bench-0.1.json', (j) => { delete j.results[3].ttftSeconds; })], [/bench-0\.1\.json/, /results\[3\]\.ttftSeconds is missing/]],
    [['--bench', variant('bench-0.1.json', (j) => { j.results[2].tokens = 'many'; })], [/results\[2\]\.tokens must be a finite number/]],
    [['--bench', variant('bench-0.1.json', (j) => { j.results[1].spec.method = 'snapkv'; })], [/results\[1\]\.spec\.method/]],
    [['--bench', variant('bench-0.1.json', (j) => { j.results = []; })], [/results is empty/]],
    [['--eval', variant('niah.json', (j) => { j.summary['fastkv@0.1'].wordRecall = 'high'; })], [/niah\.json/, /summary\.fastkv@0\.1\.wordRecall must be a finite number/]],
    [['--eval', variant('niah.json', (j) => { j.summary['snapkv@0.2'].wordRecallGrid.pop(); })], [/summary\.snapkv@0\.2\.wordRecallGrid has 4 rows, but there are 5 depths/]],
    [['--eval', variant('ruler.json', (j) => { delete j.average.full; })], [/ruler\.json/, /average\.full is missing/]],
    [['--eval', variant('fidelity.json', (j) => { j.command = 'speed'; })], [/fidelity\.json/, /command must be niah, ruler or fidelity/]],
    [['--eval', path.join(DIR, 'bench-0.1.json')], [/bench-0\.1\.json/, /command is missing/]],
    // Mismatches between files.
    [['--bench', BENCH[0], '--bench', variant('bench-0.2.json', (j) => { j.label = 'another-model'; })], [/bench-0\.1\.json/, /bench-0\.2\.json/, /label/]],
    [['--bench', BENCH[0], '--bench', variant('bench-0.2.json', (j) => { j.threads = 16; })], [/threads/]],
    [['--eval', EVALS[0], '--eval', variant('ruler.json', (j) => { j.settings.model = 'models/stories260K'; })], [/niah\.json/, /ruler\.json/, /stories260K/]],
    [['--eval', EVALS[0], '--eval', variant('niah.json', () => {})], [/both have niah results for full/]],
    [['--bench', variant('bench-0.1.json', (j) => { for (const r of j.results) if (r.method !== 'full') r.spec.retainRate = 0.5; }), '--eval', variant('ruler.json', (j) => {
      j.settings.columns = j.settings.columns.filter((c: { label: string }) => c.label !== 'full');
    })], [/no configuration of .*ruler\.json/, /bench-0\.1\.json/, /fastkv@0\.5/]],
    [['--bench', BENCH[0], '--eval', EVALS[0], '--length', '4096'], [/--length 4096/, /512, 1024, 2048/]],
    [[], [/at least one --bench or --eval/]],
  ];
  for (const [args, patterns] of cases) {
    const out = path.join(tmpDir(), 'out');
    const r = fastkv('report', ...args, '--out', out);
    assert.equal(r.code, 2, `${args.join(' ')}: exit ${r.code}, ${r.stderr}`);
    for (const p of patterns) assert.match(r.stderr, p, `${args.join(' ')}`);
    assert.doesNotMatch(r.stderr, /unexpected error/, r.stderr);
    assert.ok(!fs.existsSync(out), `${args.join(' ')}: ${out} was created`);
  }
});

test('report --help names every option and figure', () => {
  const r = fastkv('report', '--help');
  assert.equal(r.code, 0);
  for (const word of ['--bench', '--eval', '--out', '--length', 'accuracy-vs-speed', 'ttft-vs-length', 'decode-vs-length', 'niah-word-recall', 'report.md']) {
    assert.ok(r.stdout.includes(word), word);
  }
});
