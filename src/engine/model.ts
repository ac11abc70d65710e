/**
 * A loaded model: the frozen config, the weights, the tokenizer, and the three compiled graphs shared by every
 * layer and every request. Loading is the only slow, allocating step; requests allocate their own state.
 * @module
 */
import fs from 'node:fs';
import path from 'node:path';
import { ConfigError, ModelLoadError } from '../errors.js';
import { loadConfig, ropeFrequencies, type ModelConfig } from '../model/config.js';
import { Tokenizer } from '../model/tokenizer.js';
import { loadWeights, type ModelWeights } from '../model/weights.js';
import { ATTN, HEAD, MLP, buildAttentionGraph, buildDecodeGraph, buildHeadGraph, buildMlpGraph } from '../graph/decoder-layer.js';
import { Session, availableCores, defaultThreads, f32, type Feeds } from './ort.js';

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
  /** Called as loading goes on (weights are reported tensor by tensor). */
  onProgress?: (p: LoadProgress) => void;
  /** Skip the tokenizer (benchmarks that feed token ids directly to a checkpoint without one). */
  withoutTokenizer?: boolean;
}

/** The thread count to use: the default, or `threads` checked to be an integer in [1, cores]. */
function checkThreads(threads: number | undefined): number {
  if (threads === undefined) return defaultThreads();
  const cores = availableCores();
  if (!Number.isSafeInteger(threads) || threads < 1 || threads > cores) {
    throw new ConfigError(`threads must be an integer from 1 to ${cores} (this machine's cores), got ${threads}`);
  }
  return threads;
}

export class Model {
  private readonly extraGraphs = new Map<string, Promise<Session>>();
  private readonly loadedExtraGraphs: Session[] = [];
  private constructor(
    readonly dir: string,
    readonly config: ModelConfig,
    readonly weights: ModelWeights,
    private readonly tokenizerOrNull: Tokenizer | null,
    readonly threads: number,
    readonly sessions: { readonly attention: Session; readonly mlp: Session; readonly decode: Session; readonly head: Session },
    /** Per layer: the attention graph's weight inputs, wrapped once. */
    readonly attentionWeights: readonly Feeds[],
    /** Per layer: the MLP graph's weight inputs. */
    readonly mlpWeights: readonly Feeds[],
    /** Per layer: the decode graph's weight inputs (attention and MLP). */
    readonly decodeWeights: readonly Feeds[],
    readonly headWeights: Feeds,
  ) {}

  static async load(dir: string, options: LoadOptions = {}): Promise<Model> {
    const progress = options.onProgress ?? (() => {});
    if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) {
      throw new ModelLoadError(`model folder "${dir}" does not exist or is not a folder`);
    }
    progress({ stage: 'config', done: 0, total: 1 });
    const config = loadConfig(dir);
    const tokenizer = options.withoutTokenizer ? null : await Tokenizer.load(dir);
    const weights = loadWeights(dir, config, (done, total) => progress({ stage: 'weights', done, total }));
    const threads = checkThreads(options.threads);
    progress({ stage: 'graphs', done: 0, total: 4 });
    const { attentionScaling } = ropeFrequencies(config, config.maxPositionEmbeddings);
    const [attention, mlp, decode, head] = await Promise.all([
      Session.create('attention', buildAttentionGraph(config, attentionScaling), threads),
      Session.create('mlp', buildMlpGraph(config), threads),
      Session.create('decode', buildDecodeGraph(config, attentionScaling), threads),
      Session.create('head', buildHeadGraph(config), threads),
    ]);
    const { hiddenSize: D, numHeads: H, numKvHeads: Hkv, headDim: d, intermediateSize: I } = config;
    const qkvRows = (H + 2 * Hkv) * d;
    const attentionWeights = weights.layers.map((w) => {
      const feeds: Feeds = {
        [ATTN.inputNorm]: f32(w.inputNorm, [D]),
        [ATTN.qkv]: f32(w.qkv, [qkvRows, D]),
        [ATTN.o]: f32(w.o, [D, H * d]),
      };
      if (w.qkvBias) feeds[ATTN.qkvBias] = f32(w.qkvBias, [qkvRows]);
      if (w.qNorm && w.kNorm) {
        feeds[ATTN.qNorm] = f32(w.qNorm, [d]);
        feeds[ATTN.kNorm] = f32(w.kNorm, [d]);
      }
      return feeds;
    });
    const mlpWeights = weights.layers.map((w): Feeds => ({
      [MLP.postNorm]: f32(w.postNorm, [D]),
      [MLP.gateUp]: f32(w.gateUp, [2 * I, D]),
      [MLP.down]: f32(w.down, [D, I]),
    }));
    const headWeights: Feeds = {
      [HEAD.finalNorm]: f32(weights.finalNorm, [D]),
      [HEAD.lmHead]: f32(weights.lmHead, [config.vocabSize, D]),
    };
    progress({ stage: 'ready', done: 1, total: 1 });
    const decodeWeights = attentionWeights.map((feeds, l) => ({ ...feeds, ...mlpWeights[l] }));
    return new Model(path.resolve(dir), config, weights, tokenizer, threads, { attention, mlp, decode, head },
      attentionWeights, mlpWeights, decodeWeights, headWeights);
  }

  /**
   * A graph that is built on first use and kept for the model's lifetime (the scoring graphs of the compression
   * policies, one per distinct scoring spec). `threads` defaults to the model's; small graphs run faster on one,
   * since waking the thread pool costs more than their work.
   */
  graph(key: string, build: () => Uint8Array, threads = this.threads): Promise<Session> {
    let session = this.extraGraphs.get(key);
    if (!session) {
      session = Session.create(key, build(), threads);
      session.then((s) => this.loadedExtraGraphs.push(s), () => {});
      this.extraGraphs.set(key, session);
    }
    return session;
  }

  /** Milliseconds spent in each graph since loading (scoring graphs summed as `scoring`). */
  graphMs(): Record<'attention' | 'mlp' | 'decode' | 'head' | 'scoring', number> {
    let scoring = 0;
    for (const session of this.loadedExtraGraphs) scoring += session.stats.ms;
    const s = this.sessions;
    return { attention: s.attention.stats.ms, mlp: s.mlp.stats.ms, decode: s.decode.stats.ms, head: s.head.stats.ms, scoring };
  }

  /** The decode graph over a cache with one head per query head (policies with `repeatKv`), built on first use. */
  repeatedKvDecode(): Promise<Session> {
    const { attentionScaling } = ropeFrequencies(this.config, this.config.maxPositionEmbeddings);
    return this.graph('decode-repeated-kv', () => buildDecodeGraph(this.config, attentionScaling, true));
  }

  get tokenizer(): Tokenizer {
    if (!this.tokenizerOrNull) throw new ModelLoadError(`model "${this.dir}" was loaded without its tokenizer`);
    return this.tokenizerOrNull;
  }

  get hasTokenizer(): boolean {
    return this.tokenizerOrNull !== null;
  }

  /** Token ids that end generation: the config's eos ids, and the tokenizer's. */
  get eosTokenIds(): number[] {
    const ids = new Set<number>(this.config.eosTokenIds);
    for (const id of this.tokenizerOrNull?.eosTokenIds ?? []) ids.add(id);
    return [...ids];
  }

  async dispose(): Promise<void> {
    const extra = await Promise.all(this.extraGraphs.values());
    await Promise.all([...Object.values(this.sessions), ...extra].map((s) => s.release()));
  }
}
