/** The `fastkv` command end to end: output shapes, help, and errors that name the problem. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ROOT, STORIES } from './helpers.js';

const CLI = path.join(ROOT, 'dist', 'src', 'cli', 'main.js');
const reference = JSON.parse(fs.readFileSync(path.join(STORIES, 'reference_greedy.json'), 'utf8'));

function fastkv(...args: string[]) {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('generate --json prints text, ids and timings for the bundled model', () => {
  const r = fastkv('generate', '--prompt', reference.prompt, '--max-tokens', '20', '--json', '--threads', '1');
  assert.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  assert.deepEqual(out.prompt_ids, reference.prompt_ids);
  assert.deepEqual(out.output_ids, reference.greedy_ids.slice(reference.prompt_ids.length, reference.prompt_ids.length + 20));
  assert.equal(typeof out.text, 'string');
  for (const key of ['timeToFirstTokenMs', 'prefillTokensPerSecond', 'decodeTokensPerSecond', 'kvCacheBytes']) {
    assert.ok(Number.isFinite(out.timings[key]) && out.timings[key] > 0, `timings.${key} = ${out.timings[key]}`);
  }
});

test('generate --dtype q8 gives the bundled model\'s reference greedy continuation', () => {
  const r = fastkv('generate', '--prompt', reference.prompt, '--max-tokens', '20', '--json', '--threads', '1', '--dtype', 'q8');
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout).output_ids, reference.greedy_ids.slice(reference.prompt_ids.length, reference.prompt_ids.length + 20));
});

test('generate streams text to stdout', () => {
  const r = fastkv('generate', '--prompt', reference.prompt, '--max-tokens', '30', '--threads', '1');
  assert.equal(r.code, 0, r.stderr);
  assert.ok(reference.greedy_text.startsWith(reference.prompt + r.stdout.trimEnd()), r.stdout);
  assert.match(r.stderr, /TTFT/);
});

test('bin/fastkv.js is an executable entry point that starts the compiled CLI', () => {
  const bin = path.join(ROOT, 'bin', 'fastkv.js');
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
  assert.equal(pkg.bin.fastkv, 'bin/fastkv.js');
  assert.ok(fs.readFileSync(bin, 'utf8').startsWith('#!/usr/bin/env node\n'), 'shebang');
  assert.equal(fs.statSync(bin).mode & 0o111, 0o111, 'execute bits');
  // Run as the shell would (no `node` in front), so the shebang and the mode are what make it start.
  const r = spawnSync(bin, ['--version'], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, `fastkv ${pkg.version}\n`);
});

test('help describes every option', () => {
  const top = fastkv('--help');
  assert.equal(top.code, 0);
  assert.match(top.stdout, /generate/);
  const help = fastkv('generate', '--help');
  for (const flag of ['--model', '--prompt', '--prompt-file', '--chat', '--max-tokens', '--temperature', '--top-p', '--top-k', '--seed', '--threads', '--dtype', '--json', '--method']) {
    assert.ok(help.stdout.includes(flag), `generate --help lacks ${flag}`);
  }
  assert.match(help.stdout, /--context FILE/);
  const compress = fastkv('compress', '--help');
  for (const flag of ['--prompt-file', '--out', '--chat', '--method', '--retain-rate']) assert.ok(compress.stdout.includes(flag), `compress --help lacks ${flag}`);
  const serve = fastkv('help', 'serve');
  for (const flag of ['--host', '--port', '--api-key', '--parallel', '--max-queue', '--max-prompt-tokens', '--max-body-bytes', '--context-dir', '--cors', '--method']) {
    assert.ok(serve.stdout.includes(flag), `serve --help lacks ${flag}`);
  }
});

test('bad input gets an error that names it', () => {
  const cases: [string[], RegExp][] = [
    [['generate', '--prompt', 'x', '--model', '/nonexistent/model'], /\/nonexistent\/model/],
    [['generate', '--prompt', 'x', '--temperature', 'hot'], /--temperature/],
    [['generate', '--prompt', 'x', '--top-p', '1.5'], /topP|top-p/],
    [['generate'], /--prompt/],
    [['generate', '--prompt-file', '/nonexistent/prompt.txt'], /prompt\.txt/],
    [['generate', '--prompt', 'x', '--bogus'], /bogus/],
    [['generate', '--prompt', 'x', '--method', 'nosuch'], /nosuch/],
    [['generate', '--prompt', 'x', '--dtype', 'q5'], /--dtype must be one of fp32, q8, q4, int8, got "q5"/],
    [['generate', '--prompt', 'x', '--dtype', 'q8,q4'], /--dtype takes one of/],
    [['bench', '--dtype', 'q8,q8'], /--dtype lists a format twice/],
    [['eval', 'fidelity', '--text', 'README.md', '--reference-dtype', 'f16'], /--dtype must be one of/],
    [['generate', '--prompt', 'x', '--threads', '100000'], /--threads must be <= 256/],
    [['frobnicate'], /frobnicate/],
  ];
  for (const [args, pattern] of cases) {
    const r = fastkv(...args);
    assert.notEqual(r.code, 0, `${args.join(' ')} should fail`);
    assert.match(r.stderr, pattern, `${args.join(' ')}: ${r.stderr}`);
    assert.doesNotMatch(r.stderr, /unexpected error/, r.stderr);
  }
});

test('a prompt longer than the context limit is refused with both numbers', () => {
  const long = 'Once upon a time there was a cat. '.repeat(80);
  const r = fastkv('generate', '--prompt', long, '--max-tokens', '1');
  assert.equal(r.code, 2);
  assert.match(r.stderr, /more than the limit of 512/);
});

test('compress saves a context that generate --context continues as if given the whole prompt', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fastkv-cli-context-'));
  const doc = path.join(dir, 'doc.txt');
  fs.writeFileSync(doc, reference.prompt);
  const out = path.join(dir, 'doc.kv');
  const c = fastkv('compress', '--prompt-file', doc, '--out', out, '--threads', '1');
  assert.equal(c.code, 0, c.stderr);
  assert.match(c.stdout, new RegExp(`\\[full\\] ${reference.prompt_ids.length} tokens, KV cache [0-9.]+ KiB, TTFT \\(prefill\\) [0-9.]+ ms`));
  const r = fastkv('generate', '--context', out, '--prompt', '', '--max-tokens', '20', '--json', '--threads', '1');
  assert.equal(r.code, 0, r.stderr);
  const json = JSON.parse(r.stdout);
  assert.equal(json.context_tokens, reference.prompt_ids.length);
  assert.deepEqual(json.output_ids, reference.greedy_ids.slice(reference.prompt_ids.length, reference.prompt_ids.length + 20));

  const bad: [string[], RegExp][] = [
    [['compress', '--prompt', 'x', '--out', path.join(dir, 'missing', 'x.kv')], /folder .*missing does not exist/],
    [['compress', '--prompt', 'x'], /--out/],
    [['generate', '--context', out, '--prompt', 'x', '--method', 'snapkv'], /leave out --method/],
    [['generate', '--context', doc, '--prompt', 'x'], /doc\.txt/],
    [['compress', '--prompt', 'x', '--out', path.join(dir, 'q9.kv'), '--dtype', 'q9'], /--dtype/],
  ];
  for (const [args, pattern] of bad) {
    const e = fastkv(...args);
    assert.notEqual(e.code, 0, `${args.join(' ')} should fail`);
    assert.match(e.stderr, pattern);
    assert.doesNotMatch(e.stderr, /unexpected error/);
  }

  // A context compressed at q8 continues at q8 only: the weight format is part of the model's fingerprint.
  const q8 = path.join(dir, 'doc-q8.kv');
  assert.equal(fastkv('compress', '--prompt-file', doc, '--out', q8, '--threads', '1', '--dtype', 'q8').code, 0);
  const same = fastkv('generate', '--context', q8, '--prompt', '', '--max-tokens', '3', '--threads', '1', '--dtype', 'q8');
  assert.equal(same.code, 0, same.stderr);
  const other = fastkv('generate', '--context', q8, '--prompt', '', '--max-tokens', '3', '--threads', '1');
  assert.notEqual(other.code, 0);
  assert.match(other.stderr, /saved from another model/);
  fs.rmSync(dir, { recursive: true, force: true });
});

/** Runs the CLI with a shell (pipes, FIFOs); returns code and output. */
function shell(command: string, timeout = 60_000) {
  const r = spawnSync('bash', ['-c', command], { encoding: 'utf8', timeout, env: { ...process.env, FASTKV: `${process.execPath} ${CLI}` } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr, signal: r.signal };
}

test('non-regular and endless input is refused at once: /dev/zero, a FIFO, endless stdin, --text /dev/zero', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fastkv-cli-'));
  try {
    const fifo = path.join(tmp, 'fifo');
    spawnSync('mkfifo', [fifo]);
    const cases: [string[], RegExp][] = [
      [['generate', '--prompt-file', '/dev/zero'], /--prompt-file "\/dev\/zero" is not a regular file \(a character device\)/],
      [['generate', '--prompt-file', fifo], /is not a regular file \(a FIFO\)/],
      [['eval', 'fidelity', '--text', '/dev/zero'], /--text "\/dev\/zero" is not a regular file/],
      [['generate', '--prompt', 'x', '--model', tmp], /config\.json/],
    ];
    for (const [args, pattern] of cases) {
      const r = fastkv(...args);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, pattern);
    }
    fs.symlinkSync('/dev/zero', path.join(tmp, 'config.json'));
    const link = fastkv('generate', '--prompt', 'x', '--model', tmp);
    assert.match(link.stderr, /config\.json is not a regular file/);
    fs.rmSync(path.join(tmp, 'config.json'));
    spawnSync('mkfifo', [path.join(tmp, 'config.json')]);
    const blocked = fastkv('generate', '--prompt', 'x', '--model', tmp);
    assert.match(blocked.stderr, /config\.json is not a regular file \(a FIFO\)/);
    const endless = shell('head -c 300000000 /dev/zero | $FASTKV generate --prompt-file -');
    assert.equal(endless.code, 2, endless.stderr);
    assert.match(endless.stderr, /standard input\) is more than the limit of 268435456 bytes/);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});

test('names are own-property lookups; thread counts, stray method options and --system without --chat are refused', () => {
  const cases: [string[], RegExp][] = [
    [['generate', '--prompt', 'x', '--method', 'constructor'], /unknown compression method "constructor"/],
    [['generate', '--prompt', 'x', '--method', '__proto__'], /unknown compression method "__proto__"/],
    [['generate', '--prompt', 'x', '--method', 'toString'], /unknown compression method "toString"/],
    [['eval', 'valueOf'], /unknown eval subcommand "valueOf"/],
    [['bench', '--shape', 'toString'], /--shape must be one of/],
    [['eval', 'niah', '--preset', 'constructor'], /--preset must be one of/],
    [['generate', '--prompt', 'x', '--threads', '100000'], /--threads must be <= 256/],
    [['eval', 'fidelity', '--text', path.join(ROOT, 'data', 'stories-haystack.txt'), '--threads', '100000'], /--threads must be <= 256/],
    [['generate', '--prompt', 'x', '--budget', '10'], /--budget is an option of a compression method; give --method/],
    [['generate', '--prompt', 'x', '--system', 'Be kind.'], /--system needs --chat/],
    [['bench', '--budget', '10'], /--budget: method options need --methods/],
    [['bench', '--method', 'fastkv'], /--methods LIST/],
    [['bench', '--concurrency', '0'], /--concurrency: "0" is not an integer from 1 to 64/],
    [['bench', '--concurrency', '2,x'], /--concurrency: "x" is not/],
    [['bench', '--concurrency', '2', '--context-reuse'], /separate benchmarks/],
    [['eval', 'niah', '--answer', ''], /--answer must not be empty/],
  ];
  for (const [args, pattern] of cases) {
    const r = fastkv(...args);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, pattern, `${args.join(' ')}: ${r.stderr}`);
    assert.doesNotMatch(r.stderr, /unexpected error|TypeError|    at /, r.stderr);
  }
  const cmd = fastkv('constructor');
  assert.equal(cmd.code, 2);
  assert.match(cmd.stderr, /unknown command "constructor"/);
});

test('bench --concurrency: one sequence and more decode together, per method, as JSON', () => {
  const r = fastkv('bench', '--model', path.join(ROOT, 'test', 'fixtures', 'retrieval-3M'), '--concurrency', '3', '--lengths', '96',
    '--decode-tokens', '4', '--threads', '1', '--json', '-');
  assert.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout) as { results: { method: string; concurrency: number; aggregateTokensPerSecond: number; meanBatch: number; kvBytes: number }[] };
  assert.deepEqual(out.results.map((x) => `${x.method}:${x.concurrency}`), ['full:1', 'full:3', 'fastkv:1', 'fastkv:3']);
  for (const x of out.results) {
    assert.ok(x.aggregateTokensPerSecond > 0, JSON.stringify(x));
    assert.equal(x.meanBatch, x.concurrency, 'every step served every sequence');
  }
  const kv = (m: string, c: number) => out.results.find((x) => x.method === m && x.concurrency === c)!.kvBytes;
  assert.ok(kv('full', 3) > 2.9 * kv('full', 1) && kv('fastkv', 3) < kv('full', 3), 'KV bytes add up per sequence; fastkv holds less');
});

test('piping output into head ends quietly, without an EPIPE stack', () => {
  const r = shell(`$FASTKV generate --prompt ${JSON.stringify(reference.prompt)} --max-tokens 200 --threads 1 | head -c 1`);
  assert.equal(r.code, 0);
  assert.doesNotMatch(r.stderr, /EPIPE|unexpected error/, r.stderr);
});

test('output paths are checked before the work, and results on disk are kept unless --force', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fastkv-cli-'));
  try {
    const existing = path.join(tmp, 'results.json');
    fs.writeFileSync(existing, 'precious');
    const cases: [string[], RegExp][] = [
      [['bench', '--json', tmp, '--lengths', '8'], /--json .* is a folder/],
      [['bench', '--json', path.join(tmp, 'missing', 'x.json'), '--lengths', '8'], /the folder .*missing does not exist/],
      [['bench', '--json', existing, '--lengths', '8'], /already exists; pass --force/],
      [['eval', 'longbench', '--data', path.join(ROOT, 'test', 'fixtures', 'longbench'), '--out', existing], /exists and is not a folder/],
      [['eval', 'longbench', '--data', path.join(ROOT, 'test', 'fixtures', 'longbench'), '--out', tmp], /results\.json .*already exists; pass --force/],
      [['eval', 'fidelity', '--text', path.join(ROOT, 'data', 'stories-haystack.txt'), '--out', existing], /exists and is not a folder/],
    ];
    for (const [args, pattern] of cases) {
      const t0 = Date.now();
      const r = fastkv(...args);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, pattern, `${args.join(' ')}: ${r.stderr}`);
      assert.ok(Date.now() - t0 < 20_000, 'refused before the work');
    }
    assert.equal(fs.readFileSync(existing, 'utf8'), 'precious');
    const out = path.join(tmp, 'f');
    const args = ['eval', 'fidelity', '--text', path.join(ROOT, 'data', 'stories-haystack.txt'), '--context', '32',
      '--continuation', '4', '--methods', 'full', '--threads', '1', '--out', out];
    assert.equal(fastkv(...args).code, 0);
    const again = fastkv(...args);
    assert.equal(again.code, 2);
    assert.match(again.stderr, /fidelity\.json .*already exists/);
    assert.equal(fastkv(...args, '--force').code, 0);
    assert.deepEqual(fs.readdirSync(out), ['fidelity.json'], 'no temporary file left behind');
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});

test('generate --json with adakv reports per-head kept counts where heads differ; headkv without scores says how to make them', () => {
  const prompt = fs.readFileSync(path.join(ROOT, 'data', 'stories-haystack.txt'), 'utf8').slice(0, 900);
  const r = fastkv('generate', '--prompt', prompt, '--max-tokens', '2', '--json', '--threads', '1', '--method', 'adakv', '--budget', '40', '--floor-alpha', '0.1');
  assert.equal(r.code, 0, r.stderr);
  const layers: { rows: number; kept_per_kv_head: number | number[] }[] = JSON.parse(r.stdout).layers;
  assert.ok(layers.some((l) => Array.isArray(l.kept_per_kv_head)), JSON.stringify(layers));
  for (const l of layers) if (Array.isArray(l.kept_per_kv_head)) assert.equal(l.kept_per_kv_head.length, 4);
  const missing = fastkv('generate', '--prompt', 'x', '--method', 'headkv');
  assert.notEqual(missing.code, 0);
  assert.match(missing.stderr, /fastkv profile-heads/);
});

test('calibrate writes a calibration that generate --tsp-layer auto uses; without one the error says how to make it', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fastkv-cli-cal-'));
  const file = path.join(dir, 'cal.json');
  const missing = fastkv('generate', '--prompt', 'Once upon a time', '--max-tokens', '2', '--method', 'fastkv', '--tsp-layer', 'auto', '--calibration', file);
  assert.notEqual(missing.code, 0);
  assert.match(missing.stderr, /fastkv calibrate/);
  const cal = fastkv('calibrate', '--samples', '1', '--length', '200', '--out', file, '--threads', '1');
  assert.equal(cal.code, 0, cal.stderr);
  assert.match(cal.stdout, /chosen TSP layer: \d/);
  const again = fastkv('calibrate', '--samples', '1', '--length', '200', '--out', file);
  assert.notEqual(again.code, 0, 'an existing --out is not overwritten without --force');
  assert.match(again.stderr, /--force/);
  const r = fastkv('generate', '--prompt', 'Once upon a time', '--max-tokens', '2', '--method', 'fastkv', '--tsp-layer', 'auto', '--calibration', file, '--json', '--threads', '1');
  assert.equal(r.code, 0, r.stderr);
});
