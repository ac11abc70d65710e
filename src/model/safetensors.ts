/**
 * Reading the safetensors format: an 8-byte little-endian u64 header length N, N bytes of JSON
 * (`{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}`), then the tensor bytes, with
 * offsets relative to the first byte after the header. Writing lives in `safetensors-write.ts`, re-exported here.
 *
 * Only headers are read at open; each tensor is read on demand with positioned reads (16-bit ones in chunks),
 * so a multi-gigabyte checkpoint is never held in memory twice. Every malformed input becomes a
 * {@link ModelLoadError} naming the file and, where there is one, the tensor.
 * @module
 */

import * as fs from 'node:fs';
import * as path from 'node:path';
import { ModelLoadError, printable, quoted } from '../errors.js';
import { readJsonFile, MAX_JSON_BYTES } from '../files.js';
import { own } from '../own.js';
import { assertLittleEndian, CHUNK_ELEMENTS, DTYPE_SIZES, f16Table, formatShape } from './dtypes.js';

export { writeSafetensors, type TensorToWrite } from './safetensors-write.js';
export { f32BitsToBf16, f32BitsToF16 } from './dtypes.js';

/** The format's own limit on the header, and our guard against allocating absurd buffers. */
const MAX_HEADER_BYTES = 100 * 1024 * 1024;

export interface TensorInfo {
  readonly dtype: string;
  readonly shape: readonly number[];
  /** Absolute path of the file holding the tensor. */
  readonly file: string;
}

/** A validated header entry. */
export interface TensorEntry extends TensorInfo {
  readonly numel: number;
  /** Absolute byte position of the data within `file`. */
  readonly start: number;
  readonly byteLength: number;
}

/** Reads exactly `target.length` bytes at `position`; a short file is a ModelLoadError (never a hang). */
function readExactly(fd: number, target: Uint8Array, position: number, what: string): void {
  let done = 0;
  while (done < target.length) {
    const n = fs.readSync(fd, target, done, Math.min(target.length - done, 1 << 30), position + done);
    if (n === 0) throw new ModelLoadError(`${what}: unexpected end of file (file truncated?)`);
    done += n;
  }
}

function withFd<T>(file: string, fn: (fd: number) => T): T {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (e) {
    throw new ModelLoadError(`cannot open ${file}: ${(e as Error).message}`, { cause: e });
  }
  try { return fn(fd); } finally { fs.closeSync(fd); }
}

/** One `.safetensors` file: its validated header, read once at open. */
export class SafetensorsFile {
  readonly path: string;
  readonly metadata: Readonly<Record<string, string>>;
  private readonly entries = new Map<string, TensorEntry>();

  private constructor(file: string) {
    this.path = file;
    let size: number;
    try {
      const st = fs.statSync(file);
      if (!st.isFile()) throw new Error('not a regular file');
      size = st.size;
    } catch (e) {
      throw new ModelLoadError(`safetensors file ${file} cannot be read: ${(e as Error).message}`, { cause: e });
    }
    if (size < 8) throw new ModelLoadError(`${file} is ${size} bytes long, too short for a safetensors header`);
    const header = withFd(file, (fd) => {
      const lenBuf = Buffer.alloc(8);
      readExactly(fd, lenBuf, 0, file);
      const n = lenBuf.readBigUInt64LE(0);
      if (n > BigInt(size - 8)) {
        throw new ModelLoadError(`${file}: header length ${n} is larger than the file (${size} bytes)`);
      }
      if (n > BigInt(MAX_HEADER_BYTES)) throw new ModelLoadError(`${file}: header length ${n} exceeds 100 MB`);
      const buf = Buffer.alloc(Number(n));
      readExactly(fd, buf, 8, file);
      return buf;
    });
    // As the reference reader: the header is a JSON object (first byte '{'), padded at the end with spaces only.
    const text = header.toString('utf8');
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (e) {
      throw new ModelLoadError(`${file}: header is not valid JSON (${printable((e as Error).message, 200)})`, { cause: e });
    }
    if (typeof json !== 'object' || json === null || Array.isArray(json)) {
      throw new ModelLoadError(`${file}: header is not a JSON object`);
    }
    if (header[0] !== 0x7b) throw new ModelLoadError(`${file}: header does not start with '{'`);
    const duplicate = firstDuplicateKey(text);
    if (duplicate !== null) throw new ModelLoadError(`${file}: header names ${quoted(duplicate)} twice`);
    const dataStart = 8 + header.length;
    const meta: Record<string, string> = {};
    for (const [name, raw] of Object.entries(json as Record<string, unknown>)) {
      if (name === '__metadata__') {
        if (raw && typeof raw === 'object') {
          for (const [k, v] of Object.entries(raw)) if (typeof v === 'string') meta[k] = v;
        }
        continue;
      }
      this.entries.set(name, parseEntry(file, name, raw, dataStart, size - dataStart));
    }
    checkCoverage(file, [...this.entries.entries()], dataStart, size - dataStart);
    this.metadata = Object.freeze(meta);
  }

  /** Opens and validates `file` (header only; no tensor data is read). */
  static open(file: string): SafetensorsFile {
    return new SafetensorsFile(path.resolve(file));
  }

  names(): string[] { return [...this.entries.keys()]; }
  has(name: string): boolean { return this.entries.has(name); }
  entry(name: string): TensorEntry | undefined { return this.entries.get(name); }
}

/**
 * The format requires the tensors' data to cover the data section exactly once: sorted by offset, each tensor
 * starts where the previous one ended, the first at 0 and the last at the end of the file. This catches a header
 * length that was shortened into its padding (every tensor would be read a few bytes off), overlapping or shared
 * offsets, holes and trailing bytes, as the reference reader does.
 */
function checkCoverage(file: string, entries: [string, TensorEntry][], dataStart: number, dataSize: number): void {
  const sorted = entries
    .map(([name, e]) => ({ name, begin: e.start - dataStart, end: e.start - dataStart + e.byteLength }))
    .sort((a, b) => a.begin - b.begin || a.end - b.end);
  let at = 0;
  for (const t of sorted) {
    if (t.begin < at) {
      throw new ModelLoadError(`${file}: tensor ${quoted(t.name)} (data_offsets [${t.begin},${t.end}]) overlaps the tensor before it, which ends at ${at}`);
    }
    if (t.begin > at) {
      throw new ModelLoadError(`${file}: bytes [${at},${t.begin}) of the data belong to no tensor (a hole before ${quoted(t.name)}; header length or offsets wrong?)`);
    }
    at = t.end;
  }
  if (at !== dataSize) {
    throw new ModelLoadError(`${file}: the tensors cover ${at} data bytes but the file holds ${dataSize} after the header ` +
      '(trailing bytes, or a header length that does not match the header)');
  }
}

/**
 * The first key that appears twice in one object of a JSON text (which JSON.parse would silently resolve to the
 * last), or null. `text` must be valid JSON.
 */
function firstDuplicateKey(text: string): string | null {
  const stack: (Set<string> | null)[] = [];   // keys seen per open object; null for an array
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {                          // a string: find its end, skipping escapes
      let j = i + 1;
      while (text.charCodeAt(j) !== 0x22) j += text.charCodeAt(j) === 0x5c ? 2 : 1;
      const top = stack[stack.length - 1];
      if (expectKey && top) {
        const key = JSON.parse(text.slice(i, j + 1)) as string;
        if (top.has(key)) return key;
        top.add(key);
      }
      expectKey = false;
      i = j;
    } else if (c === 0x7b) { stack.push(new Set()); expectKey = true; }
    else if (c === 0x5b) { stack.push(null); expectKey = false; }
    else if (c === 0x7d || c === 0x5d) { stack.pop(); expectKey = false; }
    else if (c === 0x2c) expectKey = stack[stack.length - 1] != null;
  }
  return null;
}

function parseEntry(file: string, name: string, raw: unknown, dataStart: number, dataSize: number): TensorEntry {
  const where = `${file}: tensor ${quoted(name)}`;
  if (!raw || typeof raw !== 'object') throw new ModelLoadError(`${where} has no header entry object`);
  const { dtype, shape, data_offsets: offs } = raw as Record<string, unknown>;
  if (typeof dtype !== 'string') throw new ModelLoadError(`${where} has no dtype`);
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw new ModelLoadError(`${where} has a missing or invalid shape`);
  }
  if (!Array.isArray(offs) || offs.length !== 2 || !offs.every((o) => Number.isSafeInteger(o) && o >= 0)) {
    throw new ModelLoadError(`${where} has missing or invalid data_offsets`);
  }
  const [begin, end] = offs as [number, number];
  if (end < begin) throw new ModelLoadError(`${where}: data_offsets [${begin},${end}] end before they begin`);
  if (end > dataSize) {
    throw new ModelLoadError(
      `${where}: data_offsets end at ${end} but the file holds only ${dataSize} data bytes (file truncated?)`);
  }
  const numel = (shape as number[]).reduce((a, d) => a * d, 1);
  const size = own(DTYPE_SIZES, dtype);
  // Sub-byte or unknown dtypes are not size-checked here; reading them as float32 fails by dtype instead.
  if (size !== undefined && numel * size !== end - begin) {
    throw new ModelLoadError(`${where}: header lies about offsets: shape ${formatShape(shape as number[])} of ` +
      `${quoted(dtype, 20)} needs ${numel * size} bytes, data_offsets span ${end - begin}`);
  }
  return { dtype, shape: Object.freeze([...(shape as number[])]), file, numel, start: dataStart + begin, byteLength: end - begin };
}

/**
 * The tensors of a checkpoint folder: `model.safetensors`, or `model.safetensors.index.json` plus its shards, or
 * else the folder's only `*.safetensors` file. A path to a single `.safetensors` file is accepted too.
 */
export class SafetensorsStore {
  readonly dir: string;
  private readonly where: ReadonlyMap<string, SafetensorsFile>;

  private constructor(dir: string, where: ReadonlyMap<string, SafetensorsFile>) {
    this.dir = dir;
    this.where = where;
  }

  static open(dirOrFile: string): SafetensorsStore {
    const target = path.resolve(dirOrFile);
    let st: fs.Stats;
    try { st = fs.statSync(target); } catch (e) {
      throw new ModelLoadError(`model folder ${target} does not exist`, { cause: e });
    }
    if (st.isFile()) return SafetensorsStore.fromFiles(path.dirname(target), [SafetensorsFile.open(target)]);
    const index = path.join(target, 'model.safetensors.index.json');
    if (fs.existsSync(index)) return SafetensorsStore.fromIndex(target, index);
    const single = path.join(target, 'model.safetensors');
    if (fs.existsSync(single)) return SafetensorsStore.fromFiles(target, [SafetensorsFile.open(single)]);
    const found = fs.readdirSync(target).filter((f) => f.endsWith('.safetensors'));
    if (found.length === 1) {
      return SafetensorsStore.fromFiles(target, [SafetensorsFile.open(path.join(target, found[0]))]);
    }
    throw new ModelLoadError(found.length === 0
      ? `no model.safetensors or model.safetensors.index.json in ${target}`
      : `${target} has no model.safetensors or index.json but several .safetensors files (${found.join(', ')})`);
  }

  private static fromFiles(dir: string, files: SafetensorsFile[]): SafetensorsStore {
    const map = new Map<string, SafetensorsFile>();
    for (const f of files) for (const n of f.names()) map.set(n, f);
    return new SafetensorsStore(dir, map);
  }

  private static fromIndex(dir: string, index: string): SafetensorsStore {
    const json = readJsonFile(index, { maxBytes: MAX_JSON_BYTES, what: index, error: ModelLoadError });
    const wm = (json as { weight_map?: unknown } | null)?.weight_map;
    if (!wm || typeof wm !== 'object' || Array.isArray(wm)) throw new ModelLoadError(`${index} has no weight_map object`);
    const shards = new Map<string, SafetensorsFile>();
    const map = new Map<string, SafetensorsFile>();
    for (const [name, shard] of Object.entries(wm as Record<string, unknown>)) {
      if (typeof shard !== 'string') throw new ModelLoadError(`${index}: weight_map entry for ${quoted(name)} is not a file name`);
      let file = shards.get(shard);
      if (!file) {
        // A shard is a file of the model folder: "../x.safetensors" or an absolute path would read elsewhere.
        // (The path text is checked, not where symlinks lead: the Hugging Face cache links shards to blobs.)
        const p = path.resolve(dir, shard);
        const rel = path.relative(dir, p);
        if (shard === '' || shard.includes('\0') || rel === '' || rel === '..' || rel.startsWith(`..${path.sep}`) || path.isAbsolute(rel)) {
          throw new ModelLoadError(`${index} names shard ${quoted(shard)} (for tensor ${quoted(name)}), which is not inside the model folder ${dir}`);
        }
        if (!fs.existsSync(p)) {
          throw new ModelLoadError(`${index} names shard ${quoted(shard)} (for tensor ${quoted(name)}), which does not exist in ${dir}`);
        }
        file = SafetensorsFile.open(p);
        shards.set(shard, file);
      }
      if (!file.has(name)) throw new ModelLoadError(`${index} puts tensor ${quoted(name)} in ${quoted(shard)}, which does not contain it`);
      map.set(name, file);
    }
    return new SafetensorsStore(dir, map);
  }

  names(): string[] { return [...this.where.keys()]; }
  has(name: string): boolean { return this.where.has(name); }
  info(name: string): TensorInfo {
    const e = this.entry(name);
    return { dtype: e.dtype, shape: e.shape, file: e.file };
  }
  /** `__metadata__` of every file, merged. */
  metadata(): Record<string, string> {
    const out: Record<string, string> = {};
    for (const f of new Set(this.where.values())) Object.assign(out, f.metadata);
    return out;
  }

  private entry(name: string, expectedShape?: readonly number[]): TensorEntry {
    const e = this.where.get(name)?.entry(name);
    if (!e) throw new ModelLoadError(`tensor ${quoted(name)} not found in ${this.dir}`);
    if (expectedShape && (expectedShape.length !== e.shape.length || expectedShape.some((d, i) => d !== e.shape[i]))) {
      throw new ModelLoadError(
        `tensor ${quoted(name)} has shape ${formatShape(e.shape)}, expected ${formatShape(expectedShape)} (${e.file})`);
    }
    return e;
  }

  /** The tensor's bytes exactly as stored. */
  readRaw(name: string): { dtype: string; shape: readonly number[]; bytes: Uint8Array } {
    const e = this.entry(name);
    const bytes = new Uint8Array(e.byteLength);
    withFd(e.file, (fd) => readExactly(fd, bytes, e.start, `${e.file}: tensor ${quoted(name)}`));
    return { dtype: e.dtype, shape: e.shape, bytes };
  }

  /** Reads an F32, F16 or BF16 tensor as float32, checking its shape against `expectedShape` when given. */
  readF32(name: string, expectedShape?: readonly number[]): Float32Array {
    const e = this.entry(name, expectedShape);
    const out = new Float32Array(e.numel);
    this.readInto(e, name, out);
    return out;
  }

  /** Like {@link readF32}, but into `target` (e.g. a row block of a fused matrix), which must hold exactly the tensor. */
  readF32Into(name: string, target: Float32Array, expectedShape?: readonly number[]): void {
    const e = this.entry(name, expectedShape);
    if (target.length !== e.numel) {
      throw new ModelLoadError(`tensor ${name} has ${e.numel} elements, the destination holds ${target.length}`);
    }
    this.readInto(e, name, target);
  }

  /**
   * Reads whole rows `firstRow`.. of a 2-D F32/F16/BF16 tensor (shape checked against `expectedShape`) into
   * `target`, whose length must be a multiple of the row length: large matrices can be processed in bounded
   * chunks.
   */
  readF32RowsInto(name: string, expectedShape: readonly [number, number], firstRow: number, target: Float32Array): void {
    const e = this.entry(name, expectedShape);
    const [rows, cols] = expectedShape;
    const numRows = cols === 0 ? 0 : target.length / cols;
    if (!Number.isSafeInteger(numRows) || !Number.isSafeInteger(firstRow) || firstRow < 0 || firstRow + numRows > rows) {
      throw new ModelLoadError(`tensor ${name}: cannot read ${target.length} elements from row ${firstRow} of ${formatShape(expectedShape)}`);
    }
    this.readInto(e, name, target, firstRow * cols);
  }

  /** Reads an I32 or I64 tensor (e.g. token ids in a reference file) as Int32Array; I64 values must fit. */
  readI32(name: string, expectedShape?: readonly number[]): Int32Array {
    const e = this.entry(name, expectedShape);
    assertLittleEndian();
    if (e.dtype === 'I32') return new Int32Array(this.readRaw(name).bytes.buffer);
    if (e.dtype !== 'I64') throw new ModelLoadError(`tensor ${quoted(name)} in ${e.file} has dtype ${quoted(e.dtype, 20)}; expected I32 or I64`);
    const wide = new BigInt64Array(this.readRaw(name).bytes.buffer);
    const out = new Int32Array(e.numel);
    for (let i = 0; i < wide.length; i++) {
      if (wide[i] > 2147483647n || wide[i] < -2147483648n) {
        throw new ModelLoadError(`tensor ${quoted(name)} holds ${wide[i]}, beyond int32`);
      }
      out[i] = Number(wide[i]);
    }
    return out;
  }

  /** Reads `out.length` elements of tensor `e` from element `first` on, as float32. */
  private readInto(e: TensorEntry, name: string, out: Float32Array, first = 0): void {
    assertLittleEndian();
    const what = `${e.file}: tensor ${quoted(name)}`;
    const numel = out.length;
    if (e.dtype === 'F32') {
      withFd(e.file, (fd) => readExactly(fd, new Uint8Array(out.buffer, out.byteOffset, out.byteLength), e.start + first * 4, what));
      return;
    }
    if (e.dtype !== 'F16' && e.dtype !== 'BF16') {
      throw new ModelLoadError(
        `tensor ${quoted(name)} in ${e.file} has dtype ${quoted(e.dtype, 20)}; only F32, F16 and BF16 can be loaded as float32`);
    }
    const table = e.dtype === 'F16' ? f16Table() : null;
    const out32 = new Uint32Array(out.buffer, out.byteOffset, out.length);
    const scratch = new Uint16Array(Math.max(1, Math.min(numel, CHUNK_ELEMENTS)));
    withFd(e.file, (fd) => {
      for (let at = 0; at < numel; at += scratch.length) {
        const n = Math.min(scratch.length, numel - at);
        readExactly(fd, new Uint8Array(scratch.buffer, 0, n * 2), e.start + (first + at) * 2, what);
        if (table) for (let i = 0; i < n; i++) out[at + i] = table[scratch[i]];
        else for (let i = 0; i < n; i++) out32[at + i] = scratch[i] << 16;   // bf16 is the high half of a float32
      }
    });
  }
}
