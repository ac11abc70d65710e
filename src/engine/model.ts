/**
 * A loaded model: the frozen config, the tokenizer, and its compiled graphs: one session per decoder layer and
 * one for the head, with the weights inside them as prepacked initializers (float32, or 8/4-bit MatMulNBits),
 * and one for the embedding lookup. Loading is the only slow, allocating step; requests allocate their own state.
 * @module
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ConfigError, ModelLoadError } from '../errors.js';
import { NO_GENERATION_DEFAULTS, loadGenerationConfig, type GenerationDefaults } from '../model/generation-config.js';
import { loadConfig, ropeFrequencies, type ModelConfig } from '../model/config.js';
import { Tokenizer } from '../model/tokenizer.js';
import { SafetensorsStore } from '../model/safetensors.js';
import { checkUnusedTensors, lmHeadParts, loadLayer, readEmbeddingTable, readLinear, tensorsPerLayer } from '../model/weights.js';
import { EMBED, LAYER, LAYER_MODES, buildEmbeddingModel, buildHeadModel, buildLayerModel, layerOutput, modeOutputs, type LayerMode } from '../graph/layer-graph.js';
import { BATCH, DECODE, HEAD, PROJECT, buildBatchAttentionGraph, buildPrefillAttentionGraph, type BatchLayout } from '../graph/decoder-layer.js';
import { WEIGHT_DTYPES, type LinearWeight, type WeightDtype } from '../graph/linear.js';
import { QuantizerSessions } from './quantize.js';
import { DecodeBatcher, checkBatching, type BatchingOptions } from './batcher.js';
import type { BuiltModel } from '../graph/builder.js';
import { MAX_THREADS, Session, dataF32, defaultThreads, f32, i64, type Feeds, type OrtTensor } from './ort.js';

export interface LoadProgress {
  stage: 'config' | 'weights' | 'graphs' | 'tokenizer' | 'ready';
  done: number;
  total: number;
}

export interface LoadOptions {
  /**
   * ONNX Runtime intra-op threads (default: one per core; at most the number of cores, since more workers than
   * cores only preempt each other).
   */
  threads?: number;
  /**
   * ONNX Runtime's intra-op thread spinning (`session.intra_op.allow_spinning`), off by default: with one session
   * per layer, the idle pools spin while the next layer runs (measured: decode 9x slower with two threads;
   * `node dist/src/bench/threads.js`). For measurements.
   */
  spinning?: boolean;
  /**
   * Weight format of every linear layer (fused QKV, o_proj, gate/up, down, LM head): 'fp32' (default), 'q8' /
   * 'q4' (ONNX Runtime's MatMulNBits, block 32, quantized at load from the checkpoint's F32/F16/BF16 tensors), or
   * 'int8' (8-bit weights with one scale per output channel, int8 x int8 matmuls through DynamicQuantizeMatMul,
   * activations quantized per tensor: prefill 1.3-1.9x faster than fp32 and 1.2-2x than q8 at 4k tokens, decode like
   * q8; concurrent sequences decode in turns, not in one batch).
   * Norms stay float32; the embedding table stays as stored (exact lookups).
   */
  dtype?: WeightDtype;
  /** Called as loading goes on (weights are reported tensor by tensor). */
  onProgress?: (p: LoadProgress) => void;
  /** Skip the tokenizer (benchmarks that feed token ids directly to a checkpoint without one). */
  withoutTokenizer?: boolean;
  /**
   * Told about checkpoint tensors the config does not use (as transformers warns); default: a process warning.
   * Unused tensors that surely change the result (layers past num_hidden_layers, biases the config turns off)
   * are an error instead.
   */
  onWarning?: (message: string) => void;
  /**
   * Continuous batching of concurrent `generate()` / `stream()` calls (see `batcher.ts`): on by default with at
   * most 8 sequences; `false` decodes each call alone, as if no other ran.
   */
  batching?: BatchingOptions | false;
}

/** The thread count to use: the default (one per core), or `threads` checked to be an integer in [1, MAX_THREADS]. */
function checkThreads(threads: number | undefined): number {
  if (threads === undefined) return defaultThreads();
  if (!Number.isSafeInteger(threads) || threads < 1 || threads > MAX_THREADS) {
    throw new ConfigError(`threads must be an integer from 1 to ${MAX_THREADS}, got ${String(threads)}`);
  }
  return threads;
}

function checkDtype(dtype: unknown): WeightDtype {
  if (dtype === undefined) return 'fp32';
  if (typeof dtype !== 'string' || !(WEIGHT_DTYPES as readonly string[]).includes(dtype)) {
    throw new ConfigError(`dtype must be one of ${WEIGHT_DTYPES.join(', ')}, got ${JSON.stringify(dtype)}`);
  }
  return dtype as WeightDtype;
}

/** Bytes of a built model's initializers (embedded and external). */
function externalBytes(m: BuiltModel): number {
  return m.external.reduce((a, e) => a + e.data.byteLength, 0);
}

/** Name prefix of the batched attention graphs (see {@link Model.batchAttention}). */
const BATCH_ATTENTION_GRAPH = 'batch-attention';
const PREFILL_ATTENTION_GRAPH = 'prefill-attention';

export class Model {
  /** generation_config.json: its EOS ids and default sampling settings (empty without the file). */
  generationDefaults: GenerationDefaults = NO_GENERATION_DEFAULTS;
  private readonly extraGraphs = new Map<string, Promise<Session>>();
  private readonly loadedExtraGraphs: Session[] = [];
  /** Milliseconds spent in each layer branch (all layers), and runs. */
  private readonly modeMs: Record<LayerMode, number> = { project: 0, mlp: 0, decode: 0, decodeRepeated: 0, decodeProject: 0, decodeFinish: 0 };
  /** Zero-size stand-ins for the inputs a branch does not read (every graph input must be fed). */
  private readonly fillers: Feeds;
  private batcherOf: DecodeBatcher;
  /** The `mode` input of each branch, and the names of its outputs in the layer model (the only ones fetched). */
  private readonly modeRuns = new Map(LAYER_MODES.map((mode, k) => [mode, {
    input: i64(BigInt64Array.of(BigInt(k)), []),
    fetches: modeOutputs(mode).map((_, i) => layerOutput(mode, i)),
  }]));

  private constructor(
    readonly dir: string,
    readonly config: ModelConfig,
    private readonly tokenizerOrNull: Tokenizer | null,
    readonly threads: number,
    /** Whether the sessions' thread pools spin (see {@link LoadOptions.spinning}). */
    readonly spinning: boolean,
    /** Weight format of the linear layers. */
    readonly dtype: WeightDtype,
    /** One session per decoder layer (see src/graph/layer-graph.ts). */
    readonly layerSessions: readonly Session[],
    readonly headSession: Session,
    readonly embeddingSession: Session,
    /**
     * Weight bytes handed to ONNX Runtime: linear layers in their format, norms, and the embedding table as
     * stored. Per decoded token the engine reads all but the embedding table (see {@link decodeWeightBytes}).
     */
    readonly weightBytes: number,
    /** Bytes of the weights read per decoded token: every layer and the head (not the embedding table). */
    readonly decodeWeightBytes: number,
    batching: Required<BatchingOptions> | null,
  ) {
    const { headDim: d } = config;
    // Inputs of the branches that do not run: every graph input must be fed. The decode branches take one cache
    // input per cache head (numHeads of them when K/V are repeated), each [length, headDim].
    const fillers: Feeds = {
      [PROJECT.positionIds]: i64(new BigInt64Array(0), [0]),
      [PROJECT.invFreq]: f32(new Float32Array(d / 2), [d / 2]),
      [BATCH.rowInvFreq]: f32(new Float32Array(0), [0, d / 2]),
      [BATCH.attention]: f32(new Float32Array(0), [0, config.numHeads * d]),
    };
    for (let h = 0; h < config.numHeads; h++) {
      fillers[DECODE.cacheKeys(h)] = f32(new Float32Array(0), [0, d]);
      fillers[DECODE.cacheValues(h)] = f32(new Float32Array(0), [0, d]);
    }
    this.fillers = fillers;
    this.batcherOf = new DecodeBatcher(this, batching);
  }

  /** The continuous batcher that concurrent `generate()` / `stream()` calls decode through. */
  get batcher(): DecodeBatcher {
    return this.batcherOf;
  }

  /**
   * Changes the batching options (`false`: each call decodes alone). Only while no generation runs on the model.
   * @throws ConfigError for bad options or while generations run.
   */
  setBatching(options: BatchingOptions | false): void {
    const limits = checkBatching(options, os.totalmem());
    if (this.batcherOf.size > 0) throw new ConfigError(`batching can change only while no generation runs (${this.batcherOf.size} running)`);
    this.batcherOf = new DecodeBatcher(this, limits);
  }

  static async load(dir: string, options: LoadOptions = {}): Promise<Model> {
    const progress = options.onProgress ?? (() => {});
    if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) {
      throw new ModelLoadError(`model folder "${dir}" does not exist or is not a folder`);
    }
    const threads = checkThreads(options.threads);
    const spinning = options.spinning ?? false;
    if (typeof spinning !== 'boolean') throw new ConfigError(`spinning must be true or false, got ${JSON.stringify(spinning)}`);
    const dtype = checkDtype(options.dtype);
    const batching = checkBatching(options.batching, os.totalmem());
    progress({ stage: 'config', done: 0, total: 1 });
    const config = loadConfig(dir);
    const generationDefaults = loadGenerationConfig(dir);
    const tokenizer = options.withoutTokenizer ? null : await Tokenizer.load(dir);
    const warn = options.onWarning ?? ((message: string) => process.emitWarning(message, 'FastKVWarning'));
    const store = SafetensorsStore.open(dir);
    checkUnusedTensors(store, config, warn);
    const headParts = lmHeadParts(store, config);
    const { attentionScaling } = ropeFrequencies(config, config.maxPositionEmbeddings);

    const total = 2 + (config.tieWordEmbeddings ? 1 : 2) + config.numLayers * tensorsPerLayer(config);
    let done = 0;
    const tick = () => progress({ stage: 'weights', done: ++done, total });
    const quantizer = dtype === 'fp32' ? null : new QuantizerSessions(threads);
    const sessions: Session[] = [];
    try {
      let weightBytes = 0;
      let decodeWeightBytes = 0;
      // One layer at a time: read (and quantize), build, compile, drop the JS copy, so that peak memory is the
      // model in ONNX Runtime plus one layer.
      const compile = async (name: string, build: () => BuiltModel, decodeRead: boolean): Promise<Session> => {
        const built = build();
        const bytes = externalBytes(built) + built.bytes.byteLength;
        weightBytes += bytes;
        if (decodeRead) decodeWeightBytes += bytes;
        const session = await Session.create(name, built, threads, { spinning });
        sessions.push(session);
        return session;
      };
      const embeddingSession = await compile('embedding', () => {
        const table = readEmbeddingTable(store, config);
        tick();
        return buildEmbeddingModel(config, table);
      }, false);
      const layerSessions: Session[] = [];
      for (let l = 0; l < config.numLayers; l++) {
        const tensors = await loadLayer(store, config, l, dtype, quantizer?.quantize ?? null, tick);
        layerSessions.push(await compile(`layer ${l}`, () => buildLayerModel(config, attentionScaling, tensors, `layer_${l}`), true));
      }
      const finalNorm = store.readF32('model.norm.weight', [config.hiddenSize]);
      tick();
      const lmHead: LinearWeight = await readLinear(store, headParts, dtype, quantizer?.quantize ?? null, tick);
      const headSession = await compile('head', () => buildHeadModel(config, finalNorm, lmHead), true);
      progress({ stage: 'ready', done: 1, total: 1 });
      const model = new Model(path.resolve(dir), config, tokenizer, threads, spinning, dtype, layerSessions, headSession, embeddingSession,
        weightBytes, decodeWeightBytes, batching);
      model.generationDefaults = generationDefaults;
      return model;
    } catch (e) {
      await Promise.allSettled(sessions.map((s) => s.release()));
      throw e;
    } finally {
      await quantizer?.release();
    }
  }

  /**
   * Runs layer `layer`'s `mode` branch on `feeds` (inputs the branch does not read may be left out) and returns
   * its outputs by name (PROJECT / MLP / DECODE / BATCH); only those are fetched.
   */
  async runLayer(layer: number, mode: LayerMode, feeds: Feeds): Promise<Record<string, OrtTensor>> {
    const t0 = performance.now();
    const { input, fetches } = this.modeRuns.get(mode)!;
    const out = await this.layerSessions[layer].run({ ...this.fillers, ...feeds, [LAYER.mode]: input }, fetches);
    this.modeMs[mode] += performance.now() - t0;
    const named: Record<string, OrtTensor> = {};
    modeOutputs(mode).forEach((name, i) => { named[name] = out[layerOutput(mode, i)]; });
    return named;
  }

  /** Final norm and logits for `rows` rows of `hidden`: [rows, vocab]. */
  async runHead(hidden: Float32Array, rows: number): Promise<Float32Array> {
    const out = await this.headSession.run({ [HEAD.hidden]: f32(hidden, [rows, this.config.hiddenSize]) });
    return dataF32(out[HEAD.logits]);
  }

  /** Embedding rows for `ids` (each already checked to be in [0, vocab)): [ids.length, hidden]. */
  async embed(ids: Int32Array): Promise<Float32Array> {
    const out = await this.embeddingSession.run({ [EMBED.ids]: i64(BigInt64Array.from(ids, (id) => BigInt(id)), [ids.length]) });
    return dataF32(out[EMBED.rows]);
  }

  /**
   * A graph that is built on first use and kept for the model's lifetime (the scoring graphs of the compression
   * policies, one per distinct scoring spec). `threads` defaults to the model's; small graphs run faster on one,
   * since waking the thread pool costs more than their work. `memArena`: see {@link Session.create}.
   */
  graph(key: string, build: () => Uint8Array, threads = this.threads, { memArena = false } = {}): Promise<Session> {
    let session = this.extraGraphs.get(key);
    if (!session) {
      session = Session.create(key, build(), threads, { memArena, spinning: this.spinning });
      session.then((s) => this.loadedExtraGraphs.push(s), () => {});
      this.extraGraphs.set(key, session);
    }
    return session;
  }

  /**
   * The weightless attention graph of a batched decode step for sequences whose caches have `layout` (built on
   * first use per layout and kept; the engine orders a batch's sequences so that few layouts occur). One thread:
   * its nodes are many and small, and one thread ran it 1.2-1.4x faster than two (B = 2 and 8, caches of 400 and
   * 4096 entries, Qwen2.5-0.5B heads); with its own memory arena, since its activations are small and bounded.
   */
  batchAttention(layout: BatchLayout): Promise<Session> {
    return this.graph(`${BATCH_ATTENTION_GRAPH}:${layout.join(',')}`, () => buildBatchAttentionGraph(this.config, layout), 1, { memArena: true });
  }

  /**
   * The weightless causal attention of prefill (see `buildPrefillAttentionGraph`), shared by every layer, built on
   * first use. With its own memory arena: the scores of a block of rows are its largest buffers and they are
   * the same size block after block, while without an arena every run page-faulted them afresh (a layer's
   * attention at 8k and 16k tokens took 1.5-2x as long; `node dist/src/bench/prefill-attention.js`).
   */
  prefillAttention(): Promise<Session> {
    return this.graph(PREFILL_ATTENTION_GRAPH, () => buildPrefillAttentionGraph(this.config), this.threads, { memArena: true });
  }

  /** Milliseconds spent in each graph since loading (scoring graphs summed as `scoring`). */
  graphMs(): Record<'attention' | 'mlp' | 'decode' | 'head' | 'scoring', number> {
    let scoring = 0;
    let batchAttention = 0;
    let prefillAttention = 0;
    for (const session of this.loadedExtraGraphs) {
      if (session.name.startsWith(BATCH_ATTENTION_GRAPH)) batchAttention += session.stats.ms;
      else if (session.name === PREFILL_ATTENTION_GRAPH) prefillAttention += session.stats.ms;
      else scoring += session.stats.ms;
    }
    const m = this.modeMs;
    const decode = m.decode + m.decodeRepeated + m.decodeProject + m.decodeFinish + batchAttention;
    return { attention: m.project + prefillAttention, mlp: m.mlp, decode, head: this.headSession.stats.ms, scoring };
  }

  get tokenizer(): Tokenizer {
    if (!this.tokenizerOrNull) throw new ModelLoadError(`model "${this.dir}" was loaded without its tokenizer`);
    return this.tokenizerOrNull;
  }

  get hasTokenizer(): boolean {
    return this.tokenizerOrNull !== null;
  }

  /** Token ids that end generation: those of config.json, generation_config.json and the tokenizer. */
  get eosTokenIds(): number[] {
    const ids = new Set<number>([...this.config.eosTokenIds, ...this.generationDefaults.eosTokenIds]);
    for (const id of this.tokenizerOrNull?.eosTokenIds ?? []) ids.add(id);
    return [...ids];
  }

  async dispose(): Promise<void> {
    const extra = await Promise.all(this.extraGraphs.values());
    await Promise.all([...this.layerSessions, this.headSession, this.embeddingSession, ...extra].map((s) => s.release()));
  }
}
