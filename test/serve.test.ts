/**
 * The server over loopback: the official `openai` client against a live server on 127.0.0.1 (answers equal the
 * library's), and raw HTTP for every error status.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import OpenAI from 'openai';
import { Model } from '../src/engine/model.js';
import { generate } from '../src/engine/generate.js';
import { compressContext } from '../src/engine/context.js';
import { createServer, type FastKVServer, type ServerOptions } from '../src/serve/server.js';
import { ROOT, STORIES, storyText } from './helpers.js';

const KEY = 'test-key-123';
let model: Model;
let server: FastKVServer;
let base: string;
let client: OpenAI;

async function start(options: Partial<ServerOptions> = {}): Promise<{ server: FastKVServer; base: string }> {
  const s = await createServer({ model, apiKey: KEY, maxPromptTokens: 400, maxBodyBytes: 64 * 1024, ...options });
  const address = await s.listen(0, '127.0.0.1');
  return { server: s, base: `http://127.0.0.1:${address.port}` };
}

before(async () => {
  model = await Model.load(STORIES, { threads: 1 });
  ({ server, base } = await start());
  client = new OpenAI({ baseURL: `${base}/v1`, apiKey: KEY, maxRetries: 0 });
});
after(async () => {
  await server.close();
  await model.dispose();
});

const QUESTION = 'Once upon a time, there was a little dog.';

test('the openai client: a chat completion and a streamed one give generate()\'s greedy text', async () => {
  const expected = await generate(model, { messages: [{ role: 'user', content: QUESTION }] }, { maxTokens: 30 });
  const r = await client.chat.completions.create({
    model: 'stories260K', messages: [{ role: 'user', content: QUESTION }], max_tokens: 30, temperature: 0,
  });
  assert.equal(r.choices[0].message.content, expected.text);
  assert.equal(r.choices[0].finish_reason, expected.finishReason === 'length' ? 'length' : 'stop');
  assert.equal(r.usage?.prompt_tokens, expected.promptIds.length);
  assert.equal(r.usage?.completion_tokens, expected.outputIds.length);
  const ext = (r as unknown as { fastkv: { ttft_ms: number; kv_bytes: number; layers: unknown[] } }).fastkv;
  assert.ok(ext.ttft_ms > 0 && ext.kv_bytes > 0 && ext.layers.length === model.config.numLayers);

  const s = await client.chat.completions.create({
    model: 'stories260K', messages: [{ role: 'user', content: QUESTION }], max_completion_tokens: 30, temperature: 0,
    stream: true, stream_options: { include_usage: true },
  });
  let text = '';
  let finish: string | null = null;
  let usage: OpenAI.CompletionUsage | undefined;
  for await (const chunk of s) {
    text += chunk.choices[0]?.delta?.content ?? '';
    finish = chunk.choices[0]?.finish_reason ?? finish;
    usage = chunk.usage ?? usage;
  }
  assert.equal(text, expected.text);
  assert.equal(finish, r.choices[0].finish_reason);
  assert.equal(usage?.completion_tokens, expected.outputIds.length);
});

test('the openai client: a completion with per-request compression, and the models list', async () => {
  const prompt = storyText(400);
  const expected = await generate(model, prompt, { maxTokens: 20, compression: { method: 'snapkv', budget: 24 } });
  const r = await client.completions.create({
    model: 'stories260K', prompt, max_tokens: 20, temperature: 0,
    kv_compression: { method: 'snapkv', budget: 24 },
  } as OpenAI.CompletionCreateParamsNonStreaming);
  assert.equal(r.choices[0].text, expected.text);
  const ext = (r as unknown as { fastkv: { method: string; kv_bytes_after_prefill: number } }).fastkv;
  assert.equal(ext.method, 'snapkv');
  assert.equal(ext.kv_bytes_after_prefill, expected.timings.kvCacheBytesAfterPrefill);
  const models = await client.models.list();
  assert.deepEqual(models.data.map((m) => m.id), ['stories260K']);
});

interface ContextJson { id: string; tokens: number; kv_bytes: number; method: string }

test('the openai client: a context is created, questioned twice (as generate with { context }), listed and deleted', async () => {
  const document = storyText(800);
  const compression = { method: 'fastkv', retainRate: 0.4, tspRate: 0.5 };
  const created = await client.post<ContextJson>('/contexts', {
    body: { messages: [{ role: 'user', content: document }], kv_compression: { method: 'fastkv', retain_rate: 0.4, tsp_rate: 0.5 } },
  });
  const local = await compressContext(model, { messages: [{ role: 'user', content: document }] }, { compression });
  assert.match(created.id, /^ctx_/);
  assert.equal(created.tokens, local.tokens);
  assert.equal(created.kv_bytes, local.kvBytes);
  for (const question of ['What did the dog do?', 'Who was happy?']) {
    const expected = await generate(model, { messages: [{ role: 'user', content: question }] }, { maxTokens: 24, context: local });
    const r = await client.chat.completions.create({
      model: 'stories260K', messages: [{ role: 'user', content: question }], max_tokens: 24, temperature: 0,
      context_id: created.id,
    } as OpenAI.ChatCompletionCreateParamsNonStreaming);
    assert.equal(r.choices[0].message.content, expected.text, question);
    assert.equal(r.usage?.prompt_tokens, local.tokens + expected.promptIds.length);
    assert.equal(r.usage?.prompt_tokens_details?.cached_tokens, local.tokens);
  }
  const shown = await client.get<ContextJson>(`/contexts/${created.id}`);
  assert.deepEqual([shown.id, shown.tokens, shown.kv_bytes], [created.id, created.tokens, created.kv_bytes]);
  const list = await client.get<{ data: ContextJson[] }>('/contexts');
  assert.ok(list.data.some((c) => c.id === created.id && c.method === 'fastkv'));
  const deleted = await client.delete<{ deleted: boolean }>(`/contexts/${created.id}`);
  assert.equal(deleted.deleted, true);
  await assert.rejects(client.chat.completions.create({
    model: 'stories260K', messages: [{ role: 'user', content: 'x' }], context_id: created.id,
  } as OpenAI.ChatCompletionCreateParamsNonStreaming), (e: InstanceType<typeof OpenAI.APIError>) => e.status === 404 && /no context/.test(e.message));
});

test('the openai client: concurrent requests decode together and answer as they would alone', async () => {
  const prompts = ['Once upon a time', 'The little cat', 'Tom and Sue went to the park.', 'A big red ball'];
  const expected: Awaited<ReturnType<typeof generate>>[] = [];
  for (const prompt of prompts) expected.push(await generate(model, prompt, { maxTokens: 20 + prompt.length, temperature: 0 }));
  const before = { ...model.batcher.stats };
  const got = await Promise.all(prompts.map((prompt, i) => i % 2 === 0
    ? client.completions.create({ model: 'stories260K', prompt, max_tokens: 20 + prompt.length, temperature: 0 })
      .then((r) => r.choices[0].text)
    : client.completions.create({ model: 'stories260K', prompt, max_tokens: 20 + prompt.length, temperature: 0, stream: true })
      .then(async (s) => { let text = ''; for await (const chunk of s) text += chunk.choices[0]?.text ?? ''; return text; })));
  got.forEach((text, i) => assert.equal(text, expected[i].text, `request ${i}`));
  const stats = model.batcher.stats;
  assert.ok(stats.rows - before.rows > stats.steps - before.steps, 'some decode steps served more than one request');
});

test('the openai client: an aborted stream frees its slot; a full queue answers 429', { timeout: 30_000 }, async () => {
  const { server: busy, base: busyBase } = await start({ parallel: 1, maxQueue: 1 });
  try {
    const busyClient = new OpenAI({ baseURL: `${busyBase}/v1`, apiKey: KEY, maxRetries: 0 });
    const long = { model: 'stories260K', prompt: QUESTION, max_tokens: 400, temperature: 0, stream: true } as const;
    const first = await busyClient.completions.create(long);
    const iterator = first[Symbol.asyncIterator]();
    await iterator.next(); // generating now, holding the only slot
    const queued = busyClient.completions.create({ ...long, max_tokens: 3, stream: false });
    await new Promise((r) => setTimeout(r, 50));
    const third = await fetch(`${busyBase}/v1/completions`, {
      method: 'POST', headers: { authorization: `Bearer ${KEY}` }, body: JSON.stringify({ prompt: 'x', max_tokens: 1 }),
    });
    assert.equal(third.status, 429);
    assert.equal((await third.json()).error.type, 'rate_limit_error');
    first.controller.abort();
    const second = await queued;
    assert.equal(second.choices[0].text.length > 0, true);
    const health = await (await fetch(`${busyBase}/health`)).json();
    assert.deepEqual([health.running, health.queued], [0, 0]);
  } finally {
    await busy.close();
  }
});

test('contexts saved to --context-dir are loaded again by a new server', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fastkv-serve-contexts-'));
  const first = await start({ contextDir: dir });
  const post = (b: string, route: string, body: unknown) => fetch(`${b}${route}`, {
    method: 'POST', headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' }, body: JSON.stringify(body),
  });
  const created = await (await post(first.base, '/v1/contexts', { text: storyText(500), kv_compression: { method: 'streamingllm', budget: 40 } })).json();
  const ask = { prompt: ' The end of the story was', max_tokens: 12, temperature: 0, context_id: created.id };
  const before = await (await post(first.base, '/v1/completions', ask)).json();
  await first.server.close();
  assert.deepEqual(fs.readdirSync(dir), [`${created.id}.kv`]);
  const second = await start({ contextDir: dir });
  try {
    const list = await (await fetch(`${second.base}/v1/contexts`, { headers: { authorization: `Bearer ${KEY}` } })).json();
    assert.deepEqual(list.data.map((c: ContextJson) => [c.id, c.tokens, c.kv_bytes]), [[created.id, created.tokens, created.kv_bytes]]);
    const again = await (await post(second.base, '/v1/completions', ask)).json();
    assert.equal(again.choices[0].text, before.choices[0].text);
  } finally {
    await second.server.close();
  }
});

test('raw HTTP: each bad request gets its status and an OpenAI-shaped error naming the problem', async () => {
  const auth = { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' };
  const cases: [string, string, RequestInit, number, RegExp, string | null][] = [
    ['malformed JSON', '/v1/chat/completions', { method: 'POST', headers: auth, body: '{"messages": [' }, 400, /not valid JSON/, null],
    ['wrong type', '/v1/chat/completions', { method: 'POST', headers: auth, body: JSON.stringify({ messages: [{ role: 'user', content: 'x' }], max_tokens: 'ten' }) }, 400, /max_tokens/, 'max_tokens'],
    ['wrong nested type', '/v1/chat/completions', { method: 'POST', headers: auth, body: JSON.stringify({ messages: [{ role: 'robot', content: 'x' }] }) }, 400, /messages\.0\.role/, 'messages.0.role'],
    ['unknown field', '/v1/chat/completions', { method: 'POST', headers: auth, body: JSON.stringify({ messages: [{ role: 'user', content: 'x' }], tools: [] }) }, 400, /unrecognized request argument supplied: tools/, 'tools'],
    ['unknown compression option', '/v1/completions', { method: 'POST', headers: auth, body: JSON.stringify({ prompt: 'x', kv_compression: { method: 'fastkv', sinks: 4 } }) }, 400, /fastkv: unknown option "sinks"/, 'kv_compression'],
    ['unknown compression method', '/v1/completions', { method: 'POST', headers: auth, body: JSON.stringify({ prompt: 'x', kv_compression: { method: 'zip' } }) }, 400, /unknown compression method "zip"/, 'kv_compression'],
    ['token id outside the vocabulary', '/v1/completions', { method: 'POST', headers: auth, body: JSON.stringify({ prompt: [1, 99999], stream: true }) }, 400, /token id 99999 at index 1 is outside the vocabulary/, 'prompt'],
    ['n > 1', '/v1/completions', { method: 'POST', headers: auth, body: JSON.stringify({ prompt: 'x', n: 2 }) }, 400, /only n = 1/, 'n'],
    ['oversized body', '/v1/completions', { method: 'POST', headers: auth, body: JSON.stringify({ prompt: 'x'.repeat(100_000) }) }, 413, /larger than 65536 bytes/, null],
    ['prompt too long', '/v1/completions', { method: 'POST', headers: auth, body: JSON.stringify({ prompt: 'Once upon a time there was a cat. '.repeat(60) }) }, 413, /more than the limit of 400/, null],
    ['missing key', '/v1/models', { headers: {} }, 401, /missing API key/, null],
    ['wrong key', '/v1/models', { headers: { authorization: 'Bearer nope' } }, 401, /incorrect API key/, null],
    ['unknown route', '/v1/embeddings', { method: 'POST', headers: auth, body: '{}' }, 404, /no route POST \/v1\/embeddings/, null],
    ['unknown model', '/v1/completions', { method: 'POST', headers: auth, body: JSON.stringify({ model: 'gpt-4', prompt: 'x' }) }, 404, /"gpt-4" does not exist/, 'model'],
    ['unknown context', '/v1/completions', { method: 'POST', headers: auth, body: JSON.stringify({ prompt: 'x', context_id: 'ctx_nope' }) }, 404, /no context "ctx_nope"/, 'context_id'],
    ['text and messages', '/v1/contexts', { method: 'POST', headers: auth, body: JSON.stringify({ text: 'a', messages: [{ role: 'user', content: 'b' }] }) }, 400, /exactly one of "text" or "messages"/, 'text'],
  ];
  for (const [name, route, init, status, message, param] of cases) {
    const r = await fetch(`${base}${route}`, init);
    assert.equal(r.status, status, name);
    const body = await r.json();
    assert.match(body.error.message, message, name);
    assert.equal(typeof body.error.type, 'string', name);
    if (param !== null) assert.equal(body.error.param, param, name);
  }
  const textContext = await (await fetch(`${base}/v1/contexts`, { method: 'POST', headers: auth, body: JSON.stringify({ text: 'Once upon a time' }) })).json();
  const chatOnText = await fetch(`${base}/v1/chat/completions`, {
    method: 'POST', headers: auth, body: JSON.stringify({ messages: [{ role: 'user', content: 'x' }], context_id: textContext.id }),
  });
  assert.equal(chatOnText.status, 400);
  const chatOnTextBody = await chatOnText.json();
  assert.match(chatOnTextBody.error.message, /built from text/);
  assert.equal(chatOnTextBody.error.param, 'context_id');
  const withCompression = await fetch(`${base}/v1/completions`, {
    method: 'POST', headers: auth, body: JSON.stringify({ prompt: 'x', context_id: textContext.id, kv_compression: { method: 'snapkv' } }),
  });
  assert.equal(withCompression.status, 400);
  assert.equal((await withCompression.json()).error.param, 'kv_compression');
  const health = await fetch(`${base}/health`);
  assert.equal(health.status, 200, 'health needs no key');
});

test('fastkv serve: SIGTERM cancels the stream in flight, which still ends with [DONE], and the process exits 0', { timeout: 60_000 }, async () => {
  const child = spawn(process.execPath, [path.join(ROOT, 'dist', 'src', 'cli', 'main.js'), 'serve', '--port', '0', '--threads', '1', '--quiet'],
    { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const port = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      const m = /on http:\/\/127\.0\.0\.1:(\d+)/.exec(out);
      if (m) resolve(m[1]);
    });
    child.on('exit', () => reject(new Error(`serve exited: ${stderr}`)));
  });
  const r = await fetch(`http://127.0.0.1:${port}/v1/completions`, {
    method: 'POST', body: JSON.stringify({ prompt: QUESTION, max_tokens: 400, temperature: 0, stream: true }),
  });
  const reader = r.body!.getReader();
  await reader.read();
  child.kill('SIGTERM');
  let text = '';
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    text += Buffer.from(value).toString('utf8');
  }
  assert.match(text, /data: \[DONE\]\n\n$/);
  assert.equal(await exited, 0, stderr);
  const uninterrupted = await generate(model, QUESTION, { maxTokens: 400 });
  const pieces = text.split('\n\n').filter((e) => /"finish_reason":null/.test(e)).length;
  assert.ok(pieces < uninterrupted.outputIds.length / 2, `${pieces} tokens streamed of ${uninterrupted.outputIds.length}: not cancelled`);
});

test('CORS headers only with --cors; --max-contexts is enforced; a context over --max-prompt-tokens is a 413', async () => {
  const headers = { authorization: `Bearer ${KEY}`, 'content-type': 'application/json', origin: 'http://example.test' };
  const plain = await fetch(`${base}/v1/models`, { headers });
  assert.equal(plain.headers.get('access-control-allow-origin'), null);
  const tooLong = await fetch(`${base}/v1/contexts`, { method: 'POST', headers, body: JSON.stringify({ text: 'Once upon a time there was a cat. '.repeat(60) }) });
  assert.equal(tooLong.status, 413);
  assert.match((await tooLong.json()).error.message, /more than the limit of 400/);

  const other = await start({ cors: 'http://example.test', maxContexts: 1 });
  try {
    const allowed = await fetch(`${other.base}/v1/models`, { headers });
    assert.equal(allowed.headers.get('access-control-allow-origin'), 'http://example.test');
    const create = () => fetch(`${other.base}/v1/contexts`, { method: 'POST', headers, body: JSON.stringify({ text: 'Once upon a time' }) });
    assert.equal((await create()).status, 200);
    const second = await create();
    assert.equal(second.status, 429);
    assert.match((await second.json()).error.message, /at most 1 contexts/);
  } finally {
    await other.server.close();
  }
});
