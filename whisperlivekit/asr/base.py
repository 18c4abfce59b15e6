"""The two interfaces of the ASR stage: a model backend and a streaming policy over it.

A new backend or policy is one file implementing one of these.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterator, Sequence

import numpy as np

from whisperlivekit.messages import PolicyOutput, Word


class ASRBackend(ABC):
    """A loaded model that transcribes a buffer of audio. Shared by all sessions; stateless."""

    sample_rate = 16000
    multilingual: bool

    @abstractmethod
    def transcribe(self, audio: np.ndarray, *, prompt: str = "", language: str | None = None) -> list[Word]:
        """Words of `audio` with times relative to its first sample."""

    @abstractmethod
    def transcribe_file(
        self,
        audio: np.ndarray,
        *,
        language: str | None = None,
        vad_filter: bool = True,
        task: str | None = None,
        prompt: str | None = None,
    ) -> Iterator[Word]:
        """Offline transcription of a whole recording of any length (`task`: the backend's by default)."""

    @abstractmethod
    def detect_language(self, audio: np.ndarray) -> tuple[str, float]:
        """Most likely language code of `audio` and its probability."""

    def warmup(self) -> None:
        """Run once on silence so the first real request does not pay for lazy initialisation."""
        self.transcribe(np.zeros(self.sample_rate, dtype=np.float32), language="en")


class AudioBuffer:
    """The speech a policy holds: samples, the stream time of the first one, and how much is new.

    Audio is contiguous within an utterance; after `clear` the next `append` sets a new start.
    """

    sample_rate = 16000

    def __init__(self) -> None:
        self.samples = np.zeros(0, dtype=np.float32)
        self.start = 0.0  # stream time of samples[0]
        self.pending = 0  # samples appended since the last `take_pending`

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.sample_rate

    @property
    def end(self) -> float:
        return self.start + self.seconds

    @property
    def pending_seconds(self) -> float:
        return self.pending / self.sample_rate

    def append(self, samples: np.ndarray, start: float) -> None:
        if not len(self.samples):
            self.start = start
        self.samples = np.concatenate([self.samples, np.asarray(samples, dtype=np.float32)])
        self.pending += len(samples)

    def take_pending(self) -> int:
        """Mark everything as seen by the model; returns how many samples were new."""
        pending, self.pending = self.pending, 0
        return pending

    def drop_first(self, count: int) -> None:
        """Forget the first `count` samples (the buffer's start moves forward)."""
        count = max(0, min(count, len(self.samples)))
        self.samples = self.samples[count:]
        self.start += count / self.sample_rate

    def clear(self) -> None:
        self.samples = self.samples[:0]
        self.pending = 0


class AudioBacklog:
    """Audio inserted into a policy and not yet in its buffer. One decode sees at most 30 s, so a
    policy given more at once (a fast upload, a server behind) takes it in steps that fit."""

    sample_rate = 16000

    def __init__(self) -> None:
        self._parts: deque[tuple[np.ndarray, float]] = deque()  # (samples, stream time of the first)

    def __bool__(self) -> bool:
        return bool(self._parts)

    @property
    def seconds(self) -> float:
        return sum(len(samples) for samples, _ in self._parts) / self.sample_rate

    def append(self, samples: np.ndarray, start: float) -> None:
        self._parts.append((np.asarray(samples, dtype=np.float32), start))

    def take(self, seconds: float = math.inf) -> Iterator[tuple[np.ndarray, float]]:
        """The first ``seconds`` of it, as (samples, start) pieces, removed."""
        budget = seconds * self.sample_rate
        while self._parts and budget > 0:
            samples, start = self._parts.popleft()
            if len(samples) > budget:
                cut = int(budget)
                self._parts.appendleft((samples[cut:], start + cut / self.sample_rate))
                samples = samples[:cut]
            budget -= len(samples)
            yield samples, start


class StreamingPolicy(ABC):
    """Per-session state that turns a growing audio buffer into committed words.

    Called from a worker thread, one call at a time per session.
    """

    @abstractmethod
    def insert_audio(self, samples: np.ndarray, start: float) -> None:
        """Append speech that starts at stream time `start` (contiguous within one utterance)."""

    @abstractmethod
    def process(self) -> PolicyOutput:
        """Run the model on what is buffered and say what is now committed."""

    @abstractmethod
    def finish(self) -> PolicyOutput:
        """The utterance ended: commit everything still tentative and forget the audio."""

    @property
    @abstractmethod
    def pending_seconds(self) -> float:
        """Seconds of audio inserted since the last `process`."""

    @property
    @abstractmethod
    def buffered_seconds(self) -> float:
        """Seconds of audio the policy is holding."""


def words_text(words: Sequence[Word]) -> str:
    return "".join(w.text for w in words).strip()
