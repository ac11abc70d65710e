import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Sampler, validateSampling, argmax, type SamplingOptions } from './sampling.js';
import { RequestError } from '../errors.js';

const logitsOf = (values: number[]) => Float32Array.from(values);

/** A peaked-ish random row, deterministic. */
function randomLogits(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let x = seed >>> 0;
  for (let i = 0; i < n; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    out[i] = (x / 2 ** 32) * 8 - 4;
  }
  return out;
}

function draws(opts: SamplingOptions, logits: Float32Array, count: number): number[] {
  const sampler = new Sampler(opts, logits.length);
  const out: number[] = [];
  for (let i = 0; i < count; i++) out.push(sampler.sample(logits.slice(), []));
  return out;
}

test('defaults are greedy and off', () => {
  const o = validateSampling({ seed: 7 });
  assert.deepEqual(o, { temperature: 0, topK: 0, topP: 1, minP: 0, repetitionPenalty: 1, seed: 7 });
  assert.ok(Number.isSafeInteger(validateSampling({}).seed));
});

test('greedy picks the argmax, lowest index on ties', () => {
  const sampler = new Sampler({}, 5);
  assert.equal(sampler.sample(logitsOf([0, 3, 1, 3, -2]), []), 1);
  assert.equal(sampler.sample(logitsOf([-5, -1, -1, -9, -3]), []), 1);
  assert.equal(argmax(logitsOf([NaN, 2, NaN, 5])), 3);
  const row = randomLogits(151_936, 3);
  assert.equal(new Sampler({ temperature: 0 }, row.length).sample(row.slice(), []), argmax(row));
});

test('the same seed gives the same sequence; different seeds differ', () => {
  const row = randomLogits(1000, 11);
  const opts = { temperature: 1.5, topP: 0.95 };
  const a = draws({ ...opts, seed: 42 }, row, 300);
  const b = draws({ ...opts, seed: 42 }, row, 300);
  const c = draws({ ...opts, seed: 43 }, row, 300);
  assert.deepEqual(a, b);
  const same = a.filter((id, i) => id === c[i]).length;
  assert.ok(same < 30, `seeds 42 and 43 agree on ${same} of 300 draws`);
  assert.ok(new Set(a).size > 50, 'draws spread over many tokens');
  // Seeds past 32 bits are distinct too.
  assert.notDeepEqual(draws({ ...opts, seed: 2 ** 40 }, row, 50), draws({ ...opts, seed: 2 ** 40 + 2 ** 32 }, row, 50));
});

test('topK = 1 is greedy whatever the temperature', () => {
  for (const seed of [1, 2, 3]) {
    const row = randomLogits(151_936, seed);
    const best = argmax(row);
    for (const temperature of [0.5, 1, 5, 100]) {
      assert.deepEqual(draws({ temperature, topK: 1, seed }, row, 5), [best, best, best, best, best]);
    }
  }
});

test('topK keeps only the k best tokens', () => {
  const row = randomLogits(151_936, 5);
  const sorted = Array.from(row.keys()).sort((a, b) => row[b] - row[a]);
  const top = new Set(sorted.slice(0, 5));
  const seen = draws({ temperature: 50, topK: 5, seed: 9 }, row, 500);
  assert.ok(seen.every((id) => top.has(id)));
  assert.equal(new Set(seen).size, 5, 'at a high temperature all five are drawn');
});

test('a tiny topP leaves only the argmax', () => {
  const row = randomLogits(151_936, 8);
  const best = argmax(row);
  assert.ok(draws({ temperature: 3, topP: 1e-6, seed: 1 }, row, 100).every((id) => id === best));
});

test('topP keeps the smallest head of the distribution that reaches p', () => {
  // Probabilities 0.5, 0.3, 0.15, 0.05. topP 0.75: the first two (mass above the third is 0.8 >= 0.75).
  // topP 0.85: the first three (mass above the fourth is 0.95).
  const row = logitsOf([Math.log(0.5), Math.log(0.3), Math.log(0.15), Math.log(0.05)]);
  const seen = new Set(draws({ temperature: 1, topP: 0.75, seed: 4 }, row, 3000));
  assert.deepEqual([...seen].sort(), [0, 1]);
  const wider = new Set(draws({ temperature: 1, topP: 0.85, seed: 4 }, row, 3000));
  assert.deepEqual([...wider].sort(), [0, 1, 2]);
});

test('minP drops tokens less likely than minP times the most likely', () => {
  // Relative probabilities 1, 0.5, 0.2, 0.09.
  const row = logitsOf([0, Math.log(0.5), Math.log(0.2), Math.log(0.09)]);
  const seen = new Set(draws({ temperature: 1, minP: 0.1, seed: 5 }, row, 5000));
  assert.deepEqual([...seen].sort(), [0, 1, 2]);
  const strict = new Set(draws({ temperature: 1, minP: 0.45, seed: 5 }, row, 5000));
  assert.deepEqual([...strict].sort(), [0, 1]);
  // Applied after temperature: at temperature 2 the ratios become 1, 0.71, 0.45, 0.3, so minP 0.44 keeps three.
  const warm = new Set(draws({ temperature: 2, minP: 0.44, seed: 5 }, row, 5000));
  assert.deepEqual([...warm].sort(), [0, 1, 2]);
});

test('repetition penalty flips the argmax, dividing positive and multiplying negative logits once', () => {
  const sampler = new Sampler({ repetitionPenalty: 2 }, 4);
  const row = logitsOf([3, 2, -1, -1.5]);
  // Token 0 is in the history (twice): 3 / 2 = 1.5 < 2, so token 1 wins.
  assert.equal(sampler.sample(row, [0, 0, 3]), 1);
  assert.deepEqual(Array.from(row), [1.5, 2, -1, -3]);
  // Negative logits get more negative: token 2 (-1 -> -2) falls below token 3 (-1.5).
  const neg = logitsOf([-1, -1.5]);
  assert.equal(new Sampler({ repetitionPenalty: 2 }, 2).sample(neg, Int32Array.from([0])), 1);
  // A penalty below 1 favours repeats.
  assert.equal(new Sampler({ repetitionPenalty: 0.5 }, 2).sample(logitsOf([1, 1.5]), [0]), 0);
});

test('temperature 1 over four tokens matches the softmax', () => {
  const values = [1.0, 0.5, -0.3, 2.0];
  const row = logitsOf(values);
  const z = values.reduce((s, v) => s + Math.exp(v), 0);
  const expected = values.map((v) => Math.exp(v) / z);
  const n = 20_000;
  const counts = [0, 0, 0, 0];
  for (const id of draws({ temperature: 1, seed: 2024 }, row, n)) counts[id]++;
  for (let i = 0; i < 4; i++) {
    const p = counts[i] / n;
    const sd = Math.sqrt((expected[i] * (1 - expected[i])) / n);
    assert.ok(Math.abs(p - expected[i]) < 4 * sd, `token ${i}: ${p} vs ${expected[i]}`);
  }
});

test('temperature sharpens and flattens', () => {
  const row = logitsOf([1, 0]);
  const share = (t: number) => draws({ temperature: t, seed: 3 }, row, 4000).filter((id) => id === 0).length / 4000;
  assert.ok(share(0.25) > 0.95);
  assert.ok(Math.abs(share(1000) - 0.5) < 0.05);
});

test('-Infinity logits are never drawn; NaN never wins', () => {
  const row = logitsOf([-Infinity, 0, NaN, 0]);
  const seen = new Set(draws({ temperature: 1, seed: 1 }, row, 500));
  assert.deepEqual([...seen].sort(), [1, 3]);
  assert.equal(new Sampler({ temperature: 1, seed: 1 }, 2).sample(logitsOf([-Infinity, -Infinity]), []), 0);
});

test('every invalid parameter is a RequestError naming it, its value and its range', () => {
  const bad: Array<[keyof SamplingOptions, unknown, RegExp]> = [
    ['temperature', -0.1, />= 0/],
    ['temperature', Infinity, />= 0/],
    ['temperature', NaN, />= 0/],
    ['topK', -1, /integer >= 0/],
    ['topK', 2.5, /integer >= 0/],
    ['topP', 0, /\(0, 1\]/],
    ['topP', 1.5, /\(0, 1\]/],
    ['minP', 1, /\[0, 1\)/],
    ['minP', -0.2, /\[0, 1\)/],
    ['repetitionPenalty', 0, /> 0/],
    ['repetitionPenalty', -1, /> 0/],
    ['seed', 1.5, /integer/],
    ['seed', 2 ** 60, /integer/],
    ['temperature', '0.7', />= 0/],
  ];
  for (const [name, value, range] of bad) {
    const opts = { [name]: value } as SamplingOptions;
    for (const make of [() => validateSampling(opts), () => new Sampler(opts, 8)]) {
      assert.throws(make, (e: unknown) => {
        assert.ok(e instanceof RequestError, `${name}=${String(value)}`);
        assert.ok(e.message.includes(name), e.message);
        assert.ok(e.message.includes(typeof value === 'string' ? JSON.stringify(value) : String(value)), e.message);
        assert.match(e.message, range);
        return true;
      });
    }
  }
});
