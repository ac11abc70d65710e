/**
 * Bad input found by trying to break fastkv (issue 11), each turned into a clean error or correct behaviour:
 * aborts, streams that are left, coerced ids, NaN logits, generation_config.json, unused tensors, huge prompts,
 * thread counts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Model } from '../src/engine/model.js';
import { generate, stream } from '../src/engine/generate.js';
import { ConfigError, ModelLoadError, NumericError, RequestError } from '../src/errors.js';
import { SafetensorsFile, SafetensorsStore, writeSafetensors } from '../src/model/safetensors.js';
import { STORIES, randomModel } from './helpers.js';

const modelPromise = Model.load(STORIES, { threads: 1 });
const PROMPT = 'Once upon a time';

test('an aborted signal stops prefill between layers and reports finish reason abort', async () => {
  const model = await modelPromise;
  const layers: number[] = [];
  const r = await generate(model, PROMPT, { signal: AbortSignal.abort(), onPrefillLayer: (l) => { layers.push(l); } });
  assert.equal(r.finishReason, 'abort');
  assert.deepEqual(r.outputIds, []);
  assert.deepEqual(layers, [], 'no layer ran');
  const controller = new AbortController();
  const ran: number[] = [];
  const r2 = await generate(model, PROMPT, { signal: controller.signal, onPrefillLayer: (l) => { ran.push(l); if (l === 0) controller.abort(); } });
  assert.equal(r2.finishReason, 'abort');
  assert.deepEqual(ran, [0], 'prefill stopped after layer 0');
  assert.deepEqual(r2.outputIds, []);
});

test('breaking out of a stream ends the run and settles result; a stream never iterated settles too', async () => {
  const model = await modelPromise;
  const s = stream(model, PROMPT, { maxTokens: 50 });
  for await (const _ of s) break;
  const r = await s.result;
  assert.equal(r.finishReason, 'abort');
  assert.equal(r.outputIds.length, 1);
  const untouched = await stream(model, PROMPT, { maxTokens: 7 }).result;
  assert.equal(untouched.outputIds.length, 7);
  assert.equal(untouched.finishReason, 'length');
  // Reading result first, then iterating, still gives every chunk in order.
  const both = stream(model, PROMPT, { maxTokens: 5 });
  const done = await both.result;
  const ids: number[] = [];
  for await (const c of both) ids.push(c.tokenId);
  assert.deepEqual(ids, done.outputIds);
  await assert.rejects(async () => { for await (const _ of both) { /* second pass */ } }, /only once/);
});

test('prompt ids are checked, never coerced: 2**32+403, NaN, 1.5, "1" and -1 are refused naming the index', async () => {
  const model = await modelPromise;
  for (const bad of [2 ** 32 + 403, NaN, 1.5, '1', -1, null]) {
    await assert.rejects(generate(model, { ids: [1, bad as number] }), (e: unknown) =>
      e instanceof RequestError && /prompt\.ids\[1\]/.test(e.message), String(bad));
  }
  await assert.rejects(generate(model, null as never), (e: unknown) => e instanceof RequestError && /prompt must be/.test(e.message));
  await assert.rejects(generate(model, { messages: 'hi' } as never), (e: unknown) => e instanceof RequestError && /messages/.test(e.message));
});

test('system without chat is refused, not ignored; stop must be a list', async () => {
  const model = await modelPromise;
  await assert.rejects(generate(model, PROMPT, { system: 'Be brief.' }), (e: unknown) => e instanceof RequestError && /system/.test(e.message));
  for (const stop of [5, true, 'x', { a: 1 }]) {   // found by the fuzz suite: a TypeError before
    await assert.rejects(generate(model, PROMPT, { stop: stop as never }), (e: unknown) => e instanceof RequestError && /stop must be a list/.test(e.message));
  }
});

test('a 50 MB prompt is refused quickly, naming its size and the limit', async () => {
  const model = await modelPromise;
  const huge = 'Lily went to the park with her mom. '.repeat(1_500_000);
  const t0 = performance.now();
  await assert.rejects(generate(model, huge, { maxTokens: 1 }), (e: unknown) =>
    e instanceof RequestError && /more than 512 tokens/.test(e.message) && e.message.includes(`of ${huge.length} characters`));
  assert.ok(performance.now() - t0 < 15_000, `took ${performance.now() - t0} ms`);
  await assert.rejects(generate(model, huge, { chat: false, maxContext: 100 }), /more than 100 tokens/);
});

test('a thread count ONNX Runtime would hang on is a ConfigError before anything loads', async () => {
  for (const threads of [100000, 0, 1.5, NaN]) {
    await assert.rejects(Model.load(STORIES, { threads }), (e: unknown) => e instanceof ConfigError && /threads must be an integer from 1 to/.test(e.message));
  }
});

test('a tiny temperature samples the top token instead of NaN weights (1 / 1e-310 overflows)', async () => {
  const model = await modelPromise;
  const greedy = await generate(model, PROMPT, { maxTokens: 8 });
  const tiny = await generate(model, PROMPT, { maxTokens: 8, temperature: 1e-310, seed: 1 });
  assert.deepEqual(tiny.outputIds, greedy.outputIds);
});

/** Sets the first element of `tensor` in dir/model.safetensors (BF16) to NaN. */
function poison(dir: string, tensor: string): void {
  const file = path.join(dir, 'model.safetensors');
  const entry = SafetensorsFile.open(file).entry(tensor)!;
  const fd = fs.openSync(file, 'r+');
  fs.writeSync(fd, Buffer.from([0xc0, 0x7f]), 0, 2, entry.start);   // BF16 quiet NaN, little-endian
  fs.closeSync(fd);
}

test('a NaN weight is a NumericError, not a run of token 0 with exit code 0', async () => {
  const model = await randomModel({}, 3, (dir) => poison(dir, 'model.layers.0.mlp.down_proj.weight'));
  await assert.rejects(generate(model, { ids: [1, 5, 9] }, { maxTokens: 4 }), (e: unknown) =>
    e instanceof NumericError && /NaN logit/.test(e.message) && /weights/.test(e.message));
  await model.dispose();
});

test('generation_config.json: its EOS ids end generation and its sampling settings are the defaults', async () => {
  const probe = await randomModel({}, 5);
  const free = await generate(probe, { ids: [1, 7, 8] }, { maxTokens: 6, ignoreEos: true });
  await probe.dispose();
  const eos = free.outputIds[2];
  const first = free.outputIds.indexOf(eos);
  const model = await randomModel({}, 5, (dir) => fs.writeFileSync(path.join(dir, 'generation_config.json'),
    JSON.stringify({ eos_token_id: [eos], do_sample: true, temperature: 0.7, top_p: 0.9 })));
  assert.deepEqual(model.generationDefaults.sampling, { temperature: 0.7, topK: 50, topP: 0.9 });
  assert.ok(model.eosTokenIds.includes(eos));
  const greedy = await generate(model, { ids: [1, 7, 8] }, { maxTokens: 6, temperature: 0 });
  assert.equal(greedy.finishReason, 'eos');
  assert.deepEqual(greedy.outputIds, free.outputIds.slice(0, first + 1));
  const byDefault = await generate(model, { ids: [1, 7, 8] }, { maxTokens: 6, seed: 11, ignoreEos: true });
  const explicit = await generate(model, { ids: [1, 7, 8] }, { maxTokens: 6, seed: 11, ignoreEos: true, temperature: 0.7, topK: 50, topP: 0.9 });
  assert.deepEqual(byDefault.outputIds, explicit.outputIds);
  await model.dispose();
  await assert.rejects(randomModel({}, 5, (dir) => fs.writeFileSync(path.join(dir, 'generation_config.json'), '{"do_sample": true, "top_p": 7}')),
    (e: unknown) => e instanceof ConfigError && /generation_config\.json/.test(e.message) && /top_p/.test(e.message));
});

/** Rewrites dir/config.json with `changes`. */
function editConfig(dir: string, changes: Record<string, unknown>): void {
  const file = path.join(dir, 'config.json');
  fs.writeFileSync(file, JSON.stringify({ ...JSON.parse(fs.readFileSync(file, 'utf8')), ...changes }));
}

test('checkpoint tensors the config does not use: refused when the network would change, else a warning naming them', async () => {
  await assert.rejects(randomModel({}, 2, (dir) => editConfig(dir, { num_hidden_layers: 1 })), (e: unknown) =>
    e instanceof ModelLoadError && /layers past num_hidden_layers \(1/.test(e.message) && /model\.layers\.1\./.test(e.message));
  await assert.rejects(randomModel({ architectures: ['Qwen2ForCausalLM'], model_type: 'qwen2' }, 2, (dir) => editConfig(dir, { attention_bias: false })),
    (e: unknown) => e instanceof ModelLoadError && /q_proj\.bias/.test(e.message) && /attention_bias is false/.test(e.message));
  const warnings: string[] = [];
  const model = await randomModel({}, 2, (dir) => {
    const file = path.join(dir, 'model.safetensors');
    const store = SafetensorsStore.open(file);
    const tensors = store.names().map((name) => ({ name, dtype: 'F32' as const, shape: [...store.info(name).shape], data: store.readF32(name) }));
    writeSafetensors(file, [...tensors, { name: 'vision_tower.proj', dtype: 'F32', shape: [2], data: Float32Array.of(1, 2) }]);
  }, { threads: 1, onWarning: (m) => warnings.push(m) });
  assert.equal(warnings.length, 1);
  assert.match(warnings[0], /not used/);
  assert.match(warnings[0], /"vision_tower\.proj"/);
  await model.dispose();
});
