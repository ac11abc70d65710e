/**
 * The model's forward passes. Prefill runs layer-major over the whole prompt (every row through layer 0, then
 * layer 1, ...) so that between two layers the compression policy can look at keys and queries and shrink the
 * set of rows; decoding runs one token through every layer against the per-layer caches.
 * @module
 */
import { NumericError, RequestError } from '../errors.js';
import { ropeFrequencies, type ModelConfig } from '../model/config.js';
import { fullPolicy, type CompressionPolicy, type LayerDecision } from '../compress/policy.js';
import { BATCH, BATCH_CACHE, DECODE, MLP, PREFILL_ATTENTION, PROJECT, type BatchLayout } from '../graph/decoder-layer.js';
import { createScorer } from '../compress/scoring.js';
import { KvCache, type LayerCache } from './kv-cache.js';
import type { Model } from './model.js';
import { dataF32, f32, i64, type Feeds, type OrtTensor, type Session } from './ort.js';

/**
 * Rows per run of a token-wise branch (prefill projections, MLP) whose widest activation holds `floatsPerRow`
 * float32 values per row: a chunk's activations stay within 32 MiB, glibc's largest mmap threshold. Smaller
 * buffers are recycled through the heap, larger ones are fresh memory on every run, and first-touch page faults
 * cost about 0.2 GB/s on the VM this was measured on (see `ort.ts`). 64 to 2048 rows, a multiple of 64 (the MLP
 * of Qwen2.5-0.5B: 832 rows; of Llama-3.1-8B: 256).
 */
export function rowsPerRun(floatsPerRow: number): number {
  const rows = Math.floor((32 * 1024 * 1024) / (floatsPerRow * 4) / 64) * 64;
  return Math.min(2048, Math.max(64, rows));
}

/**
 * Rows of a prompt attended per run of the prefill attention graph, each block over every row before it and
 * itself. Blocks bound what the attention session holds (a block's buffers, not the whole prompt's) and cost
 * nothing in speed: 1,024- and 2,048-row blocks ran as fast as one run, or faster, over 4k-16k tokens
 * (`node dist/src/bench/prefill-attention.js`).
 */
export const PREFILL_ATTENTION_BLOCK = 2048;

export interface PrefillOptions {
  /** Compression policy (default: full, no compression). */
  policy?: CompressionPolicy;
  /** [N] position ids (default 0..N−1); increasing, not necessarily contiguous. */
  positionIds?: Int32Array;
  /** Return logits for every row of the last layer (tests), not only the last one. */
  allLogits?: boolean;
  /**
   * Decode steps expected to follow: only sets the sequence length the rope frequencies are computed for
   * (dynamic scaling). Nothing is allocated for them: the cache grows with the tokens actually generated.
   */
  decodeCapacity?: number;
  /** Also return the last layer's output rows (before the final norm) and their positions (TSP calibration). */
  finalHidden?: boolean;
  /** Called after each layer with the layer index and the rows it processed (long prompts take a while). */
  onLayer?: (layer: number, numLayers: number, rows: number) => void;
  /** Checked before every layer: an aborted signal stops prefill by throwing its reason (an AbortError). */
  signal?: AbortSignal;
}

export interface LayerStats {
  /** Rows (tokens) the layer processed. */
  rows: number;
  /** Cache entries kept per KV head (the mean over heads when they differ). */
  kept: number;
  /** Entries kept by each cache head, when heads keep different numbers (AdaKV, HeadKV). */
  keptPerHead?: number[];
}

export interface PrefillResult {
  /** [vocab] logits of the last row, or [rows, vocab] with `allLogits`. */
  logits: Float32Array;
  cache: KvCache;
  /** Position id of the first generated token: one past the last prompt row's position. */
  nextPosition: number;
  layers: LayerStats[];
  /** Milliseconds spent inside the policy (scoring and selection). */
  policyMs: number;
  /** Set when the policy restarted prefill on a subset of the prompt (GemFilter). */
  restartedOn?: Int32Array;
  /** With `finalHidden`: the last layer's output [rows, hidden] and each row's original position. */
  finalHidden?: { hidden: Float32Array; positionIds: Int32Array };
}

/** Embedding rows for `ids`: [ids.length, hidden]; an id outside the vocabulary is a RequestError. */
function embed(model: Model, ids: Int32Array): Promise<Float32Array> {
  const { vocabSize } = model.config;
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i];
    if (!(id >= 0 && id < vocabSize)) throw new RequestError(`token id ${id} at index ${i} is outside the vocabulary [0, ${vocabSize})`);
  }
  return model.embed(ids);
}

/** src[indices[i]] for each i. */
function pick(src: Int32Array, indices: Int32Array): Int32Array {
  const out = new Int32Array(indices.length);
  for (let i = 0; i < indices.length; i++) out[i] = src[indices[i]];
  return out;
}

/** Copies the rows `rows` (ascending) of a [n, width] matrix. */
function gatherRows(src: Float32Array, width: number, rows: Int32Array): Float32Array {
  const out = new Float32Array(rows.length * width);
  for (let i = 0; i < rows.length; i++) out.set(src.subarray(rows[i] * width, (rows[i] + 1) * width), i * width);
  return out;
}

/**
 * Float32 buffers that one prefill reuses from layer to layer (a layer never has more rows than the first), so
 * that a long prompt's [rows, width] results are not allocated afresh for every layer: fresh memory of that size
 * is page-faulted on first touch, which is slow on the VM this was measured on (see `ort.ts`; with fresh buffers
 * per layer, `fastkv bench --lengths 16384` spent 15.5 s of a prefill outside the graphs, 1.5 s with these).
 */
class Scratch {
  private readonly buffers = new Map<string, Float32Array>();
  /** A view of `size` floats of the buffer called `name`, grown if needed; its contents are left over. */
  take(name: string, size: number): Float32Array {
    let buffer = this.buffers.get(name);
    if (!buffer || buffer.length < size) {
      buffer = new Float32Array(size);
      this.buffers.set(name, buffer);
    }
    return buffer.subarray(0, size);
  }
}

/**
 * Runs `run` on consecutive chunks of at most `chunkRows` of `n` rows and joins each of its outputs' rows (an
 * output of a chunk of `rows` rows is [rows, width]) into `into(i, size)`, output i's buffer of `size` floats.
 * One run, and no copy, when the rows fit in one chunk.
 */
async function inRowChunks(n: number, chunkRows: number, run: (start: number, rows: number) => Promise<Float32Array[]>,
  into: (output: number, size: number) => Float32Array): Promise<Float32Array[]> {
  if (n <= chunkRows) return run(0, n);
  let joined: Float32Array[] | null = null;
  for (let start = 0; start < n; start += chunkRows) {
    const rows = Math.min(chunkRows, n - start);
    const outs = await run(start, rows);
    joined ??= outs.map((o, i) => into(i, (o.length / rows) * n));
    outs.forEach((o, i) => joined![i].set(o, start * (o.length / rows)));
  }
  return joined!;
}

/** A layer's prefill attention over its rows. */
interface LayerAttention {
  /** [n, numHeads·headDim]: the attention output of each row, before o_proj. */
  attention: Float32Array;
  /** [n, numHeads·headDim]: each row's query, RoPE applied. */
  queries: Float32Array;
  /** [numKvHeads, n, headDim]: RoPE applied. */
  keys: Float32Array;
  /** [numKvHeads, n, headDim] */
  values: Float32Array;
}

/**
 * Layer `layer`'s attention over `n` rows at `positions`: the projections in row chunks (small activations, see
 * {@link rowsPerRun}), then causal attention in blocks of {@link PREFILL_ATTENTION_BLOCK} rows in the shared
 * attention graph, each block's keys and values joining the past of the next.
 */
async function attendPrefill(model: Model, layer: number, hidden: Float32Array, n: number, positions: BigInt64Array, invFreq: OrtTensor,
  scratch: Scratch): Promise<LayerAttention> {
  const c = model.config;
  const D = c.hiddenSize;
  const qWidth = c.numHeads * c.headDim;
  const kvWidth = c.numKvHeads * c.headDim;
  const [queries, keys, values] = await inRowChunks(n, rowsPerRun(qWidth + 2 * kvWidth), async (start, rows) => {
    const out = await model.runLayer(layer, 'project', {
      [PROJECT.hidden]: f32(hidden.subarray(start * D, (start + rows) * D), [rows, D]),
      [PROJECT.positionIds]: i64(positions.subarray(start, start + rows), [rows]),
      [PROJECT.invFreq]: invFreq,
    });
    return [dataF32(out[PROJECT.query]), dataF32(out[PROJECT.key]), dataF32(out[PROJECT.value])];
  }, (i, size) => scratch.take(`project ${i}`, size));

  const attended = await attendInBlocks(await model.prefillAttention(), c, { queries, keys, values }, n, PREFILL_ATTENTION_BLOCK,
    (size) => scratch.take('attention', size));
  return { ...attended, queries };
}

/**
 * Causal attention of `n` rows ([n, heads·headDim] queries, [n, kvHeads·headDim] keys and values, RoPE applied)
 * in `session` (a prefill attention graph) in blocks of `block` rows, each over the rows before it and its own;
 * the output's rows are joined into `into(size)` when there is more than one block. Also returns the keys and
 * values per KV head, [numKvHeads, n, headDim] (the last block's present output).
 */
export async function attendInBlocks(session: Session, c: ModelConfig, rows: { queries: Float32Array; keys: Float32Array; values: Float32Array },
  n: number, block: number, into: (size: number) => Float32Array): Promise<{ attention: Float32Array; keys: Float32Array; values: Float32Array }> {
  const P = PREFILL_ATTENTION;
  const qWidth = c.numHeads * c.headDim;
  const kvWidth = c.numKvHeads * c.headDim;
  const none = f32(new Float32Array(0), [1, c.numKvHeads, 0, c.headDim]);
  let past = { key: none, value: none };
  const [attention] = await inRowChunks(n, block, async (start, count) => {
    const out = await session.run({
      [P.query]: f32(rows.queries.subarray(start * qWidth, (start + count) * qWidth), [1, count, qWidth]),
      [P.key]: f32(rows.keys.subarray(start * kvWidth, (start + count) * kvWidth), [1, count, kvWidth]),
      [P.value]: f32(rows.values.subarray(start * kvWidth, (start + count) * kvWidth), [1, count, kvWidth]),
      [P.pastKey]: past.key, [P.pastValue]: past.value,
    });
    past = { key: out[P.presentKey], value: out[P.presentValue] };
    return [dataF32(out[P.attention])];
  }, (_, size) => into(size));
  return { attention, keys: dataF32(past.key), values: dataF32(past.value) };
}

/**
 * Layer `layer`'s o_proj, residual and MLP for `n` rows, in row chunks: the layer's output [n, hidden]. In more
 * than one chunk each chunk's result overwrites its rows of `hidden` (read by that chunk's run alone, done by
 * then), which is returned.
 */
async function runMlp(model: Model, layer: number, hidden: Float32Array, attention: Float32Array, n: number): Promise<Float32Array> {
  const c = model.config;
  const D = c.hiddenSize;
  const qWidth = c.numHeads * c.headDim;
  const [out] = await inRowChunks(n, rowsPerRun(2 * c.intermediateSize), async (start, rows) => {
    const r = await model.runLayer(layer, 'mlp', {
      [MLP.hidden]: f32(hidden.subarray(start * D, (start + rows) * D), [rows, D]),
      [MLP.attention]: f32(attention.subarray(start * qWidth, (start + rows) * qWidth), [rows, qWidth]),
    });
    return [dataF32(r[MLP.hiddenOut])];
  }, () => hidden);
  return out;
}

async function runHead(model: Model, hidden: Float32Array, rows: number): Promise<Float32Array> {
  return checkFinite(await model.runHead(hidden, rows), model.config.vocabSize);
}

/**
 * Logits must be finite: NaN or infinite ones (a NaN weight, config values that overflow float32) would be
 * sampled as token 0 again and again, a silent wrong answer. One pass over the row, as cheap as the argmax after it.
 */
export function checkFinite(logits: Float32Array, vocabSize: number): Float32Array {
  for (let i = 0; i < logits.length; i++) {
    const v = logits[i];
    if (v - v !== 0) {                             // NaN or ±Infinity
      throw new NumericError(`the model computed a ${Number.isNaN(v) ? 'NaN' : 'infinite'} logit (token id ${i % vocabSize}` +
        `${logits.length > vocabSize ? `, row ${Math.floor(i / vocabSize)}` : ''}): check the checkpoint for NaN or huge ` +
        'weights and config.json for values that overflow float32');
    }
  }
  return logits;
}

function checkPositions(positionIds: Int32Array, n: number): void {
  if (positionIds.length !== n) throw new RequestError(`positionIds has ${positionIds.length} entries for ${n} tokens`);
  for (let i = 0; i < n; i++) {
    if (positionIds[i] < 0 || (i > 0 && positionIds[i] <= positionIds[i - 1])) {
      throw new RequestError(`positionIds must be non-negative and strictly increasing (index ${i}: ${positionIds[i]})`);
    }
  }
}

function layerStats(rows: number, cache: LayerCache): LayerStats {
  if (!cache.ragged) return { rows, kept: cache.headLength(0) };
  return { rows, kept: cache.entries / cache.numHeads, keptPerHead: cache.lengths };
}

/** Runs the prompt through every layer, filling a KV cache as the policy decides. */
export async function prefill(model: Model, ids: Int32Array, options: PrefillOptions = {}): Promise<PrefillResult> {
  const c = model.config;
  const N = ids.length;
  if (N === 0) throw new RequestError('the prompt has no tokens');
  const policy = options.policy ?? fullPolicy;
  let positionIds = options.positionIds ?? Int32Array.from({ length: N }, (_, i) => i);
  checkPositions(positionIds, N);
  const { invFreq } = ropeFrequencies(c, positionIds[N - 1] + 1 + (options.decodeCapacity ?? 0));
  const invFreqTensor = f32(invFreq, [c.headDim / 2]);
  const run = policy.begin(c, N);
  const cache = new KvCache(c);
  const layers: LayerStats[] = [];
  let policyMs = 0;

  let hidden = await embed(model, ids); // [n, hidden]
  let n = N;
  const scratch = new Scratch();
  let positions = BigInt64Array.from(positionIds, (p) => BigInt(p));
  for (let l = 0; l < c.numLayers; l++) {
    options.signal?.throwIfAborted();
    // 1. Attention over the n rows present (causal, in row order = position order).
    const { attention, queries, keys, values } = await attendPrefill(model, l, hidden, n, positions, invFreqTensor, scratch);

    // 2. Ask the policy what to keep.
    const t0 = performance.now();
    const w = Math.min(run.queryWindow ?? policy.queryWindow, n);
    const windowQueries = queries.subarray((n - w) * c.numHeads * c.headDim);
    const decision: LayerDecision = await run.layer({
      layer: l, config: c, promptLength: N, numRows: n, positionIds, keys, values, windowQueries,
      scorer: createScorer(model, keys, n, windowQueries),
    });
    policyMs += performance.now() - t0;

    // GemFilter: start again, from scratch, on the chosen prompt tokens, renumbered 0..k−1.
    if (decision.kind === 'restart') {
      const restarted = await prefill(model, pick(ids, decision.tokens), {
        allLogits: options.allLogits, decodeCapacity: options.decodeCapacity, onLayer: options.onLayer, signal: options.signal, finalHidden: options.finalHidden,
      });
      return { ...restarted, policyMs: policyMs + restarted.policyMs, layers: [...layers, { rows: n, kept: 0 }, ...restarted.layers], restartedOn: decision.tokens };
    }

    // 3. Write the kept entries, per KV head, into the layer's cache.
    const layerCache = cache.allocate(l, policy.repeatKv);
    layerCache.fill(keys, values, n, positionIds, decision.keep);
    layers.push(layerStats(n, layerCache));
    options.onLayer?.(l, c.numLayers, n);

    // 4. Finish the layer.
    hidden = await runMlp(model, l, hidden, attention, n);

    // 5. Token-selective propagation: only the chosen rows go on, keeping their original positions.
    if (decision.kind === 'propagate') {
      hidden = gatherRows(hidden, c.hiddenSize, decision.rows);
      positionIds = pick(positionIds, decision.rows);
      n = decision.rows.length;
      positions = BigInt64Array.from(positionIds, (p) => BigInt(p));
    }
  }

  if (run.decode) cache.decodeHook = run.decode.bind(run);
  // Only the last row's logits are needed to generate; tests ask for every row.
  const logits = options.allLogits
    ? await runHead(model, hidden, n)
    : await runHead(model, hidden.subarray((n - 1) * c.hiddenSize), 1);
  return {
    logits, cache, nextPosition: positionIds[n - 1] + 1, layers, policyMs,
    ...(options.finalHidden ? { finalHidden: { hidden, positionIds } } : {}),
  };
}

/** Runs one token at `positionId` through every layer, appending its keys and values to the caches. */
export async function decodeStep(model: Model, cache: KvCache, token: number, positionId: number, invFreq: Float32Array): Promise<Float32Array> {
  const c = model.config;
  const invFreqTensor = f32(invFreq, [c.headDim / 2]);
  const positionTensor = i64(BigInt64Array.of(BigInt(positionId)), [1]);
  let hidden = await embed(model, Int32Array.of(token));
  for (let l = 0; l < c.numLayers; l++) {
    const layerCache = cache.layer(l);
    if (c.slidingWindow !== null) layerCache.expireBefore(positionId, c.slidingWindow);
    const feeds: Feeds = {
      [DECODE.hidden]: f32(hidden, [1, c.hiddenSize]),
      [DECODE.positionIds]: positionTensor,
      [DECODE.invFreq]: invFreqTensor,
    };
    addCacheFeeds(feeds, layerCache, DECODE.cacheKeys, DECODE.cacheValues);
    const out = await model.runLayer(l, layerCache.group > 1 ? 'decodeRepeated' : 'decode', feeds);
    layerCache.append(dataF32(out[DECODE.newKey]), dataF32(out[DECODE.newValue]), positionId);
    await runDecodeHook(model, cache, l, dataF32(out[DECODE.query]));
    hidden = dataF32(out[DECODE.hiddenOut]);
  }
  return runHead(model, hidden, 1);
}

/** Feeds each cache head's live entries, viewed in place: a step attends over what is held, not over a capacity. */
function addCacheFeeds(feeds: Feeds, layerCache: LayerCache, keyName: (h: number) => string, valueName: (h: number) => string): void {
  for (let h = 0; h < layerCache.numHeads; h++) {
    const live = layerCache.live(h);
    feeds[keyName(h)] = f32(live.keys, [live.length, layerCache.headDim]);
    feeds[valueName(h)] = f32(live.values, [live.length, layerCache.headDim]);
  }
}

/** The policy's hook after a decode step's layer `l` (PyramidInfer evicts while decoding), given the step's query. */
async function runDecodeHook(model: Model, cache: KvCache, l: number, query: Float32Array): Promise<void> {
  if (!cache.decodeHook) return;
  const layerCache = cache.layer(l);
  await cache.decodeHook({
    layer: l, cache: layerCache, query,
    scorer: (queries) => { const { keys, length } = layerCache.stackedKeys(); return createScorer(model, keys, length, queries); },
  });
}

/** One sequence of a batched decode step: its cache, the token to feed, its position and rope frequencies. */
export interface BatchMember {
  cache: KvCache;
  token: number;
  positionId: number;
  invFreq: Float32Array;
}

/**
 * One decode step for several sequences at once: the linear layers and the head run once over the B rows (the
 * weights are read once for all of them), and each sequence attends over its own cache in place, whatever its
 * method and per-head lengths. Equivalent, row by row, to {@link decodeStep} on each sequence alone. Returns each
 * sequence's logits, or the error that concerns that sequence alone (non-finite logits); an error of the step
 * itself is thrown.
 */
export async function decodeBatchStep(model: Model, members: readonly BatchMember[]): Promise<(Float32Array | Error)[]> {
  const c = model.config;
  const B = members.length;
  const d = c.headDim;
  const qWidth = c.numHeads * d;
  const kvWidth = c.numKvHeads * d;
  const rowInvFreq = new Float32Array(B * (d / 2));
  members.forEach((m, s) => rowInvFreq.set(m.invFreq, s * (d / 2)));
  const rowInvFreqTensor = f32(rowInvFreq, [B, d / 2]);
  const positionTensor = i64(BigInt64Array.from(members, (m) => BigInt(m.positionId)), [B]);
  let hidden = await embed(model, Int32Array.from(members, (m) => m.token));
  for (let l = 0; l < c.numLayers; l++) {
    const caches = members.map((m) => m.cache.layer(l));
    if (c.slidingWindow !== null) caches.forEach((lc, s) => lc.expireBefore(members[s].positionId, c.slidingWindow!));
    const hiddenTensor = f32(hidden, [B, c.hiddenSize]);
    const projected = await model.runLayer(l, 'decodeProject', {
      [BATCH.hidden]: hiddenTensor, [BATCH.positionIds]: positionTensor, [BATCH.rowInvFreq]: rowInvFreqTensor,
    });

    // The new keys and values go into each sequence's cache first (repeated per query head where the cache is),
    // then each sequence attends over its own cache heads, viewed in place.
    const queries = dataF32(projected[BATCH.query]);
    const keys = dataF32(projected[BATCH.key]);
    const values = dataF32(projected[BATCH.value]);
    const feeds: Feeds = { [BATCH.query]: projected[BATCH.query] };
    caches.forEach((lc, s) => {
      const key = keys.subarray(s * kvWidth, (s + 1) * kvWidth);
      const value = values.subarray(s * kvWidth, (s + 1) * kvWidth);
      lc.append(repeatHeads(key, lc.group, d), repeatHeads(value, lc.group, d), members[s].positionId);
      addCacheFeeds(feeds, lc, (h) => BATCH_CACHE.keys(s, h), (h) => BATCH_CACHE.values(s, h));
    });
    const layout: BatchLayout = caches.map((lc) => (lc.group > 1 ? 'repeated' : 'kv'));
    const attention = (await (await model.batchAttention(layout)).run(feeds))[BATCH_CACHE.output];

    for (let s = 0; s < B; s++) await runDecodeHook(model, members[s].cache, l, queries.slice(s * qWidth, (s + 1) * qWidth));
    const finished = await model.runLayer(l, 'decodeFinish', { [BATCH.hidden]: hiddenTensor, [BATCH.attention]: attention });
    hidden = dataF32(finished[BATCH.hiddenOut]);
  }
  const logits = await model.runHead(hidden, B);
  const V = c.vocabSize;
  return members.map((_, s) => {
    const row = logits.slice(s * V, (s + 1) * V);
    try {
      return checkFinite(row, V);
    } catch (e) {
      return e as Error;
    }
  });
}

/** [heads·d] → [heads·group·d], each head's vector repeated `group` times (for caches held per query head). */
function repeatHeads(x: Float32Array, group: number, d: number): Float32Array {
  if (group === 1) return x;
  const heads = x.length / d;
  const out = new Float32Array(x.length * group);
  for (let h = 0; h < heads; h++) {
    for (let r = 0; r < group; r++) out.set(x.subarray(h * d, (h + 1) * d), (h * group + r) * d);
  }
  return out;
}
