/**
 * Writing safetensors files from float32 arrays: used by the benchmark tooling to generate random checkpoints
 * and by tests to build malformed ones. Re-exported from `safetensors.ts`.
 * @module
 */

import * as fs from 'node:fs';
import { ModelLoadError } from '../errors.js';
import { assertLittleEndian, CHUNK_ELEMENTS, DTYPE_SIZES, f32BitsToBf16, f32BitsToF16, formatShape } from './dtypes.js';

export interface TensorToWrite {
  name: string;
  dtype: 'F32' | 'F16' | 'BF16';
  shape: number[];
  /** Row-major values, product(shape) of them. */
  data: Float32Array;
}

/**
 * Writes a safetensors file, converting each tensor from float32 (F16 and BF16 round to nearest even). Tensors
 * are written one by one, 16-bit ones in chunks, so memory stays at the caller's arrays plus an 8 MiB buffer.
 * The header is padded with spaces so the data starts at a multiple of 8.
 */
export function writeSafetensors(
  file: string, tensors: readonly TensorToWrite[], metadata?: Record<string, string>,
): void {
  assertLittleEndian();
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  let offset = 0;
  for (const t of tensors) {
    const bad = (why: string): never => {
      throw new ModelLoadError(`cannot write tensor "${t.name}" to ${file}: ${why}`);
    };
    if (!t.name || t.name === '__metadata__' || t.name in header) bad('empty, reserved or duplicate name');
    if (t.dtype !== 'F32' && t.dtype !== 'F16' && t.dtype !== 'BF16') bad(`unsupported dtype ${String(t.dtype)}`);
    const numel = t.shape.reduce((a, d) => a * d, 1);
    if (!t.shape.every((d) => Number.isSafeInteger(d) && d >= 0) || numel !== t.data.length) {
      bad(`shape ${formatShape(t.shape)} does not match ${t.data.length} values`);
    }
    const bytes = numel * DTYPE_SIZES[t.dtype];
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  const prefix = encodeHeader(header);

  const fd = fs.openSync(file, 'w');
  try {
    writeAll(fd, prefix);
    for (const t of tensors) {
      if (t.dtype === 'F32') {
        writeAll(fd, new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
        continue;
      }
      const bits = new Uint32Array(t.data.buffer, t.data.byteOffset, t.data.length);
      const convert = t.dtype === 'F16' ? f32BitsToF16 : f32BitsToBf16;
      const scratch = new Uint16Array(Math.min(t.data.length, CHUNK_ELEMENTS));
      for (let at = 0; at < t.data.length; at += scratch.length) {
        const n = Math.min(scratch.length, t.data.length - at);
        for (let i = 0; i < n; i++) scratch[i] = convert(bits[at + i]);
        writeAll(fd, new Uint8Array(scratch.buffer, 0, n * 2));
      }
    }
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * The bytes before a safetensors file's data: the 8-byte little-endian header length, then the JSON header padded
 * with spaces so that the data starts at a multiple of 8. `header` maps tensor names to
 * `{ dtype, shape, data_offsets }` (and `__metadata__`).
 */
export function encodeHeader(header: Record<string, unknown>): Uint8Array {
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (Buffer.byteLength(json) % 8)) % 8);
  const headerBytes = Buffer.from(json, 'utf8');
  const out = Buffer.alloc(8 + headerBytes.length);
  out.writeBigUInt64LE(BigInt(headerBytes.length));
  headerBytes.copy(out, 8);
  return out;
}

/** Writes all of `bytes` at the file's current position (writeSync may write less than asked). */
export function writeAll(fd: number, bytes: Uint8Array): void {
  for (let done = 0; done < bytes.length;) {
    done += fs.writeSync(fd, bytes, done, Math.min(bytes.length - done, 1 << 30));
  }
}
