"""Streaming Silero VAD (v5/v6 ONNX model) on onnxruntime, without torch.

One `SileroVADModel` (one ORT session) is shared by every session; each audio stream gets its own
`StreamingVAD`, which holds all per-stream state (RNN state, 64-sample context, trigger logic)
and reports `SpeechStart` / `SpeechEnd` at absolute sample positions on that stream's clock.
The trigger logic follows Silero's `VADIterator`, so results match the reference implementation
frame for frame, and they do not depend on how the audio was chunked.

Cost (measured: 33 s of speech on a 2-core x86 VM, one ORT thread): 0.12-0.18 ms per 512-sample
(32 ms) frame, i.e. about 0.5 % of one core per live stream.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
FRAME_SAMPLES = 512  # the only window the 16 kHz model accepts (32 ms)
CONTEXT_SAMPLES = 64  # tail of the previous frame the model sees in front of each frame


@dataclass(frozen=True, slots=True)
class SpeechStart:
    sample: int


@dataclass(frozen=True, slots=True)
class SpeechEnd:
    sample: int


VADEvent = SpeechStart | SpeechEnd


def default_model_path() -> Path:
    """silero_vad.onnx from the installed `silero-vad` package, found without importing it
    (its __init__ imports torch and sets torch's thread count process-wide)."""
    spec = importlib.util.find_spec("silero_vad")
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = Path(location) / "data" / "silero_vad.onnx"
        if path.is_file():
            return path
    raise RuntimeError(
        "Silero VAD model not found: install the `silero-vad` package (pip install silero-vad) "
        "or pass the path of silero_vad.onnx explicitly"
    )


class SileroVADModel:
    """The ONNX model in one onnxruntime session; stateless, thread-safe, shared by streams."""

    def __init__(self, model_path: str | os.PathLike[str] | None = None, num_threads: int = 1) -> None:
        import onnxruntime

        path = Path(model_path) if model_path is not None else default_model_path()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        inputs = {i.name for i in self.session.get_inputs()}
        if inputs != {"input", "state", "sr"}:
            raise ValueError(f"{path}: not a Silero VAD v5/v6 model (inputs: {sorted(inputs)})")
        self._sr = np.array(SAMPLE_RATE, dtype=np.int64)

    @staticmethod
    def initial_state() -> np.ndarray:
        return np.zeros((2, 1, 128), dtype=np.float32)

    def __call__(self, window: np.ndarray, state: np.ndarray) -> tuple[float, np.ndarray]:
        """Speech probability of one frame. `window` is context + frame (576 samples)."""
        prob, new_state = self.session.run(None, {"input": window[None, :], "state": state, "sr": self._sr})
        return float(prob[0, 0]), new_state

    def stream(self, **options: float) -> StreamingVAD:
        return StreamingVAD(self, **options)


class StreamingVAD:
    """Speech start/end events for one audio stream (float32, 16 kHz mono, any chunk size)."""

    def __init__(
        self,
        model: SileroVADModel,
        threshold: float = 0.5,
        min_silence_duration_ms: float = 500,
        speech_pad_ms: float = 100,
        prefix_pad_ms: float | None = None,
    ) -> None:
        """``speech_pad_ms`` widens both ends of a segment, as Silero's; ``prefix_pad_ms``, when
        given, replaces it at the start (Silero's probability rises with voicing, so an unvoiced
        onset, the "p" of "printing", lies before the frame that triggers)."""
        self.model = model
        self.threshold = threshold
        self.neg_threshold = threshold - 0.15  # hysteresis: leaving speech needs a clearer drop
        self.min_silence_samples = int(SAMPLE_RATE * min_silence_duration_ms / 1000)
        self.pad_samples = int(SAMPLE_RATE * speech_pad_ms / 1000)
        prefix_ms = speech_pad_ms if prefix_pad_ms is None else prefix_pad_ms
        self.prefix_samples = int(SAMPLE_RATE * prefix_ms / 1000)
        self.reset()

    def reset(self) -> None:
        """Forget everything, including the clock: the next sample fed is sample 0."""
        self._state = self.model.initial_state()
        self._window = np.zeros(CONTEXT_SAMPLES + FRAME_SAMPLES, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)  # < one frame, waiting for more samples
        self._received = 0  # samples fed so far
        self._frame_end = 0  # samples run through the model so far
        self._triggered = False
        self._silence_start = 0  # end of the first quiet frame of a possible pause; 0 = none
        self._last_end = 0

    @property
    def in_speech(self) -> bool:
        return self._triggered

    def process(self, samples: np.ndarray) -> list[VADEvent]:
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        self._received += len(samples)
        buffer = np.concatenate([self._pending, samples]) if len(self._pending) else samples
        n_frames = len(buffer) // FRAME_SAMPLES
        events: list[VADEvent] = []
        for i in range(n_frames):
            event = self._step(buffer[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES])
            if event is not None:
                events.append(event)
        self._pending = buffer[n_frames * FRAME_SAMPLES :].copy()
        return events

    def flush(self) -> list[VADEvent]:
        """End of stream: close an open speech segment (a trailing partial frame is not scored)."""
        if not self._triggered:
            return []
        end = self._received
        if self._silence_start:  # already inside a pause that was not long enough yet
            end = min(self._silence_start - FRAME_SAMPLES + self.pad_samples, end)
        return [self._end_speech(end)]

    def _step(self, frame: np.ndarray) -> VADEvent | None:
        # Same carry-over as Silero's OnnxWrapper: the model sees [last 64 samples | frame].
        window = self._window
        window[:CONTEXT_SAMPLES] = window[-CONTEXT_SAMPLES:]
        window[CONTEXT_SAMPLES:] = frame
        prob, self._state = self.model(window, self._state)
        self._frame_end += FRAME_SAMPLES

        # Trigger logic of Silero's VADIterator, with positions on the stream's absolute clock.
        if prob >= self.threshold:
            self._silence_start = 0
            if not self._triggered:
                self._triggered = True
                start = self._frame_end - FRAME_SAMPLES - self.prefix_samples
                return SpeechStart(max(start, self._last_end, 0))
        elif prob < self.neg_threshold and self._triggered:
            if not self._silence_start:
                self._silence_start = self._frame_end
            if self._frame_end - self._silence_start >= self.min_silence_samples:
                end = self._silence_start - FRAME_SAMPLES + self.pad_samples
                return self._end_speech(min(end, self._frame_end))
        return None

    def _end_speech(self, end: int) -> SpeechEnd:
        self._triggered = False
        self._silence_start = 0
        self._last_end = end
        return SpeechEnd(end)
