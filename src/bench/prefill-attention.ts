/**
 * Prefill attention alone, the ways it can be run with ONNX Runtime's CPU kernels, at each prompt length, against
 * the matmul rate measured in the same process: how the engine picked its way (`attendPrefill` in
 * src/engine/forward.ts). Causal GQA over seeded random queries, keys and values of one layer, with the head
 * counts of `--model`'s config.json:
 *
 * - `GQA, one run, no arena`: GroupQueryAttention over the whole prompt in one run, in a session without a memory
 *   arena, as the layer sessions ran it before (theirs is off so that 24 sessions do not each keep their largest
 *   activations);
 * - `GQA, one run`: the same with the session's own memory arena;
 * - `GQA, blocks of B`: query blocks of B rows, each over the keys and values of every row before it (the past,
 *   the previous block's present output) and its own: the engine's way (`buildPrefillAttentionGraph`);
 * - `MatMul blocks of B`: per query block, scores = Q·Kᵀ (`FusedMatMul`, KV heads never repeated: the G query
 *   heads of a KV head broadcast over it) → causal mask → Softmax → ·V.
 *
 * GFLOP/s counts 2·n²·headDim·heads (the causal half of the two products, as `fastkv bench` counts prefill), and
 * each way's output is compared with the first's (max |difference|).
 *
 *   node dist/src/bench/prefill-attention.js --model DIR [--lengths 4096,8192,16384] [--blocks 1024,2048]
 *     [--matmul-block 512] [--repeats 3] [--threads N] [--json]
 *
 * DIR is any checkpoint (only its config.json is read), e.g. `.bench-models/qwen2.5-0.5b-seed0`.
 * @module
 */
import { parseArgs } from 'node:util';
import { loadConfig, type ModelConfig } from '../model/config.js';
import { GraphBuilder } from '../graph/builder.js';
import { buildPrefillAttentionGraph } from '../graph/decoder-layer.js';
import { attendInBlocks } from '../engine/forward.js';
import { Session, dataF32, defaultThreads, f32, i64 } from '../engine/ort.js';
import { numberFlag, parseIntegerList, threadsFlag } from '../cli/args.js';
import { formatTable } from '../report.js';
import { measureMatmul, median } from './matmul-rate.js';
import { MATMUL_ROWS, largestProjection } from './prefill-decode.js';

/** Seeded values in [-1, 1). */
function seeded(size: number, seed: number): Float32Array {
  const a = new Float32Array(size);
  let s = seed >>> 0;
  for (let i = 0; i < size; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    a[i] = (s >>> 8) / 8388608 - 1;
  }
  return a;
}

/** One prompt's queries [n, H·d], keys and values [n, Hkv·d]. */
interface Prompt { n: number; q: Float32Array; k: Float32Array; v: Float32Array }

/** The attention output [n, H·d] of one way, and its median seconds. */
type Way = (p: Prompt) => Promise<Float32Array>;

/** GroupQueryAttention in blocks of `block` rows (the whole prompt when `block` ≥ n), in `session`: the engine's code. */
function gqaWay(c: ModelConfig, session: Session, block: number): Way {
  return async ({ n, q, k, v }) =>
    (await attendInBlocks(session, c, { queries: q, keys: k, values: v }, n, block, (size) => new Float32Array(size))).attention;
}

/**
 * The attention of a query block [rows, H·d] at rows `start`.. over keys and values [Hkv, T, d] (T = start + rows):
 * FusedMatMul(Q, Kᵀ)·scale → + causal mask (built in the graph from `start`) → Softmax → MatMul V → [rows, H·d].
 */
function buildMatmulBlockGraph(c: ModelConfig): Uint8Array {
  const { numHeads: H, numKvHeads: Hkv, headDim: d } = c;
  const G = H / Hkv;
  const g = new GraphBuilder('matmul-block-attention');
  const query = g.input('query', 'float', ['rows', H * d]);
  const keys = g.input('keys', 'float', [Hkv, 'total', d]);
  const values = g.input('values', 'float', [Hkv, 'total', d]);
  const start = g.input('start', 'int64', []);
  const q = g.op('Transpose', [g.op('Reshape', [query, g.int64([0, Hkv, G, d])])], { perm: [1, 2, 0, 3] });     // [Hkv, G, rows, d]
  const k = g.op('Unsqueeze', [keys, g.int64([1])]);                                                            // [Hkv, 1, T, d]
  const v = g.op('Unsqueeze', [values, g.int64([1])]);
  const scores = g.op('FusedMatMul', [q, k], { transB: 1, alpha: { float: 1 / Math.sqrt(d) } }, 'com.microsoft');  // [Hkv, G, rows, T]
  // Row r (position start + r) sees columns 0..start + r.
  const rows = g.op('Squeeze', [g.op('Shape', [query], { start: 0, end: 1 }), g.int64([0])]);
  const total = g.op('Squeeze', [g.op('Shape', [keys], { start: 1, end: 2 }), g.int64([0])]);
  const rowPos = g.op('Unsqueeze', [g.op('Add', [g.op('Range', [g.int64([0], []), rows, g.int64([1], [])]), start]), g.int64([1])]); // [rows, 1]
  const colPos = g.op('Range', [g.int64([0], []), total, g.int64([1], [])]);                                  // [T]
  const mask = g.op('Where', [g.op('Greater', [colPos, rowPos]), g.float([-Infinity], []), g.float([0], [])]); // [rows, T]
  const probs = g.op('Softmax', [g.op('Add', [scores, mask])], { axis: -1 });
  const out = g.op('MatMul', [probs, v]);                                                                        // [Hkv, G, rows, d]
  g.output(g.op('Reshape', [g.op('Transpose', [out], { perm: [2, 0, 1, 3] }), g.int64([0, H * d])]), 'out', 'float', ['rows', H * d]);
  return g.build();
}

/** The MatMul way in query blocks of `block` rows; keys and values regrouped per KV head once per prompt. */
function matmulWay(c: ModelConfig, session: Session, block: number): Way {
  const { numHeads: H, numKvHeads: Hkv, headDim: d } = c;
  return async ({ n, q, k, v }) => {
    // [n, Hkv·d] → [Hkv, n, d] (a layout change, as the cache holds keys; not timed apart).
    const perHead = (x: Float32Array) => {
      const y = new Float32Array(x.length);
      for (let t = 0; t < n; t++) for (let h = 0; h < Hkv; h++) y.set(x.subarray((t * Hkv + h) * d, (t * Hkv + h + 1) * d), (h * n + t) * d);
      return y;
    };
    const kh = perHead(k);
    const vh = perHead(v);
    const out = new Float32Array(n * H * d);
    for (let start = 0; start < n; start += block) {
      const rows = Math.min(block, n - start);
      const total = start + rows;
      const prefix = (x: Float32Array) => {
        const y = new Float32Array(Hkv * total * d);
        for (let h = 0; h < Hkv; h++) y.set(x.subarray(h * n * d, (h * n + total) * d), h * total * d);
        return y;
      };
      const r = await session.run({
        query: f32(q.subarray(start * H * d, total * H * d), [rows, H * d]),
        keys: f32(prefix(kh), [Hkv, total, d]), values: f32(prefix(vh), [Hkv, total, d]),
        start: i64(BigInt64Array.of(BigInt(start)), []),
      });
      out.set(dataF32(r.out), start * H * d);
    }
    return out;
  };
}

async function timeWay(way: Way, prompt: Prompt, repeats: number): Promise<{ seconds: number; out: Float32Array }> {
  let out = await way(prompt);
  const times: number[] = [];
  for (let r = 0; r < repeats; r++) {
    const t0 = performance.now();
    out = await way(prompt);
    times.push((performance.now() - t0) / 1000);
  }
  return { seconds: median(times), out };
}

function maxDifference(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: {
    model: { type: 'string' }, lengths: { type: 'string' }, blocks: { type: 'string' }, 'matmul-block': { type: 'string' },
    repeats: { type: 'string' }, threads: { type: 'string' }, json: { type: 'boolean' },
  } });
  if (!values.model) throw new Error('--model DIR is required (e.g. .bench-models/qwen2.5-0.5b-seed0, generated by fastkv bench)');
  const c = loadConfig(values.model);
  const lengths = parseIntegerList('--lengths', values.lengths ?? '4096,8192,16384', 'prompt length', 1 << 20);
  const blocks = parseIntegerList('--blocks', values.blocks ?? '1024,2048', 'block size', 1 << 20);
  const matmulBlock = numberFlag(values, 'matmul-block', { integer: true, min: 1 }) ?? 512;
  const repeats = numberFlag(values, 'repeats', { integer: true, min: 1, max: 100 }) ?? 3;
  const threads = threadsFlag(values) ?? defaultThreads();

  const gqaGraph = buildPrefillAttentionGraph(c);
  const sessions = {
    noArena: await Session.create('gqa-no-arena', gqaGraph, threads),
    gqa: await Session.create('gqa', gqaGraph, threads, { memArena: true }),
    matmul: await Session.create('matmul-blocks', buildMatmulBlockGraph(c), threads, { memArena: true }),
  };
  const proj = largestProjection(c);
  const results: { length: number; way: string; seconds: number; gflops: number; percentOfMatmul: number; maxDifference: number }[] = [];
  const matmulRates: number[] = [];
  try {
    for (const n of lengths) {
      const prompt: Prompt = {
        n, q: seeded(n * c.numHeads * c.headDim, 1), k: seeded(n * c.numKvHeads * c.headDim, 2), v: seeded(n * c.numKvHeads * c.headDim, 3),
      };
      const ways: [string, Way][] = [
        ['GQA, one run, no arena', gqaWay(c, sessions.noArena, n)],
        ['GQA, one run', gqaWay(c, sessions.gqa, n)],
        ...blocks.filter((b) => b < n).map((b): [string, Way] => [`GQA, blocks of ${b}`, gqaWay(c, sessions.gqa, b)]),
        [`MatMul blocks of ${matmulBlock}`, matmulWay(c, sessions.matmul, matmulBlock)],
      ];
      const rate = (await measureMatmul(MATMUL_ROWS, proj.k, proj.n, threads, 5)).gflops;
      matmulRates.push(rate);
      const flops = 2 * n * n * c.headDim * c.numHeads;
      let first: Float32Array | null = null;
      for (const [way, run] of ways) {
        process.stderr.write(`${n} tokens: ${way}\n`);
        const { seconds, out } = await timeWay(run, prompt, repeats);
        first ??= out;
        const gflops = flops / seconds / 1e9;
        results.push({ length: n, way, seconds, gflops, percentOfMatmul: (100 * gflops) / rate, maxDifference: maxDifference(first, out) });
      }
    }
  } finally {
    await Promise.all(Object.values(sessions).map((s) => s.release()));
  }
  if (values.json) {
    process.stdout.write(`${JSON.stringify({ model: values.model, threads, repeats, matmul: { m: MATMUL_ROWS, k: proj.k, n: proj.n, gflops: matmulRates }, results }, null, 2)}\n`);
    return;
  }
  process.stdout.write(`prefill attention of one layer, ${values.model} (${c.numHeads} query / ${c.numKvHeads} KV heads, head dim ${c.headDim}), ` +
    `${threads} threads, median of ${repeats}; matmul [${MATMUL_ROWS}, ${proj.k}] x [${proj.n}, ${proj.k}]^T measured before each length\n\n`);
  process.stdout.write(formatTable(['tokens', 'way', 'seconds', 'GFLOP/s', '% of matmul', 'max |diff| vs first'],
    results.map((r) => [String(r.length), r.way, r.seconds.toFixed(3), r.gflops.toFixed(1), `${r.percentOfMatmul.toFixed(0)}%`, r.maxDifference.toExponential(1)])));
}

await main();
