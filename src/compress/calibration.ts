/**
 * The calibration file `fastkv calibrate` writes and `--tsp-layer auto` reads: the chosen TSP layer and what it
 * was calibrated on, checked against the model it is used with.
 * @module
 */
import fs from 'node:fs';
import { ConfigError } from '../errors.js';
import type { ModelConfig } from '../model/config.js';

export interface CalibrationRow {
  layer: number;
  /** Mean over prompts and propagated tokens of ‖h_TSP − h_full‖². */
  distance: number;
  /** distance / layer 0's distance (0 when layer 0's is 0). */
  relative: number;
  /** Predicted prefill FLOPs with TSP at this layer / full prefill FLOPs. */
  flopShare: number;
}

/** What `--tsp-layer auto` reads: the choice, and what it was calibrated on. */
export interface Calibration {
  model: string;
  shape: { numLayers: number; hiddenSize: number; numHeads: number; numKvHeads: number; vocabSize: number };
  tspRate: number;
  samples: number;
  length: number;
  tolerance: number;
  /** Highest candidate layer. */
  maxLayer: number;
  /** Every layer, candidates or not. */
  rows: CalibrationRow[];
  /** The earliest layer within the tolerance of the best. */
  tspLayer: number;
}

export function shapeOf(c: ModelConfig): Calibration['shape'] {
  return { numLayers: c.numLayers, hiddenSize: c.hiddenSize, numHeads: c.numHeads, numKvHeads: c.numKvHeads, vocabSize: c.vocabSize };
}

/** Largest calibration file read. */
const MAX_CALIBRATION_BYTES = 1 << 20;

/**
 * Reads a calibration file for `--tsp-layer auto` and checks it was made for a model of this shape; returns the
 * calibrated layer. Every problem is a ConfigError naming the file.
 */
export function readCalibration(file: string, config: ModelConfig): Calibration {
  const fail = (problem: string): never => { throw new ConfigError(`fastkv: calibration file "${file}" ${problem}`); };
  let stat: fs.Stats;
  try { stat = fs.statSync(file); } catch {
    return fail('does not exist; make one with `fastkv calibrate --model DIR --out FILE` (then --tsp-layer auto --calibration FILE)');
  }
  if (!stat.isFile()) fail('is not a regular file');
  if (stat.size > MAX_CALIBRATION_BYTES) fail(`is larger than ${MAX_CALIBRATION_BYTES} bytes`);
  let parsed: Calibration;
  try { parsed = JSON.parse(fs.readFileSync(file, 'utf8')) as Calibration; } catch (e) { return fail(`is not valid JSON (${(e as Error).message.slice(0, 200)})`); }
  if (typeof parsed !== 'object' || parsed === null || typeof parsed.shape !== 'object' || parsed.shape === null) fail('has no model shape');
  const want = shapeOf(config);
  for (const key of Object.keys(want) as (keyof Calibration['shape'])[]) {
    if (parsed.shape[key] !== want[key]) fail(`was made for another model (${key} ${String(parsed.shape[key])}, this model ${want[key]})`);
  }
  if (!Number.isInteger(parsed.tspLayer) || parsed.tspLayer < 0 || parsed.tspLayer >= config.numLayers) fail(`has an invalid tspLayer ${String(parsed.tspLayer)}`);
  return parsed;
}
