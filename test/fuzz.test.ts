/**
 * The fast, seeded part of the fuzz suite (the long run is `npm run fuzz -- --cases 10000`): mutated safetensors
 * files, config.json values, tokenizer files, library-API arguments and CLI flags. Every case must end in a clean
 * named error or a correct run; a crash, wrong answer, hang, runaway memory or undetected NaN fails.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runFuzz, FINDINGS } from '../src/fuzz/runner.js';

test('fuzz: 300 seeded cases over every target end in a clean error or a correct run', async () => {
  const report = await runFuzz({ cases: 300, seed: 20260101, timeoutMs: 60_000 });
  const findings = report.findings.filter((f) => FINDINGS.includes(f.outcome));
  assert.deepEqual(findings, [], findings.map((f) => `${f.outcome} ${f.target} #${f.index}: ${f.detail}`).join('\n'));
  for (const [target, counts] of Object.entries(report.counts)) {
    // Both kinds of input reach every target: some are refused, some run (else the mutations are too strong or too weak).
    assert.ok(counts.error > 0, `${target}: no input was refused`);
    assert.ok(counts.ok > 0, `${target}: no input ran`);
  }
});
