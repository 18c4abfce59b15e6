// Streaming sample-rate conversion by windowed-sinc interpolation (band-limited, polyphase).
//
// Why not averaging or linear interpolation: both let everything above the new Nyquist frequency
// (8 kHz at 16 kHz) fold back into the speech band as aliasing. A Kaiser-windowed sinc low-pass at
// ~0.9 × the new Nyquist removes it first. Used inside the AudioWorklet (pcm-worklet.js) and
// testable on its own, so it has no dependency on any audio API.

function gcd(a, b) {
  while (b) [a, b] = [b, a % b];
  return a;
}

// Zeroth-order modified Bessel function of the first kind, for the Kaiser window.
function besselI0(x) {
  let sum = 1;
  let term = 1;
  for (let k = 1; k < 50; k++) {
    term *= (x / (2 * k)) ** 2;
    sum += term;
    if (term < sum * 1e-12) break;
  }
  return sum;
}

export class Resampler {
  /**
   * @param {number} inRate input sample rate (Hz)
   * @param {number} outRate output sample rate (Hz)
   * @param {{zeroCrossings?: number, rolloff?: number, beta?: number}} [options]
   */
  constructor(inRate, outRate, { zeroCrossings = 12, rolloff = 0.9, beta = 8.6 } = {}) {
    if (!(inRate > 0 && outRate > 0)) throw new RangeError("sample rates must be positive");
    inRate = Math.round(inRate);
    outRate = Math.round(outRate);
    const g = gcd(inRate, outRate);
    this.up = outRate / g; // number of phases (L)
    this.down = inRate / g; // input step per output, in phases (M)
    this.inRate = inRate;
    this.outRate = outRate;
    // Cut-off in cycles per input sample: below both Nyquist frequencies.
    const cutoff = 0.5 * Math.min(1, outRate / inRate) * rolloff;
    this.half = Math.ceil(zeroCrossings / (2 * cutoff)); // taps on each side
    this.taps = 2 * this.half;
    // One kernel row per phase when the ratio is small enough to tabulate; odd rates compute rows
    // on demand (slower, same result).
    this.table = this.up <= 4096 ? new Map() : null;
    this.kernel = (phase) => {
      const cached = this.table?.get(phase);
      if (cached) return cached;
      const row = new Float32Array(this.taps);
      const frac = phase / this.up;
      const norm = besselI0(beta);
      let sum = 0;
      for (let j = 0; j < this.taps; j++) {
        const t = j - this.half + 1 - frac; // distance from the output instant, in input samples
        const x = 2 * cutoff * t;
        const sinc = x === 0 ? 1 : Math.sin(Math.PI * x) / (Math.PI * x);
        const r = t / this.half;
        const window = Math.abs(r) >= 1 ? 0 : besselI0(beta * Math.sqrt(1 - r * r)) / norm;
        row[j] = sinc * window;
        sum += row[j];
      }
      for (let j = 0; j < this.taps; j++) row[j] /= sum; // unit gain at DC for every phase
      this.table?.set(phase, row);
      return row;
    };
    this.reset();
  }

  reset() {
    // Samples before the start count as silence: the history starts with `half` zeros.
    this.history = new Float32Array(this.taps);
    this.historyStart = -this.half; // absolute input index of history[0]
    this.historyLength = this.half;
    this.nextOutput = 0; // absolute index of the next output sample
    this.inputCount = 0; // real input samples seen
  }

  /** Latency added by the filter, in output samples. */
  get delay() {
    return Math.ceil((this.half * this.outRate) / this.inRate);
  }

  /**
   * Resample one block; returns whatever output samples the block completes.
   * @param {Float32Array} input
   * @returns {Float32Array}
   */
  process(input) {
    this.inputCount += input.length;
    this._append(input);
    const end = this.historyStart + this.historyLength; // first input index we do not have
    const out = [];
    for (;;) {
      const position = this.nextOutput * this.down; // in units of 1/up input samples
      const base = Math.floor(position / this.up);
      if (base + this.half >= end) break; // the kernel needs samples up to base + half
      const row = this.kernel(position - base * this.up);
      const offset = base - this.half + 1 - this.historyStart;
      let acc = 0;
      for (let j = 0; j < this.taps; j++) acc += row[j] * this.history[offset + j];
      out.push(acc);
      this.nextOutput++;
    }
    // Drop input that no future output needs.
    const nextBase = Math.floor((this.nextOutput * this.down) / this.up);
    const keepFrom = nextBase - this.half + 1 - this.historyStart;
    if (keepFrom > 0) {
      this.history.copyWithin(0, keepFrom, this.historyLength);
      this.historyLength -= keepFrom;
      this.historyStart += keepFrom;
    }
    return Float32Array.from(out);
  }

  /** Push silence through the filter so the last real samples come out; then start afresh. */
  flush() {
    const wanted = Math.ceil((this.inputCount * this.up) / this.down); // outputs the input covers
    const tail = this.process(new Float32Array(this.half + 1));
    const keep = Math.max(0, tail.length - Math.max(0, this.nextOutput - wanted));
    const out = tail.slice(0, keep);
    this.reset();
    return out;
  }

  _append(input) {
    const needed = this.historyLength + input.length;
    if (needed > this.history.length) {
      const grown = new Float32Array(Math.max(needed, this.history.length * 2));
      grown.set(this.history.subarray(0, this.historyLength));
      this.history = grown;
    }
    this.history.set(input, this.historyLength);
    this.historyLength = needed;
  }
}

/** Float samples in [-1, 1] to little-endian signed 16-bit PCM. */
export function floatToS16le(samples) {
  const bytes = new ArrayBuffer(samples.length * 2);
  const view = new DataView(bytes);
  for (let i = 0; i < samples.length; i++) {
    const s = Math.max(-1, Math.min(1, samples[i]));
    view.setInt16(i * 2, s < 0 ? Math.round(s * 0x8000) : Math.round(s * 0x7fff), true);
  }
  return bytes;
}
