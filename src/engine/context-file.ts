/**
 * Context files: a compressed context in one safetensors file. Tensors: `ids` I32 [N] (the context's tokens),
 * `logits` F32 [vocab] (its last row), and per layer l the cache heads' entries packed one head after another
 * (heads may keep different numbers: AdaKV, HeadKV): `layers.l.keys` / `layers.l.values` F32 [Σ kept_h, headDim],
 * `layers.l.positions` I32 [Σ kept_h] (each entry's original position) and `layers.l.lengths` I32 [cacheHeads].
 * `__metadata__` holds the format and its version, the model's fingerprint, the method and its options, the
 * token count, the chat messages of a chat context, and a SHA-256 of the tensor bytes.
 *
 * A file is refused, with the reason, when it was saved from another model (fingerprint), is truncated, has a
 * corrupted header or data, or comes from a newer format version. Saving writes a temporary file in the same
 * folder, flushes it and renames it into place, so a crash mid-save never leaves a partial file under the name.
 * @module
 */
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { ModelLoadError, RequestError } from '../errors.js';
import { encodeHeader } from '../model/safetensors-write.js';
import { SafetensorsFile, SafetensorsStore } from '../model/safetensors.js';
import type { ChatMessage } from '../model/tokenizer.js';
import { CompressedContext } from './context.js';
import type { LayerStats } from './forward.js';
import { KvCache, LayerCache } from './kv-cache.js';
import type { Model } from './model.js';

export const CONTEXT_FORMAT = 'fastkv-context';
export const CONTEXT_FORMAT_VERSION = 2;

/** Tensors at most this long are hashed whole by the fingerprint; longer matrices by evenly spaced rows. */
const WHOLE_TENSOR_ELEMENTS = 1 << 16;
const SAMPLED_ROWS = 16;

const fingerprints = new WeakMap<Model, string>();

/**
 * A digest of the model a context belongs to: its normalized config, its weight format (the cache was computed
 * with those weights), and, for every tensor of its checkpoint, its name, shape and values (whole below 65,536
 * elements, else 16 evenly spaced rows: any fine-tune or other checkpoint changes them, and hashing gigabytes
 * on every load would not be worth it). The values are read from the checkpoint (ONNX Runtime holds the loaded
 * weights); computed once per model.
 */
export function modelFingerprint(model: Model): string {
  let digest = fingerprints.get(model);
  if (digest) return digest;
  const hash = createHash('sha256');
  hash.update(JSON.stringify(model.config));
  hash.update(`dtype=${model.dtype};`);
  const store = SafetensorsStore.open(model.dir);
  for (const name of store.names().sort()) {
    const { shape, dtype } = store.info(name);
    if (dtype !== 'F32' && dtype !== 'F16' && dtype !== 'BF16') continue;
    hash.update(`${name};${shape.join(',')};`);
    const numel = shape.reduce((a, d) => a * d, 1);
    let sample: Float32Array;
    if (numel <= WHOLE_TENSOR_ELEMENTS || shape.length !== 2) {
      sample = store.readF32(name);
    } else {
      const [rows, cols] = shape as [number, number];
      sample = new Float32Array(SAMPLED_ROWS * cols);
      for (let i = 0; i < SAMPLED_ROWS; i++) {
        store.readF32RowsInto(name, [rows, cols], Math.floor((i * rows) / SAMPLED_ROWS), sample.subarray(i * cols, (i + 1) * cols));
      }
    }
    hash.update(new Uint8Array(sample.buffer, sample.byteOffset, sample.byteLength));
  }
  digest = hash.digest('hex');
  fingerprints.set(model, digest);
  return digest;
}

interface TensorOut { name: string; dtype: 'F32' | 'I32'; shape: number[]; data: Float32Array | Int32Array }

function bytesOf(t: Float32Array | Int32Array): Uint8Array {
  return new Uint8Array(t.buffer, t.byteOffset, t.byteLength);
}

/**
 * Refuses an output path that cannot be written before any long work: its folder must exist and be a folder,
 * and the path must not be a folder itself.
 */
export function checkOutputPath(file: string): void {
  const dir = path.dirname(path.resolve(file));
  let st: fs.Stats;
  try { st = fs.statSync(dir); } catch {
    throw new RequestError(`cannot write "${file}": folder ${dir} does not exist`);
  }
  if (!st.isDirectory()) throw new RequestError(`cannot write "${file}": ${dir} is not a folder`);
  try { fs.accessSync(dir, fs.constants.W_OK); } catch {
    throw new RequestError(`cannot write "${file}": folder ${dir} is not writable`);
  }
  if (fs.existsSync(file) && !fs.statSync(file).isFile()) throw new RequestError(`cannot write "${file}": it exists and is not a regular file`);
}

/** Writes `context` to `file` through a temporary file in the same folder, renamed into place. */
export async function saveContext(context: CompressedContext, file: string): Promise<void> {
  checkOutputPath(file);
  const model = context.model;
  const tensors: TensorOut[] = [
    { name: 'ids', dtype: 'I32', shape: [context.ids.length], data: Int32Array.from(context.ids) },
    { name: 'logits', dtype: 'F32', shape: [context.logits.length], data: context.logits },
  ];
  const groups: number[] = [];
  context.cache.layers.forEach((layer, l) => {
    if (!layer) throw new RequestError(`layer ${l} of the context has no cache`);
    const { keys, values, positions, lengths } = layer.packed();
    groups.push(layer.group);
    tensors.push(
      { name: `layers.${l}.keys`, dtype: 'F32', shape: [positions.length, layer.headDim], data: keys },
      { name: `layers.${l}.values`, dtype: 'F32', shape: [positions.length, layer.headDim], data: values },
      { name: `layers.${l}.positions`, dtype: 'I32', shape: [positions.length], data: positions },
      { name: `layers.${l}.lengths`, dtype: 'I32', shape: [lengths.length], data: lengths },
    );
  });
  const checksum = createHash('sha256');
  for (const t of tensors) checksum.update(bytesOf(t.data));
  const metadata: Record<string, string> = {
    format: CONTEXT_FORMAT,
    format_version: String(CONTEXT_FORMAT_VERSION),
    model_fingerprint: modelFingerprint(model),
    model_dir: model.dir,
    method: context.method,
    method_options: JSON.stringify(context.methodOptions),
    tokens: String(context.tokens),
    next_position: String(context.nextPosition),
    layers: JSON.stringify(context.layers),
    cache_groups: JSON.stringify(groups),
    prefill_ms: String(context.prefillMs),
    policy_ms: String(context.policyMs),
    data_sha256: checksum.digest('hex'),
  };
  if (context.text !== null) metadata.text = context.text;
  if (context.messages) metadata.messages = JSON.stringify(context.messages);
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const t of tensors) {
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + t.data.byteLength] };
    offset += t.data.byteLength;
  }

  const target = path.resolve(file);
  const temp = path.join(path.dirname(target), `.${path.basename(target)}.${randomBytes(6).toString('hex')}.tmp`);
  const handle = await fs.promises.open(temp, 'wx', 0o644);
  try {
    await handle.write(encodeHeader(header));
    for (const t of tensors) await handle.write(bytesOf(t.data));
    await handle.sync();
    await handle.close();
    await fs.promises.rename(temp, target);
  } catch (error) {
    await handle.close().catch(() => {});
    await fs.promises.rm(temp, { force: true });
    throw new RequestError(`cannot save the context to "${file}": ${(error as Error).message}`, { cause: error });
  }
}

function jsonField<T>(file: string, meta: Readonly<Record<string, string>>, key: string): T {
  const raw = meta[key];
  if (raw === undefined) throw new ModelLoadError(`context file ${file}: metadata lacks "${key}"`);
  try { return JSON.parse(raw) as T; } catch {
    throw new ModelLoadError(`context file ${file}: metadata "${key}" is not valid JSON`);
  }
}

function intField(file: string, meta: Readonly<Record<string, string>>, key: string, min: number): number {
  const n = Number(meta[key]);
  if (meta[key] === undefined || !Number.isSafeInteger(n) || n < min) {
    throw new ModelLoadError(`context file ${file}: metadata "${key}" must be an integer >= ${min}, got ${JSON.stringify(meta[key])}`);
  }
  return n;
}

/**
 * Reads a context saved by `ctx.save(file)` for `model`. Refused with a ModelLoadError naming the reason: not
 * a context file, a newer format version, another model, a truncated file, a corrupted header or data.
 */
export async function loadContext(model: Model, file: string): Promise<CompressedContext> {
  const st = fs.statSync(file, { throwIfNoEntry: false });
  if (!st) throw new ModelLoadError(`context file ${file} does not exist`);
  if (!st.isFile()) throw new ModelLoadError(`context file ${file} is not a regular file`);
  const f = SafetensorsFile.open(file);
  const meta = f.metadata;
  if (meta.format !== CONTEXT_FORMAT) throw new ModelLoadError(`${file} is not a fastkv context file (no "format": "${CONTEXT_FORMAT}" in its metadata)`);
  const version = intField(file, meta, 'format_version', 1);
  if (version > CONTEXT_FORMAT_VERSION) {
    throw new ModelLoadError(`context file ${file} has format version ${version}, newer than this fastkv reads ` +
      `(${CONTEXT_FORMAT_VERSION}); upgrade fastkv or build the context again`);
  }
  if (version < CONTEXT_FORMAT_VERSION) {
    // Version 1 stored every head with one length; version 2 stores each head's own (ragged caches).
    throw new ModelLoadError(`context file ${file} has format version ${version}, older than this fastkv reads ` +
      `(${CONTEXT_FORMAT_VERSION}); build the context again`);
  }
  const fingerprint = modelFingerprint(model);
  if (meta.model_fingerprint !== fingerprint) {
    throw new ModelLoadError(`context file ${file} was saved from another model (${meta.model_dir ?? 'unknown folder'}, ` +
      `fingerprint ${String(meta.model_fingerprint).slice(0, 12)}), not the one loaded from ${model.dir} ` +
      `(fingerprint ${fingerprint.slice(0, 12)})`);
  }
  const c = model.config;
  const tokens = intField(file, meta, 'tokens', 1);
  const nextPosition = intField(file, meta, 'next_position', 1);
  const groups = jsonField<unknown>(file, meta, 'cache_groups');
  const layers = jsonField<unknown>(file, meta, 'layers');
  const methodOptions = jsonField<unknown>(file, meta, 'method_options');
  if (!Array.isArray(groups) || groups.length !== c.numLayers || !groups.every((g) => g === 1 || g === c.numHeads / c.numKvHeads)) {
    throw new ModelLoadError(`context file ${file}: metadata "cache_groups" must list ${c.numLayers} layers of 1 or ${c.numHeads / c.numKvHeads}`);
  }
  const isCount = (x: unknown) => typeof x === 'number' && Number.isFinite(x) && x >= 0;
  if (!Array.isArray(layers) || !layers.every((l) => Number.isSafeInteger(l?.rows) && isCount(l?.kept)
    && (l.keptPerHead === undefined || (Array.isArray(l.keptPerHead) && l.keptPerHead.every(Number.isSafeInteger))))) {
    throw new ModelLoadError(`context file ${file}: metadata "layers" is not a list of { rows, kept, keptPerHead? }`);
  }
  if (typeof methodOptions !== 'object' || methodOptions === null || Array.isArray(methodOptions)) {
    throw new ModelLoadError(`context file ${file}: metadata "method_options" is not an object`);
  }
  let messages: ChatMessage[] | null = null;
  if (meta.messages !== undefined) {
    const parsed = jsonField<unknown>(file, meta, 'messages');
    if (!Array.isArray(parsed) || !parsed.every((m) => typeof m?.role === 'string' && typeof m?.content === 'string') || meta.text === undefined) {
      throw new ModelLoadError(`context file ${file}: metadata "messages" is not a list of { role, content } with their rendering in "text"`);
    }
    messages = parsed as ChatMessage[];
  }

  // Read every tensor's bytes, checking shapes against the model and the checksum over all of them.
  const checksum = createHash('sha256');
  const fd = fs.openSync(file, 'r');
  const read = (name: string, dtype: 'F32' | 'I32', shape: number[]): Uint8Array => {
    const e = f.entry(name);
    if (!e) throw new ModelLoadError(`context file ${file}: tensor "${name}" is missing`);
    if (e.dtype !== dtype || e.shape.length !== shape.length || e.shape.some((d, i) => shape[i] >= 0 && d !== shape[i])) {
      throw new ModelLoadError(`context file ${file}: tensor "${name}" is ${e.dtype} [${e.shape.join(', ')}], expected ` +
        `${dtype} [${shape.map((d) => (d >= 0 ? d : '?')).join(', ')}]`);
    }
    const bytes = new Uint8Array(e.byteLength);
    for (let done = 0; done < bytes.length;) {
      const n = fs.readSync(fd, bytes, done, bytes.length - done, e.start + done);
      if (n === 0) throw new ModelLoadError(`context file ${file}: tensor "${name}": unexpected end of file (file truncated?)`);
      done += n;
    }
    checksum.update(bytes);
    return bytes;
  };
  const cache = new KvCache(c);
  const packed: { heads: number; group: number; keys: Float32Array; values: Float32Array; positions: Int32Array; lengths: Int32Array }[] = [];
  let ids: Int32Array;
  let logits: Float32Array;
  try {
    ids = new Int32Array(read('ids', 'I32', [tokens]).buffer);
    logits = new Float32Array(read('logits', 'F32', [c.vocabSize]).buffer);
    for (let l = 0; l < c.numLayers; l++) {
      const group = groups[l] as number;
      const heads = c.numKvHeads * group;
      const keys = new Float32Array(read(`layers.${l}.keys`, 'F32', [-1, c.headDim]).buffer);
      const total = keys.length / c.headDim;
      const values = new Float32Array(read(`layers.${l}.values`, 'F32', [total, c.headDim]).buffer);
      const positions = new Int32Array(read(`layers.${l}.positions`, 'I32', [total]).buffer);
      const lengths = new Int32Array(read(`layers.${l}.lengths`, 'I32', [heads]).buffer);
      packed.push({ heads, group, keys, values, positions, lengths });
    }
  } finally {
    fs.closeSync(fd);
  }
  if (checksum.digest('hex') !== meta.data_sha256) {
    throw new ModelLoadError(`context file ${file} is corrupted: its data does not match the checksum in its header`);
  }
  packed.forEach(({ heads, group, keys, values, positions, lengths }, l) => {
    let sum = 0;
    for (const len of lengths) sum += len;
    if (lengths.some((len) => len < 0) || sum !== positions.length) {
      throw new ModelLoadError(`context file ${file}: layer ${l}'s head lengths (${Array.from(lengths).join(', ')}) do not add up to its ${positions.length} entries`);
    }
    cache.layers[l] = LayerCache.fromPacked(heads, c.headDim, group, lengths, keys, values, positions);
  });
  // A file with a valid checksum may still have been written by something else: check what decoding relies on.
  cache.layers.forEach((layer, l) => {
    for (let h = 0; h < layer!.numHeads; h++) {
      const positions = layer!.headPositions(h);
      for (let s = 0; s < positions.length; s++) {
        const p = positions[s];
        if (p < 0 || p >= nextPosition || (s > 0 && p <= positions[s - 1])) {
          throw new ModelLoadError(`context file ${file}: layer ${l} head ${h} has positions that are not ascending within [0, ${nextPosition})`);
        }
      }
    }
  });
  for (let i = 0; i < ids.length; i++) {
    if (!(ids[i] >= 0 && ids[i] < c.vocabSize)) throw new ModelLoadError(`context file ${file}: token id ${ids[i]} at index ${i} is outside the vocabulary`);
  }
  return new CompressedContext(model, {
    ids: Array.from(ids), messages, text: meta.text ?? null, cache, logits, nextPosition,
    method: meta.method ?? 'unknown', methodOptions: methodOptions as Record<string, unknown>,
    layers: layers as LayerStats[], prefillMs: Number(meta.prefill_ms) || 0, policyMs: Number(meta.policy_ms) || 0,
  });
}
