/**
 * TSP-layer calibration on stories260K: zero distance at TSP rate 1 and at the last layer, growing as the TSP
 * layer moves earlier at rate 0.2; the calibration file drives `tspLayer: 'auto'` and is refused for another
 * model or when missing.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Model } from '../engine/model.js';
import { prefill } from '../engine/forward.js';
import { resolvePolicy } from '../compress/registry.js';
import { ConfigError } from '../errors.js';
import { calibrateTspLayer } from './calibrate.js';
import { loadHaystack } from './haystack.js';
import { FIXTURES, STORIES } from '../../test/helpers.js';

const modelPromise = Model.load(STORIES, { threads: 1 });

test('calibrate: distance 0 at TSP rate 1 and at the last layer; at rate 0.2 it grows as the layer moves earlier', async () => {
  const model = await modelPromise;
  const haystack = loadHaystack();
  const one = await calibrateTspLayer(model, { haystack, samples: 1, length: 300, tspRate: 1 });
  for (const r of one.rows) assert.equal(r.distance, 0, `layer ${r.layer}`);
  const cal = await calibrateTspLayer(model, { haystack, samples: 2, length: 300, tspRate: 0.2 });
  const d = cal.rows.map((r) => r.distance);
  assert.equal(d[d.length - 1], 0);
  for (let l = 1; l < d.length; l++) assert.ok(d[l - 1] > d[l], `distances ${d.map((x) => x.toFixed(3)).join(', ')} do not grow towards layer 0`);
  // FLOP shares grow with the layer and reach 1 at the last one.
  for (let l = 1; l < d.length; l++) assert.ok(cal.rows[l].flopShare > cal.rows[l - 1].flopShare);
  assert.ok(Math.abs(cal.rows[d.length - 1].flopShare - 1) < 1e-12);
  assert.ok(cal.tspLayer <= cal.maxLayer);
});

test('tspLayer auto reads the calibrated layer; a missing file or one for another model is refused, naming the file', async () => {
  const model = await modelPromise;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fastkv-cal-'));
  const file = path.join(dir, 'calibration.json');
  const cal = await calibrateTspLayer(model, { haystack: loadHaystack(), samples: 1, length: 200, maxLayer: 3, tolerance: 0 });
  fs.writeFileSync(file, JSON.stringify({ ...cal, tspLayer: 2 }));
  const ids = Int32Array.from({ length: 200 }, (_, i) => 3 + ((i * 31) % 500));
  const run = await prefill(model, ids, { policy: resolvePolicy({ method: 'fastkv', tspLayer: 'auto', calibration: file, retainRate: 0.5 }, model.config) });
  assert.deepEqual(run.layers.map((l) => l.rows), [200, 200, 200, 40, 40], 'TSP after layer 2');
  const other = await Model.load(path.join(FIXTURES, 'retrieval-3M'), { threads: 1 });
  for (const [spec, pattern] of [
    [{ method: 'fastkv', tspLayer: 'auto', calibration: file }, /was made for another model/],
    [{ method: 'fastkv', tspLayer: 'auto', calibration: path.join(dir, 'none.json') }, /none\.json" does not exist; make one with `fastkv calibrate/],
    [{ method: 'fastkv', tspLayer: 'auto' }, /needs a calibration file/],
  ] as const) {
    assert.throws(() => resolvePolicy(spec, other.config), (e: Error) => e instanceof ConfigError && pattern.test(e.message), JSON.stringify(spec));
  }
  await other.dispose();
});
