/**
 * Measures the decode-attention layouts the KV cache could use, on the attention step alone (one token, one
 * layer), so the choice in `engine/kv-cache.ts` rests on numbers:
 * - `ragged`: what the engine uses: one input per cache head holding exactly that head's entries;
 * - `padded`: the previous layout: one [heads, capacity, d] tensor, every head padded to the longest (plus
 *   free room for decoding) and a −inf mask over empty slots; one batched MatMul.
 * Prints time per call and bytes held for a uniform cache (every head the same length) and a ragged one
 * (AdaKV-like: head lengths spread around the mean), at a model shape's head counts.
 *
 *   node dist/src/bench/cache-layout.js [--kv-heads 2] [--group 7] [--head-dim 64] [--mean 410] [--room 256]
 * @module
 */
import { parseArgs } from 'node:util';
import { GraphBuilder } from '../graph/builder.js';
import { attendOverCache, DECODE } from '../graph/decoder-layer.js';
import { Session, f32, type Feeds } from '../engine/ort.js';
import { formatTable } from '../report.js';

function raggedGraph(Hkv: number, G: number, d: number): Uint8Array {
  const g = new GraphBuilder('ragged');
  const q = g.input('q', 'float', [1, Hkv * G * d]);
  const k = g.input('k', 'float', [1, Hkv * d]);
  const v = g.input('v', 'float', [1, Hkv * d]);
  g.output(attendOverCache(g, q, k, v, Hkv, G, d), 'out', 'float', [1, Hkv * G * d]);
  return g.build();
}

function paddedGraph(Hkv: number, G: number, d: number): Uint8Array {
  const g = new GraphBuilder('padded');
  const qIn = g.input('q', 'float', [1, Hkv * G * d]);
  const kIn = g.input('k', 'float', [1, Hkv * d]);
  const vIn = g.input('v', 'float', [1, Hkv * d]);
  const keys = g.input('cache_keys', 'float', [Hkv, 'capacity', d]);
  const values = g.input('cache_values', 'float', [Hkv, 'capacity', d]);
  const mask = g.input('cache_mask', 'float', [Hkv, 1, 'capacity']);
  const scale = { float: 1 / Math.sqrt(d) };
  const q = g.op('Reshape', [qIn, g.int64([Hkv, G, d])]);
  const kNew = g.op('Reshape', [kIn, g.int64([Hkv, 1, d])]);
  const vNew = g.op('Reshape', [vIn, g.int64([Hkv, 1, d])]);
  const past = g.op('Add', [g.msOpN('FusedMatMul', [q, keys], 1, { transB: 1, alpha: scale })[0], mask]);
  const own = g.msOpN('FusedMatMul', [q, kNew], 1, { transB: 1, alpha: scale })[0];
  const probs = g.op('Softmax', [g.op('Concat', [past, own], { axis: 2 })], { axis: 2 });
  const pPast = g.op('Slice', [probs, g.int64([0]), g.int64([-1]), g.int64([2])]);
  const pOwn = g.op('Slice', [probs, g.int64([-1]), g.int64([Number.MAX_SAFE_INTEGER]), g.int64([2])]);
  const attn = g.op('Add', [g.op('MatMul', [pPast, values]), g.op('MatMul', [pOwn, vNew])]);
  g.output(g.op('Reshape', [attn, g.int64([1, Hkv * G * d])]), 'out', 'float', [1, Hkv * G * d]);
  return g.build();
}

function random(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  return Float32Array.from({ length: n }, () => { s = (s * 1664525 + 1013904223) >>> 0; return s / 2 ** 32 - 0.5; });
}

async function timeRuns(session: Session, feeds: Feeds, runs: number): Promise<number> {
  for (let i = 0; i < 5; i++) await session.run(feeds);
  const t0 = performance.now();
  for (let i = 0; i < runs; i++) await session.run(feeds);
  return (performance.now() - t0) / runs;
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: {
    'kv-heads': { type: 'string' }, group: { type: 'string' }, 'head-dim': { type: 'string' },
    mean: { type: 'string' }, room: { type: 'string' }, runs: { type: 'string' }, threads: { type: 'string' },
  } });
  const Hkv = Number(values['kv-heads'] ?? 2);
  const G = Number(values.group ?? 7);
  const d = Number(values['head-dim'] ?? 64);
  const mean = Number(values.mean ?? 410);
  const room = Number(values.room ?? 256);
  const runs = Number(values.runs ?? 300);
  const threads = Number(values.threads ?? 2);
  const ragged = await Session.create('ragged', raggedGraph(Hkv, G, d), threads);
  const padded = await Session.create('padded', paddedGraph(Hkv, G, d), threads);
  const common: Feeds = { q: f32(random(Hkv * G * d, 1), [1, Hkv * G * d]), k: f32(random(Hkv * d, 2), [1, Hkv * d]), v: f32(random(Hkv * d, 3), [1, Hkv * d]) };
  // AdaKV-like spread: head h keeps mean · (0.3 … 1.7), linearly across heads (the total is Hkv · mean).
  const spread = Array.from({ length: Hkv }, (_, h) => Math.round(mean * (Hkv === 1 ? 1 : 0.3 + (1.4 * h) / (Hkv - 1))));
  const rows: string[][] = [];
  for (const [name, lengths] of [['uniform', new Array<number>(Hkv).fill(mean)], ['ragged', spread]] as const) {
    const raggedFeeds: Feeds = { ...common };
    lengths.forEach((len, h) => {
      raggedFeeds[DECODE.cacheKeys(h)] = f32(random(len * d, 10 + h), [len, d]);
      raggedFeeds[DECODE.cacheValues(h)] = f32(random(len * d, 20 + h), [len, d]);
    });
    // The padded layout holds every head at the longest length plus room to decode into, masked.
    const capacity = Math.max(...lengths) + room;
    const mask = new Float32Array(Hkv * capacity).fill(-Infinity);
    lengths.forEach((len, h) => mask.fill(0, h * capacity, h * capacity + len));
    const paddedFeeds: Feeds = {
      ...common,
      cache_keys: f32(random(Hkv * capacity * d, 4), [Hkv, capacity, d]),
      cache_values: f32(random(Hkv * capacity * d, 5), [Hkv, capacity, d]),
      cache_mask: f32(mask, [Hkv, 1, capacity]),
    };
    // Interleave the two so that machine noise hits both alike.
    let tr = 0; let tp = 0;
    for (let rep = 0; rep < 3; rep++) { tr += await timeRuns(ragged, raggedFeeds, runs); tp += await timeRuns(padded, paddedFeeds, runs); }
    const held = lengths.reduce((a, b) => a + b, 0) * d * 8;
    rows.push([name, lengths.join('/'), `${(1000 * tr / 3).toFixed(1)}`, `${(1000 * tp / 3).toFixed(1)}`, (tp / tr).toFixed(2),
      `${(held / 1024).toFixed(0)}`, `${(Hkv * capacity * d * 8 / 1024).toFixed(0)}`]);
  }
  process.stdout.write(`decode attention, one layer: ${Hkv} KV heads × ${G} query heads, head_dim ${d}, padded room ${room}, ${threads} threads\n\n`);
  process.stdout.write(formatTable(['cache', 'entries per head', 'ragged µs', 'padded µs', 'padded/ragged', 'ragged KiB', 'padded KiB'], rows));
  await ragged.release();
  await padded.release();
}

await main();
