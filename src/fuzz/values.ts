/**
 * Seeded random choices for the fuzz targets: picks, hostile values (huge, tiny, negative, wrong types, the names
 * every object inherits), and byte and JSON mutations.
 * @module
 */
import { Xoshiro128 } from '../random.js';

export class Rng {
  readonly #x: Xoshiro128;
  constructor(seed: number) { this.#x = new Xoshiro128(seed >>> 0); }
  /** Integer in [0, n). */
  int(n: number): number { return Math.floor(this.#x.float53() * n); }
  chance(p: number): boolean { return this.#x.float53() < p; }
  pick<T>(items: readonly T[]): T { return items[this.int(items.length)]; }
  float(): number { return this.#x.float53(); }
}

/** One 32-bit seed per (run seed, target, case index). */
export function caseSeed(seed: number, target: string, index: number): number {
  let h = (seed ^ 0x9e3779b9) >>> 0;
  for (const c of `${target}:${index}`) h = Math.imul(h ^ c.charCodeAt(0), 0x85ebca6b) >>> 0;
  return (h ^ (h >>> 13)) >>> 0;
}

/** Names every object inherits: a lookup that is not an own-property lookup finds them. */
export const INHERITED = ['constructor', 'toString', '__proto__', 'valueOf', 'hasOwnProperty', 'isPrototypeOf', '__defineGetter__'];

/** Numbers at the edges: zero, signs, fractions, float32 and float64 limits, integer limits. */
export const EDGE_NUMBERS = [0, -0, 1, -1, 2, 3, 0.5, 1.5, -2.5, 7, 64, 1e-300, 1e-45, 1e-310, 1e-38, 3.5e38, 1e308,
  2 ** 31, 2 ** 32 + 403, 2 ** 53, 2 ** 53 + 2, 1e12, 1e9, -1e9, 1e100];

/** Any JSON-able value, biased to the hostile ones. */
export function hostileValue(r: Rng, near?: number): unknown {
  switch (r.int(9)) {
    case 0: return r.pick(EDGE_NUMBERS);
    case 1: return near === undefined ? r.pick(EDGE_NUMBERS) : r.pick([near * 2, near / 2, near + 1, near - 1, -near, near * 1000, Math.round(near * 1.5)]);
    case 2: return r.pick(INHERITED);
    case 3: return r.pick([null, true, false, '', 'NaN', 'Infinity', '1', '-1', '1e309', 'x'.repeat(2000), '\u001b[31mred\u0000', '\ud800']);
    case 4: return r.pick([[], [1, 2], [null], {}, { a: 1 }, [[1]], ['toString']]);
    case 5: return r.int(100);
    case 6: return -r.int(100);
    case 7: return r.float() * 10 - 5;
    default: return r.int(1 << 20);
  }
}

/** `n` random bytes. */
export function randomBytes(r: Rng, n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = r.int(256);
  return out;
}

/** Random text: ASCII words, whitespace, Unicode (astral, combining, RTL), control characters, special-token strings. */
export function randomText(r: Rng, maxLength = 200): string {
  const parts = ['Once', ' upon', ' a time', '\n', '  ', '\t', 'é', 'e\u0301', '😀', '中文', 'שלום', '\u0000', '\u001b', '<s>', '</s>',
    '<unk>', '<0x0A>', '▁', '\ud800', '\udc00', 'Ġ', '{{', '}}', '{%', '%}', '0123456789', '.', ',', '!'];
  let s = '';
  const n = r.int(maxLength);
  while (s.length < n) s += r.chance(0.2) ? String.fromCharCode(r.int(0x3000)) : r.pick(parts);
  return s;
}
