"""The translation stage's interface: a backend, and the typed messages it takes and gives.

A backend is loaded once per engine and shared by every session; it keeps no per-session state
(the session's context travels in each request). Calls come from one worker thread at a time.
A new backend is one module implementing `TranslationBackend` and one entry in `backends.py`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from whisperlivekit.translation.languages import Language

TAIL = -1  # `line` of a request for the uncommitted tail (`buffer_translation`)


@dataclass(frozen=True, slots=True)
class Translated:
    """A sentence said earlier in the session and its translation: context for the next one."""

    source: str
    translation: str


@dataclass(frozen=True, slots=True)
class TranslationRequest:
    line: int  # index of the transcript line, or TAIL
    text: str  # the line's text in the source language
    source: Language | None  # None: unknown (auto detection found nothing yet)
    target: Language
    context: tuple[Translated, ...] = ()  # the previous sentences of the session, oldest first
    audio: np.ndarray | None = None  # the line's speech (16 kHz float32), for backends that use audio


@dataclass(frozen=True, slots=True)
class TranslationResult:
    line: int
    text: str  # "" when `error` is set
    error: str | None = None
    seconds: float = 0.0  # compute time of the backend call


class TranslationBackend(ABC):
    name: str
    uses_audio: bool = False  # True: requests carry the line's audio (Whisper translates speech)

    @abstractmethod
    def check_pair(self, source: Language | None, target: Language) -> None:
        """Raise `UnsupportedLanguagePair` (a ValueError) when this pair cannot be translated."""

    @abstractmethod
    def translate(self, request: TranslationRequest) -> str:
        """The translation of `request.text` (or of its audio); raise on failure."""

    def close(self) -> None:  # noqa: B027 -- optional hook
        """Free what the backend holds (models, subprocesses)."""
