/**
 * Reading and writing the safetensors format: an 8-byte little-endian u64 header length N, N bytes of JSON
 * (`{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}`), then the tensor bytes, with
 * offsets relative to the first byte after the header.
 *
 * Tensors are read one at a time with positioned reads, so a multi-gigabyte checkpoint is never held in memory
 * twice. Every malformed input becomes a {@link ModelLoadError} naming the file and, where there is one, the
 * tensor. Assumes a little-endian host (every platform Node.js ships on); a big-endian host gets an error.
 * @module
 */

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ModelLoadError } from '../errors.js';

/** Bytes per element of every safetensors dtype whose size is a whole number of bytes. */
const DTYPE_SIZES: Readonly<Record<string, number>> = {
  BOOL: 1, U8: 1, I8: 1, F8_E5M2: 1, F8_E4M3: 1, F8_E8M0: 1,
  I16: 2, U16: 2, F16: 2, BF16: 2, I32: 4, U32: 4, F32: 4, I64: 8, U64: 8, F64: 8,
};
/** The format's own limit on the header, and our guard against allocating absurd buffers. */
const MAX_HEADER_BYTES = 100 * 1024 * 1024;
/** Elements converted per chunk for 16-bit dtypes, bounding the scratch buffer to 8 MiB. */
const CHUNK_ELEMENTS = 1 << 22;

export interface TensorInfo {
  readonly dtype: string;
  readonly shape: readonly number[];
  /** Absolute path of the file holding the tensor. */
  readonly file: string;
}

/** A validated header entry with absolute file positions. */
export interface TensorEntry extends TensorInfo {
  readonly numel: number;
  /** Absolute byte positions within `file`. */
  readonly start: number;
  readonly byteLength: number;
}

const fmtShape = (s: readonly number[]): string => `[${s.join(',')}]`;

function assertLittleEndian(): void {
  if (os.endianness() !== 'LE') throw new ModelLoadError('safetensors reading requires a little-endian host');
}

/** Positioned read of exactly `length` bytes into `target[offset..]`; a short file is a ModelLoadError. */
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

// ---- dtype conversion ---------------------------------------------------------------------------------------

let halfTable: Float32Array | null = null;
/** All 65536 half-precision values as float32 (subnormals, ±inf and NaN included), built on first use. */
function f16Table(): Float32Array {
  if (halfTable) return halfTable;
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >> 10) & 0x1f;
    const mant = h & 0x3ff;
    if (exp === 0) t[h] = sign * mant * 2 ** -24;                 // zero and subnormals
    else if (exp === 31) t[h] = mant ? NaN : sign * Infinity;
    else t[h] = sign * (1 + mant / 1024) * 2 ** (exp - 15);
  }
  return (halfTable = t);
}

/** Float32 bits -> IEEE half bits, round to nearest even; overflow goes to ±inf, NaN stays NaN. */
export function f32BitsToF16(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  const mant = x & 0x7fffff;
  if (exp === 255) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 112;                                            // rebias 127 -> 15
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {                                                   // half subnormal (or zero)
    const shift = 14 - e;
    if (shift > 24) return sign;
    const m = mant | 0x800000;
    let h = m >>> shift;
    const rem = m & ((1 << shift) - 1), halfway = 1 << (shift - 1);
    if (rem > halfway || (rem === halfway && (h & 1))) h++;
    return sign | h;                                              // h may carry into the smallest normal: correct
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1))) h++;           // a carry into the exponent is still correct
  return sign | h;
}

/** Float32 bits -> bfloat16 bits, round to nearest even; NaN stays (quiet) NaN. */
export function f32BitsToBf16(x: number): number {
  if ((x & 0x7f800000) === 0x7f800000 && (x & 0x7fffff)) return ((x >>> 16) | 0x40) & 0xffff;
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

// ---- one file -----------------------------------------------------------------------------------------------

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
      const lenBuf = new Uint8Array(8);
      readExactly(fd, lenBuf, 0, file);
      const n = Buffer.from(lenBuf.buffer).readBigUInt64LE(0);
      if (n > BigInt(size - 8)) {
        throw new ModelLoadError(`${file}: header length ${n} is larger than the file (${size} bytes)`);
      }
      if (n > BigInt(MAX_HEADER_BYTES)) throw new ModelLoadError(`${file}: header length ${n} exceeds 100 MB`);
      const buf = new Uint8Array(Number(n));
      readExactly(fd, buf, 8, file);
      return buf;
    });
    let json: unknown;
    try {
      json = JSON.parse(Buffer.from(header.buffer, header.byteOffset, header.length).toString('utf8'));
    } catch (e) {
      throw new ModelLoadError(`${file}: header is not valid JSON (${(e as Error).message})`, { cause: e });
    }
    if (typeof json !== 'object' || json === null || Array.isArray(json)) {
      throw new ModelLoadError(`${file}: header is not a JSON object`);
    }
    const dataStart = 8 + header.length;
    const dataSize = size - dataStart;
    const meta: Record<string, string> = {};
    for (const [name, raw] of Object.entries(json as Record<string, unknown>)) {
      if (name === '__metadata__') {
        if (raw && typeof raw === 'object') {
          for (const [k, v] of Object.entries(raw)) if (typeof v === 'string') meta[k] = v;
        }
        continue;
      }
      this.entries.set(name, parseEntry(file, name, raw, dataStart, dataSize));
    }
    this.metadata = Object.freeze(meta);
  }

  /** Opens and validates `file` (header only; no tensor data is read). */
  static open(file: string): SafetensorsFile {
    return new SafetensorsFile(path.resolve(file));
  }

  names(): string[] { return [...this.entries.keys()]; }
  has(name: string): boolean { return this.entries.has(name); }
  /** @internal */
  entry(name: string): TensorEntry | undefined { return this.entries.get(name); }
}

function parseEntry(file: string, name: string, raw: unknown, dataStart: number, dataSize: number): TensorEntry {
  const where = `${file}: tensor "${name}"`;
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
    throw new ModelLoadError(`${where}: data_offsets end at ${end} but the file holds only ${dataSize} data bytes (file truncated?)`);
  }
  // The product cannot overflow into a false match: a dimension beyond the data size already fails below.
  let numel = 1;
  for (const d of shape as number[]) numel *= d;
  const size = DTYPE_SIZES[dtype];
  if (size !== undefined && numel * size !== end - begin) {
    throw new ModelLoadError(`${where}: header lies about offsets: shape ${fmtShape(shape as number[])} of ${dtype} needs ${numel * size} bytes, data_offsets span ${end - begin}`);
  }
  return { dtype, shape: Object.freeze([...(shape as number[])]), file, numel, start: dataStart + begin, byteLength: end - begin };
}

// ---- a model folder -----------------------------------------------------------------------------------------

/**
 * The tensors of a checkpoint folder: `model.safetensors`, or `model.safetensors.index.json` plus its shards, or
 * else the folder's only `*.safetensors` file. A path to a single `.safetensors` file is accepted too.
 */
export class SafetensorsStore {
  readonly dir: string;
  private readonly where: Map<string, SafetensorsFile>;

  private constructor(dir: string, map: Map<string, SafetensorsFile>) {
    this.dir = dir;
    this.where = map;
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
    if (found.length === 1) return SafetensorsStore.fromFiles(target, [SafetensorsFile.open(path.join(target, found[0]))]);
    throw new ModelLoadError(found.length === 0
      ? `no model.safetensors or model.safetensors.index.json in ${target}`
      : `${target} has no model.safetensors or index but several .safetensors files (${found.join(', ')}); which one is the model is ambiguous`);
  }

  private static fromFiles(dir: string, files: SafetensorsFile[]): SafetensorsStore {
    const map = new Map<string, SafetensorsFile>();
    for (const f of files) for (const n of f.names()) map.set(n, f);
    return new SafetensorsStore(dir, map);
  }

  private static fromIndex(dir: string, index: string): SafetensorsStore {
    let json: unknown;
    try { json = JSON.parse(fs.readFileSync(index, 'utf8')); } catch (e) {
      throw new ModelLoadError(`${index} is not valid JSON: ${(e as Error).message}`, { cause: e });
    }
    const wm = (json as { weight_map?: unknown } | null)?.weight_map;
    if (!wm || typeof wm !== 'object' || Array.isArray(wm)) throw new ModelLoadError(`${index} has no weight_map object`);
    const shards = new Map<string, SafetensorsFile>();
    const map = new Map<string, SafetensorsFile>();
    for (const [name, shard] of Object.entries(wm as Record<string, unknown>)) {
      if (typeof shard !== 'string') throw new ModelLoadError(`${index}: weight_map entry for "${name}" is not a file name`);
      let file = shards.get(shard);
      if (!file) {
        const p = path.join(dir, shard);
        if (!fs.existsSync(p)) throw new ModelLoadError(`${index} names shard "${shard}" (for tensor "${name}"), which does not exist in ${dir}`);
        file = SafetensorsFile.open(p);
        shards.set(shard, file);
      }
      if (!file.has(name)) throw new ModelLoadError(`${index} puts tensor "${name}" in ${shard}, which does not contain it`);
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
    if (!e) throw new ModelLoadError(`tensor "${name}" not found in ${this.dir}`);
    if (expectedShape && (expectedShape.length !== e.shape.length || expectedShape.some((d, i) => d !== e.shape[i]))) {
      throw new ModelLoadError(`tensor ${name} has shape ${fmtShape(e.shape)}, expected ${fmtShape(expectedShape)} (${e.file})`);
    }
    return e;
  }

  /** The tensor's bytes exactly as stored. */
  readRaw(name: string): { dtype: string; shape: readonly number[]; bytes: Uint8Array } {
    const e = this.entry(name);
    const bytes = new Uint8Array(e.byteLength);
    withFd(e.file, (fd) => readExactly(fd, bytes, e.start, `${e.file}: tensor "${name}"`));
    return { dtype: e.dtype, shape: e.shape, bytes };
  }

  /** Reads an F32, F16 or BF16 tensor as float32, checking its shape against `expectedShape` when given. */
  readF32(name: string, expectedShape?: readonly number[]): Float32Array {
    const e = this.entry(name, expectedShape);
    const out = new Float32Array(e.numel);
    this.readInto(e, name, out);
    return out;
  }

  /** Like {@link readF32} but writes into `target` (e.g. a row block of a fused matrix), which must hold exactly the tensor. */
  readF32Into(name: string, target: Float32Array, expectedShape?: readonly number[]): void {
    const e = this.entry(name, expectedShape);
    if (target.length !== e.numel) {
      throw new ModelLoadError(`tensor ${name} has ${e.numel} elements, the destination holds ${target.length}`);
    }
    this.readInto(e, name, target);
  }

  /** Reads an I32 or I64 tensor (e.g. token ids in a reference file) as Int32Array; I64 values must fit. */
  readI32(name: string, expectedShape?: readonly number[]): Int32Array {
    const e = this.entry(name, expectedShape);
    if (e.dtype === 'I32') {
      assertLittleEndian();
      const out = new Int32Array(e.numel);
      withFd(e.file, (fd) => readExactly(fd, new Uint8Array(out.buffer), e.start, `${e.file}: tensor "${name}"`));
      return out;
    }
    if (e.dtype !== 'I64') throw new ModelLoadError(`tensor "${name}" in ${e.file} has dtype ${e.dtype}; expected I32 or I64`);
    const wide = new BigInt64Array(this.readRaw(name).bytes.buffer);
    const out = new Int32Array(e.numel);
    for (let i = 0; i < wide.length; i++) {
      if (wide[i] > 2147483647n || wide[i] < -2147483648n) throw new ModelLoadError(`tensor "${name}" holds ${wide[i]}, beyond int32`);
      out[i] = Number(wide[i]);
    }
    return out;
  }

  private readInto(e: TensorEntry, name: string, out: Float32Array): void {
    assertLittleEndian();
    const what = `${e.file}: tensor "${name}"`;
    if (e.dtype === 'F32') {
      withFd(e.file, (fd) => readExactly(fd, new Uint8Array(out.buffer, out.byteOffset, out.byteLength), e.start, what));
      return;
    }
    if (e.dtype !== 'F16' && e.dtype !== 'BF16') {
      throw new ModelLoadError(`tensor "${name}" in ${e.file} has dtype ${e.dtype}; only F32, F16 and BF16 can be loaded as float32`);
    }
    const table = e.dtype === 'F16' ? f16Table() : null;
    const out32 = new Uint32Array(out.buffer, out.byteOffset, out.length);
    const scratch = new Uint16Array(Math.min(e.numel, CHUNK_ELEMENTS));
    withFd(e.file, (fd) => {
      for (let at = 0; at < e.numel; at += scratch.length) {
        const n = Math.min(scratch.length, e.numel - at);
        readExactly(fd, new Uint8Array(scratch.buffer, 0, n * 2), e.start + at * 2, what);
        if (table) for (let i = 0; i < n; i++) out[at + i] = table[scratch[i]];
        else for (let i = 0; i < n; i++) out32[at + i] = scratch[i] << 16;   // bf16 is the high half of a float32
      }
    });
  }
}

// ---- writing ------------------------------------------------------------------------------------------------

export interface TensorToWrite {
  name: string;
  dtype: 'F32' | 'F16' | 'BF16';
  shape: number[];
  data: Float32Array;
}

/**
 * Writes a safetensors file, converting each tensor from float32 (F16 and BF16 round to nearest even). Tensors
 * are written one by one, 16-bit ones in chunks, so memory stays at the caller's arrays plus a small buffer.
 * The header is padded with spaces so the data starts at a multiple of 8.
 */
export function writeSafetensors(file: string, tensors: readonly TensorToWrite[], metadata?: Record<string, string>): void {
  assertLittleEndian();
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  let offset = 0;
  for (const t of tensors) {
    if (!t.name || t.name === '__metadata__' || t.name in header) throw new ModelLoadError(`cannot write tensor "${t.name}" to ${file}: empty, reserved or duplicate name`);
    if (!(t.dtype in { F32: 1, F16: 1, BF16: 1 })) throw new ModelLoadError(`cannot write tensor "${t.name}" as ${t.dtype}`);
    const numel = t.shape.reduce((a, d) => a * d, 1);
    if (!t.shape.every((d) => Number.isSafeInteger(d) && d >= 0) || numel !== t.data.length) {
      throw new ModelLoadError(`cannot write tensor "${t.name}" to ${file}: shape ${fmtShape(t.shape)} does not match ${t.data.length} values`);
    }
    const bytes = numel * DTYPE_SIZES[t.dtype];
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (Buffer.byteLength(json) % 8)) % 8);
  const headerBytes = Buffer.from(json, 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(headerBytes.length));

  const fd = fs.openSync(file, 'w');
  try {
    writeAll(fd, len);
    writeAll(fd, headerBytes);
    for (const t of tensors) {
      if (t.dtype === 'F32') { writeAll(fd, new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength)); continue; }
      const bits = new Uint32Array(t.data.buffer, t.data.byteOffset, t.data.length);
      const conv = t.dtype === 'F16' ? f32BitsToF16 : f32BitsToBf16;
      const scratch = new Uint16Array(Math.min(t.data.length, CHUNK_ELEMENTS));
      for (let at = 0; at < t.data.length; at += scratch.length) {
        const n = Math.min(scratch.length, t.data.length - at);
        for (let i = 0; i < n; i++) scratch[i] = conv(bits[at + i]);
        writeAll(fd, new Uint8Array(scratch.buffer, 0, n * 2));
      }
    }
  } finally {
    fs.closeSync(fd);
  }
}

function writeAll(fd: number, bytes: Uint8Array): void {
  for (let done = 0; done < bytes.length;) {
    done += fs.writeSync(fd, bytes, done, Math.min(bytes.length - done, 1 << 30));
  }
}
