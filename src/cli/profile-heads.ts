/**
 * `fastkv profile-heads`: head-importance scores for HeadKV on any supported model, written in HeadKV's JSON
 * format for `--method headkv --head-scores FILE`. Optionally checks that the heads ranked highest matter:
 * NIAH accuracy with the top N heads silenced against N heads from the bottom.
 * @module
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { RequestError } from '../errors.js';
import { Model } from '../engine/model.js';
import { writeHeadScores } from '../compress/headkv.js';
import { loadHaystack } from '../eval/haystack.js';
import { bottomHeads, profileHeads, rankHeads, writeHeadMaskedCheckpoint } from '../eval/head-profile.js';
import { NIAH_PRESETS, niahCases, runNiah } from '../eval/niah.js';
import { ProgressBar, formatTable } from '../report.js';
import { DEFAULT_MODEL_DIR, DTYPE_HELP, dtypeFlag, numberFlag, progressDone, progressLine, threadsFlag } from './args.js';
import { checkOutputFile } from '../files.js';

export const PROFILE_HEADS_HELP = `Usage: fastkv profile-heads [--model DIR] [--samples K] [--length N] [--out FILE] [options]

Scores every attention head by how much it retrieves from the context, as HeadKV's retrieval-reasoning head
detection does: needle prompts (NIAH generator), greedy answers with the full cache, and for each correctly
answered sample the attention each head puts on the needle from the queries that produce the answer (of its
top-k positions, k = needle tokens, those inside the needle, weighted). Writes HeadKV's JSON format
("layer-head": [score per counted sample]) for fastkv generate/bench/eval --method headkv --head-scores FILE,
and prints the top heads.

Options:
  --model DIR        checkpoint folder (default: the bundled stories260K)
  --samples K        needle prompts, depths spread over 0..100% (default 10)
  --length N         tokens per prompt, answer included (default min(2048, max_position_embeddings))
  --preset NAME      needle format: ${Object.keys(NIAH_PRESETS).join(' | ')} (default reference; magic-number for retrieval-3M)
  --haystack DIR     .txt files to draw the haystack from (default: the built-in stories)
  --seed S           seed of the needle draws (default 42)
  --out FILE         where to write the scores (default ./head-scores-<model>.json); never into the model folder
                     unless you name a file there
  --force            overwrite --out if it exists
  --verify N         then measure NIAH string match (full cache, other needles: seed + 1) with the top N heads
                     silenced, and with the N lowest-ranked heads outside layer 0 silenced (o_proj columns
                     zeroed; layer 0's heads score near zero yet everything reads through them)
  --threads N        ONNX Runtime threads (default: one per core)
${DTYPE_HELP}
  -h, --help         show this help
`;

export async function profileHeadsCommand(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      model: { type: 'string' }, samples: { type: 'string' }, length: { type: 'string' }, preset: { type: 'string' },
      haystack: { type: 'string' }, seed: { type: 'string' }, out: { type: 'string' }, force: { type: 'boolean' },
      verify: { type: 'string' }, threads: { type: 'string' }, dtype: { type: 'string' }, help: { type: 'boolean', short: 'h' },
    },
    strict: true, allowPositionals: false,
  });
  if (values.help) { process.stdout.write(PROFILE_HEADS_HELP); return; }
  const samples = numberFlag(values, 'samples', { integer: true, min: 1, max: 100_000 }) ?? 10;
  const seed = numberFlag(values, 'seed', { integer: true, min: 0, max: Number.MAX_SAFE_INTEGER }) ?? 42;
  const verify = numberFlag(values, 'verify', { integer: true, min: 1 });
  const threads = threadsFlag(values);
  const modelDir = path.resolve(values.model ?? DEFAULT_MODEL_DIR);
  // Check the output before the long run.
  const out = checkOutputFile(values.out ?? `head-scores-${path.basename(modelDir)}.json`, { flag: '--out', force: values.force });
  const haystack = loadHaystack(values.haystack);
  const preset = values.preset;
  if (preset !== undefined && !Object.hasOwn(NIAH_PRESETS, preset)) throw new RequestError(`--preset must be one of ${Object.keys(NIAH_PRESETS).join(', ')}, got "${preset}"`);

  const dtype = dtypeFlag(values);
  const model = await Model.load(modelDir, { threads, dtype, onProgress: (p) => progressLine(`loading ${p.stage} ${p.done}/${p.total}`) });
  progressDone();
  const c = model.config;
  const length = numberFlag(values, 'length', { integer: true, min: 1, max: c.maxPositionEmbeddings }) ?? Math.min(2048, c.maxPositionEmbeddings);
  if (verify !== undefined && 2 * verify > c.numLayers * c.numHeads) throw new RequestError(`--verify ${verify}: the model has only ${c.numLayers * c.numHeads} heads`);
  let ranked;
  try {
    const bar = new ProgressBar('profile-heads', samples);
    const profile = await profileHeads(model, {
      haystack, samples, length, preset, seed, onSample: (_done, _total, counted) => bar.tick(`(${counted} answered correctly)`),
    });
    if (profile.counted === 0) {
      throw new RequestError(`profile-heads: the model answered none of the ${profile.total} needle prompts correctly, so no head can be scored; ` +
        'try a shorter --length, another --preset (magic-number for retrieval-3M), or more --samples');
    }
    writeHeadScores(out, c.numLayers, c.numHeads, (l, h) => profile.scores[l][h]);
    ranked = rankHeads(profile.scores);
    process.stdout.write(`${profile.counted} of ${profile.total} samples answered correctly and counted; scores written to ${out}\n\n`);
    process.stdout.write(formatTable(['rank', 'layer', 'head', 'mean score'], ranked.slice(0, 10).map((r, i) => [i + 1, r.layer, r.head, r.score.toFixed(4)])));
  } finally {
    await model.dispose();
  }
  if (verify === undefined) return;

  // Ablation: silence the top N or bottom N heads, NIAH on other needles.
  const sets = { none: [], [`top ${verify}`]: ranked.slice(0, verify), [`bottom ${verify}`]: bottomHeads(ranked, verify) } as Record<string, typeof ranked>;
  const rows: (string | number)[][] = [];
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fastkv-masked-'));
  try {
    for (const [label, heads] of Object.entries(sets)) {
      const dir = heads.length === 0 ? modelDir : path.join(tmp, label.replace(' ', '-'));
      if (heads.length > 0) writeHeadMaskedCheckpoint(modelDir, dir, heads, c.headDim);
      const masked = await Model.load(dir, { threads, dtype });
      try {
        const options = { haystack, lengths: [length], depths: Array.from({ length: samples }, (_, i) => (samples === 1 ? 50 : Math.round((100 * i) / (samples - 1)))), preset, seed: seed + 1 };
        const cases = niahCases(masked.tokenizer, options);
        const bar = new ProgressBar(`niah, ${label} silenced`, cases.length);
        const r = await runNiah(masked, [{ label, spec: { method: 'full' } }], options, () => bar.tick(), cases);
        rows.push([label, heads.map((h) => `${h.layer}-${h.head}`).join(' ') || '-', r.summary[label].stringMatch]);
      } finally {
        await masked.dispose();
      }
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  process.stdout.write(`\nNIAH string match (%) with heads silenced (${samples} prompts of ${length} tokens, seed ${seed + 1}):\n`);
  process.stdout.write(formatTable(['silenced', 'heads (layer-head)', 'string match'], rows));
}
