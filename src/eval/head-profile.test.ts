/**
 * Head profiling on retrieval-3M (a model trained to retrieve magic numbers): the score file is HeadKV's format
 * and headkv reads it; the heads ranked highest matter: silencing the top 4 hurts NIAH more than silencing the
 * 4 lowest-ranked (outside layer 0).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Model } from '../engine/model.js';
import { loadHaystack } from './haystack.js';
import { bottomHeads, profileHeads, rankHeads, writeHeadMaskedCheckpoint } from './head-profile.js';
import { niahCases, runNiah } from './niah.js';
import { readHeadScores, writeHeadScores } from '../compress/headkv.js';
import { resolvePolicy } from '../compress/registry.js';
import { FIXTURES } from '../../test/helpers.js';

const RETRIEVAL = path.join(FIXTURES, 'retrieval-3M');

test('profile-heads on retrieval-3M: HeadKV\'s file format, and the top heads matter more than the bottom ones', async () => {
  const model = await Model.load(RETRIEVAL, { threads: 1 });
  const c = model.config;
  const haystack = loadHaystack();
  const profile = await profileHeads(model, { haystack, samples: 3, length: 300, preset: 'magic-number' });
  assert.ok(profile.counted >= 2, `only ${profile.counted} of ${profile.total} answered correctly`);
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'fastkv-profile-')), 'scores.json');
  writeHeadScores(file, c.numLayers, c.numHeads, (l, h) => profile.scores[l][h]);
  const means = readHeadScores(file, c.numLayers, c.numHeads);
  assert.equal(means.length, c.numLayers);
  resolvePolicy({ method: 'headkv', headScores: file }, c); // headkv accepts it
  // Scores are attention weights / k summed over the answer's steps: non-negative, and some head attends to the needle.
  const ranked = rankHeads(profile.scores);
  assert.ok(ranked[0].score > 0.05, `top head scores ${ranked[0].score}`);
  for (const r of ranked) assert.ok(r.score >= 0);
  await model.dispose();

  const top = ranked.slice(0, 4);
  const bottom = bottomHeads(ranked, 4);
  const accuracy = async (heads: typeof ranked) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fastkv-masked-'));
    writeHeadMaskedCheckpoint(RETRIEVAL, dir, heads, c.headDim);
    const masked = await Model.load(dir, { threads: 1 });
    const options = { haystack, lengths: [300], depths: [10, 50, 90], preset: 'magic-number', seed: 7 };
    const r = await runNiah(masked, [{ label: 'm', spec: { method: 'full' } }], options, () => {}, niahCases(masked.tokenizer, options));
    await masked.dispose();
    fs.rmSync(dir, { recursive: true, force: true });
    return r.summary.m.stringMatch;
  };
  const [none, withoutTop, withoutBottom] = [await accuracy([]), await accuracy(top), await accuracy(bottom)];
  assert.ok(none >= 66, `unmasked NIAH ${none}`);
  assert.ok(withoutTop < withoutBottom, `silencing the top 4 (${withoutTop}%) should hurt more than the bottom 4 (${withoutBottom}%)`);
});
