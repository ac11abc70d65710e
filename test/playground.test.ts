/** The playground page in a real headless Chromium (Debian's `chromium`, driven by playwright-core). */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium, type BrowserContext } from 'playwright-core';
import { Model } from '../src/engine/model.js';
import { generate } from '../src/engine/generate.js';
import { compressContext } from '../src/engine/context.js';
import { createServer, type FastKVServer } from '../src/serve/server.js';
import { STORIES, storyText } from './helpers.js';

const CHROMIUM = '/usr/bin/chromium';
const KEY = 'playground-key';
let model: Model;
let server: FastKVServer;
let base: string;
let browser: BrowserContext;

before(async () => {
  if (!fs.existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} is missing: install Debian's chromium package (scripts/ci-deps.sh does, and .ci/run calls it)`);
  }
  model = await Model.load(STORIES, { threads: 1 });
  server = await createServer({ model, apiKey: KEY });
  base = `http://127.0.0.1:${(await server.listen(0, '127.0.0.1')).port}`;
  browser = await chromium.launchPersistentContext(fs.mkdtempSync(path.join(os.tmpdir(), 'fastkv-chromium-')), {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
});
after(async () => {
  await browser?.close();
  await server?.close();
  await model?.dispose();
});

test('the page builds a context from a document, streams the answer to a question, and shows TTFT, KV bytes and layers', { timeout: 120_000 }, async () => {
  const page = await browser.newPage();
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(base);
  assert.equal(await page.title(), 'fastkv playground');
  const text = storyText(900);
  const question = 'What happened at the end?';
  await page.fill('#api-key', KEY);
  // The document arrives as a file dropped on the text box.
  const dropped = await page.evaluateHandle((content) => {
    const transfer = new DataTransfer();
    transfer.items.add(new File([content], 'story.txt', { type: 'text/plain' }));
    return transfer;
  }, text);
  await page.dispatchEvent('#document', 'drop', { dataTransfer: dropped });
  await page.waitForFunction((n) => (document.getElementById('document') as HTMLTextAreaElement).value.length === n, text.length);
  await page.selectOption('#method', 'fastkv');
  await page.fill('#retain-rate', '0.3');
  await page.fill('#tsp-rate', '0.5');
  await page.fill('#max-tokens', '40');
  await page.fill('#question', question);
  // Count the answer's updates, to see it arrive in pieces rather than at once.
  await page.evaluate(() => {
    const w = window as unknown as { updates: number };
    w.updates = 0;
    new MutationObserver(() => { w.updates++; }).observe(document.getElementById('answer')!, { childList: true, characterData: true, subtree: true });
  });
  await page.click('#ask');
  await page.waitForFunction(() => ['Done.', 'Error'].some((s) => document.getElementById('status')!.textContent!.startsWith(s)), null, { timeout: 60_000 });
  assert.equal(await page.textContent('#status'), 'Done.');

  const ctx = await compressContext(model, { messages: [{ role: 'user', content: text }] }, { compression: { method: 'fastkv', retainRate: 0.3, tspRate: 0.5 } });
  const expected = await generate(model, { messages: [{ role: 'user', content: question }] }, { context: ctx, maxTokens: 40, temperature: 0 });
  assert.equal(await page.textContent('#answer'), expected.text);
  assert.ok(await page.evaluate(() => (window as unknown as { updates: number }).updates) > 1, 'the answer streamed in pieces');
  assert.match((await page.textContent('#ttft'))!, /^[0-9.]+ ms on the server, [0-9.]+ ms here$/);
  assert.match((await page.textContent('#kv-bytes'))!, new RegExp(`^${(expected.timings.kvCacheBytesAfterPrefill / 1024).toFixed(1)} KiB after prefill \\(fastkv\\), ${(expected.timings.kvCacheBytes / 1024).toFixed(1)} KiB at the end$`));
  assert.match((await page.textContent('#context-info'))!, new RegExp(`${ctx.tokens} tokens, fastkv`));
  const layers = await page.$$eval('#layers .row span', (rows) => rows.map((r) => r.textContent));
  assert.deepEqual(layers, ctx.layers.map((l, i) => `layer ${String(i).padStart(2)}: ${l.rows} tokens processed, ${l.kept} kept per KV head`));
  assert.deepEqual(errors, []);
});
