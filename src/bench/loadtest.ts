/**
 * `npm run loadtest`: a bounded loopback load test of `fastkv serve` on the bundled stories260K. It starts the
 * server as a child process, sends `--requests` requests from `--concurrency` clients (chat and completions,
 * streamed and not, compression methods in turn, and every tenth client disconnecting mid-stream), and reports
 * failures (anything but 200, and the 429s a full queue answers), p50/p99 latency, and the server's RSS after
 * the first 100 requests and at the end. Exits 1 on any failure or when RSS grew more than 10%.
 * @module
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { numberFlag } from '../cli/args.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const METHODS: readonly (Record<string, unknown> | null)[] = [
  null, { method: 'fastkv', retain_rate: 0.3, tsp_rate: 0.5 }, { method: 'snapkv', retain_rate: 0.3 },
  { method: 'streamingllm', retain_rate: 0.3 }, { method: 'h2o', retain_rate: 0.3 }, { method: 'gemfilter', retain_rate: 0.3 },
];

type Outcome = 'ok' | 'busy' | 'disconnected' | 'failed';

function rssBytes(pid: number): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /VmRSS:\s+(\d+) kB/.exec(status);
  if (!m) throw new Error(`no VmRSS in /proc/${pid}/status`);
  return Number(m[1]) * 1024;
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      requests: { type: 'string' }, concurrency: { type: 'string' }, parallel: { type: 'string' },
      'max-queue': { type: 'string' }, 'max-tokens': { type: 'string' }, 'time-limit': { type: 'string' },
      json: { type: 'string' },
    },
  });
  const total = numberFlag(values, 'requests', { integer: true, min: 100 }) ?? 1000;
  const concurrency = numberFlag(values, 'concurrency', { integer: true, min: 1 }) ?? 8;
  const parallel = numberFlag(values, 'parallel', { integer: true, min: 1 }) ?? 2;
  const maxQueue = numberFlag(values, 'max-queue', { integer: true, min: 0 }) ?? 5;
  const maxTokens = numberFlag(values, 'max-tokens', { integer: true, min: 1 }) ?? 16;
  const timeLimitS = numberFlag(values, 'time-limit', { min: 1 }) ?? 600;
  const haystack = fs.readFileSync(path.join(ROOT, 'data', 'stories-haystack.txt'), 'utf8');

  const server = spawn(process.execPath, [path.join(ROOT, 'dist', 'src', 'cli', 'main.js'), 'serve', '--port', '0', '--threads', '1',
    '--quiet', '--parallel', String(parallel), '--max-queue', String(maxQueue)], { stdio: ['ignore', 'pipe', 'inherit'] });
  const base = await new Promise<string>((resolve, reject) => {
    let out = '';
    server.stdout!.on('data', (d) => {
      out += d;
      const m = /on (http:\/\/127\.0\.0\.1:\d+)/.exec(out);
      if (m) resolve(m[1]);
    });
    server.on('exit', (code) => reject(new Error(`the server exited (${code}) before listening`)));
  });

  const deadline = Date.now() + timeLimitS * 1000;
  const latencies: number[] = [];
  const counts: Record<Outcome, number> = { ok: 0, busy: 0, disconnected: 0, failed: 0 };
  const failures: string[] = [];
  let rssAfter100 = 0;
  let next = 0;
  let finished = 0;

  async function one(i: number): Promise<Outcome> {
    const chat = i % 2 === 0;
    const streamed = i % 3 !== 0;
    const disconnect = i % 10 === 7;
    const start = (i * 997) % (haystack.length - 1500);
    const prompt = haystack.slice(start, start + 100 + ((i * 131) % 700)); // 40 to 330 tokens
    const body: Record<string, unknown> = {
      max_tokens: maxTokens, temperature: i % 4 === 0 ? 0.8 : 0, seed: i, stream: streamed || disconnect,
      ...(chat ? { messages: [{ role: 'user', content: prompt }] } : { prompt }),
    };
    const method = METHODS[i % METHODS.length];
    if (method) body.kv_compression = method;
    const controller = new AbortController();
    const t0 = performance.now();
    try {
      const r = await fetch(`${base}/v1/${chat ? 'chat/completions' : 'completions'}`, {
        method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), signal: controller.signal,
      });
      if (r.status === 429) {
        // As a polite client does: wait as long as Retry-After says before the next request.
        await r.text();
        await new Promise((resolve) => setTimeout(resolve, 1000 * Number(r.headers.get('retry-after') ?? 1)));
        return 'busy';
      }
      if (r.status !== 200) { failures.push(`#${i}: HTTP ${r.status} ${await r.text()}`); return 'failed'; }
      if (!body.stream) {
        const json = await r.json();
        if (!json.choices?.[0]?.finish_reason) { failures.push(`#${i}: no finish_reason`); return 'failed'; }
      } else {
        const reader = r.body!.getReader();
        let text = '';
        let events = 0;
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          text += Buffer.from(value).toString('utf8');
          events = text.split('\n\n').length - 1;
          if (disconnect && events >= 2) { controller.abort(); return 'disconnected'; }
        }
        if (!text.endsWith('data: [DONE]\n\n')) { failures.push(`#${i}: the stream did not end with [DONE]`); return 'failed'; }
        if (/"error":/.test(text)) { failures.push(`#${i}: ${text.slice(text.indexOf('"error":'), 300)}`); return 'failed'; }
      }
      latencies.push(performance.now() - t0);
      return 'ok';
    } catch (e) {
      if (disconnect && controller.signal.aborted) return 'disconnected';
      failures.push(`#${i}: ${(e as Error).message}`);
      return 'failed';
    }
  }

  const t0 = performance.now();
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < total && Date.now() < deadline) {
      const i = next++;
      counts[await one(i)]++;
      if (++finished === 100) rssAfter100 = rssBytes(server.pid!);
    }
  }));
  const wallS = (performance.now() - t0) / 1000;
  // Let the server finish cancelled generations before the last RSS reading.
  await new Promise((r) => setTimeout(r, 500));
  const rssEnd = rssBytes(server.pid!);
  server.kill('SIGTERM');
  const exitCode = await new Promise<number | null>((resolve) => server.on('exit', resolve));

  latencies.sort((a, b) => a - b);
  const growth = rssEnd / rssAfter100 - 1;
  const result = {
    requests: finished, concurrency, parallel, max_queue: maxQueue, max_tokens: maxTokens, wall_s: wallS,
    ok: counts.ok, busy_429: counts.busy, disconnected: counts.disconnected, failed: counts.failed,
    p50_ms: percentile(latencies, 50), p99_ms: percentile(latencies, 99),
    rss_after_100_mib: rssAfter100 / 2 ** 20, rss_end_mib: rssEnd / 2 ** 20, rss_growth_pct: growth * 100,
    server_exit_code: exitCode,
  };
  const MiB = (x: number) => x.toFixed(1);
  process.stdout.write([
    `| requests | concurrency | ok | 429 | disconnected | failed | p50 ms | p99 ms | RSS after 100 | RSS at end | growth |`,
    `| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |`,
    `| ${finished} | ${concurrency} | ${counts.ok} | ${counts.busy} | ${counts.disconnected} | ${counts.failed} | ` +
      `${result.p50_ms.toFixed(1)} | ${result.p99_ms.toFixed(1)} | ${MiB(result.rss_after_100_mib)} MiB | ${MiB(result.rss_end_mib)} MiB | ` +
      `${result.rss_growth_pct.toFixed(1)}% |`,
    `(${wallS.toFixed(1)} s; server --parallel ${parallel} --max-queue ${maxQueue}, max_tokens ${maxTokens}; server exit code ${exitCode})`,
    '',
  ].join('\n'));
  if (values.json) fs.writeFileSync(values.json, JSON.stringify(result, null, 2) + '\n');
  for (const f of failures.slice(0, 10)) process.stderr.write(`failure ${f}\n`);
  const ok = counts.failed === 0 && finished === total && growth <= 0.1 && exitCode === 0;
  if (!ok) process.stderr.write(`loadtest FAILED: ${counts.failed} failures, ${finished}/${total} requests, RSS growth ${(growth * 100).toFixed(1)}%\n`);
  process.exitCode = ok ? 0 : 1;
}

main().catch((e: unknown) => {
  process.stderr.write(`loadtest: ${(e as Error)?.stack ?? String(e)}\n`);
  process.exitCode = 1;
});
