/**
 * The one seeded PRNG of the project: xoshiro128** (Blackman and Vigna) with its state filled by splitmix32
 * from a 32-bit seed word. The sampler draws tokens from it; the evaluation generators draw their data from it.
 * @module
 */

export class Xoshiro128 {
  #s0: number;
  #s1: number;
  #s2: number;
  #s3: number;

  constructor(seedWord: number) {
    let x = seedWord >>> 0;
    const splitmix = (): number => {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.#s0 = splitmix();
    this.#s1 = splitmix();
    this.#s2 = splitmix();
    this.#s3 = splitmix();
    if ((this.#s0 | this.#s1 | this.#s2 | this.#s3) === 0) this.#s0 = 1;
  }

  /** A uniform 32-bit unsigned integer. */
  uint32(): number {
    const s0 = this.#s0, s1 = this.#s1, s2 = this.#s2, s3 = this.#s3;
    const result = Math.imul(rotl(Math.imul(s1, 5), 7), 9) >>> 0;
    const t = s1 << 9;
    let n2 = s2 ^ s0;
    let n3 = s3 ^ s1;
    const n1 = s1 ^ n2;
    const n0 = s0 ^ n3;
    n2 ^= t;
    n3 = rotl(n3, 11);
    this.#s0 = n0 >>> 0;
    this.#s1 = n1 >>> 0;
    this.#s2 = n2 >>> 0;
    this.#s3 = n3 >>> 0;
    return result;
  }

  /** Uniform in [0, 1) with 53 random bits. */
  float53(): number {
    const hi = this.uint32() >>> 5; // 27 bits
    const lo = this.uint32() >>> 6; // 26 bits
    return (hi * 67108864 + lo) / 9007199254740992;
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}
