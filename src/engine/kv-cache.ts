/**
 * The KV cache: per layer, per KV head (never repeated to query heads), each entry with its original position.
 * Layout per layer: keys and values [numKvHeads, capacity, headDim] f32, read in place by the decode graph, with
 * a mask [numKvHeads, capacity] (0 for a live slot, −inf for an empty or expired one). A decode step writes
 * one new slot per head; nothing else is copied. Every head of a layer holds the same number of entries.
 * @module
 */
import type { ModelConfig } from '../model/config.js';
import { f32, type OrtTensor } from './ort.js';

export class LayerCache {
  readonly keys: Float32Array;       // [numKvHeads, capacity, headDim]
  readonly values: Float32Array;     // [numKvHeads, capacity, headDim]
  readonly positions: Int32Array;    // [numKvHeads, capacity]: original position id of each slot
  readonly mask: Float32Array;       // [numKvHeads, capacity]: 0 live, −inf empty or outside a sliding window
  readonly keyTensor: OrtTensor;     // views for ONNX Runtime, made once
  readonly valueTensor: OrtTensor;
  readonly maskTensor: OrtTensor;
  /** Per head: slots before this one have left the sliding window (masked). */
  private readonly expired: Int32Array;
  /** Entries filled per head: slots 0..length-1. */
  length = 0;

  /**
   * @param numKvHeads heads this cache holds: the model's KV heads, or its query heads when K/V are repeated
   * @param group cache heads per source KV head (1, or G when repeated)
   */
  constructor(readonly numKvHeads: number, readonly capacity: number, readonly headDim: number, readonly group = 1) {
    this.keys = new Float32Array(numKvHeads * capacity * headDim);
    this.values = new Float32Array(numKvHeads * capacity * headDim);
    this.positions = new Int32Array(numKvHeads * capacity);
    this.mask = new Float32Array(numKvHeads * capacity).fill(-Infinity);
    this.expired = new Int32Array(numKvHeads);
    this.keyTensor = f32(this.keys, [numKvHeads, capacity, headDim]);
    this.valueTensor = f32(this.values, [numKvHeads, capacity, headDim]);
    this.maskTensor = f32(this.mask, [numKvHeads, 1, capacity]);
  }

  /**
   * Fills the cache from a prefill layer's keys and values ([numKvHeads / group, n, headDim]): for each head, the
   * rows listed in `keep[head]` (ascending token indices, all heads the same count), or every row when `keep`
   * is null. `positionIds[row]` is the row's original position.
   */
  fill(keys: Float32Array, values: Float32Array, n: number, positionIds: Int32Array, keep: readonly Int32Array[] | null): void {
    const d = this.headDim;
    const kept = keep ? keep[0].length : n;
    if (kept > this.capacity) throw new RangeError(`cache capacity ${this.capacity} < ${kept} entries`);
    for (let h = 0; h < this.numKvHeads; h++) {
      const src = Math.floor(h / this.group) * n * d;
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
    for (let h = 0; h < this.numKvHeads; h++) this.mask.fill(0, h * this.capacity, h * this.capacity + kept);
  }

  /** Writes a decode step's key and value ([numKvHeads, headDim] each) at slot `length` of every head. */
  append(key: Float32Array, value: Float32Array, positionId: number): void {
    const d = this.headDim;
    if (this.length >= this.capacity) throw new RangeError(`cache capacity ${this.capacity} exceeded`);
    for (let h = 0; h < this.numKvHeads; h++) {
      const slot = h * this.capacity + this.length;
      this.keys.set(key.subarray(h * d, (h + 1) * d), slot * d);
      this.values.set(value.subarray(h * d, (h + 1) * d), slot * d);
      this.positions[slot] = positionId;
      this.mask[slot] = 0;
    }
    this.length++;
  }

  /**
   * Sliding-window attention (Mistral): a query at `positionId` sees keys at positions > positionId − window.
   * Slots hold ascending positions per head, so expiring is a pointer moving forward.
   */
  expireBefore(positionId: number, window: number): void {
    for (let h = 0; h < this.numKvHeads; h++) {
      const base = h * this.capacity;
      while (this.expired[h] < this.length && this.positions[base + this.expired[h]] <= positionId - window) {
        this.mask[base + this.expired[h]++] = -Infinity;
      }
    }
  }

  /** Bytes of the entries held (keys and values, f32). */
  get bytes(): number {
    return this.length * this.numKvHeads * this.headDim * 2 * 4;
  }

  /**
   * A copy of the entries held, with room for `extra` more per head: a saved context is never written, each
   * request continues on its own copy.
   */
  clone(extra: number): LayerCache {
    const copy = new LayerCache(this.numKvHeads, this.length + extra, this.headDim, this.group);
    const d = this.headDim;
    for (let h = 0; h < this.numKvHeads; h++) {
      const src = h * this.capacity, dst = h * copy.capacity;
      copy.keys.set(this.keys.subarray(src * d, (src + this.length) * d), dst * d);
      copy.values.set(this.values.subarray(src * d, (src + this.length) * d), dst * d);
      copy.positions.set(this.positions.subarray(src, src + this.length), dst);
      copy.mask.set(this.mask.subarray(src, src + this.length), dst);
    }
    copy.expired.set(this.expired);
    copy.length = this.length;
    return copy;
  }

  /**
   * A cache holding `length` entries per head given packed ([numKvHeads, length, headDim] keys and values,
   * [numKvHeads, length] positions), plus room for `extra` (a context file being loaded).
   */
  static fromEntries(numKvHeads: number, headDim: number, group: number, length: number, keys: Float32Array,
    values: Float32Array, positions: Int32Array, extra = 0): LayerCache {
    const cache = new LayerCache(numKvHeads, length + extra, headDim, group);
    const d = headDim;
    for (let h = 0; h < numKvHeads; h++) {
      const dst = h * cache.capacity;
      cache.keys.set(keys.subarray(h * length * d, (h + 1) * length * d), dst * d);
      cache.values.set(values.subarray(h * length * d, (h + 1) * length * d), dst * d);
      cache.positions.set(positions.subarray(h * length, (h + 1) * length), dst);
      cache.mask.fill(0, dst, dst + length);
    }
    cache.length = length;
    return cache;
  }
}

export class KvCache {
  readonly layers: (LayerCache | null)[];
  constructor(readonly config: ModelConfig) {
    this.layers = new Array(config.numLayers).fill(null);
  }
  /** Creates layer `l`'s cache for `entries` prompt entries plus `extra` decode steps (one head per query head if `repeatKv`). */
  allocate(l: number, entries: number, extra: number, repeatKv = false): LayerCache {
    const { numHeads, numKvHeads, headDim } = this.config;
    const cache = repeatKv
      ? new LayerCache(numHeads, entries + extra, headDim, numHeads / numKvHeads)
      : new LayerCache(numKvHeads, entries + extra, headDim);
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
  /** A copy of every layer with room for `extra` more entries per head (see {@link LayerCache.clone}). */
  clone(extra: number): KvCache {
    const copy = new KvCache(this.config);
    this.layers.forEach((c, l) => { copy.layers[l] = c ? c.clone(extra) : null; });
    return copy;
  }
  /** Entries per KV head in each layer. */
  get lengths(): number[] {
    return this.layers.map((c) => (c ? c.length : 0));
  }
}
