"""The diarization stage's interfaces: a loaded model shared by sessions, and one session's state.

Audio goes in with its stream time; speaker segments come out with times on the same sample clock
(sample index / 16000). A backend is one module in this package implementing these two classes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class SpeakerSegment:
    speaker: int  # 1, 2, ... in order of first appearance in the session
    start: float
    end: float


class DiarizationBackend(ABC):
    """One session's diarization. Called from one worker thread, one call at a time."""

    @abstractmethod
    def insert_audio(self, samples: np.ndarray, start: float) -> None:
        """Append float32 16 kHz mono audio that starts at stream time `start` (gaps are silence)."""

    @abstractmethod
    def process(self) -> list[SpeakerSegment]:
        """Diarize what is buffered; return the segments that became final (never revised)."""

    @abstractmethod
    def finish(self) -> list[SpeakerSegment]:
        """End of stream: diarize everything left and return the last segments."""

    @property
    @abstractmethod
    def diarized_until(self) -> float:
        """Stream time before which every segment has been returned."""

    @property
    @abstractmethod
    def pending_seconds(self) -> float:
        """Audio inserted and not yet diarized: when `process` is worth calling."""


class DiarizationModel(ABC):
    """Weights loaded once per engine; makes a `DiarizationBackend` per session."""

    @abstractmethod
    def new_session(self) -> DiarizationBackend: ...


class DiarizationUnavailable(RuntimeError):
    """A backend's library or weights are missing; the message says what to install or pass."""
