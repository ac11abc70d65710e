/**
 * Safetensors dtype sizes and the 16-bit float conversions used when reading and writing checkpoints.
 * @module
 */

import * as os from 'node:os';
import { ModelLoadError } from '../errors.js';

/** Bytes per element of every safetensors dtype whose size is a whole number of bytes. */
export const DTYPE_SIZES: Readonly<Record<string, number>> = {
  BOOL: 1, U8: 1, I8: 1, F8_E5M2: 1, F8_E4M3: 1, F8_E8M0: 1,
  I16: 2, U16: 2, F16: 2, BF16: 2, I32: 4, U32: 4, F32: 4, I64: 8, U64: 8, F64: 8,
};

/** Elements converted per chunk for 16-bit dtypes, bounding scratch buffers to 8 MiB. */
export const CHUNK_ELEMENTS = 1 << 22;

export const formatShape = (s: readonly number[]): string => `[${s.join(',')}]`;

/** Typed-array views of file bytes assume a little-endian host (every platform Node.js ships on). */
export function assertLittleEndian(): void {
  if (os.endianness() !== 'LE') throw new ModelLoadError('safetensors files can only be read and written on a little-endian host');
}

let halfTable: Float32Array | null = null;
/** All 65536 half-precision values as float32 (subnormals, ±inf and NaN included), built on first use. */
export function f16Table(): Float32Array {
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
    return sign | h;                                              // a carry into the smallest normal is correct
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
