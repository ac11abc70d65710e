import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { SafetensorsFile, SafetensorsStore, writeSafetensors } from './safetensors.js';
import { ModelLoadError } from '../errors.js';

// Compiled to dist/src/model/, so the repository root is three levels up from here.
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const FIXTURE = path.join(ROOT, 'test/fixtures/tiny-qwen2');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fastkv-st-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));
let seq = 0;
const newDir = (): string => fs.mkdtempSync(path.join(tmp, `d${seq++}-`));

/** Asserts `fn` throws a ModelLoadError whose message matches every pattern. */
function throwsLoad(fn: () => unknown, ...patterns: RegExp[]): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof ModelLoadError, `expected ModelLoadError, got ${String(e)}`);
    for (const p of patterns) assert.match(e.message, p);
    return true;
  });
}

/** Writes a hand-made file: u64 header length (or `declaredLength`), header text, then `data`. */
function rawFile(file: string, header: string | object, data = new Uint8Array(0), declaredLength?: bigint): string {
  const text = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(declaredLength ?? BigInt(text.length));
  fs.writeFileSync(file, Buffer.concat([len, text, data]));
  return file;
}

test('F32, F16 and BF16 round trip (exactly representable values survive exactly)', () => {
  const dir = newDir();
  const f32 = Float32Array.from([0, -0, 1.5, -3.25e-30, 123456.789, 3.4e38, Infinity, -Infinity]);
  const f16 = Float32Array.from([0, -0, 1, -2.5, 65504, 2 ** -24, 2 ** -14, 0.333251953125, Infinity, -Infinity, NaN]);
  const bf16 = Float32Array.from([0, 1, -3.5, 2 ** 100, 2 ** -130, 1.0078125, -Infinity, NaN]);
  const file = path.join(dir, 'model.safetensors');
  writeSafetensors(file, [
    { name: 'a', dtype: 'F32', shape: [2, 4], data: f32 },
    { name: 'b', dtype: 'F16', shape: [11], data: f16 },
    { name: 'c', dtype: 'BF16', shape: [2, 2, 2], data: bf16 },
  ], { format: 'pt' });
  const headerLength = Number(fs.readFileSync(file).readBigUInt64LE(0));
  assert.equal((8 + headerLength) % 8, 0, 'data starts 8-byte aligned');

  const store = SafetensorsStore.open(dir);
  assert.deepEqual(store.names().sort(), ['a', 'b', 'c']);
  assert.deepEqual(store.info('c'), { dtype: 'BF16', shape: [2, 2, 2], file });
  assert.deepEqual(store.metadata(), { format: 'pt' });
  assert.deepEqual(store.readF32('a', [2, 4]), f32);
  assert.deepEqual(store.readF32('b'), f16);          // deepEqual treats NaN as equal to NaN and -0 as -0
  assert.deepEqual(store.readF32('c'), bf16);
  assert.equal(store.readRaw('b').bytes.length, 22);
  const target = new Float32Array(10).fill(7);
  store.readF32Into('c', target.subarray(1, 9));
  assert.deepEqual([...target.subarray(0, 2)], [7, 0]);
  assert.equal(target[9], 7);
});

test('F16 and BF16 writing rounds to nearest even', () => {
  const file = path.join(newDir(), 'r.safetensors');
  const bfIn = Float32Array.from([1 + 2 ** -8, 1 + 3 * 2 ** -8, 1 + 2 ** -8 + 2 ** -20]);
  const hIn = Float32Array.from([1 + 2 ** -11, 1 + 3 * 2 ** -11, 65520, 2 ** -25, 3 * 2 ** -26, 1e-9]);
  writeSafetensors(file, [{ name: 'bf', dtype: 'BF16', shape: [3], data: bfIn }, { name: 'h', dtype: 'F16', shape: [6], data: hIn }]);
  const store = SafetensorsStore.open(file);
  assert.deepEqual([...store.readF32('bf')], [1, 1 + 2 ** -6, 1 + 2 ** -7]);
  assert.deepEqual([...store.readF32('h')], [1, 1 + 2 ** -9, Infinity, 0, 2 ** -24, 0]);
});

test('reads the fixture checkpoints', () => {
  const store = SafetensorsStore.open(FIXTURE);
  assert.ok(store.has('model.embed_tokens.weight'));
  const bias = store.readF32('model.layers.0.self_attn.k_proj.bias', [32]);
  assert.equal(bias.length, 32);
  const bf = SafetensorsStore.open(path.join(ROOT, 'test/fixtures/tiny-qwen3'));
  assert.equal(bf.info('model.norm.weight').dtype, 'BF16');
  assert.ok(bf.readF32('model.norm.weight').every(Number.isFinite));
  const ref = SafetensorsStore.open(path.join(FIXTURE, 'reference.safetensors'));
  assert.equal(ref.readI32('input_ids').length, 48);
});

test('sharded checkpoint via model.safetensors.index.json', () => {
  const dir = newDir();
  writeSafetensors(path.join(dir, 'model-00001-of-00002.safetensors'), [{ name: 'x', dtype: 'F32', shape: [2], data: Float32Array.from([1, 2]) }]);
  writeSafetensors(path.join(dir, 'model-00002-of-00002.safetensors'), [
    { name: 'y', dtype: 'BF16', shape: [1, 3], data: Float32Array.from([3, 4, 5]) },
    { name: 'z', dtype: 'F16', shape: [1], data: Float32Array.from([6]) },
  ]);
  const index = { metadata: {}, weight_map: { x: 'model-00001-of-00002.safetensors', y: 'model-00002-of-00002.safetensors', z: 'model-00002-of-00002.safetensors' } };
  fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify(index));
  const store = SafetensorsStore.open(dir);
  assert.deepEqual(store.names().sort(), ['x', 'y', 'z']);
  assert.deepEqual([...store.readF32('x')], [1, 2]);
  assert.deepEqual([...store.readF32('y', [1, 3])], [3, 4, 5]);
  assert.match(store.info('z').file, /model-00002-of-00002/);

  index.weight_map.z = 'model-00003-of-00002.safetensors';
  fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify(index));
  throwsLoad(() => SafetensorsStore.open(dir), /model-00003-of-00002\.safetensors/, /does not exist/);
  fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), '{"weight_map": ');
  throwsLoad(() => SafetensorsStore.open(dir), /index\.json/, /not valid JSON/);
});

test('missing folder, empty folder, missing tensor, shape mismatch, unsupported dtype', () => {
  throwsLoad(() => SafetensorsStore.open(path.join(tmp, 'nope')), /nope/, /does not exist/);
  const empty = newDir();
  throwsLoad(() => SafetensorsStore.open(empty), /no model\.safetensors/);
  const store = SafetensorsStore.open(FIXTURE);
  throwsLoad(() => store.readF32('model.layers.3.mlp.up_proj.weight.x'), /tensor "model\.layers\.3\.mlp\.up_proj\.weight\.x" not found in .*tiny-qwen2/);
  throwsLoad(() => store.info('nope'), /tensor "nope" not found/);
  throwsLoad(() => store.readF32('model.layers.0.mlp.up_proj.weight', [128, 256]),
    /tensor "model\.layers\.0\.mlp\.up_proj\.weight" has shape \[256,128\], expected \[128,256\]/);
  const ref = SafetensorsStore.open(path.join(FIXTURE, 'reference.safetensors'));
  throwsLoad(() => ref.readF32('input_ids'), /input_ids/, /I32/);
});

test('malformed files are ModelLoadErrors naming the file and tensor', () => {
  const dir = newDir();
  const f = (name: string) => path.join(dir, name);
  fs.writeFileSync(f('short.safetensors'), Buffer.from([1, 2, 3]));
  throwsLoad(() => SafetensorsFile.open(f('short.safetensors')), /short\.safetensors/, /too short/);
  rawFile(f('biglen.safetensors'), '{}', new Uint8Array(0), 1n << 60n);
  throwsLoad(() => SafetensorsFile.open(f('biglen.safetensors')), /biglen\.safetensors/, /larger than the file/);
  rawFile(f('json.safetensors'), '{"t": {"dtype": "F32",');
  throwsLoad(() => SafetensorsFile.open(f('json.safetensors')), /json\.safetensors/, /not valid JSON/);

  const data = new Uint8Array(16);
  const good = { dtype: 'F32', shape: [2, 2], data_offsets: [0, 16] };
  for (const field of ['dtype', 'shape', 'data_offsets'] as const) {
    const entry: Record<string, unknown> = { ...good };
    delete entry[field];
    rawFile(f(`no-${field}.safetensors`), { 'w.missing': entry }, data);
    throwsLoad(() => SafetensorsFile.open(f(`no-${field}.safetensors`)), new RegExp(`no-${field}\\.safetensors`), /w\.missing/, new RegExp(field.replace('_', '_?')));
  }
  rawFile(f('beyond.safetensors'), { 'w.beyond': { ...good, data_offsets: [0, 32] } }, data);
  throwsLoad(() => SafetensorsFile.open(f('beyond.safetensors')), /w\.beyond/, /truncated/);
  rawFile(f('reversed.safetensors'), { 'w.rev': { ...good, data_offsets: [16, 0] } }, data);
  throwsLoad(() => SafetensorsFile.open(f('reversed.safetensors')), /w\.rev/, /end before/);
  rawFile(f('lies.safetensors'), { 'w.lies': { ...good, shape: [2, 3] } }, data);
  throwsLoad(() => SafetensorsFile.open(f('lies.safetensors')), /lies\.safetensors/, /w\.lies/, /header lies about offsets/);
  rawFile(f('array.safetensors'), '[1,2]');
  throwsLoad(() => SafetensorsFile.open(f('array.safetensors')), /not a JSON object/);
});

test('a truncated checkpoint names the first tensor past the end', () => {
  const dir = newDir();
  const file = path.join(dir, 'model.safetensors');
  fs.copyFileSync(path.join(FIXTURE, 'model.safetensors'), file);
  fs.truncateSync(file, fs.statSync(file).size - 100);
  throwsLoad(() => SafetensorsStore.open(dir), /model\.safetensors/, /tensor "model\.norm\.weight"/, /truncated/);
  fs.truncateSync(file, 5);
  throwsLoad(() => SafetensorsStore.open(dir), /too short/);
});

test('writeSafetensors rejects data that does not match the shape', () => {
  const file = path.join(newDir(), 'bad.safetensors');
  throwsLoad(() => writeSafetensors(file, [{ name: 'w', dtype: 'F32', shape: [2, 2], data: new Float32Array(3) }]), /"w"/, /\[2,2\]/);
});

test('layouts the format forbids are refused: data must be covered exactly once (as the reference reader)', () => {
  const dir = newDir();
  const f = (name: string) => path.join(dir, name);
  const data = new Uint8Array(32);
  const t = (begin: number, end: number) => ({ dtype: 'F32', shape: [(end - begin) / 4], data_offsets: [begin, end] });
  rawFile(f('ok.safetensors'), { a: t(0, 16), b: t(16, 32) }, data);
  assert.deepEqual(SafetensorsFile.open(f('ok.safetensors')).names().sort(), ['a', 'b']);
  rawFile(f('same.safetensors'), { a: t(0, 16), b: t(0, 16), c: t(16, 32) }, data);
  throwsLoad(() => SafetensorsFile.open(f('same.safetensors')), /same\.safetensors/, /overlaps/);
  rawFile(f('overlap.safetensors'), { a: t(0, 24), b: t(16, 32) }, data);
  throwsLoad(() => SafetensorsFile.open(f('overlap.safetensors')), /"b"/, /overlaps/);
  rawFile(f('hole.safetensors'), { a: t(0, 8), b: t(16, 32) }, data);
  throwsLoad(() => SafetensorsFile.open(f('hole.safetensors')), /\[8,16\)/, /belong to no tensor/);
  rawFile(f('trailing.safetensors'), { a: t(0, 16), b: t(16, 32) }, new Uint8Array(40));
  throwsLoad(() => SafetensorsFile.open(f('trailing.safetensors')), /cover 32 data bytes but the file holds 40/);
  rawFile(f('dup.safetensors'), '{"a": {"dtype":"F32","shape":[8],"data_offsets":[16,48]}, "a": {"dtype":"F32","shape":[4],"data_offsets":[0,16]}, "b": {"dtype":"F32","shape":[4],"data_offsets":[16,32]}}', data);
  throwsLoad(() => SafetensorsFile.open(f('dup.safetensors')), /names "a" twice/);
  rawFile(f('space.safetensors'), ` ${JSON.stringify({ a: t(0, 32) })}`, data);
  throwsLoad(() => SafetensorsFile.open(f('space.safetensors')), /does not start with '\{'/);
});

test('a header length shortened into its space padding is refused, not read a few bytes off', () => {
  const dir = newDir();
  const file = path.join(dir, 'model.safetensors');
  writeSafetensors(file, [{ name: 'w', dtype: 'F32', shape: [3], data: Float32Array.of(1, 2, 3) }]);
  const bytes = fs.readFileSync(file);
  const n = bytes.readBigUInt64LE(0);
  const header = bytes.subarray(8, 8 + Number(n)).toString();
  const padding = header.length - header.trimEnd().length;
  assert.ok(padding > 0, 'the writer pads this header');
  assert.deepEqual([...SafetensorsFile.open(file).names()], ['w']);
  bytes.writeBigUInt64LE(n - BigInt(padding));
  fs.writeFileSync(file, bytes);
  throwsLoad(() => SafetensorsFile.open(file), /cover 12 data bytes but the file holds/);
});

test('a shard outside the model folder is refused; names in errors are escaped and cut', () => {
  const dir = newDir();
  const other = newDir();
  writeSafetensors(path.join(other, 'model.safetensors'), [{ name: 'w', dtype: 'F32', shape: [1], data: Float32Array.of(1) }]);
  const shard = path.relative(dir, path.join(other, 'model.safetensors'));
  for (const name of [shard, path.join(other, 'model.safetensors')]) {
    fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { w: name } }));
    throwsLoad(() => SafetensorsStore.open(dir), /not inside the model folder/);
  }
  const evil = `\x1b[31m${'x'.repeat(5000)}`;
  const file = path.join(newDir(), 'model.safetensors');
  writeSafetensors(file, [{ name: evil, dtype: 'F32', shape: [1], data: Float32Array.of(1) }]);
  throwsLoad(() => SafetensorsStore.open(file).readF32(evil, [2]), /\\u001b\[31mxxx/, /\(5005 characters\)/);
  assert.throws(() => SafetensorsStore.open(file).readF32(evil, [2]), (e: Error) => !e.message.includes('\x1b') && e.message.length < 400);
  rawFile(path.join(dir, 'bad.safetensors'), `{"\x07": 1`);
  throwsLoad(() => SafetensorsFile.open(path.join(dir, 'bad.safetensors')), /not valid JSON/);
  assert.throws(() => SafetensorsFile.open(path.join(dir, 'bad.safetensors')), (e: Error) => !e.message.includes('\x07'));
});
