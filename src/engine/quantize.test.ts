/**
 * The load-time quantizer (an ONNX Runtime graph) against a plain-code reading of MatMulNBits' layout: codes
 * unpacked and dequantized here element by element must be the round-to-nearest of the weights, with one scale
 * per (row, block of 32) equal to max|w| / (2^(bits−1) − 1); and ONNX Runtime's own MatMulNBits kernel fed those
 * codes must compute x · dequant(W)ᵀ, which fails on any disagreement about the layout (nibble order, block
 * order, scale order, padding of the last block).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { QuantizerSessions } from './quantize.js';
import { GraphBuilder } from '../graph/builder.js';
import {
  QUANT_BLOCK_SIZE, addLinearWeight, blockBytes, blocksPerRow, linearOp, type Int8Matrix, type LinearWeight, type QuantizedMatrix,
} from '../graph/linear.js';
import { Session, dataF32, f32 } from './ort.js';
import { Xoshiro128 } from '../random.js';

/** Gaussian-ish weights (std ≈ 0.02) with an all-zero row, an all-zero block, and outliers. */
function weights(rows: number, cols: number, seed: number): Float32Array {
  const rng = new Xoshiro128(seed);
  const w = new Float32Array(rows * cols);
  for (let i = 0; i < w.length; i++) w[i] = 0.02 * (rng.float53() + rng.float53() + rng.float53() - 1.5) * 2;
  w.fill(0, 1 * cols, 2 * cols);                                       // row 1: zeros
  w.fill(0, 2 * cols, 2 * cols + QUANT_BLOCK_SIZE);                   // row 2, first block: zeros
  w[3 * cols + 5] = 3;                                                  // outliers: 150x the typical value
  w[4 * cols + cols - 1] = -2.5;                                        // in the padded last block
  return w;
}

/** Plain dequantization of one element: (code − zero point) · scale, codes unpacked as MatMulNBits reads them. */
function dequantize(m: QuantizedMatrix, r: number, c: number): number {
  const bits = m.format === 'q8' ? 8 : 4;
  const nb = blocksPerRow(m.cols);
  const b = Math.floor(c / QUANT_BLOCK_SIZE), j = c % QUANT_BLOCK_SIZE;
  const base = (r * nb + b) * blockBytes(m.format);
  const code = bits === 8 ? m.codes[base + j] : (j % 2 === 0 ? m.codes[base + (j >> 1)] & 15 : m.codes[base + (j >> 1)] >> 4);
  return (code - 2 ** (bits - 1)) * m.scales[r * nb + b];
}

for (const format of ['q8', 'q4'] as const) {
  test(`${format} quantizer: scales, codes and padding match a plain dequantization (rows of 70, zeros, outliers)`, async () => {
    const rows = 6, cols = 70;                                          // 70 = 2 blocks of 32 + 6
    const w = weights(rows, cols, format === 'q8' ? 1 : 2);
    const q = new QuantizerSessions(1);
    const { codes, scales } = await q.quantize(w, rows, cols, format);
    await q.release();
    const nb = blocksPerRow(cols);
    assert.equal(nb, 3);
    assert.equal(codes.length, rows * nb * blockBytes(format));
    assert.equal(scales.length, rows * nb);
    const m: QuantizedMatrix = { format, rows, cols, codes, scales };
    const qmax = format === 'q8' ? 127 : 7;
    for (let r = 0; r < rows; r++) {
      for (let b = 0; b < nb; b++) {
        let absmax = 0;
        for (let c = b * QUANT_BLOCK_SIZE; c < Math.min(cols, (b + 1) * QUANT_BLOCK_SIZE); c++) absmax = Math.max(absmax, Math.abs(w[r * cols + c]));
        const scale = scales[r * nb + b];
        assert.ok(Math.abs(scale - absmax / qmax) <= 1e-6 * (absmax / qmax), `row ${r} block ${b}: scale ${scale}, expected ${absmax / qmax}`);
        // Padding elements of the last block dequantize to exactly zero.
        for (let c = cols; c < (b + 1) * QUANT_BLOCK_SIZE && b === nb - 1; c++) assert.equal(dequantize(m, r, c), 0);
      }
      for (let c = 0; c < cols; c++) {
        const x = w[r * cols + c];
        const scale = scales[r * nb + Math.floor(c / QUANT_BLOCK_SIZE)];
        const err = Math.abs(dequantize(m, r, c) - x);
        assert.ok(err <= scale / 2 + 1e-7 * Math.abs(x), `w[${r},${c}] = ${x}: dequantized off by ${err} (half a step is ${scale / 2})`);
      }
    }
    for (let c = 0; c < cols; c++) assert.equal(dequantize(m, 1, c), 0, 'an all-zero row stays zero');
    for (let c = 0; c < QUANT_BLOCK_SIZE; c++) assert.equal(dequantize(m, 2, c), 0, 'an all-zero block stays zero');
    // The outliers are the block maxima, so they come back exactly (± float rounding of the scale).
    assert.ok(Math.abs(dequantize(m, 3, 5) - 3) < 1e-6);
    assert.ok(Math.abs(dequantize(m, 4, cols - 1) + 2.5) < 1e-6);
  });

  test(`${format}: ONNX Runtime's MatMulNBits on the quantizer's codes computes x · dequant(W)ᵀ`, async () => {
    const rows = 40, cols = 70, n = 3;
    const w = weights(rows, cols, 3);
    const q = new QuantizerSessions(1);
    const { codes, scales } = await q.quantize(w, rows, cols, format);
    await q.release();
    const m: QuantizedMatrix = { format, rows, cols, codes, scales };
    const g = new GraphBuilder('nbits');
    const x = g.input('x', 'float', [n, cols]);
    g.output(linearOp(g, x, addLinearWeight(g, 'w', m)), 'y', 'float', [n, rows]);
    const session = await Session.create('nbits', g.buildWithExternal(), 1);
    const rng = new Xoshiro128(4);
    const xs = Float32Array.from({ length: n * cols }, () => rng.float53() * 2 - 1);
    const y = dataF32((await session.run({ x: f32(xs, [n, cols]) })).y);
    await session.release();
    let maxRef = 0, maxErr = 0;
    for (let i = 0; i < n; i++) {
      for (let r = 0; r < rows; r++) {
        let ref = 0;
        for (let c = 0; c < cols; c++) ref += xs[i * cols + c] * dequantize(m, r, c);
        maxRef = Math.max(maxRef, Math.abs(ref));
        maxErr = Math.max(maxErr, Math.abs(y[i * rows + r] - ref));
      }
    }
    // accuracy_level 4 quantizes x to int8 per block: about 1% of the output's range; a layout error is ~100%.
    assert.ok(maxErr <= 0.03 * maxRef, `max |y − x·dequant(W)ᵀ| = ${maxErr}, max |y| = ${maxRef}`);
  });
}

/** Plain dequantization of element [r, c] of an `int8` matrix: codes are [cols, rows] int8, one scale per row. */
function dequantizeInt8(m: Int8Matrix, r: number, c: number): number {
  const code = (m.codes[c * m.rows + r] << 24) >> 24;                  // the byte as a signed int8
  return code * m.scales[r];
}

/** `linearOp` on `m` run by ONNX Runtime for x [n, cols]. */
async function runLinear(m: LinearWeight, xs: Float32Array, n: number): Promise<Float32Array> {
  const g = new GraphBuilder('linear');
  const x = g.input('x', 'float', [n, m.cols]);
  g.output(linearOp(g, x, addLinearWeight(g, 'w', m)), 'y', 'float', [n, m.rows]);
  const session = await Session.create('linear', g.buildWithExternal(), 1);
  try {
    return dataF32((await session.run({ x: f32(xs, [n, m.cols]) })).y);
  } finally {
    await session.release();
  }
}

test('int8 quantizer: codes [cols, rows], one scale per row = max|w| / 127, zeros and outliers (rows of 70)', async () => {
  const rows = 6, cols = 70;
  const w = weights(rows, cols, 5);
  const q = new QuantizerSessions(1);
  const { codes, scales } = await q.quantize(w, rows, cols, 'int8');
  await q.release();
  assert.equal(codes.length, rows * cols);
  assert.equal(scales.length, rows);
  const m: Int8Matrix = { format: 'int8', rows, cols, codes, scales };
  for (let r = 0; r < rows; r++) {
    let absmax = 0;
    for (let c = 0; c < cols; c++) absmax = Math.max(absmax, Math.abs(w[r * cols + c]));
    assert.ok(Math.abs(scales[r] - absmax / 127) <= 1e-6 * (absmax / 127), `row ${r}: scale ${scales[r]}, expected ${absmax / 127}`);
    for (let c = 0; c < cols; c++) {
      const x = w[r * cols + c];
      const err = Math.abs(dequantizeInt8(m, r, c) - x);
      assert.ok(err <= scales[r] / 2 + 1e-7 * Math.abs(x), `w[${r},${c}] = ${x}: dequantized off by ${err} (half a step is ${scales[r] / 2})`);
    }
  }
  for (let c = 0; c < cols; c++) assert.equal(dequantizeInt8(m, 1, c), 0, 'an all-zero row stays zero');
  // The outliers are their rows' maxima, so they come back exactly (± float rounding of the scale); row 3's
  // outlier makes every other weight of that row round to a handful of codes (per-row scale).
  assert.ok(Math.abs(dequantizeInt8(m, 3, 5) - 3) < 1e-6);
  assert.ok(Math.abs(dequantizeInt8(m, 4, cols - 1) + 2.5) < 1e-6);
});

test('int8: ONNX Runtime\'s DynamicQuantizeMatMul on the quantizer\'s codes computes x · dequant(W)ᵀ (+ a transposed layout fails)', async () => {
  const rows = 40, cols = 70, n = 5;
  const w = weights(rows, cols, 6);
  const q = new QuantizerSessions(1);
  const { codes, scales } = await q.quantize(w, rows, cols, 'int8');
  await q.release();
  const m: Int8Matrix = { format: 'int8', rows, cols, codes, scales };
  const rng = new Xoshiro128(7);
  const xs = Float32Array.from({ length: n * cols }, () => rng.float53() * 2 - 1);
  const reference = new Float32Array(n * rows);
  for (let i = 0; i < n; i++) {
    for (let r = 0; r < rows; r++) {
      let ref = 0;
      for (let c = 0; c < cols; c++) ref += xs[i * cols + c] * dequantizeInt8(m, r, c);
      reference[i * rows + r] = ref;
    }
  }
  const relMaxErr = (y: Float32Array): number => {
    let maxRef = 0, maxErr = 0;
    for (let i = 0; i < y.length; i++) {
      maxRef = Math.max(maxRef, Math.abs(reference[i]));
      maxErr = Math.max(maxErr, Math.abs(y[i] - reference[i]));
    }
    return maxErr / maxRef;
  };
  // x is quantized to uint8 with one scale for the tensor: about 1 % of the output's range.
  const err = relMaxErr(await runLinear(m, xs, n));
  assert.ok(err <= 0.03, `max |y − x·dequant(W)ᵀ| / max |y| = ${err}`);
  // The same bytes read as [rows, cols] (a transposed layout), or scales reversed along the rows: far off.
  assert.ok(relMaxErr(await runLinear({ ...m, scales: scales.slice().reverse() }, xs, n)) > 0.1, 'scales on the wrong rows go unnoticed');
  const badLayout: Int8Matrix = { format: 'int8', rows, cols, codes: reorderAsIfTransposed(codes, rows, cols), scales };
  assert.ok(relMaxErr(await runLinear(badLayout, xs, n)) > 0.1, 'a transposed layout goes unnoticed');
});

/** The codes of [cols, rows] rewritten as the [rows, cols] bytes (what a missing transpose would store). */
function reorderAsIfTransposed(codes: Uint8Array, rows: number, cols: number): Uint8Array {
  const out = new Uint8Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[r * cols + c] = codes[c * rows + r];
  return out;
}
