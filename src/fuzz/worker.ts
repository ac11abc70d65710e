/**
 * A fuzz worker process: sets up the targets' fixtures once, then runs the cases the runner sends over IPC and
 * reports each outcome. Run as a separate process so that a crash, a hang or runaway memory in a case is observed
 * (and the process replaced) by the runner rather than taking it down.
 * @module
 */
import fs from 'node:fs';
import { FastKVError } from '../errors.js';
import { TARGETS } from './targets.js';
import { Rng, caseSeed } from './values.js';

export interface CaseRequest { target: string; seed: number; index: number }
export interface CaseReply { outcome: 'ok' | 'error' | 'crash' | 'wrong' | 'nan'; detail?: string; rssBytes: number }

const workDir = process.argv[2];
fs.mkdirSync(workDir, { recursive: true });
// Relative paths the CLI target makes up (`--out 1.5`) must land in the scratch folder, not the repository.
process.chdir(workDir);
const fixtures = new Map<string, Promise<unknown>>();

// The CLI target runs commands in-process: their output is not the point, and must not reach the runner.
process.stdout.write = (() => true) as typeof process.stdout.write;
process.stderr.write = (() => true) as typeof process.stderr.write;
process.removeAllListeners('warning');

async function runCase(req: CaseRequest): Promise<CaseReply> {
  const target = TARGETS.find((t) => t.name === req.target);
  if (!target) return { outcome: 'crash', detail: `no target ${req.target}`, rssBytes: process.memoryUsage().rss };
  let fixture = fixtures.get(target.name);
  if (!fixture) { fixture = target.setup(workDir); fixtures.set(target.name, fixture); }
  try {
    const verdict = await target.run(await fixture, new Rng(caseSeed(req.seed, req.target, req.index)));
    return { ...verdict, rssBytes: process.memoryUsage().rss };
  } catch (e) {
    const clean = e instanceof FastKVError
      || (e instanceof TypeError && String((e as { code?: unknown }).code ?? '').startsWith('ERR_PARSE_ARGS'));
    return { outcome: clean ? 'error' : 'crash', detail: clean ? (e as Error).message.slice(0, 300) : String((e as Error)?.stack ?? e).slice(0, 1500), rssBytes: process.memoryUsage().rss };
  }
}

process.on('message', (req: CaseRequest) => {
  runCase(req).then((reply) => process.send!(reply), (e) => process.send!({ outcome: 'crash', detail: String(e), rssBytes: 0 }));
});
process.on('unhandledRejection', (e) => {
  process.send?.({ outcome: 'crash', detail: `unhandled rejection: ${String((e as Error)?.stack ?? e).slice(0, 1500)}`, rssBytes: 0 });
});
process.send!({ ready: true });
