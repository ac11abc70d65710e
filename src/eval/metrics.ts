/**
 * Answer-scoring metrics of the long-context benchmarks, written from their definitions:
 *
 * - LongBench (THUDM/LongBench `metrics.py`, the same file in FastKV's `eval/metrics.py`): {@link qaF1},
 *   {@link rougeL}, {@link classificationScore}, {@link countScore}, {@link retrievalScore}, {@link codeSimScore}.
 * - Needle in a haystack (FastKV `eval/visualize.py`): {@link niahWordRecall}.
 * - RULER (`string_match_all` / `string_match_part`): {@link stringMatchAll}, {@link stringMatchPart}.
 *
 * **Convention: every per-sample metric returns a score in [0, 1]**, as LongBench's per-sample functions do, so a
 * hand-worked example reads the same here and in Python. Benchmarks report 100 × the mean over samples
 * ({@link percentScore}, LongBench's `round(100 * total / n, 2)`); a perfect answer scores 1 here and 100 there.
 *
 * Python semantics are kept where they change a score: strings are compared by code point, `str.split()` splits on
 * Python's whitespace set, `\d` and `\b` are Unicode-aware, `round` is half-to-even on the exact binary value.
 * @module
 */

// ---------------------------------------------------------------------------------------------------------------
// Python string helpers

/** Characters that Python's `str.split()` (no argument) splits on. */
const PY_WHITESPACE = /[\t\n\v\f\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+/u;

/** Python's `s.split()`: split on runs of whitespace, no empty strings. */
export function pySplit(s: string): string[] {
  return s.split(PY_WHITESPACE).filter((t) => t.length > 0);
}

/** `string.punctuation`: the 32 ASCII punctuation characters. */
const ASCII_PUNCTUATION = new Set('!"#$%&\'()*+,-./:;<=>?@[\\]^_`{|}~');

/** Python's `\b(a|an|the)\b` on a str pattern: word characters are Unicode letters, numbers and `_`. */
const ARTICLES = /(?<![\p{L}\p{N}_])(?:a|an|the)(?![\p{L}\p{N}_])/gu;

/** Python's `round(x)` on a float: nearest integer, ties to even. */
export function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/**
 * Python's `round(x, 2)`: the exact binary value of x rounded to 2 decimals, ties (only possible when x is a
 * multiple of 1/8) to an even last digit.
 */
export function pyRound2(x: number): number {
  if (!Number.isFinite(x)) return x;
  if (Number.isInteger(x * 8) && !Number.isInteger(x * 4)) {
    // x = k + m/8 with m odd: 100·x is exact and ends in .5.
    return roundHalfEven(x * 100) / 100;
  }
  return Number(x.toFixed(2));
}

// ---------------------------------------------------------------------------------------------------------------
// Token F1 (LongBench qa_f1_score)

/**
 * LongBench's / SQuAD's `normalize_answer`: lowercase, drop ASCII punctuation, replace the articles a/an/the with
 * a space, collapse whitespace.
 */
export function normalizeAnswer(s: string): string {
  const lower = s.toLowerCase();
  let noPunct = '';
  for (const ch of lower) if (!ASCII_PUNCTUATION.has(ch)) noPunct += ch;
  return pySplit(noPunct.replace(ARTICLES, ' ')).join(' ');
}

/** F1 between two token lists with multiplicity (`Counter(p) & Counter(t)`); 0 when nothing is shared. */
export function tokenF1(prediction: readonly string[], truth: readonly string[]): number {
  const counts = new Map<string, number>();
  for (const t of truth) counts.set(t, (counts.get(t) ?? 0) + 1);
  let same = 0;
  for (const p of prediction) {
    const c = counts.get(p) ?? 0;
    if (c > 0) { same++; counts.set(p, c - 1); }
  }
  if (same === 0) return 0;
  const precision = (1.0 * same) / prediction.length;
  const recall = (1.0 * same) / truth.length;
  return (2 * precision * recall) / (precision + recall);
}

/** LongBench `qa_f1_score`: token F1 over the whitespace tokens of the normalized answers. */
export function qaF1(prediction: string, groundTruth: string): number {
  return tokenF1(pySplit(normalizeAnswer(prediction)), pySplit(normalizeAnswer(groundTruth)));
}

// ---------------------------------------------------------------------------------------------------------------
// ROUGE-L (LongBench rouge_score = the `rouge` package's Rouge().get_scores(...)["rouge-l"]["f"])

/** The `rouge` package's sentence split: pieces between '.', non-empty before their whitespace is collapsed. */
function rougeSentences(text: string): string[] {
  return text.split('.').filter((piece) => piece.length > 0).map((piece) => pySplit(piece).join(' '));
}

/** The words of the `rouge` package's LCS traceback of x (reference) against y (candidate), as a set. */
function lcsWords(x: readonly string[], y: readonly string[], into: Set<string>): void {
  const n = x.length;
  const m = y.length;
  const w = m + 1;
  const table = new Int32Array((n + 1) * w);
  for (let i = 1; i <= n; i++) {
    for (let j = 1; j <= m; j++) {
      table[i * w + j] = x[i - 1] === y[j - 1]
        ? table[(i - 1) * w + j - 1] + 1
        : Math.max(table[(i - 1) * w + j], table[i * w + j - 1]);
    }
  }
  // Same traceback as the package's recursive `_recon`: on a tie it moves left (j − 1).
  let i = n;
  let j = m;
  while (i > 0 && j > 0) {
    if (x[i - 1] === y[j - 1]) { into.add(x[i - 1]); i--; j--; }
    else if (table[(i - 1) * w + j] > table[i * w + j - 1]) i--;
    else j--;
  }
}

/**
 * ROUGE-L F as LongBench computes it: the `rouge` package (pltrdy/rouge 1.0.1) `Rouge().get_scores([pred],
 * [truth], avg=True)["rouge-l"]["f"]`, which is the *summary-level* union-LCS ROUGE-L with `exclusive=True`:
 *
 * - both texts are cut into sentences at every '.', whitespace-collapsed, and sentences split into words on ' ';
 * - m / n = the number of **distinct** words of the reference / prediction (sets, not counts);
 * - LCS_u = the number of distinct words in the union, over every (reference sentence, predicted sentence) pair,
 *   of the words on that pair's LCS (one particular LCS: the package's traceback);
 * - R = LCS_u / m, P = LCS_u / n, F = 2·P·R / (P + R + 1e−8) (beta = 1, with the package's epsilon).
 *
 * No lowercasing, no stemming, no punctuation removal except the '.' split. When the package raises (a prediction
 * or reference with no sentence, e.g. empty or only dots) LongBench's `except` returns 0, and so does this.
 * Not reproduced: the package's recursive traceback overflows Python's recursion limit when one sentence pair
 * needs ~1000 steps, which LongBench would also score 0.
 */
export function rougeL(prediction: string, groundTruth: string): number {
  const hyp = rougeSentences(prediction);
  const ref = rougeSentences(groundTruth);
  if (hyp.length === 0 || ref.length === 0) return 0;
  const hypWords = hyp.map((s) => s.split(' '));
  const refWords = ref.map((s) => s.split(' '));
  const m = new Set(refWords.flat()).size;
  const n = new Set(hypWords.flat()).size;
  const union = new Set<string>();
  for (const r of refWords) for (const h of hypWords) lcsWords(r, h, union);
  const llcs = union.size;
  const r = llcs / m;
  const p = llcs / n;
  return 2.0 * ((p * r) / (p + r + 1e-8));
}

// ---------------------------------------------------------------------------------------------------------------
// Classification, count, retrieval (LongBench)

/**
 * LongBench `classification_score`: the class names that occur (as substrings) in the prediction; of those, the
 * ones that are substrings of the ground truth but not the ground truth itself are dropped; the score is
 * 1 / (number left) if the ground truth is among them, else 0.
 *
 * The reference drops names while iterating over the same Python list, so the name right after a dropped one is
 * not examined (and stays). That is reproduced: e.g. classes ["a", "ab", "abc"] all in the prediction with truth
 * "abc" keep ["ab", "abc"] and score 1/2.
 */
export function classificationScore(prediction: string, groundTruth: string, allClasses: readonly string[]): number {
  const matches = allClasses.filter((name) => prediction.includes(name));
  // Python `for x in list: ... list.remove(x)`: an index that moves on while the list shrinks under it.
  for (let i = 0; i < matches.length; i++) {
    const term = matches[i];
    if (groundTruth.includes(term) && term !== groundTruth) matches.splice(matches.indexOf(term), 1);
  }
  return matches.includes(groundTruth) ? 1.0 / matches.length : 0.0;
}

/** Every run of Unicode decimal digits (Python's `re.findall(r"\d+", s)`). */
function numbersIn(s: string): string[] {
  return s.match(/\p{Nd}+/gu) ?? [];
}

/**
 * LongBench `count_score`: the numbers (digit runs) in the prediction; the fraction of them that equal the ground
 * truth as strings. 0 when the prediction has no number.
 */
export function countScore(prediction: string, groundTruth: string): number {
  const numbers = numbersIn(prediction);
  if (numbers.length === 0) return 0;
  return numbers.filter((n) => n === String(groundTruth)).length / numbers.length;
}

/** The N of the first "Paragraph N" in a LongBench passage_retrieval_en answer; null if there is none. */
export function paragraphNumber(groundTruth: string): string | null {
  return /Paragraph (\p{Nd}+)/u.exec(groundTruth)?.[1] ?? null;
}

/**
 * LongBench `retrieval_score`: N from the ground truth's first "Paragraph N"; the fraction of the prediction's
 * numbers (digit runs) equal to N. 0 when the prediction has no number.
 * @throws Error when the ground truth has no "Paragraph N" (LongBench raises IndexError).
 */
export function retrievalScore(prediction: string, groundTruth: string): number {
  const id = paragraphNumber(groundTruth);
  if (id === null) throw new Error(`retrieval_score: the ground truth ${JSON.stringify(groundTruth)} has no "Paragraph N"`);
  const numbers = numbersIn(prediction);
  if (numbers.length === 0) return 0;
  return numbers.filter((n) => n === id).length / numbers.length;
}

// ---------------------------------------------------------------------------------------------------------------
// Code edit similarity (LongBench code_sim_score = fuzzywuzzy fuzz.ratio / 100)

/** Python `difflib.SequenceMatcher(None, a, b).ratio()` over code points: 2·M / (|a| + |b|), 1 when both empty. */
export function sequenceMatcherRatio(a: string, b: string): number {
  const A = Array.from(a);
  const B = Array.from(b);
  const total = A.length + B.length;
  if (total === 0) return 1.0;
  return (2.0 * matchingCharacters(A, B)) / total;
}

/**
 * Total size of difflib's matching blocks: the longest matching block (earliest in a, then in b), then the same on
 * the parts left and right of it, recursively. With difflib's defaults: no junk function, and "autojunk" (when b
 * has 200 or more elements, an element occurring more than |b|/100 + 1 times cannot start or be found inside a
 * block, though a found block may be extended over it).
 */
function matchingCharacters(a: readonly string[], b: readonly string[]): number {
  const b2j = new Map<string, number[]>();
  b.forEach((elt, i) => {
    let list = b2j.get(elt);
    if (!list) b2j.set(elt, list = []);
    list.push(i);
  });
  if (b.length >= 200) {
    const ntest = Math.floor(b.length / 100) + 1;
    for (const [elt, idxs] of [...b2j]) if (idxs.length > ntest) b2j.delete(elt);
  }

  const longest = (alo: number, ahi: number, blo: number, bhi: number): [number, number, number] => {
    let besti = alo, bestj = blo, bestsize = 0;
    let j2len = new Map<number, number>();
    for (let i = alo; i < ahi; i++) {
      const next = new Map<number, number>();
      for (const j of b2j.get(a[i]) ?? []) {
        if (j < blo) continue;
        if (j >= bhi) break;
        const k = (j2len.get(j - 1) ?? 0) + 1;
        next.set(j, k);
        if (k > bestsize) { besti = i - k + 1; bestj = j - k + 1; bestsize = k; }
      }
      j2len = next;
    }
    // No junk set: the extensions over "junk" never fire; popular elements are not junk and may extend a block.
    while (besti > alo && bestj > blo && a[besti - 1] === b[bestj - 1]) { besti--; bestj--; bestsize++; }
    while (besti + bestsize < ahi && bestj + bestsize < bhi && a[besti + bestsize] === b[bestj + bestsize]) bestsize++;
    return [besti, bestj, bestsize];
  };

  let matches = 0;
  const queue: [number, number, number, number][] = [[0, a.length, 0, b.length]];
  while (queue.length > 0) {
    const [alo, ahi, blo, bhi] = queue.pop()!;
    const [i, j, k] = longest(alo, ahi, blo, bhi);
    if (k === 0) continue;
    matches += k;
    if (alo < i && blo < j) queue.push([alo, i, blo, j]);
    if (i + k < ahi && j + k < bhi) queue.push([i + k, ahi, j + k, bhi]);
  }
  return matches;
}

/**
 * fuzzywuzzy `fuzz.ratio(s1, s2)`: 100 if the strings are equal (even both empty), 0 if one is empty, else
 * `round(100 × SequenceMatcher ratio)` (an integer, ties to even).
 *
 * This is difflib's SequenceMatcher, the one fuzzywuzzy falls back to without python-Levenshtein — the setup of
 * LongBench's and FastKV's requirements.txt (fuzzywuzzy, no python-Levenshtein). With python-Levenshtein installed
 * fuzzywuzzy uses the indel ratio (2·LCS / total) instead, which can be higher when difflib's greedy blocks miss
 * the longest common subsequence; see {@link indelRatio}.
 */
export function fuzzRatio(s1: string, s2: string): number {
  if (s1 === s2) return 100;
  if (s1.length === 0 || s2.length === 0) return 0;
  return roundHalfEven(100 * sequenceMatcherRatio(s1, s2));
}

/** Levenshtein indel ratio (python-Levenshtein / rapidfuzz `ratio`): 2·LCS / (|a| + |b|) over code points, 1 when both empty. */
export function indelRatio(a: string, b: string): number {
  const A = Array.from(a);
  const B = Array.from(b);
  if (A.length + B.length === 0) return 1;
  let prev = new Int32Array(B.length + 1);
  let cur = new Int32Array(B.length + 1);
  for (let i = 1; i <= A.length; i++) {
    for (let j = 1; j <= B.length; j++) {
      cur[j] = A[i - 1] === B[j - 1] ? prev[j - 1] + 1 : Math.max(prev[j], cur[j - 1]);
    }
    [prev, cur] = [cur, prev];
  }
  return (2 * prev[B.length]) / (A.length + B.length);
}

/**
 * LongBench's choice of the line to score in a code answer: after dropping leading newlines, the first line with
 * no '`', '#' or '//' (so code fences and comments are skipped); '' if every line has one.
 */
export function firstCodeLine(prediction: string): string {
  for (const line of lstripNewlines(prediction).split('\n')) {
    if (!line.includes('`') && !line.includes('#') && !line.includes('//')) return line;
  }
  return '';
}

/** LongBench `code_sim_score`: fuzz.ratio(first code line of the prediction, ground truth) / 100. */
export function codeSimScore(prediction: string, groundTruth: string): number {
  return fuzzRatio(firstCodeLine(prediction), groundTruth) / 100;
}

// ---------------------------------------------------------------------------------------------------------------
// Post-processing and aggregation

function lstripNewlines(s: string): string {
  let i = 0;
  while (i < s.length && s[i] === '\n') i++;
  return s.slice(i);
}

/** LongBench's cut for trec, triviaqa, samsum and lsht: `prediction.lstrip('\n').split('\n')[0]`. */
export function firstLine(prediction: string): string {
  return lstripNewlines(prediction).split('\n')[0];
}

/** A per-sample metric: (prediction, one ground truth, the task's class names) → [0, 1]. */
export type Metric = (prediction: string, groundTruth: string, allClasses: readonly string[]) => number;

/** LongBench's per-sample score: the best over the ground truths, starting from 0 (so no ground truth → 0). */
export function bestOverAnswers(metric: Metric, prediction: string, answers: readonly string[], allClasses: readonly string[] = []): number {
  let score = 0;
  for (const truth of answers) score = Math.max(score, metric(prediction, truth, allClasses));
  return score;
}

/** A benchmark score from per-sample scores in [0, 1]: `round(100 × sum / n, 2)` (LongBench's `scorer`); 0 for none. */
export function percentScore(scores: readonly number[]): number {
  if (scores.length === 0) return 0;
  let total = 0;
  for (const s of scores) total += s;
  return pyRound2((100 * total) / scores.length);
}

// ---------------------------------------------------------------------------------------------------------------
// Needle in a haystack and RULER

/**
 * The needle-in-a-haystack score FastKV reports (`eval/visualize.py`): |set(response words) ∩ set(expected words)|
 * / |set(expected words)|, both lowercased and split on whitespace (punctuation stays attached to words).
 * 0 when the expected answer has no word.
 */
export function niahWordRecall(response: string, expected: string): number {
  const want = new Set(pySplit(expected.toLowerCase()));
  if (want.size === 0) return 0;
  const got = new Set(pySplit(response.toLowerCase()));
  let hit = 0;
  for (const w of want) if (got.has(w)) hit++;
  return hit / want.size;
}

/** RULER `string_match_all` for one sample: the fraction of references contained in the prediction, case-insensitive. */
export function stringMatchAll(prediction: string, references: readonly string[]): number {
  if (references.length === 0) return 0;
  const p = prediction.toLowerCase();
  return references.filter((r) => p.includes(r.toLowerCase())).length / references.length;
}

/** RULER `string_match_part` for one sample: 1 if any reference is contained in the prediction (case-insensitive), else 0. */
export function stringMatchPart(prediction: string, references: readonly string[]): number {
  const p = prediction.toLowerCase();
  return references.some((r) => p.includes(r.toLowerCase())) ? 1 : 0;
}
