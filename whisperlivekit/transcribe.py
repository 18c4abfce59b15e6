"""File transcription with the engine's model (offline: whole 30 s windows, no streaming policy)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from whisperlivekit.audio.decoder import SAMPLE_RATE, load_audio
from whisperlivekit.output.transcript import Transcript

if TYPE_CHECKING:
    from whisperlivekit.engine import TranscriptionEngine

PROGRESS_MIN_SECONDS = 30.0  # a bar for a short clip is noise


def transcribe_file(
    engine: TranscriptionEngine,
    path: str | os.PathLike,
    *,
    language: str | None = None,
    progress: bool = True,
) -> Transcript:
    from tqdm import tqdm

    backend = engine.file_backend()
    audio = load_audio(path)
    duration = len(audio) / SAMPLE_RATE
    language = language or engine.config.language
    transcript = Transcript()
    with tqdm(
        total=round(duration, 1),
        unit="s",
        desc=os.fspath(path)[-40:],
        disable=not progress or duration < PROGRESS_MIN_SECONDS,
    ) as bar:
        words = backend.transcribe_file(
            audio, language=None if language == "auto" else language, vad_filter=engine.config.vac
        )
        for word in words:
            transcript.add_words([word])
            bar.update(round(min(word.end, duration) - bar.n, 1))
        bar.update(round(duration - bar.n, 1))
    return transcript
