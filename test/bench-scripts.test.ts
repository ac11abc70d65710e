/** The measurement scripts under `dist/src/bench/` that are not `fastkv bench` subcommands: they run, and what they compare agrees. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { FIXTURES, ROOT, STORIES } from './helpers.js';

function script(name: string, ...args: string[]) {
  const r = spawnSync(process.execPath, [path.join(ROOT, 'dist', 'src', 'bench', name), ...args], { encoding: 'utf8', timeout: 120_000 });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout);
}

test('prefill-attention.js: every way of running prefill attention gives the first way\'s output, at every length', () => {
  const out = script('prefill-attention.js', '--model', path.join(FIXTURES, 'tiny-llama3'), '--lengths', '200,333', '--blocks', '64,100',
    '--matmul-block', '50', '--repeats', '1', '--threads', '1', '--json');
  const ways = out.results.map((r: { length: number; way: string }) => `${r.length} ${r.way}`);
  assert.deepEqual(ways.filter((w: string) => w.startsWith('333')), [
    '333 GQA, one run, no arena', '333 GQA, one run', '333 GQA, blocks of 64', '333 GQA, blocks of 100', '333 MatMul blocks of 50']);
  for (const r of out.results) {
    assert.ok(r.maxDifference < 1e-5, `${r.length} tokens, ${r.way}: differs from one run by ${r.maxDifference}`);
    assert.ok(r.gflops > 0 && Number.isFinite(r.percentOfMatmul));
  }
});

test('threads.js: one decode measurement per load, thread count and spinning setting', () => {
  const out = script('threads.js', '--model', STORIES, '--dtype', 'fp32', '--length', '32', '--steps', '1', '--threads', '1,2', '--json');
  assert.deepEqual(out.results.map((r: { load: string; threads: number; spinning: boolean }) => `${r.load}/${r.threads}/${r.spinning}`), [
    'idle/1/false', 'idle/1/true', 'idle/2/false', 'idle/2/true',
    'one busy process/1/false', 'one busy process/1/true', 'one busy process/2/false', 'one busy process/2/true']);
  for (const r of out.results) assert.ok(r.tokensPerSecond > 0 && r.runOverheadUs > 0, JSON.stringify(r));
});
