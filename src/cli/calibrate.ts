/**
 * `fastkv calibrate`: chooses FastKV's TSP layer for a model (paper v7, Eq. 3) and writes the calibration that
 * `--tsp-layer auto` reads.
 * @module
 */
import path from 'node:path';
import { parseArgs } from 'node:util';
import { RequestError } from '../errors.js';
import { Model } from '../engine/model.js';
import { calibrateTspLayer } from '../eval/calibrate.js';
import { loadHaystack, type Haystack } from '../eval/haystack.js';
import { ProgressBar, formatTable } from '../report.js';
import { DEFAULT_MODEL_DIR, DTYPE_HELP, dtypeFlag, numberFlag, progressDone, progressLine, threadsFlag } from './args.js';
import { MAX_TEXT_BYTES, checkOutputFile, readTextFile, writeFileAtomic } from '../files.js';
import { defaultCalibrationFile } from './compression-flags.js';

export const CALIBRATE_HELP = `Usage: fastkv calibrate [--model DIR] [--text FILE] [--samples K] [--tsp-rate R] [options]

Chooses FastKV's token-selective-propagation layer for a model (paper v7, Eq. 3): for each candidate layer,
FastKV's prefill with TSP at that layer runs on calibration prompts, and the mean squared L2 distance between
the final hidden states of the propagated tokens and those of a full-context run is measured. Prints the table
(distance, distance relative to layer 0, predicted prefill FLOP share) and the earliest layer whose relative
distance is within --tolerance of the best, and writes it for --tsp-layer auto.

Options:
  --model DIR        checkpoint folder (default: the bundled stories260K)
  --text FILE        calibration text (default: the built-in story haystack)
  --samples K        prompts, from evenly spaced offsets of the text (default 4)
  --length N         tokens per prompt (default min(2048, max_position_embeddings))
  --tsp-rate R       FastKV's TSP rate, (0, 1] (default 0.2)
  --max-layer L      highest candidate layer, the paper's L_max (default layers/2 − 1, the reference's layer;
                     the table shows every layer)
  --tolerance X      on the relative distance (default 0.05)
  --out FILE         calibration file (default ./calibration-<model folder name>.json, where --tsp-layer auto
                     looks); never written into the model folder unless you name a file there
  --force            overwrite --out if it exists
  --threads N        ONNX Runtime threads (default: one per core)
${DTYPE_HELP}
  -h, --help         show this help
`;

function readText(file: string): Haystack {
  const text = readTextFile(file, { maxBytes: MAX_TEXT_BYTES, what: `--text "${file}"` });
  if (text.trim() === '') throw new RequestError(`--text "${file}" is empty`);
  return { source: file, text };
}

export async function calibrateCommand(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      model: { type: 'string' }, text: { type: 'string' }, samples: { type: 'string' }, length: { type: 'string' },
      'tsp-rate': { type: 'string' }, 'max-layer': { type: 'string' }, tolerance: { type: 'string' },
      out: { type: 'string' }, force: { type: 'boolean' }, threads: { type: 'string' }, dtype: { type: 'string' }, help: { type: 'boolean', short: 'h' },
    },
    strict: true, allowPositionals: false,
  });
  if (values.help) { process.stdout.write(CALIBRATE_HELP); return; }
  const modelDir = path.resolve(values.model ?? DEFAULT_MODEL_DIR);
  const samples = numberFlag(values, 'samples', { integer: true, min: 1, max: 10_000 }) ?? 4;
  const tspRate = numberFlag(values, 'tsp-rate', { min: Number.MIN_VALUE, max: 1 }) ?? 0.2;
  const tolerance = numberFlag(values, 'tolerance', { min: 0 }) ?? 0.05;
  const threads = threadsFlag(values);
  const out = checkOutputFile(values.out ?? defaultCalibrationFile(modelDir), { flag: '--out', force: values.force });
  const haystack = values.text !== undefined ? readText(values.text) : loadHaystack();

  const model = await Model.load(modelDir, { threads, dtype: dtypeFlag(values), onProgress: (p) => progressLine(`loading ${p.stage} ${p.done}/${p.total}`) });
  progressDone();
  try {
    const c = model.config;
    const length = numberFlag(values, 'length', { integer: true, min: 16, max: c.maxPositionEmbeddings }) ?? Math.min(2048, c.maxPositionEmbeddings);
    const maxLayer = numberFlag(values, 'max-layer', { integer: true, min: 0, max: c.numLayers - 1 });
    const bar = new ProgressBar('calibrate', samples * c.numLayers);
    const result = await calibrateTspLayer(model, { haystack, samples, length, tspRate, tolerance, maxLayer, onStep: (note) => bar.tick(note) });
    writeFileAtomic(out, `${JSON.stringify(result, null, 2)}\n`);
    process.stdout.write(`TSP-layer calibration of ${path.basename(modelDir)}: ${samples} prompts of ${length} tokens, TSP rate ${tspRate}\n\n`);
    process.stdout.write(formatTable(['layer', 'mean ‖Δh‖²', 'relative', 'prefill FLOP share', ''],
      result.rows.map((r) => [r.layer, r.distance.toExponential(3), r.relative.toFixed(4), r.flopShare.toFixed(3), r.layer === result.tspLayer ? '<- chosen' : r.layer > result.maxLayer ? '(not a candidate)' : ''])));
    process.stdout.write(`\nchosen TSP layer: ${result.tspLayer} (earliest within ${tolerance} of the best relative distance; default would be ${Math.max(0, Math.floor(c.numLayers / 2) - 1)})\n`);
    process.stdout.write(`written to ${out}; use it with --method fastkv --tsp-layer auto${values.out !== undefined ? ` --calibration ${out}` : ''}\n`);
  } finally {
    await model.dispose();
  }
}
