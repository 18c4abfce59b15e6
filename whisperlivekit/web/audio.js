// Audio in the browser: microphones, the two encoders the server may ask for (PCM s16le 16 kHz
// through an AudioWorklet, or WebM/Opus through MediaRecorder), and file decoding for uploads.

import { floatToS16le } from "./resampler.js";

export const TARGET_RATE = 16000;

/** Audio inputs; labels are only filled in once the user has granted microphone access. */
export async function listMicrophones() {
  if (!navigator.mediaDevices?.enumerateDevices) return [];
  const devices = await navigator.mediaDevices.enumerateDevices();
  return devices
    .filter((device) => device.kind === "audioinput" && device.deviceId) // ids are hidden before access
    .map((device, i) => ({ id: device.deviceId, label: device.label || `Microphone ${i + 1}` }));
}

export async function openMicrophone(deviceId) {
  if (!navigator.mediaDevices?.getUserMedia) {
    throw new Error("this browser gives no microphone access here (the page needs https or localhost)");
  }
  // Speech recognition wants the raw voice: echo cancellation and noise suppression leave artefacts
  // Whisper never saw in training, and automatic gain pumps the level between words.
  const audio = { echoCancellation: false, noiseSuppression: false, autoGainControl: false };
  if (deviceId) audio.deviceId = { exact: deviceId };
  try {
    return await navigator.mediaDevices.getUserMedia({ audio });
  } catch (error) {
    if (deviceId && error?.name === "OverconstrainedError") {
      delete audio.deviceId; // the remembered microphone is gone: use the default one
      return navigator.mediaDevices.getUserMedia({ audio });
    }
    throw error;
  }
}

/**
 * PCM encoder: the AudioWorklet resamples `source` to 16 kHz s16le frames (~100 ms each).
 * Returns {stop()} that flushes the last samples before resolving.
 */
export async function startPcmEncoder(context, source, onFrame) {
  await context.audioWorklet.addModule(new URL("./pcm-worklet.js", import.meta.url));
  const node = new AudioWorkletNode(context, "pcm-sender", { numberOfOutputs: 1, channelCount: 2 });
  let flushed = null;
  node.port.onmessage = (event) => {
    if (event.data === "flushed") flushed?.();
    else onFrame(event.data);
  };
  source.connect(node);
  // A node must reach the destination to be pulled; it writes silence, so nothing is heard.
  node.connect(context.destination);
  return {
    kind: "pcm",
    async stop({ flush = true } = {}) {
      if (flush) {
        await new Promise((resolve) => {
          flushed = resolve;
          node.port.postMessage("flush");
          setTimeout(resolve, 1000); // a suspended context never answers
        });
      }
      source.disconnect(node);
      node.disconnect();
      node.port.onmessage = null;
    },
  };
}

/** The first container/codec MediaRecorder supports that the server's FFmpeg reads incrementally. */
export function recorderMimeType() {
  const candidates = ["audio/webm;codecs=opus", "audio/webm", "audio/ogg;codecs=opus", "audio/mp4"];
  return candidates.find((type) => globalThis.MediaRecorder?.isTypeSupported?.(type)) || "";
}

/** WebM/Opus encoder: MediaRecorder chunks every 250 ms. stop() resolves after the last chunk. */
export function startWebmEncoder(stream, onChunk, { timesliceMs = 250 } = {}) {
  if (!globalThis.MediaRecorder) throw new Error("this browser has no MediaRecorder");
  const mimeType = recorderMimeType();
  const recorder = new MediaRecorder(new MediaStream(stream.getAudioTracks()), mimeType ? { mimeType } : {});
  recorder.ondataavailable = (event) => {
    if (event.data && event.data.size > 0) onChunk(event.data);
  };
  recorder.start(timesliceMs);
  return {
    kind: "webm",
    mimeType: recorder.mimeType,
    stop() {
      return new Promise((resolve) => {
        if (recorder.state === "inactive") return resolve();
        recorder.onstop = () => resolve();
        recorder.stop(); // emits the final dataavailable before stop
      });
    },
  };
}

/** A file decoded by the browser to 16 kHz mono (decodeAudioData resamples to the context's rate). */
export async function decodeFileTo16k(file) {
  const bytes = await file.arrayBuffer();
  const context = new OfflineAudioContext(1, 1, TARGET_RATE);
  const decoded = await context.decodeAudioData(bytes);
  const mono = new Float32Array(decoded.length);
  for (let c = 0; c < decoded.numberOfChannels; c++) {
    const channel = decoded.getChannelData(c);
    for (let i = 0; i < mono.length; i++) mono[i] += channel[i] / decoded.numberOfChannels;
  }
  return mono;
}

export { floatToS16le };
