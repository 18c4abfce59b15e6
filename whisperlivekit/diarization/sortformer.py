"""NVIDIA Streaming Sortformer (arXiv 2507.18446) through NeMo, for users who have NeMo and the weights.

The model is a user-supplied `.nemo` file (or a folder holding one) or a Hugging Face hub name
(default `nvidia/diar_streaming_sortformer_4spk-v2`, fetched by NeMo when the hub is reachable).
Sortformer keeps its own speaker cache, so its speaker indices are already stable within a session;
they are renumbered 1, 2, ... in order of first appearance. Outputs are 80 ms frames.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from whisperlivekit.diarization.base import (
    DiarizationBackend,
    DiarizationModel,
    DiarizationUnavailable,
    SpeakerSegment,
)

logger = logging.getLogger(__name__)
DEFAULT_MODEL = "nvidia/diar_streaming_sortformer_4spk-v2"
SAMPLE_RATE = 16000
FRAME_SECONDS = 0.08  # one Sortformer output frame (8 x 10 ms feature frames)
NEMO_HINT = "pip install 'nemo_toolkit[asr]>=2.4' (Streaming Sortformer needs NeMo 2.4 or later)"


def _import_nemo() -> Any:
    try:
        from nemo.collections.asr.models import SortformerEncLabelModel
    except ImportError as error:
        raise DiarizationUnavailable(
            f"the sortformer diarization backend needs NVIDIA NeMo ({error}): {NEMO_HINT}"
        ) from error
    return SortformerEncLabelModel


def resolve_nemo_file(name: str) -> Path | None:
    """A local .nemo file for `name` (a file, or a folder with exactly one), or None for a hub name."""
    path = Path(name).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".nemo":
            raise DiarizationUnavailable(f"{path} is not a .nemo file")
        return path
    if path.is_dir():
        found = sorted(path.glob("*.nemo"))
        if len(found) != 1:
            raise DiarizationUnavailable(f"{path} should hold exactly one .nemo file, found {len(found)}")
        return found[0]
    if name.endswith(".nemo") or name.startswith(("/", "./", "../", "~")):
        raise DiarizationUnavailable(f"Sortformer model {path} does not exist")
    return None


class SortformerModel(DiarizationModel):
    def __init__(self, model: str | None = None, *, latency: float = 2.0, max_speakers: int = 4,
                 device: str = "auto") -> None:
        name = model or DEFAULT_MODEL
        local = resolve_nemo_file(name)  # a bad path is reported before the NeMo import
        cls = _import_nemo()
        import torch

        try:
            self.model = cls.restore_from(restore_path=str(local)) if local else cls.from_pretrained(name)
        except Exception as error:  # NeMo raises many kinds; what matters is what was asked for
            raise DiarizationUnavailable(
                f"could not load the Sortformer model {name!r} ({type(error).__name__}: {error}); pass a "
                "local .nemo file with --diarization-model when the hub cannot be reached"
            ) from error
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model.eval().to(device)
        self.device = device
        self.max_speakers = max_speakers
        modules = self.model.sortformer_modules
        # Chunk = half the latency, the other half is right context; the rest are NeMo's defaults.
        modules.chunk_len = max(1, round(latency / 2 / FRAME_SECONDS))
        modules.chunk_right_context = max(0, round(latency / FRAME_SECONDS) - modules.chunk_len)
        modules.chunk_left_context = 1
        modules._check_streaming_parameters()
        logger.info("Sortformer %s on %s, chunk %d frames", name, device, modules.chunk_len)

    def new_session(self) -> SortformerSession:
        return SortformerSession(self)


class SortformerSession(DiarizationBackend):
    def __init__(self, shared: SortformerModel) -> None:
        import torch

        self.shared, self.model = shared, shared.model
        modules = self.model.sortformer_modules
        self._chunk = modules.chunk_len  # output frames per step
        self._right = modules.chunk_right_context
        self._state = modules.init_streaming_state(batch_size=1, async_streaming=True, device=shared.device)
        self._preds = torch.zeros((1, 0, modules.n_spk), device=shared.device)
        self._audio = np.zeros(0, dtype=np.float32)  # the whole stream (features need left context)
        self._done_frames = 0
        self._ids: dict[int, int] = {}
        self._open: dict[int, float] = {}

    def insert_audio(self, samples: np.ndarray, start: float) -> None:
        at = round(start * SAMPLE_RATE)
        if at > len(self._audio):
            self._audio = np.concatenate([self._audio, np.zeros(at - len(self._audio), np.float32)])
        new = np.asarray(samples, np.float32)[max(0, len(self._audio) - at) :]
        self._audio = np.concatenate([self._audio, new])

    @property
    def _frames_available(self) -> int:
        return int(len(self._audio) / SAMPLE_RATE / FRAME_SECONDS)

    def process(self, final: bool = False) -> list[SpeakerSegment]:
        segments: list[SpeakerSegment] = []
        while final or self._frames_available >= self._done_frames + self._chunk + self._right:
            if self._done_frames >= self._frames_available:
                break
            segments += self._step(min(self._chunk, self._frames_available - self._done_frames))
        return segments

    def _step(self, frames: int) -> list[SpeakerSegment]:
        import torch

        lo = self._done_frames * FRAME_SECONDS
        hi = min(len(self._audio) / SAMPLE_RATE, (self._done_frames + frames + self._right) * FRAME_SECONDS)
        left = min(lo, FRAME_SECONDS)  # one frame of left context (chunk_left_context = 1)
        audio = self._audio[round((lo - left) * SAMPLE_RATE) : round(hi * SAMPLE_RATE)]
        signal = torch.from_numpy(audio).to(self.shared.device)[None]
        with torch.inference_mode():
            length = torch.tensor([signal.shape[1]], device=signal.device)
            features, length = self.model.preprocessor(input_signal=signal, length=length)
            self._state, self._preds = self.model.forward_streaming_step(
                processed_signal=features.transpose(1, 2), processed_signal_length=length,
                streaming_state=self._state, total_preds=self._preds,
                left_offset=round(left / 0.01), right_offset=round((hi - lo) / 0.01) - frames * 8,
            )
        probs = self._preds[0, self._done_frames : self._done_frames + frames].float().cpu().numpy()
        segments = self._to_segments(probs, self._done_frames)
        self._done_frames += frames
        return segments

    def _to_segments(self, probs: np.ndarray, first: int) -> list[SpeakerSegment]:
        segments = []
        for offset, row in enumerate(probs > 0.5):
            time = (first + offset) * FRAME_SECONDS
            now = set()
            for k in np.flatnonzero(row):
                if int(k) not in self._ids and len(self._ids) < self.shared.max_speakers:
                    self._ids[int(k)] = len(self._ids) + 1
                if int(k) in self._ids:
                    now.add(self._ids[int(k)])
            for speaker in [s for s in self._open if s not in now]:
                start = self._open.pop(speaker)
                if time > start:
                    segments.append(SpeakerSegment(speaker, start, time))
            for speaker in now - self._open.keys():
                self._open[speaker] = time
        end = (first + len(probs)) * FRAME_SECONDS
        for speaker, start in self._open.items():  # running turns: up to here, continued next time
            segments.append(SpeakerSegment(speaker, start, end))
            self._open[speaker] = end
        return segments

    def finish(self) -> list[SpeakerSegment]:
        return self.process(final=True)

    @property
    def diarized_until(self) -> float:
        return self._done_frames * FRAME_SECONDS

    @property
    def pending_seconds(self) -> float:
        return max(0.0, len(self._audio) / SAMPLE_RATE - self.diarized_until)
