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
    [['generate', '--prompt', 'x', '--dtype', 'q5'], /--dtype must be one of fp32, q8, q4, got "q5"/],
    [['generate', '--prompt', 'x', '--dtype', 'q8,q4'], /--dtype takes one of/],
    [['bench', '--dtype', 'q8,q8'], /--dtype lists a format twice/],
    [['eval', 'fidelity', '--text', 'README.md', '--reference-dtype', 'f16'], /--dtype must be one of/],
    [['generate', '--prompt', 'x', '--threads', '100000'], /threads must be an integer from 1 to/],
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
  ];
  for (const [args, pattern] of bad) {
    const e = fastkv(...args);
    assert.notEqual(e.code, 0, `${args.join(' ')} should fail`);
    assert.match(e.stderr, pattern);
    assert.doesNotMatch(e.stderr, /unexpected error/);
  }
});
