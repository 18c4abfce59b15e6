"""Whisper's own translation (`task=translate`): the speech of each line, from any of Whisper's
languages into English.

It translates the audio, not the transcript, so ASR errors do not compound, and it needs only the
multilingual Whisper weights the server already has (`--model base`; `.en` models cannot
translate). It runs its own CTranslate2 instance of the model on the translation thread, so a
translation never waits for (or holds up) an ASR update on the model thread; the weights are
loaded once per engine. The previous translations of the session are its prompt (sentence context).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from whisperlivekit.translation.base import TranslationBackend, TranslationRequest
from whisperlivekit.translation.languages import Language, UnsupportedLanguagePair

if TYPE_CHECKING:
    from whisperlivekit.asr.faster_whisper import FasterWhisperBackend
    from whisperlivekit.config import Config

CONTEXT_SENTENCES = 2  # previous translations given as the prompt


class WhisperTranslateBackend(TranslationBackend):
    name = "whisper"
    uses_audio = True

    def __init__(self, config: Config) -> None:
        from whisperlivekit.asr.faster_whisper import FasterWhisperBackend
        from whisperlivekit.asr.model_files import resolve_model

        name, path = config.model, config.model_path
        if config.translation_model:  # a model name (base) or a directory
            name = config.translation_model
            path = name if Path(name).expanduser().exists() else None
        files = resolve_model(name, path, cache_dir=config.model_cache_dir)
        if files.format != "ctranslate2":
            raise RuntimeError(f"whisper translation needs CTranslate2 weights, not {files.format}")
        if not files.multilingual:
            raise RuntimeError(
                f"whisper translation needs a multilingual model: {name} is English-only "
                "(use --model base, or --translation-model base)"
            )
        self.model: FasterWhisperBackend = FasterWhisperBackend(
            files.path, device=config.device, compute_type=config.compute_type,
            cpu_threads=config.threads, beams=config.beams, task="translate",
        )

    def check_pair(self, source: Language | None, target: Language) -> None:
        if target.iso1 != "en":
            raise UnsupportedLanguagePair(
                self.name, source, target, "Whisper translates into English only"
            )
        if source is not None and source.whisper is None:
            raise UnsupportedLanguagePair(self.name, source, target, "Whisper does not know this language")

    def translate(self, request: TranslationRequest) -> str:
        if request.audio is None or not len(request.audio):
            raise RuntimeError("no audio kept for this line")
        language = request.source.whisper if request.source else None
        if language is None:
            language, _ = self.model.detect_language(request.audio)
        if language == "en":
            return request.text  # Whisper's "translation" of English is a transcription
        prompt = " ".join(c.translation for c in request.context[-CONTEXT_SENTENCES:])
        words = self.model.transcribe(request.audio, prompt=prompt, language=language)
        if not words:
            # Silence or a repetition loop on the fast path: faster-whisper's own decoding retries
            # at higher temperatures when the output loops.
            words = list(self.model.transcribe_file(request.audio, language=language, vad_filter=False))
        text = "".join(w.text for w in words).strip()
        if not text:
            raise RuntimeError("Whisper heard no speech to translate in this line's audio")
        return text
