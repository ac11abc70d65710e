/**
 * Every metric against examples worked by hand from its definition. Per-sample metrics are in [0, 1]; the
 * benchmark score is 100 × the mean ({@link percentScore}), so "perfect = 100" reads as 1 here.
 * (The expected values were also checked against LongBench's metrics.py, pltrdy/rouge 1.0.1 and fuzzywuzzy.)
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  bestOverAnswers, classificationScore, codeSimScore, countScore, firstCodeLine, firstLine, fuzzRatio, indelRatio,
  niahWordRecall, normalizeAnswer, percentScore, pyRound2, pySplit, qaF1, retrievalScore, roundHalfEven, rougeL,
  sequenceMatcherRatio, stringMatchAll, stringMatchPart, tokenF1,
} from './metrics.js';

const close = (actual: number, expected: number, eps = 1e-9) =>
  assert.ok(Math.abs(actual - expected) <= eps, `expected ${expected}, got ${actual}`);

test('normalizeAnswer: lowercase, no punctuation, no articles, single spaces', () => {
  // "  The  Cat's   hat, an apple!  " → lower → drop ' , ! → "  the  cats   hat an apple  " → articles → spaces.
  assert.equal(normalizeAnswer("  The  Cat's   hat, an apple!  "), 'cats hat apple');
  // Articles only as whole words: "another", "theater", "a1", "é" next to them.
  assert.equal(normalizeAnswer('another theater'), 'another theater');
  assert.equal(normalizeAnswer('a1 théa éthe'), 'a1 théa éthe'); // é is a word character, as in Python 3
  assert.equal(normalizeAnswer('a1 the_ théa'), 'a1 théa'); // '_' is punctuation: gone first, then "the"
  assert.equal(normalizeAnswer('é the'), 'é');
  // Python's str.split(): \x1c is whitespace to Python (not to JS's \s).
  assert.deepEqual(pySplit('a\x1cb\u3000c \n'), ['a', 'b', 'c']);
});

test('qaF1: token F1 over normalized tokens', () => {
  assert.equal(qaF1('The Eiffel Tower!', 'eiffel tower'), 1);
  assert.equal(qaF1('London', 'Paris'), 0);
  assert.equal(qaF1('', 'Paris'), 0);
  // "big red ball" (3) vs "red ball" (2): 2 shared, P = 2/3, R = 1, F1 = 2·(2/3)/(5/3) = 0.8.
  close(qaF1('the big red ball', 'a red ball'), 0.8);
  // Multiplicity: ["ball", "ball"] vs ["ball"]: 1 shared, P = 1/2, R = 1, F1 = 2/3.
  close(tokenF1(['ball', 'ball'], ['ball']), 2 / 3);
  // "yes it is" vs "no": nothing shared → 0.
  assert.equal(qaF1('yes it is', 'no'), 0);
});

test('rougeL: the rouge package\'s summary-level union-LCS F on distinct words', () => {
  // Identical: R = P = 1, F = 2·1/(2 + 1e-8) — the package's epsilon keeps it just under 1.
  close(rougeL('the cat sat', 'the cat sat'), 2 / (2 + 1e-8), 1e-15);
  assert.equal(rougeL('dogs bark', 'cats meow'), 0);
  // No sentence at all: the package raises, LongBench scores 0.
  assert.equal(rougeL('', 'the cat'), 0);
  assert.equal(rougeL('...', 'the cat'), 0);
  // "the cat sat on the mat" vs "the cat is on the mat": distinct words 5 and 5, LCS "the cat on the mat"
  // has the distinct words {the, cat, on, mat} = 4: R = P = 4/5, F = 2·0.64/1.6 = 0.8.
  close(rougeL('the cat sat on the mat', 'the cat is on the mat'), 2 * 0.64 / (1.6 + 1e-8));
  // Sets, not counts: "a a a" has 1 distinct word, "a b" 2; LCS {a}: R = 1/2, P = 1, F = 2/3.
  close(rougeL('a a a', 'a b'), 2 * 0.5 / (1.5 + 1e-8));
  // Sentences split at '.': hyp ["the cat", "the dog"], ref ["the dog", "a cat"]; the union of the pairs'
  // LCS words is {the, dog, cat} = 3; ref has 4 distinct words, hyp 3: R = 3/4, P = 1, F = 1.5/1.75 = 6/7.
  close(rougeL('the cat. the dog', 'the dog. a cat'), 2 * 0.75 / (1.75 + 1e-8));
  // A whitespace-only piece after the last '.' becomes an empty "word": hyp words {"Hello", ""} → P = 1/2.
  close(rougeL('Hello. ', 'Hello.'), 2 * 0.5 / (1.5 + 1e-8));
  // Case-sensitive, no stemming.
  assert.equal(rougeL('Cats', 'cats'), 0);
});

test('classificationScore: class names found in the prediction, 1/count if the truth is one', () => {
  const classes = ['Animal', 'Food', 'Color'];
  assert.equal(classificationScore('Type: Animal', 'Animal', classes), 1);
  assert.equal(classificationScore('Food', 'Animal', classes), 0);
  assert.equal(classificationScore('nothing', 'Animal', classes), 0);
  // Two names found, the truth among them: 1/2.
  assert.equal(classificationScore('Animal or Food', 'Animal', classes), 0.5);
  // "Other" is a substring of the truth "Other location", so it is dropped: 1/1.
  assert.equal(classificationScore('Other location', 'Other location', ['Other', 'Other location']), 1);
  // The reference removes from the list it iterates: after dropping "a", "ab" is skipped and stays → 1/2.
  assert.equal(classificationScore('abc', 'abc', ['a', 'ab', 'abc']), 0.5);
});

test('countScore: share of the numbers in the prediction equal to the truth', () => {
  assert.equal(countScore('There are 15 unique paragraphs', '15'), 1);
  assert.equal(countScore('12', '15'), 0);
  assert.equal(countScore('none', '15'), 0);
  assert.equal(countScore('15 or 16', '15'), 0.5);
  close(countScore('15, 15 or 20', '15'), 2 / 3);
  assert.equal(countScore('abc15def', '15'), 1); // digit runs, even inside words
  assert.equal(countScore('015', '15'), 0); // compared as strings
});

test('retrievalScore: share of the numbers in the prediction equal to the truth\'s "Paragraph N"', () => {
  assert.equal(retrievalScore('Paragraph 3', 'Paragraph 3'), 1);
  assert.equal(retrievalScore('The answer is 3', 'Paragraph 3'), 1);
  assert.equal(retrievalScore('Paragraph 30', 'Paragraph 3'), 0);
  assert.equal(retrievalScore('Paragraph 3 or Paragraph 4', 'Paragraph 3'), 0.5);
  assert.equal(retrievalScore('no idea', 'Paragraph 3'), 0);
  assert.throws(() => retrievalScore('3', 'the third one'), /Paragraph N/);
});

test('fuzzRatio: fuzzywuzzy ratio over difflib SequenceMatcher, rounded half to even', () => {
  assert.equal(fuzzRatio('abcd', 'abcd'), 100);
  assert.equal(fuzzRatio('', ''), 100); // equal strings first
  assert.equal(fuzzRatio('', 'a'), 0);
  assert.equal(fuzzRatio('abc', 'xyz'), 0);
  // "abcd" / "abxd": blocks "ab" then "d" → M = 3, 2·3/8 = 0.75.
  assert.equal(fuzzRatio('abcd', 'abxd'), 75);
  // M = 1 of 16 characters: 12.5 → 12; M = 3 of 16: 37.5 → 38 (Python's round).
  assert.equal(fuzzRatio('a', 'abbbbbbbbbbbbbb'), 12);
  assert.equal(fuzzRatio('abc', 'abcxxxxxxxxxx'), 38);
  // difflib is greedy: "bcb" / "cab" first matches the 'b' at (0, 2), leaving nothing on either side → M = 1,
  // ratio 2/6 → 33; the longest common subsequence "cb" (indel ratio 4/6) is missed.
  close(sequenceMatcherRatio('bcb', 'cab'), 1 / 3);
  assert.equal(fuzzRatio('bcb', 'cab'), 33);
  close(indelRatio('bcb', 'cab'), 2 / 3);
  // Code points, not UTF-16 units.
  assert.equal(fuzzRatio('😀a', '😀b'), 50);
});

test('codeSimScore: the first line that is not a comment or fence, against the truth', () => {
  assert.equal(firstCodeLine('```python\n# comment\nreturn x + 1\n```'), 'return x + 1');
  assert.equal(codeSimScore('```python\n# comment\nreturn x + 1\n```', 'return x + 1'), 1);
  assert.equal(codeSimScore('// only\n# comments', 'return x'), 0);
  // Leading newlines dropped; "x = 1" / "x = 2": M = 4 of 10 → 80 → 0.8.
  assert.equal(codeSimScore('\n\nx = 1\ny = 2', 'x = 2'), 0.8);
  assert.equal(codeSimScore('foo()', 'bar[]'), 0);
});

test('firstLine, bestOverAnswers, percentScore', () => {
  assert.equal(firstLine('\n\nLocation\nmore'), 'Location');
  assert.equal(firstLine(''), '');
  assert.equal(bestOverAnswers(qaF1, 'red ball', ['blue', 'a red ball', 'ball']), 1);
  assert.equal(bestOverAnswers(qaF1, 'red ball', []), 0);
  assert.equal(percentScore([1, 1]), 100);
  assert.equal(percentScore([0, 0]), 0);
  assert.equal(percentScore([1, 0, 0.5]), 50);
  assert.equal(percentScore([1 / 3]), 33.33);
  // Python round(x, 2): half to even on the exact binary value.
  assert.equal(pyRound2(33.125), 33.12);
  assert.equal(pyRound2(0.375), 0.38);
  assert.equal(pyRound2(2.675), 2.67); // 2.67499999…
  assert.equal(roundHalfEven(2.5), 2);
  assert.equal(roundHalfEven(3.5), 4);
});

test('niahWordRecall: share of the expected words (set, lowercased) in the response', () => {
  const expected = 'eat a sandwich and sit in Dolores Park on a sunny day.';
  // 11 distinct words ("a" twice): eat a sandwich and sit in dolores park on sunny day.
  assert.equal(niahWordRecall('Eat a sandwich and sit in Dolores Park on a sunny day.', expected), 1);
  assert.equal(niahWordRecall('I do not know', expected), 0);
  close(niahWordRecall('eat a sandwich', expected), 3 / 11);
  // Punctuation stays on the word: "day" ≠ "day.".
  close(niahWordRecall('on a sunny day', expected), 3 / 11);
});

test('stringMatchAll / stringMatchPart: RULER\'s case-insensitive containment', () => {
  assert.equal(stringMatchAll('The numbers are 123 and 456, 789.', ['123', '456', '789']), 1);
  close(stringMatchAll('The numbers are 123 and 456', ['123', '456', '789']), 2 / 3);
  assert.equal(stringMatchAll('nothing', ['123']), 0);
  assert.equal(stringMatchAll('ABC-def', ['abc', 'DEF']), 1);
  assert.equal(stringMatchPart('only 456 here', ['789', '456']), 1);
  assert.equal(stringMatchPart('nothing', ['789', '456']), 0);
});
