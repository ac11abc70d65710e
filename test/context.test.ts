/** Compressed contexts: continuing one equals prefilling everything; save / load round trips; bad files refused. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Model } from '../src/engine/model.js';
import { generate, stream } from '../src/engine/generate.js';
import { compressContext, continueContext } from '../src/engine/context.js';
import { prefill } from '../src/engine/forward.js';
import { loadContext } from '../src/engine/context-file.js';
import { encodeHeader } from '../src/model/safetensors-write.js';
import { generateWithQuestionAfter } from '../src/eval/question-after.js';
import { ROOT, STORIES, maxAbsDiff, randomModel, storyText } from './helpers.js';

const modelPromise = Model.load(STORIES, { threads: 1 });
const DOCUMENT = storyText(700);
const QUESTION = ' Then the little dog';
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fastkv-context-'));

test('continuing an uncompressed context gives the same greedy tokens as prefilling document + question', async () => {
  const model = await modelPromise;
  const ctx = await compressContext(model, DOCUMENT);
  assert.deepEqual(ctx.ids, model.tokenizer.encode(DOCUMENT));
  const whole = await generate(model, DOCUMENT + QUESTION, { maxTokens: 24 });
  const continued = await generate(model, QUESTION, { maxTokens: 24, context: ctx });
  assert.deepEqual([...ctx.ids, ...continued.promptIds], whole.promptIds, 'the question is tokenized as part of the whole text');
  assert.deepEqual(continued.outputIds, whole.outputIds);
  assert.equal(continued.text, whole.text);
  assert.equal(continued.timings.contextTokens, ctx.tokens);
});

test('a fastkv context continued by a question equals kvpress\'s question-after protocol, and is never written', async () => {
  const model = await modelPromise;
  const spec = { method: 'fastkv', retainRate: 0.3, tspRate: 0.5 };
  const ctx = await compressContext(model, DOCUMENT, { compression: spec });
  assert.equal(ctx.method, 'fastkv');
  assert.deepEqual(ctx.methodOptions, { retainRate: 0.3, tspRate: 0.5 });
  const lengths = ctx.cache.lengths;
  assert.ok(ctx.kvBytes < (await compressContext(model, DOCUMENT)).kvBytes, 'compression kept fewer entries');
  const questionIds = model.tokenizer.encode(DOCUMENT + QUESTION).slice(ctx.tokens);
  const reference = await generateWithQuestionAfter(model, ctx.ids, questionIds, spec, 20);
  // Several questions at once on the same context: each works on its own copy of the cache.
  const [a, b] = await Promise.all([
    generate(model, QUESTION, { maxTokens: 20, context: ctx, ignoreEos: reference.finishReason !== 'eos' }),
    generate(model, QUESTION, { maxTokens: 20, context: ctx }),
  ]);
  assert.deepEqual(a.outputIds, reference.outputIds);
  assert.deepEqual(b.outputIds, reference.outputIds);
  assert.deepEqual(ctx.cache.lengths, lengths);
  assert.equal(a.method, 'fastkv');
  await assert.rejects(generate(model, QUESTION, { context: ctx, compression: { method: 'snapkv' } }), /either a context .* or compression/);
});

test('a chat context continues with more messages as the chat template renders the whole conversation', async () => {
  const model = await modelPromise;
  const ctx = await compressContext(model, { messages: [{ role: 'user', content: DOCUMENT }] });
  const question = { role: 'user', content: 'What did the dog do?' };
  const whole = await generate(model, { messages: [{ role: 'user', content: DOCUMENT }, question] }, { maxTokens: 16 });
  const continued = await generate(model, { messages: [question] }, { maxTokens: 16, context: ctx });
  assert.deepEqual([...ctx.ids, ...continued.promptIds], whole.promptIds);
  assert.deepEqual(continued.outputIds, whole.outputIds);
  const textCtx = await compressContext(model, DOCUMENT);
  await assert.rejects(generate(model, { messages: [question] }, { context: textCtx }), /built from text/);
  const other = await randomModel({}, 3);
  await assert.rejects(generate(other, 'x', { context: ctx }), /built with the model in/);
});

test('save -> load -> generate equals generate on the in-memory context', async () => {
  const model = await modelPromise;
  for (const compression of [{ method: 'snapkv', budget: 40 }, { method: 'gemfilter', retainRate: 0.3 }, { method: 'snapkv', budget: 40, repeatKv: true }]) {
    const ctx = await compressContext(model, { messages: [{ role: 'user', content: DOCUMENT }] }, { compression });
    const file = path.join(tmp, `${compression.method}.kv`);
    await ctx.save(file);
    const loaded = await loadContext(model, file);
    assert.deepEqual(loaded.ids, ctx.ids);
    assert.deepEqual(loaded.messages, ctx.messages);
    assert.equal(loaded.nextPosition, ctx.nextPosition);
    assert.equal(loaded.kvBytes, ctx.kvBytes);
    assert.deepEqual(loaded.layers, ctx.layers);
    assert.deepEqual(loaded.methodOptions, ctx.methodOptions);
    const opts = { maxTokens: 20, temperature: 0.8, seed: 7 };
    const fromMemory = await generate(model, 'And then?', { ...opts, chat: true, context: ctx });
    const s = stream(model, 'And then?', { ...opts, chat: true, context: loaded });
    let text = '';
    for await (const chunk of s) text += chunk.text;
    assert.deepEqual((await s.result).outputIds, fromMemory.outputIds, compression.method);
    assert.equal(text, fromMemory.text);
    assert.deepEqual(fs.readdirSync(tmp).filter((f) => f.endsWith('.tmp')), [], 'no temporary file is left');
  }
});

/** Rewrites a context file's header with `edit` applied (the data is kept as it is). */
function rewriteHeader(from: string, to: string, edit: (header: Record<string, any>) => void): void {
  const bytes = fs.readFileSync(from);
  const n = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + n).toString('utf8'));
  edit(header);
  fs.writeFileSync(to, Buffer.concat([encodeHeader(header), bytes.subarray(8 + n)]));
}

test('a file for another model, a truncated file, a corrupted header or data, or a newer format are refused', async () => {
  const model = await modelPromise;
  const ctx = await compressContext(model, DOCUMENT, { compression: { method: 'streamingllm', budget: 32 } });
  const good = path.join(tmp, 'good.kv');
  await ctx.save(good);
  const bytes = fs.readFileSync(good);

  const other = await randomModel({}, 11);
  await assert.rejects(loadContext(other, good), /saved from another model/);

  const truncated = path.join(tmp, 'truncated.kv');
  fs.writeFileSync(truncated, bytes.subarray(0, bytes.length - 100));
  await assert.rejects(loadContext(model, truncated), /truncated/);

  const badHeader = path.join(tmp, 'bad-header.kv');
  const corrupt = Buffer.from(bytes);
  corrupt[8] = 0x5b; // '{' becomes '[': the header no longer parses as an object
  corrupt[9] = 0x7d;
  fs.writeFileSync(badHeader, corrupt);
  await assert.rejects(loadContext(model, badHeader), /header is not (valid JSON|a JSON object)/);

  const badData = path.join(tmp, 'bad-data.kv');
  const flipped = Buffer.from(bytes);
  flipped[flipped.length - 5] ^= 0xff;
  fs.writeFileSync(badData, flipped);
  await assert.rejects(loadContext(model, badData), /corrupted: its data does not match the checksum/);

  const newer = path.join(tmp, 'newer.kv');
  rewriteHeader(good, newer, (h) => { h.__metadata__.format_version = '3'; });
  await assert.rejects(loadContext(model, newer), /format version 3, newer than this fastkv reads \(2\)/);
  const older = path.join(tmp, 'older.kv');
  rewriteHeader(good, older, (h) => { h.__metadata__.format_version = '1'; });
  await assert.rejects(loadContext(model, older), /format version 1, older than this fastkv reads \(2\); build the context again/);

  const notContext = path.join(tmp, 'weights.kv');
  fs.copyFileSync(path.join(STORIES, 'model.safetensors'), notContext);
  await assert.rejects(loadContext(model, notContext), /not a fastkv context file/);
  await assert.rejects(loadContext(model, tmp), /not a regular file/);
  await assert.rejects(ctx.save(path.join(tmp, 'no-such-folder', 'x.kv')), /does not exist/);
});

test('a save killed mid-write leaves no file under the name', async () => {
  const model = await modelPromise;
  const ctx = await compressContext(model, DOCUMENT);
  const file = path.join(tmp, 'killed.kv');
  // A child process saves a context and dies (SIGKILL) in its second write, after the header went out.
  const script = `
    import fs from 'node:fs';
    import { Model } from ${JSON.stringify(path.join(ROOT, 'dist/src/engine/model.js'))};
    import { compressContext } from ${JSON.stringify(path.join(ROOT, 'dist/src/engine/context.js'))};
    const model = await Model.load(${JSON.stringify(STORIES)}, { threads: 1 });
    const ctx = await compressContext(model, ${JSON.stringify(DOCUMENT)});
    const probe = await fs.promises.open(${JSON.stringify(path.join(tmp, 'probe'))}, 'w');
    const proto = Object.getPrototypeOf(probe);
    await probe.close();
    const write = proto.write;
    let writes = 0;
    proto.write = function (...args) {
      if (++writes === 2) process.kill(process.pid, 'SIGKILL');
      return write.apply(this, args);
    };
    await ctx.save(${JSON.stringify(file)});
  `;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.signal, 'SIGKILL', r.stderr);
  assert.equal(fs.existsSync(file), false);
  const temps = fs.readdirSync(tmp).filter((f) => f.startsWith('.killed.kv.') && f.endsWith('.tmp'));
  assert.equal(temps.length, 1, 'the partial data is in a temporary file');
  // And a save that completes replaces the name in one step.
  await ctx.save(file);
  assert.equal((await loadContext(model, file)).tokens, ctx.tokens);
});

test('a question fed after a context gives the logits of prefilling both, with and without a sliding window', async () => {
  for (const slidingWindow of [null, 6]) {
    const model = await randomModel({
      architectures: ['MistralForCausalLM'], model_type: 'mistral', tie_word_embeddings: false, sliding_window: slidingWindow,
    }, 5);
    const ids = Array.from({ length: 20 }, (_, i) => 3 + ((i * 37) % 500));
    const ctx = await compressContext(model, { ids: ids.slice(0, 13) });
    const continued = await continueContext(model, ctx, ids.slice(13), 4);
    const whole = await prefill(model, Int32Array.from(ids));
    assert.ok(maxAbsDiff(continued.logits, whole.logits) < 1e-4, `sliding window ${slidingWindow}`);
    assert.equal(continued.nextPosition, ids.length);
    assert.deepEqual(ctx.cache.lengths, Array.from({ length: model.config.numLayers }, () => Array(model.config.numKvHeads).fill(13)), 'the context kept its entries');
    await model.dispose();
  }
});

test('a ragged (adakv) context saves and loads with every head\'s own length, and continues as the one in memory', async () => {
  const model = await modelPromise;
  const ctx = await compressContext(model, DOCUMENT, { compression: { method: 'adakv', retainRate: 0.3 } });
  assert.ok(ctx.cache.layers.some((l) => l!.ragged), 'heads keep different numbers of entries');
  const file = path.join(tmp, 'ragged.kv');
  await ctx.save(file);
  const loaded = await loadContext(model, file);
  assert.deepEqual(loaded.cache.lengths, ctx.cache.lengths);
  assert.equal(loaded.kvBytes, ctx.kvBytes);
  const a = await generate(model, QUESTION, { maxTokens: 12, context: ctx });
  const b = await generate(model, QUESTION, { maxTokens: 12, context: loaded });
  assert.deepEqual(b.outputIds, a.outputIds);
});
