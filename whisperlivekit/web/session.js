// A live recording (any MediaStream: a microphone, or a tab in the extension) streamed to /asr,
// reconnecting with back-off when the connection drops; and a file streamed through /asr.
// Shared by the page and the extension; the caller renders the TranscriptModel it fills.

import { AsrConnection, backoffDelay } from "./asr-client.js";
import { TARGET_RATE, decodeFileTo16k, floatToS16le, startPcmEncoder, startWebmEncoder } from "./audio.js";

// PCM kept for a reconnection: the new session re-hears everything after the last committed word,
// so a dropped connection loses no words (unless it stays down longer than this).
const HISTORY_SECONDS = 30;
const BYTES_PER_SECOND = 32000; // s16le at 16 kHz

/**
 * Events: state {state, attempt?, delayMs?, message?}, update {}, warning {message}.
 * States: connecting, recording, reconnecting, stopping, idle, error.
 */
export class LiveSession extends EventTarget {
  /**
   * @param {object} options
   * @param {() => Promise<MediaStream>} options.getStream the audio source
   * @param {() => string} options.url the /asr URL (read again at each reconnection)
   * @param {import("./transcript.js").TranscriptModel} options.model
   * @param {boolean} [options.monitor] play the source (tab capture mutes the tab otherwise)
   */
  constructor({ getStream, url, model, monitor = false, backoff = {} }) {
    super();
    Object.assign(this, { getStream, url, model, monitor, backoff });
    this.state = "idle";
    this.analyser = null;
    this.startedAt = 0;
    this.attempt = 0;
    this.history = []; // [{t, frame}]: recent PCM frames and their time on the recording's clock
    this.pcmSeconds = 0;
  }

  get elapsed() {
    return this.startedAt ? (performance.now() - this.startedAt) / 1000 : 0;
  }

  async start() {
    if (this.state !== "idle" && this.state !== "error") return;
    this.setState("connecting");
    this.stopping = false;
    try {
      this.stream = await this.getStream();
      if (this.stopping) throw new DOMException("stopped before the source opened", "AbortError");
      this.context = new AudioContext();
      if (this.context.state === "suspended") await this.context.resume();
      this.source = this.context.createMediaStreamSource(this.stream);
      this.analyser = this.context.createAnalyser();
      this.analyser.fftSize = 2048;
      this.source.connect(this.analyser);
      if (this.monitor) this.source.connect(this.context.destination);
      // Capture PCM at once, while the socket opens, so the first words are not lost; a WebM server
      // gets a MediaRecorder instead once its config says so.
      if (typeof AudioWorkletNode !== "undefined") {
        this.encoder = await startPcmEncoder(this.context, this.source, (frame) => this.onFrame(frame));
      }
      this.stream.getAudioTracks().forEach((track) => {
        track.onended = () => {
          // The tab closed, the device was unplugged or the permission withdrawn: keep what we have.
          this.emit("warning", { message: "the audio source ended, so the recording stopped" });
          this.stop();
        };
      });
    } catch (error) {
      await this.release();
      if (this.stopping) this.setState("idle");
      else this.setState("error", { message: describe(error) });
      return;
    }
    this.startedAt = performance.now();
    this.model.clear();
    await this.connect();
  }

  async connect() {
    if (this.stopping) return;
    this.setState(this.attempt ? "reconnecting" : "connecting", { attempt: this.attempt });
    const connection = new AsrConnection(this.url());
    this.connection = connection;
    connection.addEventListener("transcript", (event) => {
      this.model.applyUpdate(event.detail);
      this.emit("update", {});
    });
    connection.addEventListener("warning", (event) => this.emit("warning", event.detail));
    connection.addEventListener("close", (event) => this.onClose(connection, event.detail));
    let config;
    try {
      config = await connection.open();
    } catch (error) {
      if (connection.lastError && connection.lastError !== "the server is still loading its models") {
        return this.fail(connection.lastError); // refused for a reason retrying will not fix
      }
      return this.scheduleReconnect(describe(error));
    }
    if (this.stopping || this.connection !== connection) {
      connection.close();
      return;
    }
    try {
      if (config.useAudioWorklet) {
        if (this.encoder?.kind !== "pcm") {
          await this.encoder?.stop({ flush: false });
          this.encoder = await startPcmEncoder(this.context, this.source, (frame) => this.onFrame(frame));
        }
        // Replay from the last committed word: audio the old session heard but did not commit, and
        // all that was captured while disconnected.
        const resume = this.resumePoint();
        const replay = this.history.filter(({ t, frame }) => t + frame.byteLength / BYTES_PER_SECOND > resume);
        this.model.beginSegment(replay.length ? replay[0].t : this.pcmSeconds);
        for (const { frame } of replay) connection.send(frame);
      } else {
        if (this.encoder?.kind === "pcm") await this.encoder.stop({ flush: false });
        // A new WebM stream needs its own header: what the old session did not commit is lost.
        this.model.beginSegment(this.elapsed);
        this.encoder = startWebmEncoder(this.stream, (chunk) => connection.send(chunk));
      }
    } catch (error) {
      return this.fail(describe(error));
    }
    this.attempt = 0;
    this.setState("recording", { format: this.encoder.kind });
  }

  onFrame(frame) {
    this.history.push({ t: this.pcmSeconds, frame });
    this.pcmSeconds += frame.byteLength / BYTES_PER_SECOND;
    while (this.history.length && this.history[0].t < this.pcmSeconds - HISTORY_SECONDS) this.history.shift();
    // While stopping, the flushed tail still goes out; while reconnecting, frames wait in history.
    if (this.connection?.isOpen && (this.state === "recording" || this.stopping)) this.connection.send(frame);
  }

  /** Where the current server session's committed transcript ends, on the recording's clock. */
  resumePoint() {
    const segment = this.model.segments[this.model.segments.length - 1];
    if (!segment) return 0;
    const ends = segment.lines.map((line) => line.end);
    return segment.offset + (ends.length ? Math.max(...ends) : 0);
  }

  onClose(connection, { clean, code }) {
    if (connection !== this.connection || this.stopping || clean) return;
    if (this.state !== "recording") return; // open() failed: connect() handles it
    const fatal = connection.lastError && code !== 1011;
    if (this.encoder?.kind === "webm") {
      this.encoder.stop(); // PCM keeps capturing into its history; a WebM stream cannot resume
      this.encoder = null;
    }
    if (fatal) this.fail(connection.lastError);
    else this.scheduleReconnect(`connection lost (${code})`);
  }

  scheduleReconnect(message) {
    if (this.stopping) return;
    const delayMs = backoffDelay(this.attempt, this.backoff);
    this.attempt++;
    this.setState("reconnecting", { attempt: this.attempt, delayMs, message });
    this.retryTimer = setTimeout(() => this.connect(), delayMs);
  }

  /** Stop recording, let the server finish the last words, then release everything. */
  async stop() {
    if (this.stopping || this.state === "idle") return;
    this.stopping = true;
    clearTimeout(this.retryTimer);
    if (!this.stream) return; // still asking for the source: start() ends itself
    this.setState("stopping");
    const connection = this.connection;
    try {
      await this.encoder?.stop();
    } catch {
      // the recorder may already be gone with its track
    }
    this.encoder = null;
    if (connection?.isOpen) await connection.finish();
    connection?.close();
    this.model.endSegment();
    this.emit("update", {});
    await this.release();
    this.setState("idle");
  }

  async fail(message) {
    this.stopping = true;
    clearTimeout(this.retryTimer);
    await this.encoder?.stop({ flush: false });
    this.encoder = null;
    this.connection?.close();
    await this.release();
    this.setState("error", { message });
  }

  async release() {
    this.stream?.getTracks().forEach((track) => track.stop());
    this.stream = null;
    this.analyser = null;
    this.source = null;
    if (this.context && this.context.state !== "closed") await this.context.close();
    this.context = null;
    this.startedAt = 0;
    this.attempt = 0;
    this.history = [];
    this.pcmSeconds = 0;
  }

  setState(state, detail = {}) {
    this.state = state;
    this.emit("state", { state, ...detail });
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

/**
 * Transcribe a file through /asr: decoded and resampled here when the server takes PCM, the file's
 * own bytes otherwise (the server decodes them with FFmpeg). Resolves when the server is done.
 */
export async function streamFile(file, { url, model, onProgress = () => {}, signal } = {}) {
  const connection = new AsrConnection(url);
  connection.addEventListener("transcript", (event) => {
    model.applyUpdate(event.detail);
    onProgress({ phase: "transcribing" });
  });
  const config = await connection.open();
  model.clear();
  model.beginSegment(0);
  try {
    let chunks;
    if (config.useAudioWorklet) {
      onProgress({ phase: "decoding" });
      const samples = await decodeFileTo16k(file);
      const step = TARGET_RATE; // 1 s per frame
      chunks = Array.from({ length: Math.ceil(samples.length / step) }, (_, i) =>
        floatToS16le(samples.subarray(i * step, (i + 1) * step)),
      );
    } else {
      const step = 16 * 1024; // small slices: finer flow control (and see the report on 64 KB WAV slices)
      chunks = Array.from({ length: Math.ceil(file.size / step) }, (_, i) => file.slice(i * step, (i + 1) * step));
    }
    for (let i = 0; i < chunks.length; i++) {
      if (signal?.aborted) throw new DOMException("cancelled", "AbortError");
      if (!connection.isOpen) throw new Error(connection.lastError || "connection closed");
      connection.send(chunks[i]);
      onProgress({ phase: "sending", sent: i + 1, total: chunks.length });
      // Let the socket drain instead of queueing a whole file in memory.
      while (connection.bufferedAmount > 1 << 20) await sleep(50);
    }
    onProgress({ phase: "finishing" });
    await connection.finish({ timeoutMs: 30 * 60 * 1000 });
    if (connection.lastError) throw new Error(connection.lastError);
  } finally {
    connection.close();
    model.endSegment();
  }
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export function describe(error) {
  if (!error) return "unknown error";
  if (error.name === "NotAllowedError") return "microphone access was refused";
  if (error.name === "NotFoundError") return "no microphone found";
  return error.message || String(error);
}
