/**
 * How a linear layer's weight enters a graph: as a float32 `Gemm` weight, as ONNX Runtime's block-quantized
 * `com.microsoft.MatMulNBits` (8 or 4 bits), or as int8 codes for `com.microsoft.DynamicQuantizeMatMul` (`int8`,
 * see {@link Int8Matrix}), in every case as a constant initializer that ONNX Runtime prepacks once at session
 * creation. Also the graph that quantizes float32 weights into MatMulNBits' layout, so that
 * quantization runs in ONNX Runtime rather than in a JavaScript loop.
 *
 * MatMulNBits layout (ORT 1.30 CPU, zero points omitted so they default to 2^(bits−1)):
 * - `B` uint8 [N, ceil(K/32), 32·bits/8]: row n holds output feature n (the HF Linear [out, in] layout, no
 *   transpose), split into blocks of 32 along K; the last block is zero-padded. With 4 bits element 2i of a
 *   block is the low nibble of byte i and element 2i+1 the high nibble.
 * - `scales` float [N · ceil(K/32)]: one per (row, block), row-major.
 * - value = (code − 2^(bits−1)) · scale, symmetric round-to-nearest: scale = max|w| / (2^(bits−1) − 1).
 *
 * Why `int8` is a format of its own rather than a faster prefill for `q8`: the int8 x int8 GEMM needs its weight
 * as B [K, N] with one scale per output column, MatMulNBits as [N, K/32, 32] with one per block, and ONNX
 * Runtime prepacks each into its own layout. A q8 model running both would hold its weights twice (the 8B
 * model at q8 already peaks at 15.5 GB of 24). `int8` holds one copy that prefill and decode both read.
 * @module
 */
import { GraphBuilder } from './builder.js';

/**
 * Weight formats: float32 as stored, MatMulNBits with 8 or 4 bits (names as transformers.js uses them), or
 * `int8`: 8-bit weights with one scale per output feature, multiplied as int8 x int8 (see {@link Int8Matrix}).
 */
export type WeightDtype = 'fp32' | 'q8' | 'q4' | 'int8';
export const WEIGHT_DTYPES: readonly WeightDtype[] = ['fp32', 'q8', 'q4', 'int8'];
/** The formats quantized at load. */
export type QuantizedDtype = Exclude<WeightDtype, 'fp32'>;

/**
 * Whether a matmul's rows are quantized together in `dtype`: `int8`'s DynamicQuantizeMatMul takes one activation
 * scale for all the rows of a run, so rows run together change each other's result; MatMulNBits quantizes each
 * row's blocks on their own, and fp32 does not quantize.
 */
export function rowsShareActivationScale(dtype: WeightDtype): boolean {
  return dtype === 'int8';
}

export const QUANT_BLOCK_SIZE = 32;
/**
 * MatMulNBits' `accuracy_level` 4: activations are quantized to int8 per block and the dot products run on
 * int8 (VNNI). Measured on this machine (docs/ort-performance.md): 2-4.7x faster than fp32 at one row, while
 * level 1 (float compute) makes 8-bit 4-100x slower than fp32. Costs 0.5-1.4 % relative error per matmul.
 */
export const QUANT_ACCURACY_LEVEL = 4;

/** A float32 matrix in the HF Linear layout [out, in]. */
export interface F32Matrix {
  readonly format: 'fp32';
  readonly rows: number;
  readonly cols: number;
  readonly data: Float32Array;
}

/** A matrix in MatMulNBits' layout (see the module comment). */
export interface QuantizedMatrix {
  readonly format: 'q8' | 'q4';
  readonly rows: number;
  readonly cols: number;
  /** [rows, blocksPerRow, blockBytes] */
  readonly codes: Uint8Array;
  /** [rows · blocksPerRow] */
  readonly scales: Float32Array;
}

/**
 * An `int8` matrix: the weight W [rows = out, cols = in] stored transposed, as int8 codes [cols, rows] (the `B`
 * [K, N] of ONNX `MatMulInteger` / `DynamicQuantizeMatMul`), with one symmetric scale per output feature:
 * W[n, k] ≈ codes[k, n] · scales[n], scale = max|W[n, :]| / 127, codes in [−127, 127]. Prefill and decode read
 * the same codes, so the weights are held once (one prepacked int8 copy, 1 byte per weight).
 */
export interface Int8Matrix {
  readonly format: 'int8';
  readonly rows: number;
  readonly cols: number;
  /** int8 [cols, rows], as bytes */
  readonly codes: Uint8Array;
  /** [rows] */
  readonly scales: Float32Array;
}

export type LinearWeight = F32Matrix | QuantizedMatrix | Int8Matrix;

/** Formats stored as 8 or 4-bit block codes for MatMulNBits. */
export type BlockFormat = 'q8' | 'q4';

export function bitsOf(format: BlockFormat): 4 | 8 {
  return format === 'q8' ? 8 : 4;
}
export function blocksPerRow(cols: number): number {
  return Math.ceil(cols / QUANT_BLOCK_SIZE);
}
/** Bytes of one block's codes. */
export function blockBytes(format: BlockFormat): number {
  return (QUANT_BLOCK_SIZE * bitsOf(format)) / 8;
}

/** Bytes a matrix occupies (the same as read from memory once per decoded token). */
export function linearBytes(w: LinearWeight): number {
  return w.format === 'fp32' ? w.data.byteLength : w.codes.byteLength + w.scales.byteLength;
}

/** A weight added to a graph as initializers, ready for {@link linearOp}. */
export interface LinearInitializers {
  readonly weight: LinearWeight;
  /** fp32: the [rows, cols] matrix; quantized: the codes. */
  readonly matrix: string;
  /** quantized: the scales. */
  readonly scales?: string;
}

/** Adds `weight` to `owner` (the outermost graph) as initializers named after `name`. */
export function addLinearWeight(owner: GraphBuilder, name: string, weight: LinearWeight): LinearInitializers {
  if (weight.format === 'fp32') return { weight, matrix: owner.initializer(name, 'float', [weight.rows, weight.cols], weight.data) };
  if (weight.format === 'int8') {
    return {
      weight,
      matrix: owner.initializer(`${name}_int8`, 'int8', [weight.cols, weight.rows], weight.codes),
      scales: owner.initializer(`${name}_scales`, 'float', [weight.rows], weight.scales),
    };
  }
  const nb = blocksPerRow(weight.cols);
  return {
    weight,
    matrix: owner.initializer(`${name}_codes`, 'uint8', [weight.rows, nb, blockBytes(weight.format)], weight.codes),
    scales: owner.initializer(`${name}_scales`, 'float', [weight.rows * nb], weight.scales),
  };
}

/**
 * y = x · Wᵀ (+ bias) for x [n, cols], added to `g` (the owner of the initializers or one of its `If`
 * branches): a `Gemm` (transB) for float32, a `MatMulNBits` otherwise.
 */
export function linearOp(g: GraphBuilder, x: string, w: LinearInitializers, bias?: string): string {
  const { weight } = w;
  if (weight.format === 'fp32') return g.op('Gemm', bias ? [x, w.matrix, bias] : [x, w.matrix], { transB: 1 });
  if (weight.format === 'int8') return int8LinearOp(g, x, w, bias);
  const inputs = bias ? [x, w.matrix, w.scales!, '', '', bias] : [x, w.matrix, w.scales!];
  return g.msOpN('MatMulNBits', inputs, 1, {
    K: weight.cols, N: weight.rows, bits: bitsOf(weight.format), block_size: QUANT_BLOCK_SIZE, accuracy_level: QUANT_ACCURACY_LEVEL,
  })[0];
}

/**
 * y = x · Wᵀ (+ bias) for an `int8` weight: ONNX Runtime's `DynamicQuantizeMatMul` quantizes x to uint8 with
 * one scale and zero point for the whole tensor (asymmetric, per run) and runs the int8 x int8 GEMM (VNNI),
 * scaling the int32 sums by the activation scale and the weight's per-column scales. Measured at 832-2,048 rows
 * (Qwen2.5-0.5B shapes, 2 threads): 2.5-3.4x fp32 `Gemm`; at one row as fast as MatMulNBits 8-bit. Quantizing
 * each row with its own scale (rows divided by their max|x| first) was 1.2-1.9x slower in prefill for no
 * measurable fidelity gain on stories260K / retrieval-3M (README, "Weight formats").
 */
function int8LinearOp(g: GraphBuilder, x: string, w: LinearInitializers, bias?: string): string {
  return g.msOpN('DynamicQuantizeMatMul', bias ? [x, w.matrix, w.scales!, '', bias] : [x, w.matrix, w.scales!], 1)[0];
}

/** Input and output names of the quantizer graph. */
export const QUANTIZE = {
  weights: 'weights',   // [rows, cols] f32
  codes: 'codes',       // [rows, blocksPerRow, blockBytes] u8
  scales: 'scales',     // [rows, blocksPerRow] f32
} as const;

/**
 * The graph that quantizes float32 rows of length `cols` into MatMulNBits' layout: per (row, block of 32)
 * scale = max|w| / (2^(bits−1) − 1) (0 for an all-zero block, whose codes are then the zero point), code =
 * clamp(round(w / scale), −2^(bits−1), 2^(bits−1) − 1) + 2^(bits−1), round half to even (ONNX `Round`).
 */
export function buildQuantizeGraph(cols: number, format: QuantizedDtype): Uint8Array {
  if (format === 'int8') return buildInt8QuantizeGraph(cols);
  const bits = bitsOf(format);
  const g = new GraphBuilder(`quantize-${format}-${cols}`);
  const nb = blocksPerRow(cols);
  const padded = nb * QUANT_BLOCK_SIZE;
  const w = g.input(QUANTIZE.weights, 'float', ['rows', cols]);
  const wp = padded === cols ? w : g.op('Pad', [w, g.int64([0, 0, 0, padded - cols])], { mode: 'constant' });
  const blocks = g.op('Reshape', [wp, g.int64([-1, nb, QUANT_BLOCK_SIZE])]);                      // [rows, nb, 32]
  const qmax = 2 ** (bits - 1) - 1;
  const scale = g.op('Div', [g.op('ReduceMax', [g.op('Abs', [blocks]), g.int64([2])], { keepdims: 1 }), g.float([qmax], [])]);
  const isZero = g.op('Equal', [scale, g.float([0], [])]);
  const divisor = g.op('Where', [isZero, g.float([1], []), scale]);
  const rounded = g.op('Round', [g.op('Div', [blocks, divisor])]);
  const code = g.op('Add', [g.op('Clip', [rounded, g.float([-qmax - 1], []), g.float([qmax], [])]), g.float([qmax + 1], [])]);
  let packed = code;                                                                               // [rows, nb, 32], 0..255
  if (bits === 4) {
    const pairs = g.op('Reshape', [code, g.int64([0, 0, QUANT_BLOCK_SIZE / 2, 2])]);
    const [lo, hi] = g.opN('Split', [pairs, g.int64([1, 1])], 2, { axis: 3 });
    packed = g.op('Squeeze', [g.op('Add', [lo, g.op('Mul', [hi, g.float([16], [])])]), g.int64([3])]);   // [rows, nb, 16]
  }
  g.output(g.op('Cast', [packed], { to: 2 /* UINT8 */ }), QUANTIZE.codes, 'uint8', ['rows', nb, blockBytes(format)]);
  g.output(g.op('Squeeze', [scale, g.int64([2])]), QUANTIZE.scales, 'float', ['rows', nb]);
  return g.build();
}

/**
 * The graph that quantizes float32 rows [rows, cols] into `int8` (see {@link Int8Matrix}): per row scale =
 * max|w| / 127 (0 for an all-zero row, whose codes are then 0), code = round(w / scale) (half to even), output
 * transposed to [cols, rows] so that the caller places a chunk of rows as a block of columns of B [K, N].
 */
function buildInt8QuantizeGraph(cols: number): Uint8Array {
  const g = new GraphBuilder(`quantize-int8-${cols}`);
  const w = g.input(QUANTIZE.weights, 'float', ['rows', cols]);
  const scale = g.op('Div', [g.op('ReduceMax', [g.op('Abs', [w]), g.int64([1])], { keepdims: 1 }), g.float([127], [])]);   // [rows, 1]
  const divisor = g.op('Where', [g.op('Equal', [scale, g.float([0], [])]), g.float([1], []), scale]);
  const code = g.op('Clip', [g.op('Round', [g.op('Div', [w, divisor])]), g.float([-127], []), g.float([127], [])]);
  g.output(g.op('Transpose', [g.op('Cast', [code], { to: 3 /* INT8 */ })], { perm: [1, 0] }), QUANTIZE.codes, 'int8', [cols, 'rows']);
  g.output(g.op('Squeeze', [scale, g.int64([1])]), QUANTIZE.scales, 'float', ['rows']);
  return g.build();
}
