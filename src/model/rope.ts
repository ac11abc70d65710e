/**
 * Rotary-embedding inverse frequencies, a port of Hugging Face transformers' `ROPE_INIT_FUNCTIONS` (default,
 * linear, dynamic, llama3, yarn). Re-exported from `config.ts`.
 *
 * Precision: transformers builds `inv_freq` as float32 tensors, so every tensor operation here is rounded to
 * float32 with `Math.fround` in the same order as PyTorch's CPU kernels evaluate it, while the Python-scalar
 * arithmetic (e.g. the dynamic-NTK base, YaRN's correction range) stays in float64 as in Python. Details that
 * matter for bit-exactness: a Python scalar meeting a float32 tensor is first rounded to float32; `scalar / tensor`
 * is `tensor.reciprocal() * scalar` (torch's `__rtruediv__`); `tensor / scalar` is a true division. The one
 * inexact step is `base ** exponent`: PyTorch may use a vectorised powf (<= 1 ulp), we use the correctly-rounded
 * float32 of `Math.pow`, so an element can differ from torch by 1 float32 ulp.
 * @module
 */

import type { ModelConfig } from './config.js';
import { ConfigError, printable } from '../errors.js';

const f = Math.fround;

/** `1 / (base ** (arange(0, dim, 2) / dim))` in float32: [dim/2]. */
function defaultInvFreq(base: number, dim: number): Float32Array {
  const out = new Float32Array(dim / 2);
  const b = f(base);
  for (let i = 0; i < out.length; i++) out[i] = f(1 / f(Math.pow(b, f((2 * i) / dim))));
  return out;
}

/** Numeric field of the rope dict (validated by parseConfig), or `def`. Python's `x or def` where `orFalsy`. */
function num(raw: Readonly<Record<string, unknown>>, key: string, def: number, orFalsy = false): number {
  const v = raw[key];
  if (typeof v !== 'number' || (orFalsy && v === 0)) return def;
  return v;
}

/**
 * Per-dimension inverse frequencies [headDim/2] and the attention scaling applied to cos/sin, for a sequence of
 * length `seqLen` (only 'dynamic' depends on it: NTK rescaling kicks in once seqLen exceeds
 * max_position_embeddings; the result for a given seqLen is what transformers computes when it recomputes for
 * that length).
 */
export function ropeFrequencies(config: ModelConfig, seqLen: number): { invFreq: Float32Array; attentionScaling: number } {
  if (!Number.isFinite(seqLen) || seqLen < 0) {
    throw new ConfigError(`ropeFrequencies: seqLen must be a non-negative number, got ${seqLen}`);
  }
  const result = computeFrequencies(config, seqLen);
  // Values each fine alone can still combine into a frequency or scale that float32 cannot hold (a factor of
  // 1e-30 with a large theta, an mscale of 1e308): the graphs would compute NaN and sample token 0 forever.
  const bad = result.invFreq.findIndex((v) => !(Number.isFinite(v) && v > 0));
  const scale = Math.fround(result.attentionScaling);
  if (bad >= 0 || !(Number.isFinite(scale) && scale > 0)) {
    throw new ConfigError(`rope parameters ${printable(JSON.stringify(config.rope.raw), 200)} give ` +
      (bad >= 0 ? `inverse frequency ${result.invFreq[bad]} at dimension ${bad}` : `attention scaling ${result.attentionScaling}`) +
      ', which is not a positive float32 number');
  }
  return result;
}

function computeFrequencies(config: ModelConfig, seqLen: number): { invFreq: Float32Array; attentionScaling: number } {
  const { rope, headDim: dim } = config;
  const { raw, theta: base, factor } = rope;
  switch (rope.type) {
    case 'default':
      return { invFreq: defaultInvFreq(base, dim), attentionScaling: 1 };

    case 'linear': {
      const inv = defaultInvFreq(base, dim);
      for (let i = 0; i < inv.length; i++) inv[i] = f(inv[i] / f(factor));
      return { invFreq: inv, attentionScaling: 1 };
    }

    case 'dynamic': {
      // transformers measures against config.max_position_embeddings here, not the rope dict's original length.
      const maxPos = config.maxPositionEmbeddings;
      const len = Math.max(seqLen, maxPos);
      const scaledBase = base * ((factor * len / maxPos) - (factor - 1)) ** (dim / (dim - 2));
      return { invFreq: defaultInvFreq(scaledBase, dim), attentionScaling: 1 };
    }

    case 'llama3': {
      const inv = defaultInvFreq(base, dim);
      const lowFactor = num(raw, 'low_freq_factor', 1), highFactor = num(raw, 'high_freq_factor', 4);
      const oldLen = rope.originalMaxPositions;
      const lowWavelen = f(oldLen / lowFactor), highWavelen = f(oldLen / highFactor);
      const twoPi = f(2 * Math.PI), fFactor = f(factor), fOld = f(oldLen), fLow = f(lowFactor);
      const fDelta = f(highFactor - lowFactor);
      for (let i = 0; i < inv.length; i++) {
        const wavelen = f(f(1 / inv[i]) * twoPi);
        // wavelen < high band: unchanged; > low band: divided by factor; between: smooth interpolation.
        const scaled = wavelen > lowWavelen ? f(inv[i] / fFactor) : inv[i];
        if (wavelen < highWavelen || wavelen > lowWavelen) { inv[i] = scaled; continue; }
        const smooth = f(f(f(f(1 / wavelen) * fOld) - fLow) / fDelta);
        inv[i] = f(f(f(f(1 - smooth) * scaled) / fFactor) + f(smooth * scaled));
      }
      return { invFreq: inv, attentionScaling: 1 };
    }

    case 'yarn': {
      const origLen = rope.originalMaxPositions;
      const mscale = (scale: number, m = 1): number => (scale <= 1 ? 1 : 0.1 * m * Math.log(scale) + 1);
      let attentionScaling: number;
      const af = raw.attention_factor, ms = raw.mscale, msAll = raw.mscale_all_dim;
      if (typeof af === 'number') attentionScaling = af;
      else if (typeof ms === 'number' && ms !== 0 && typeof msAll === 'number' && msAll !== 0) {
        attentionScaling = mscale(factor, ms) / mscale(factor, msAll);
      } else attentionScaling = mscale(factor);

      const betaFast = num(raw, 'beta_fast', 32, true), betaSlow = num(raw, 'beta_slow', 1, true);
      const truncate = raw.truncate !== false;
      // Dimension at which a frequency completes `rotations` turns over the original context (float64, as Python).
      const correctionDim = (rotations: number): number =>
        (dim * Math.log(origLen / (rotations * 2 * Math.PI))) / (2 * Math.log(base));
      let low = correctionDim(betaFast), high = correctionDim(betaSlow);
      if (truncate) { low = Math.floor(low); high = Math.ceil(high); }
      low = Math.max(low, 0); high = Math.min(high, dim - 1);
      if (low === high) high += 0.001;             // transformers' guard against a zero-width ramp

      const half = dim / 2;
      const inv = new Float32Array(half);
      const b = f(base), fFactor = f(factor), fLow = f(low), fRange = f(high - low);
      for (let i = 0; i < half; i++) {
        const pos = f(Math.pow(b, f((2 * i) / dim)));
        const extrapolation = f(1 / pos);
        const interpolation = f(1 / f(fFactor * pos));
        const ramp = Math.min(1, Math.max(0, f(f(i - fLow) / fRange)));
        const extraFactor = f(1 - ramp);
        inv[i] = f(f(interpolation * f(1 - extraFactor)) + f(extrapolation * extraFactor));
      }
      return { invFreq: inv, attentionScaling };
    }
  }
}
