// AudioWorklet: microphone (or tab) audio at the context's rate -> mono -> 16 kHz -> s16le frames.
// Frames of ~100 ms go to the main thread, which sends them on the WebSocket. A "flush" message
// pushes out the filter's tail and the partial frame, then answers "flushed".
import { Resampler, floatToS16le } from "./resampler.js";

const TARGET_RATE = 16000;
const FRAME_SAMPLES = 1600; // 100 ms: few enough messages, little added latency

class PcmSender extends AudioWorkletProcessor {
  constructor() {
    super();
    this.resampler = new Resampler(sampleRate, TARGET_RATE);
    this.pending = new Float32Array(FRAME_SAMPLES * 2);
    this.pendingLength = 0;
    this.port.onmessage = (event) => {
      if (event.data === "flush") {
        this.push(this.resampler.flush());
        this.send(this.pendingLength);
        this.port.postMessage("flushed");
      }
    };
  }

  push(samples) {
    if (this.pendingLength + samples.length > this.pending.length) {
      const grown = new Float32Array((this.pendingLength + samples.length) * 2);
      grown.set(this.pending.subarray(0, this.pendingLength));
      this.pending = grown;
    }
    this.pending.set(samples, this.pendingLength);
    this.pendingLength += samples.length;
    while (this.pendingLength >= FRAME_SAMPLES) this.send(FRAME_SAMPLES);
  }

  send(count) {
    if (count <= 0) return;
    const bytes = floatToS16le(this.pending.subarray(0, count));
    this.pending.copyWithin(0, count, this.pendingLength);
    this.pendingLength -= count;
    this.port.postMessage(bytes, [bytes]);
  }

  process(inputs) {
    const channels = inputs[0];
    if (channels && channels.length) {
      // Down-mix to mono by averaging channels (the same instant, not neighbouring samples).
      const mono = new Float32Array(channels[0].length);
      for (const channel of channels) for (let i = 0; i < mono.length; i++) mono[i] += channel[i];
      if (channels.length > 1) for (let i = 0; i < mono.length; i++) mono[i] /= channels.length;
      this.push(this.resampler.process(mono));
    }
    return true;
  }
}

registerProcessor("pcm-sender", PcmSender);
