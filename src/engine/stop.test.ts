import { test } from 'node:test';
import assert from 'node:assert/strict';
import { StopCondition, type StopStep } from './stop.js';
import { RequestError } from '../errors.js';

/** Pushes (id, text) pairs until a finish; returns the emitted text and the steps. */
function run(stop: StopCondition, tokens: Array<[number, string]>): { text: string; steps: StopStep[] } {
  const steps: StopStep[] = [];
  for (const [id, text] of tokens) {
    const step = stop.push(id, text);
    steps.push(step);
    if (step.finishReason !== null) break;
  }
  return { text: steps.map((s) => s.text).join(''), steps };
}

test('a stop string spanning two tokens stops generation and is excluded', () => {
  const stop = new StopCondition({ eosTokenIds: [2], stopStrings: ['The End'], maxTokens: 100 });
  const { text, steps } = run(stop, [[10, 'happily'], [11, ' ever after. The'], [12, ' End. More'], [13, 'never']]);
  assert.equal(text, 'happily ever after. ');
  assert.deepEqual(steps.map((s) => s.finishReason), [null, null, 'stop']);
  assert.equal(steps[1].text, ' ever after. ', '"The" is held back: it may start "The End"');
  assert.equal(stop.finishReason, 'stop');
  assert.equal(stop.generatedTokens, 3);
  assert.throws(() => stop.push(14, 'x'), RequestError);
});

test('a stop string inside one token cuts the text before it', () => {
  const stop = new StopCondition({ eosTokenIds: [], stopStrings: ['\n\n', 'User:'], maxTokens: 100 });
  const { text, steps } = run(stop, [[5, 'Hi'], [6, ' there\n\nUser: more']]);
  assert.equal(text, 'Hi there');
  assert.equal(steps.at(-1)!.finishReason, 'stop');
});

test('held-back text is released once it turns out not to be a stop string', () => {
  const stop = new StopCondition({ eosTokenIds: [2], stopStrings: ['###', 'STOP'], maxTokens: 100 });
  const steps = run(stop, [[1, 'a #'], [3, '#'], [4, ' b ST'], [5, 'op'], [6, '!']]).steps;
  assert.deepEqual(steps.map((s) => s.text), ['a ', '', '## b ', 'STop', '!']);
  assert.ok(steps.every((s) => s.finishReason === null));
  assert.equal(stop.flush(), '');
});

test('text held back at a stop-string prefix is released when generation ends otherwise', () => {
  const length = new StopCondition({ eosTokenIds: [2], stopStrings: ['The End'], maxTokens: 2 });
  const a = run(length, [[10, 'And then'], [11, ' The']]);
  assert.equal(a.text, 'And then The');
  assert.equal(a.steps.at(-1)!.finishReason, 'length');

  const eos = new StopCondition({ eosTokenIds: [2, 7], stopStrings: ['The End'], maxTokens: 10 });
  const b = run(eos, [[10, 'And The'], [7, '</s>']]);
  assert.deepEqual(b.steps.map((s) => s.text), ['And ', 'The']);
  assert.equal(b.steps.at(-1)!.finishReason, 'eos');
});

test('EOS stops and its own text is not emitted; EOS wins on the last allowed token', () => {
  const stop = new StopCondition({ eosTokenIds: [2], maxTokens: 3 });
  const { text, steps } = run(stop, [[10, 'one'], [11, ' two'], [2, '</s>']]);
  assert.equal(text, 'one two');
  assert.equal(steps.at(-1)!.finishReason, 'eos');
});

test('maxTokens stops with length', () => {
  const stop = new StopCondition({ eosTokenIds: [2], maxTokens: 3 });
  const { text, steps } = run(stop, [[10, 'a'], [11, 'b'], [12, 'c'], [13, 'd']]);
  assert.equal(text, 'abc');
  assert.deepEqual(steps.map((s) => s.finishReason), [null, null, 'length']);
  assert.equal(new StopCondition({ eosTokenIds: [], maxTokens: 0 }).finishReason, 'length');
});

test('flush releases held text and still honours stop strings', () => {
  const stop = new StopCondition({ eosTokenIds: [], stopStrings: ['<end>'], maxTokens: 10 });
  assert.equal(stop.push(1, 'x <en').text, 'x ');
  assert.equal(stop.flush(), '<en');
  const other = new StopCondition({ eosTokenIds: [], stopStrings: ['<end>'], maxTokens: 10 });
  other.push(1, 'x <en');
  assert.equal(other.flush('d> tail'), '');
  assert.equal(other.finishReason, 'stop');
});

test('bad options are RequestErrors', () => {
  assert.throws(() => new StopCondition({ eosTokenIds: [], maxTokens: -1 }), /maxTokens/);
  assert.throws(() => new StopCondition({ eosTokenIds: [], maxTokens: 1.5 }), RequestError);
  assert.throws(() => new StopCondition({ eosTokenIds: [], stopStrings: [''], maxTokens: 1 }), /non-empty/);
});
