/**
 * The KV cache: per layer, per KV head (never repeated to query heads), each entry with its original position.
 * Layout per layer: keys and values [1, numKvHeads, capacity, headDim] f32, the layout ONNX Runtime's
 * GroupQueryAttention reads as its past and writes in place as its present during decoding, so appending a
 * token copies nothing. Every head of a layer holds the same number of entries (`length`).
 * @module
 */
import type { ModelConfig } from '../model/config.js';
import { f32, type OrtTensor } from './ort.js';

export class LayerCache {
  readonly keys: Float32Array;       // [numKvHeads, capacity, headDim]
  readonly values: Float32Array;     // [numKvHeads, capacity, headDim]
  readonly positions: Int32Array;    // [numKvHeads, capacity]: original position id of each slot
  readonly keyTensor: OrtTensor;     // views of keys/values for ONNX Runtime, made once
  readonly valueTensor: OrtTensor;
  /** Entries filled per head: slots 0..length-1. */
  length = 0;

  constructor(readonly numKvHeads: number, readonly capacity: number, readonly headDim: number) {
    this.keys = new Float32Array(numKvHeads * capacity * headDim);
    this.values = new Float32Array(numKvHeads * capacity * headDim);
    this.positions = new Int32Array(numKvHeads * capacity);
    this.keyTensor = f32(this.keys, [1, numKvHeads, capacity, headDim]);
    this.valueTensor = f32(this.values, [1, numKvHeads, capacity, headDim]);
  }

  /**
   * Fills the cache from a prefill layer's keys and values ([numKvHeads, n, headDim]): for each KV head, the
   * rows listed in `keep[head]` (ascending token indices, all heads the same count), or every row when `keep`
   * is null. `positionIds[row]` is the row's original position.
   */
  fill(keys: Float32Array, values: Float32Array, n: number, positionIds: Int32Array, keep: readonly Int32Array[] | null): void {
    const d = this.headDim;
    const kept = keep ? keep[0].length : n;
    if (kept > this.capacity) throw new RangeError(`cache capacity ${this.capacity} < ${kept} entries`);
    for (let h = 0; h < this.numKvHeads; h++) {
      const src = h * n * d;
      const dst = h * this.capacity * d;
      const rows = keep?.[h];
      if (!rows) {
        // Every row, in order: one contiguous copy per head.
        this.keys.set(keys.subarray(src, src + n * d), dst);
        this.values.set(values.subarray(src, src + n * d), dst);
        this.positions.set(positionIds.subarray(0, n), h * this.capacity);
        continue;
      }
      for (let s = 0; s < rows.length; s++) {
        const r = rows[s];
        this.keys.set(keys.subarray(src + r * d, src + (r + 1) * d), dst + s * d);
        this.values.set(values.subarray(src + r * d, src + (r + 1) * d), dst + s * d);
        this.positions[h * this.capacity + s] = positionIds[r];
      }
    }
    this.length = kept;
  }

  /** Records the position of the entry the decode step just wrote at slot `length`, and counts it. */
  appended(positionId: number): void {
    for (let h = 0; h < this.numKvHeads; h++) this.positions[h * this.capacity + this.length] = positionId;
    this.length++;
  }

  /** Bytes of the entries held (keys and values, f32). */
  get bytes(): number {
    return this.length * this.numKvHeads * this.headDim * 2 * 4;
  }
}

export class KvCache {
  readonly layers: (LayerCache | null)[];
  constructor(readonly config: ModelConfig) {
    this.layers = new Array(config.numLayers).fill(null);
  }
  /** Creates layer `l`'s cache for `entries` prompt entries plus `extra` decode steps. */
  allocate(l: number, entries: number, extra: number): LayerCache {
    const cache = new LayerCache(this.config.numKvHeads, entries + extra, this.config.headDim);
    this.layers[l] = cache;
    return cache;
  }
  layer(l: number): LayerCache {
    const cache = this.layers[l];
    if (!cache) throw new Error(`layer ${l} has no cache yet`);
    return cache;
  }
  /** Bytes of all entries held: Σ layers entries × KV heads × headDim × 2 (K and V) × 4 bytes. */
  get bytes(): number {
    let total = 0;
    for (const c of this.layers) total += c ? c.bytes : 0;
    return total;
  }
  /** Entries per KV head in each layer. */
  get lengths(): number[] {
    return this.layers.map((c) => (c ? c.length : 0));
  }
}
