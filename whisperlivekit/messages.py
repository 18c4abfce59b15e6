"""Typed messages that flow between the pipeline stages of one session.

decoder -> VAD -> ASR -> transcript: audio comes in as `SpeechAudio`, utterance boundaries as
`UtteranceEnd`, pauses as `Silence`; the ASR stage produces `Word`s. Every time is in seconds on
the sample clock of the audio received (sample index / 16000), never on wall time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Word:
    text: str  # as the model wrote it, usually with a leading space
    start: float
    end: float
    probability: float = 1.0

    def shifted(self, offset: float) -> Word:
        return Word(self.text, self.start + offset, self.end + offset, self.probability)


@dataclass(frozen=True, slots=True)
class SpeechAudio:
    samples: np.ndarray  # float32 mono 16 kHz
    start: float


@dataclass(frozen=True, slots=True)
class UtteranceEnd:
    time: float


@dataclass(frozen=True, slots=True)
class Silence:
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class EndOfStream:
    time: float


PipelineItem = SpeechAudio | UtteranceEnd | Silence | EndOfStream


@dataclass(frozen=True, slots=True)
class PolicyOutput:
    """What a streaming policy says after an update."""

    committed: tuple[Word, ...] = ()  # newly committed words, never taken back
    tentative: tuple[Word, ...] = ()  # the current uncommitted hypothesis, replaced at every update
