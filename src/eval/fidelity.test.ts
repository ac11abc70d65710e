import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { Model } from '../engine/model.js';
import { STORIES } from '../../test/helpers.js';
import { BUILTIN_HAYSTACK } from './haystack.js';
import { fidelityWindows, klDivergence, logSoftmax, runFidelity } from './fidelity.js';

const text = fs.readFileSync(BUILTIN_HAYSTACK, 'utf8').slice(0, 20_000);

test('logSoftmax is stable; KL(p‖p) = 0 and KL > 0 otherwise', () => {
  const lp = logSoftmax(Float32Array.of(1000, 1001, 999));
  assert.ok(Math.abs(lp.reduce((s, x) => s + Math.exp(x), 0) - 1) < 1e-12);
  assert.equal(klDivergence(lp, lp), 0);
  assert.ok(klDivergence(lp, logSoftmax(Float32Array.of(0, 0, 0))) > 0);
});

test('fidelityWindows: BOS + N − 1 text tokens, then the next M; errors name the flags', async () => {
  const model = await Model.load(STORIES, { threads: 1 });
  try {
    const tok = model.tokenizer;
    const [w0, w1] = fidelityWindows(tok, text, { context: 100, continuation: 10, windows: 2 });
    const ids = tok.encode(text, { addSpecialTokens: false });
    assert.equal(w0.context[0], tok.bosTokenId);
    assert.deepEqual([...w0.context.slice(1)], ids.slice(0, 99));
    assert.deepEqual([...w0.continuation], ids.slice(99, 109));
    assert.deepEqual([...w1.context.slice(1)], ids.slice(109, 208));
    assert.throws(() => fidelityWindows(tok, 'too short', { context: 100, continuation: 10 }), /--text has \d+ tokens/);
    assert.throws(() => fidelityWindows(tok, text, { context: 100, continuation: 0 }), /--continuation/);
  } finally {
    await model.dispose();
  }
});

test('stories260K: full against itself agrees 100% with KL 0; methods keeping every entry give full\'s numbers', async () => {
  const model = await Model.load(STORIES, { threads: 1 });
  try {
    const windows = fidelityWindows(model.tokenizer, text, { context: 384, continuation: 24 });
    const columns = [
      { label: 'full', spec: { method: 'full' } },
      { label: 'snapkv@1', spec: { method: 'snapkv', retainRate: 1 } },
      { label: 'fastkv@1', spec: { method: 'fastkv', retainRate: 1, tspRate: 1 } },
      { label: 'streamingllm@1', spec: { method: 'streamingllm', retainRate: 1 } },
      { label: 'snapkv@0.1', spec: { method: 'snapkv', retainRate: 0.1 } },
    ];
    const r = await runFidelity(model, columns, windows);
    const full = r.scores.full;
    assert.equal(full.top1Agreement, 100);
    assert.ok(full.meanKL < 1e-6, `KL ${full.meanKL}`);
    assert.equal(full.keptPercent, 100);
    assert.equal(full.positions, 24);
    assert.ok(full.perplexity > 1 && full.perplexity < 50, `perplexity ${full.perplexity}`);
    for (const label of ['snapkv@1', 'fastkv@1', 'streamingllm@1']) {
      const s = r.scores[label];
      assert.equal(s.top1Agreement, 100, label);
      assert.ok(s.meanKL < 1e-6, `${label}: KL ${s.meanKL}`);
      assert.ok(Math.abs(s.perplexity - full.perplexity) < 1e-4 * full.perplexity, label);
      assert.equal(s.keptPercent, 100, label);
    }
    const small = r.scores['snapkv@0.1'];
    assert.ok(small.keptPercent < 11);
    assert.ok(small.meanKL > 0);
    await assert.rejects(runFidelity(model, columns, fidelityWindows(model.tokenizer, text, { context: 500, continuation: 24 })), /--max-context/);
  } finally {
    await model.dispose();
  }
});

test('a reference at another weight format: full at q8 against fp32 differs a little, fp32 against fp32 not at all', async () => {
  const fp32 = await Model.load(STORIES, { threads: 1 });
  const q8 = await Model.load(STORIES, { threads: 1, dtype: 'q8' });
  try {
    const windows = fidelityWindows(fp32.tokenizer, text, { context: 128, continuation: 24 });
    const columns = [{ label: 'full', spec: { method: 'full' } }];
    const same = (await runFidelity(fp32, columns, windows, { reference: fp32 })).scores.full;
    assert.equal(same.meanKL, 0);
    const quantized = (await runFidelity(q8, columns, windows, { reference: fp32 })).scores.full;
    // The weights differ, so the distributions do; 8 bits keep them close (measured KL about 0.001 nats).
    assert.ok(quantized.meanKL > 0 && quantized.meanKL < 0.05, `KL ${quantized.meanKL}`);
    assert.ok(quantized.top1Agreement >= 90, `top-1 ${quantized.top1Agreement}`);
  } finally {
    await fp32.dispose();
    await q8.dispose();
  }
});
