/**
 * Runs fuzz cases in worker processes and classifies every outcome: a clean named error, a correct run, or a
 * finding: a crash (any other exception, or a worker that died), a wrong answer the oracle caught, a hang (no answer
 * within the time limit), runaway memory (the worker's resident memory over the limit), or NaN logits that went
 * undetected. A worker that hangs or grows too large is killed and replaced.
 * @module
 */
import { fork, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { TARGETS } from './targets.js';
import type { CaseReply, CaseRequest } from './worker.js';

export const OUTCOMES = ['ok', 'error', 'crash', 'wrong', 'hang', 'memory', 'nan'] as const;
export type Outcome = typeof OUTCOMES[number];
/** Outcomes that fail the suite. */
export const FINDINGS: readonly Outcome[] = ['crash', 'wrong', 'hang', 'memory', 'nan'];

export interface FuzzOptions {
  /** Cases in all, spread evenly over the targets. */
  cases: number;
  seed: number;
  targets?: readonly string[];
  /** Per case (ms); a case that takes longer is a hang. */
  timeoutMs?: number;
  /** Resident memory a worker may reach (bytes). */
  memoryBytes?: number;
  /** Worker processes run in parallel (default 1). */
  workers?: number;
  /** After each case, with the counts and findings so far. */
  onProgress?: (done: number, total: number, soFar: Pick<FuzzReport, 'counts' | 'findings' | 'slowest'>) => void;
}

export interface Finding { target: string; index: number; outcome: Outcome; detail: string }
export interface FuzzReport {
  seed: number;
  cases: number;
  counts: Record<string, Record<Outcome, number>>;
  findings: Finding[];
  /** Per target, the most frequent clean error messages (numbers and paths blurred) and how often each came. */
  errors: Record<string, [string, number][]>;
  /** The slowest cases: target, index, seconds. */
  slowest: [string, number, number][];
  seconds: number;
}

const WORKER = path.join(path.dirname(fileURLToPath(import.meta.url)), 'worker.js');

class Worker {
  child!: ChildProcess;
  ready!: Promise<void>;
  stderr = '';
  constructor(private readonly workDir: string) { this.start(); }

  start(): void {
    this.stderr = '';
    this.child = fork(WORKER, [this.workDir], { silent: true, execArgv: ['--max-old-space-size=2048'] });
    this.child.stderr?.on('data', (d: Buffer) => { this.stderr = (this.stderr + d.toString()).slice(-2000); });
    this.child.stdout?.resume();
    this.ready = new Promise((resolve, reject) => {
      this.child.once('message', () => resolve());
      this.child.once('exit', (code) => reject(new Error(`fuzz worker exited at start (${code}): ${this.stderr}`)));
    });
  }

  /** Resident memory of the worker (Linux /proc; 0 elsewhere). */
  rss(): number {
    try {
      const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${this.child.pid}/status`, 'utf8'));
      return m ? Number(m[1]) * 1024 : 0;
    } catch { return 0; }
  }

  async run(req: CaseRequest, timeoutMs: number, memoryBytes: number): Promise<{ outcome: Outcome; detail: string }> {
    await this.ready;
    return new Promise((resolve) => {
      let settled = false;
      const finish = (outcome: Outcome, detail: string, restart: boolean) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        clearInterval(watch);
        this.child.off('message', onMessage);
        this.child.off('exit', onExit);
        if (restart) {
          this.child.removeAllListeners('exit');
          this.child.kill('SIGKILL');
          this.start();
        }
        resolve({ outcome, detail });
      };
      const onMessage = (reply: CaseReply) => finish(reply.outcome, reply.detail ?? '', false);
      const onExit = (code: number | null, signal: string | null) =>
        finish('crash', `worker died (exit ${code}, signal ${signal}): ${this.stderr.slice(-600)}`, true);
      const timer = setTimeout(() => finish('hang', `no answer within ${timeoutMs} ms`, true), timeoutMs);
      const watch = setInterval(() => {
        const rss = this.rss();
        if (rss > memoryBytes) finish('memory', `worker resident memory ${(rss / 2 ** 20).toFixed(0)} MiB > ${(memoryBytes / 2 ** 20).toFixed(0)} MiB`, true);
      }, 100);
      this.child.on('message', onMessage);
      this.child.once('exit', onExit);
      this.child.send(req);
    });
  }

  stop(): void {
    this.child.removeAllListeners('exit');
    this.child.kill('SIGKILL');
  }
}

/** Runs `cases` seeded cases round-robin over the targets; the same seed gives the same cases. */
export async function runFuzz(o: FuzzOptions): Promise<FuzzReport> {
  const names = o.targets ?? TARGETS.map((t) => t.name);
  for (const n of names) if (!TARGETS.some((t) => t.name === n)) throw new Error(`unknown fuzz target "${n}"; known: ${TARGETS.map((t) => t.name).join(', ')}`);
  const timeoutMs = o.timeoutMs ?? 30_000;
  const memoryBytes = o.memoryBytes ?? 3 * 2 ** 30;
  const t0 = performance.now();
  const counts: FuzzReport['counts'] = Object.fromEntries(names.map((n) => [n, Object.fromEntries(OUTCOMES.map((k) => [k, 0])) as Record<Outcome, number>]));
  const findings: Finding[] = [];
  const slowest: [string, number, number][] = [];
  const errorKinds: Record<string, Map<string, number>> = Object.fromEntries(names.map((n) => [n, new Map()]));
  const queue: CaseRequest[] = Array.from({ length: o.cases }, (_, i) => ({ target: names[i % names.length], seed: o.seed, index: Math.floor(i / names.length) }));
  const total = queue.length;
  let done = 0;
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'fastkv-fuzz-'));
  const workers = Array.from({ length: Math.max(1, o.workers ?? 1) }, (_, i) => new Worker(path.join(root, `w${i}`)));
  try {
    await Promise.all(workers.map(async (w) => {
      for (let req = queue.shift(); req !== undefined; req = queue.shift()) {
        const started = performance.now();
        const { outcome, detail } = await w.run(req, timeoutMs, memoryBytes);
        slowest.push([req.target, req.index, (performance.now() - started) / 1000]);
        slowest.sort((a, b) => b[2] - a[2]).splice(10);
        counts[req.target][outcome]++;
        if (FINDINGS.includes(outcome)) findings.push({ target: req.target, index: req.index, outcome, detail });
        if (outcome === 'error') {
          const key = detail.replace(/\/[^\s:"]+/g, 'PATH').replace(/-?\d[\d.e+-]*/g, 'N').slice(0, 100);
          errorKinds[req.target].set(key, (errorKinds[req.target].get(key) ?? 0) + 1);
        }
        o.onProgress?.(++done, total, { counts, findings, slowest });
      }
    }));
  } finally {
    for (const w of workers) w.stop();
    fs.rmSync(root, { recursive: true, force: true });
  }
  const errors = Object.fromEntries(names.map((n) => [n, [...errorKinds[n].entries()].sort((a, b) => b[1] - a[1]).slice(0, 12)]));
  return { seed: o.seed, cases: total, counts, findings, errors, slowest, seconds: (performance.now() - t0) / 1000 };
}
