#!/usr/bin/env node
/**
 * `npm run fuzz -- --cases 10000 [--seed S] [--targets a,b] [--timeout MS] [--workers N] [--json FILE]`: the long
 * fuzz run. Prints the outcome counts per target and every finding; exits 1 if there is any.
 * @module
 */
import { parseArgs } from 'node:util';
import fs from 'node:fs';
import { formatTable } from '../report.js';
import { FINDINGS, OUTCOMES, runFuzz } from './runner.js';

const { values } = parseArgs({
  options: {
    cases: { type: 'string' }, seed: { type: 'string' }, targets: { type: 'string' }, timeout: { type: 'string' },
    workers: { type: 'string' }, json: { type: 'string' }, help: { type: 'boolean', short: 'h' },
  },
});
if (values.help) {
  process.stdout.write('Usage: npm run fuzz -- [--cases N (default 1000)] [--seed S (default 1)] [--targets safetensors,config,tokenizer,api,cli]\n' +
    '                      [--timeout MS per case (default 30000)] [--workers N (default 1)] [--json FILE]\n');
  process.exit(0);
}
const int = (v: string | undefined, def: number) => {
  const n = v === undefined ? def : Number(v);
  if (!Number.isSafeInteger(n) || n < 0) { process.stderr.write(`fuzz: expected a non-negative integer, got "${v}"\n`); process.exit(2); }
  return n;
};
const report = await runFuzz({
  cases: int(values.cases, 1000), seed: int(values.seed, 1), timeoutMs: int(values.timeout, 30_000), workers: Math.max(1, int(values.workers, 1)),
  targets: values.targets?.split(',').map((s) => s.trim()).filter(Boolean),
  onProgress: (done, total, soFar) => {
    if (done % 100 !== 0 && done !== total) return;
    process.stderr.write(`fuzz: ${done}/${total}\n`);
    // A long run that is stopped still leaves what it found.
    if (values.json && done % 500 === 0) fs.writeFileSync(values.json, `${JSON.stringify({ partial: true, done, ...soFar }, null, 2)}\n`);
  },
});
const rows = Object.entries(report.counts).map(([target, c]) => [target, ...OUTCOMES.map((k) => c[k])]);
rows.push(['total', ...OUTCOMES.map((k) => Object.values(report.counts).reduce((a, c) => a + c[k], 0))]);
process.stdout.write(`fuzz: ${report.cases} cases, seed ${report.seed}, ${report.seconds.toFixed(0)} s\n`);
process.stdout.write(formatTable(['target', ...OUTCOMES], rows));
process.stdout.write(`slowest cases: ${report.slowest.slice(0, 5).map(([t, i, sec]) => `${t} #${i} ${sec.toFixed(1)} s`).join(', ')}\n`);
for (const f of report.findings) process.stdout.write(`\n${f.outcome.toUpperCase()} ${f.target} #${f.index}: ${f.detail}\n`);
if (values.json) fs.writeFileSync(values.json, `${JSON.stringify(report, null, 2)}\n`);
process.exitCode = report.findings.some((f) => FINDINGS.includes(f.outcome)) ? 1 : 0;
