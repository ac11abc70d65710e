/**
 * The KV cache: per layer, per cache head (the model's KV heads, never repeated to query heads, unless a policy
 * asks for the original repeated layout), each entry with its original position.
 *
 * Layout: every head owns its own buffers (keys and values [capacity_h, headDim] f32, positions [capacity_h]),
 * so heads may hold different numbers of entries (AdaKV, HeadKV) and a head that keeps 40 entries holds and
 * attends over 40, not over the longest head's 400. A buffer grows in chunks as decoding appends (by at least
 * `GROWTH_CHUNK` entries or a quarter of its size), so memory follows the tokens actually generated, not the
 * token limit. The decode graph reads each head's live entries `[start_h, length_h)` in place through a view
 * (ONNX Runtime wraps JS buffers without copying), so a decode step costs what the cache holds, not what it
 * could hold. Sliding-window expiry moves `start_h` forward: no mask is needed.
 * @module
 */
import type { ModelConfig } from '../model/config.js';
import type { PolicyRun } from '../compress/policy.js';

/** Smallest growth of a head's buffers, in entries (a quarter of the current size when that is larger). */
export const GROWTH_CHUNK = 256;

/** Capacity after growing a buffer of `capacity` entries that must hold `needed`. */
function grownCapacity(capacity: number, needed: number): number {
  return Math.max(needed, capacity + Math.max(GROWTH_CHUNK, capacity >> 2));
}

export class LayerCache {
  /** Per head: keys [capacity_h, headDim], RoPE applied. */
  private keys: Float32Array[];
  /** Per head: values [capacity_h, headDim]. */
  private values: Float32Array[];
  /** Per head: original position id of each entry, ascending. */
  private positions: Int32Array[];
  /** Per head: entries 0..length−1 are filled. */
  private readonly lengthOf: Int32Array;
  /** Per head: entries before this one have left the sliding window and are no longer attended. */
  private readonly startOf: Int32Array;

  /**
   * @param numHeads heads this cache holds: the model's KV heads, or its query heads when K/V are repeated
   * @param group cache heads per source KV head (1, or G when repeated)
   */
  constructor(readonly numHeads: number, readonly headDim: number, readonly group = 1) {
    this.keys = Array.from({ length: numHeads }, () => new Float32Array(0));
    this.values = Array.from({ length: numHeads }, () => new Float32Array(0));
    this.positions = Array.from({ length: numHeads }, () => new Int32Array(0));
    this.lengthOf = new Int32Array(numHeads);
    this.startOf = new Int32Array(numHeads);
  }

  /**
   * Fills the cache from a prefill layer's keys and values ([numHeads / group, n, headDim]): for each head, the
   * rows listed in `keep[head]` (ascending row indices; heads may keep different counts), or every row when
   * `keep` is null. `positionIds[row]` is the row's original position. Buffers are sized to what is kept.
   */
  fill(keys: Float32Array, values: Float32Array, n: number, positionIds: Int32Array, keep: readonly Int32Array[] | null): void {
    const d = this.headDim;
    if (keep && keep.length !== this.numHeads) throw new RangeError(`keep lists ${keep.length} heads, the cache has ${this.numHeads}`);
    for (let h = 0; h < this.numHeads; h++) {
      const src = Math.floor(h / this.group) * n * d;
      const rows = keep?.[h];
      const count = rows ? rows.length : n;
      const k = new Float32Array(count * d);
      const v = new Float32Array(count * d);
      const p = new Int32Array(count);
      if (!rows) {
        // Every row, in order: one contiguous copy per head.
        k.set(keys.subarray(src, src + n * d));
        v.set(values.subarray(src, src + n * d));
        p.set(positionIds.subarray(0, n));
      } else {
        for (let s = 0; s < count; s++) {
          const r = rows[s];
          if (!(r >= 0 && r < n)) throw new RangeError(`head ${h} keeps row ${r}, outside [0, ${n})`);
          k.set(keys.subarray(src + r * d, src + (r + 1) * d), s * d);
          v.set(values.subarray(src + r * d, src + (r + 1) * d), s * d);
          p[s] = positionIds[r];
        }
      }
      this.keys[h] = k;
      this.values[h] = v;
      this.positions[h] = p;
      this.lengthOf[h] = count;
      this.startOf[h] = 0;
    }
  }

  /** Writes a decode step's key and value ([numHeads, headDim] each) after the last entry of every head. */
  append(key: Float32Array, value: Float32Array, positionId: number): void {
    const d = this.headDim;
    for (let h = 0; h < this.numHeads; h++) {
      const len = this.lengthOf[h];
      if (len === this.positions[h].length) this.grow(h, len + 1);
      this.keys[h].set(key.subarray(h * d, (h + 1) * d), len * d);
      this.values[h].set(value.subarray(h * d, (h + 1) * d), len * d);
      this.positions[h][len] = positionId;
      this.lengthOf[h] = len + 1;
    }
  }

  /** Reallocates head `h`'s buffers to hold at least `needed` entries (in chunks), keeping its entries. */
  private grow(h: number, needed: number): void {
    const d = this.headDim;
    const capacity = grownCapacity(this.positions[h].length, needed);
    const len = this.lengthOf[h];
    const k = new Float32Array(capacity * d);
    const v = new Float32Array(capacity * d);
    const p = new Int32Array(capacity);
    k.set(this.keys[h].subarray(0, len * d));
    v.set(this.values[h].subarray(0, len * d));
    p.set(this.positions[h].subarray(0, len));
    this.keys[h] = k;
    this.values[h] = v;
    this.positions[h] = p;
  }

  /**
   * Keeps only the entries at `slots` (ascending indices among head h's entries), in place: the cache evicts
   * during generation (PyramidInfer). The buffer keeps its capacity.
   */
  retain(h: number, slots: Int32Array): void {
    const d = this.headDim;
    const k = this.keys[h];
    const v = this.values[h];
    const p = this.positions[h];
    for (let s = 0; s < slots.length; s++) {
      const from = slots[s];
      if (!(from >= 0 && from < this.lengthOf[h]) || (s > 0 && from <= slots[s - 1])) {
        throw new RangeError(`retain: slot ${from} of head ${h} is out of range or not ascending`);
      }
      if (from !== s) {
        k.copyWithin(s * d, from * d, (from + 1) * d);
        v.copyWithin(s * d, from * d, (from + 1) * d);
        p[s] = p[from];
      }
    }
    this.lengthOf[h] = slots.length;
    this.startOf[h] = 0;
  }

  /**
   * Sliding-window attention (Mistral): a query at `positionId` sees keys at positions > positionId − window.
   * Entries hold ascending positions per head, so expiring is a start index moving forward.
   */
  expireBefore(positionId: number, window: number): void {
    for (let h = 0; h < this.numHeads; h++) {
      const p = this.positions[h];
      let start = this.startOf[h];
      while (start < this.lengthOf[h] && p[start] <= positionId - window) start++;
      this.startOf[h] = start;
    }
  }

  /** Entries head `h` holds (expired sliding-window entries included). */
  headLength(h: number): number {
    return this.lengthOf[h];
  }

  /** Entries per head. */
  get lengths(): number[] {
    return Array.from(this.lengthOf);
  }

  /** Entries per head when every head holds the same number; otherwise an error (use `lengths`). */
  get length(): number {
    const first = this.lengthOf[0];
    for (let h = 1; h < this.numHeads; h++) {
      if (this.lengthOf[h] !== first) throw new RangeError(`heads hold different numbers of entries (${this.lengths.join(', ')}); use lengths`);
    }
    return first;
  }

  /** Whether heads hold different numbers of entries. */
  get ragged(): boolean {
    for (let h = 1; h < this.numHeads; h++) if (this.lengthOf[h] !== this.lengthOf[0]) return true;
    return false;
  }

  /** Original positions of head h's entries (a view; valid until the next append). */
  headPositions(h: number): Int32Array {
    return this.positions[h].subarray(0, this.lengthOf[h]);
  }

  /** Head h's keys [length_h, headDim] (a view; valid until the next append). */
  headKeys(h: number): Float32Array {
    return this.keys[h].subarray(0, this.lengthOf[h] * this.headDim);
  }

  /** Head h's values [length_h, headDim] (a view; valid until the next append). */
  headValues(h: number): Float32Array {
    return this.values[h].subarray(0, this.lengthOf[h] * this.headDim);
  }

  /** What decoding attends to in head h: the entries inside the sliding window (all when there is none). */
  live(h: number): { keys: Float32Array; values: Float32Array; length: number } {
    const d = this.headDim;
    const start = this.startOf[h];
    const end = this.lengthOf[h];
    return { keys: this.keys[h].subarray(start * d, end * d), values: this.values[h].subarray(start * d, end * d), length: end - start };
  }

  /** The keys every head holds, stacked [numHeads, length, headDim] (a copy); heads must hold the same number. */
  stackedKeys(): { keys: Float32Array; length: number } {
    const length = this.lengthOf[0];
    const keys = new Float32Array(this.numHeads * length * this.headDim);
    for (let h = 0; h < this.numHeads; h++) {
      if (this.lengthOf[h] !== length) throw new RangeError(`heads hold different numbers of entries (${this.lengths.join(', ')})`);
      keys.set(this.headKeys(h), h * length * this.headDim);
    }
    return { keys, length };
  }

  /**
   * Every head's entries packed one head after another: keys and values [Σ length_h, headDim], positions
   * [Σ length_h], and each head's length (a saved context's layout; copies).
   */
  packed(): { keys: Float32Array; values: Float32Array; positions: Int32Array; lengths: Int32Array } {
    const d = this.headDim;
    const total = this.entries;
    const out = { keys: new Float32Array(total * d), values: new Float32Array(total * d), positions: new Int32Array(total), lengths: Int32Array.from(this.lengthOf) };
    let at = 0;
    for (let h = 0; h < this.numHeads; h++) {
      out.keys.set(this.headKeys(h), at * d);
      out.values.set(this.headValues(h), at * d);
      out.positions.set(this.headPositions(h), at);
      at += this.lengthOf[h];
    }
    return out;
  }

  /** A cache from the `packed` layout (a context file being loaded); each head's buffers sized to its entries. */
  static fromPacked(numHeads: number, headDim: number, group: number, lengths: ArrayLike<number>,
    keys: Float32Array, values: Float32Array, positions: Int32Array): LayerCache {
    if (lengths.length !== numHeads) throw new RangeError(`${lengths.length} head lengths for ${numHeads} heads`);
    const cache = new LayerCache(numHeads, headDim, group);
    let at = 0;
    for (let h = 0; h < numHeads; h++) {
      const len = lengths[h];
      if (!(Number.isSafeInteger(len) && len >= 0 && (at + len) * headDim <= keys.length)) throw new RangeError(`head ${h}: length ${len} does not fit the packed entries`);
      cache.keys[h] = keys.slice(at * headDim, (at + len) * headDim);
      cache.values[h] = values.slice(at * headDim, (at + len) * headDim);
      cache.positions[h] = positions.slice(at, at + len);
      cache.lengthOf[h] = len;
      at += len;
    }
    if (at * headDim !== keys.length || at !== positions.length) throw new RangeError(`head lengths sum to ${at}, the packed entries hold ${positions.length}`);
    return cache;
  }

  /**
   * An independent copy (buffers sized to the entries held; they grow as decoding appends): a saved context is
   * never written, each request continues on its own copy.
   */
  clone(): LayerCache {
    const copy = new LayerCache(this.numHeads, this.headDim, this.group);
    for (let h = 0; h < this.numHeads; h++) {
      copy.keys[h] = this.headKeys(h).slice();
      copy.values[h] = this.headValues(h).slice();
      copy.positions[h] = this.headPositions(h).slice();
      copy.lengthOf[h] = this.lengthOf[h];
      copy.startOf[h] = this.startOf[h];
    }
    return copy;
  }

  /** Entries held, over all heads. */
  get entries(): number {
    let total = 0;
    for (let h = 0; h < this.numHeads; h++) total += this.lengthOf[h];
    return total;
  }

  /** Bytes of the entries held (keys and values, f32): Σ heads length_h × headDim × 2 × 4. */
  get bytes(): number {
    return this.entries * this.headDim * 2 * 4;
  }

  /** Bytes of the buffers allocated (held entries plus room to grow). */
  get allocatedBytes(): number {
    let total = 0;
    for (let h = 0; h < this.numHeads; h++) total += this.keys[h].byteLength + this.values[h].byteLength;
    return total;
  }
}

export class KvCache {
  readonly layers: (LayerCache | null)[];
  /**
   * The compression policy's hook after each decode step's layer (PyramidInfer evicts while decoding); set by
   * prefill, not copied by `clone` (the policy's per-request state belongs to one sequence).
   */
  decodeHook?: PolicyRun['decode'];
  constructor(readonly config: ModelConfig) {
    this.layers = new Array(config.numLayers).fill(null);
  }
  /** Creates layer `l`'s (empty) cache: one head per KV head, or per query head if `repeatKv`. */
  allocate(l: number, repeatKv = false): LayerCache {
    const { numHeads, numKvHeads, headDim } = this.config;
    const cache = repeatKv ? new LayerCache(numHeads, headDim, numHeads / numKvHeads) : new LayerCache(numKvHeads, headDim);
    this.layers[l] = cache;
    return cache;
  }
  layer(l: number): LayerCache {
    const cache = this.layers[l];
    if (!cache) throw new Error(`layer ${l} has no cache yet`);
    return cache;
  }
  /** Bytes of all entries held: Σ layers Σ heads entries × headDim × 2 (K and V) × 4 bytes. */
  get bytes(): number {
    let total = 0;
    for (const c of this.layers) total += c ? c.bytes : 0;
    return total;
  }
  /** Bytes of all buffers allocated (entries held plus room to grow). */
  get allocatedBytes(): number {
    let total = 0;
    for (const c of this.layers) total += c ? c.allocatedBytes : 0;
    return total;
  }
  /** Entries each cache head holds, per layer. */
  get lengths(): number[][] {
    return this.layers.map((c) => (c ? c.lengths : []));
  }
  /** An independent copy of every layer (see {@link LayerCache.clone}). */
  clone(): KvCache {
    const copy = new KvCache(this.config);
    this.layers.forEach((c, l) => { copy.layers[l] = c ? c.clone() : null; });
    return copy;
  }
}
