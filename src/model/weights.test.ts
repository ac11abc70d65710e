import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadConfig } from './config.js';
import { loadWeights } from './weights.js';
import { SafetensorsStore, writeSafetensors, type TensorToWrite } from './safetensors.js';
import { ModelLoadError } from '../errors.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const fixture = (name: string): string => path.join(ROOT, 'test/fixtures', name);
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fastkv-w-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

/**
 * Copies fixture `name` into a temp dir, letting `edit` drop (return null) or replace any tensor. Tensors are
 * rewritten as F32.
 */
function editedCopy(name: string, edit: (t: TensorToWrite) => TensorToWrite | null): string {
  const dir = fs.mkdtempSync(path.join(tmp, `${name}-`));
  fs.copyFileSync(path.join(fixture(name), 'config.json'), path.join(dir, 'config.json'));
  const store = SafetensorsStore.open(fixture(name));
  const tensors: TensorToWrite[] = [];
  for (const n of store.names()) {
    const t = edit({ name: n, dtype: 'F32', shape: [...store.info(n).shape], data: store.readF32(n) });
    if (t) tensors.push(t);
  }
  writeSafetensors(path.join(dir, 'model.safetensors'), tensors);
  return dir;
}

function throwsLoad(fn: () => unknown, ...patterns: RegExp[]): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof ModelLoadError, `expected ModelLoadError, got ${String(e)}`);
    for (const p of patterns) assert.match(e.message, p);
    return true;
  });
}

test('every fixture loads into the fused layout with the configured shapes', () => {
  for (const name of ['tiny-llama3', 'tiny-qwen2', 'tiny-qwen3', 'tiny-mistral', 'retrieval-3M', '../../models/stories260K']) {
    const dir = fixture(name);
    const c = loadConfig(dir);
    const w = loadWeights(dir, c);
    const H = c.hiddenSize, I = c.intermediateSize, qkvRows = (c.numHeads + 2 * c.numKvHeads) * c.headDim;
    assert.equal(w.embed.length, c.vocabSize * H, name);
    assert.equal(w.lmHead.length, c.vocabSize * H);
    assert.equal(w.finalNorm.length, H);
    assert.equal(w.layers.length, c.numLayers);
    let bytes = (w.embed.length + w.finalNorm.length + (w.lmHead === w.embed ? 0 : w.lmHead.length)) * 4;
    for (const l of w.layers) {
      assert.equal(l.inputNorm.length, H);
      assert.equal(l.qkv.length, qkvRows * H);
      assert.equal(l.qkvBias?.length ?? null, c.qkvBias ? qkvRows : null);
      assert.equal(l.qNorm?.length ?? null, c.qkNorm ? c.headDim : null);
      assert.equal(l.kNorm?.length ?? null, c.qkNorm ? c.headDim : null);
      assert.equal(l.o.length, H * c.numHeads * c.headDim);
      assert.equal(l.postNorm.length, H);
      assert.equal(l.gateUp.length, 2 * I * H);
      assert.equal(l.down.length, H * I);
      for (const a of Object.values(l)) if (a) bytes += a.length * 4;
    }
    assert.equal(w.bytes, bytes, `${name} bytes`);
    assert.equal(w.lmHead === w.embed, c.tieWordEmbeddings);
  }
});

test('fused blocks hold the right tensors at the right rows', () => {
  const dir = fixture('tiny-qwen2');
  const c = loadConfig(dir);
  const w = loadWeights(dir, c);
  const store = SafetensorsStore.open(dir);
  const H = c.hiddenSize, q = c.numHeads * c.headDim, kv = c.numKvHeads * c.headDim, I = c.intermediateSize;
  const l = w.layers[2];
  const p = 'model.layers.2.';
  assert.deepEqual(l.qkv.subarray(0, q * H), store.readF32(`${p}self_attn.q_proj.weight`));
  assert.deepEqual(l.qkv.subarray(q * H, (q + kv) * H), store.readF32(`${p}self_attn.k_proj.weight`));
  assert.deepEqual(l.qkv.subarray((q + kv) * H), store.readF32(`${p}self_attn.v_proj.weight`));
  assert.deepEqual(l.qkvBias!.subarray(q, q + kv), store.readF32(`${p}self_attn.k_proj.bias`));
  assert.deepEqual(l.qkvBias!.subarray(q + kv), store.readF32(`${p}self_attn.v_proj.bias`));
  assert.deepEqual(l.gateUp.subarray(0, I * H), store.readF32(`${p}mlp.gate_proj.weight`));
  assert.deepEqual(l.gateUp.subarray(I * H), store.readF32(`${p}mlp.up_proj.weight`));
  assert.deepEqual(l.down, store.readF32(`${p}mlp.down_proj.weight`));
  assert.equal(w.lmHead, w.embed, 'tied: the same array');

  const q3 = fixture('tiny-qwen3');
  const w3 = loadWeights(q3, loadConfig(q3));
  assert.deepEqual(w3.layers[1].kNorm, SafetensorsStore.open(q3).readF32('model.layers.1.self_attn.k_norm.weight'));
  const l3 = fixture('tiny-llama3');
  const wl = loadWeights(l3, loadConfig(l3));
  assert.notEqual(wl.lmHead, wl.embed);
  assert.deepEqual(wl.lmHead, SafetensorsStore.open(l3).readF32('lm_head.weight'));
  assert.equal(wl.layers[0].qkvBias, null);
});

test('progress is reported once per tensor', () => {
  const dir = fixture('tiny-qwen3');
  const calls: Array<[number, number]> = [];
  loadWeights(dir, loadConfig(dir), (done, total) => calls.push([done, total]));
  const total = calls[0][1];
  assert.equal(total, 2 + 4 * 11);                      // embed + norm + 4 layers x 11 tensors (tied head)
  assert.deepEqual(calls.map(([d]) => d), Array.from({ length: total }, (_, i) => i + 1));
});

test('a tensor of the wrong shape is an error naming it', () => {
  const bad = 'model.layers.1.mlp.up_proj.weight';
  const dir = editedCopy('tiny-qwen2', (t) => (t.name === bad ? { ...t, shape: [255, 128], data: t.data.subarray(0, 255 * 128) } : t));
  throwsLoad(() => loadWeights(dir, loadConfig(dir)), /model\.layers\.1\.mlp\.up_proj\.weight/, /\[255,128\]/, /expected \[256,128\]/);
});

test('missing tensors are errors naming them', () => {
  const noHead = editedCopy('tiny-llama3', (t) => (t.name === 'lm_head.weight' ? null : t));
  throwsLoad(() => loadWeights(noHead, loadConfig(noHead)), /lm_head\.weight/);
  const noBias = editedCopy('tiny-qwen2', (t) => (t.name === 'model.layers.3.self_attn.v_proj.bias' ? null : t));
  throwsLoad(() => loadWeights(noBias, loadConfig(noBias)), /tensor "model\.layers\.3\.self_attn\.v_proj\.bias" not found/);
});
