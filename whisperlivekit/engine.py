"""`TranscriptionEngine`: the models, loaded once and shared by every session.

No module-level state: two engines with different models can live in one process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from whisperlivekit.config import Config

if TYPE_CHECKING:
    from whisperlivekit.asr.base import ASRBackend, StreamingPolicy
    from whisperlivekit.asr.model_files import ModelFiles
    from whisperlivekit.audio.vad import SileroVADModel, StreamingVAD

logger = logging.getLogger(__name__)
T = TypeVar("T")


class TranscriptionEngine:
    def __init__(self, config: Config | None = None, **options: Any) -> None:
        base = config or Config()
        self.config = base.replace(**options) if options else base
        self.model_files: ModelFiles | None = None
        self.backend: ASRBackend | None = None
        self.vad_model: SileroVADModel | None = None
        # One worker: on a CPU, concurrent model calls only fight over the same cores.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wlk-model")
        self._load()

    def _load(self) -> None:
        from whisperlivekit.asr.model_files import resolve_model

        cfg = self.config
        self.model_files = resolve_model(cfg.model, cfg.model_path, cache_dir=cfg.model_cache_dir)
        logger.info("model %s from %s (%s)", cfg.model, self.model_files.path, self.model_files.source)
        self.backend = self._load_backend()
        self.backend.warmup()
        if cfg.vac:
            from whisperlivekit.audio.vad import SileroVADModel

            self.vad_model = SileroVADModel()

    def _load_backend(self) -> ASRBackend:
        files = self.model_files
        assert files is not None
        if files.format != "ctranslate2":
            raise ValueError(
                f"the {self.config.backend_policy} policy runs on CTranslate2 weights; {files.path} is an "
                f"{files.format} checkpoint (convert it with ct2-transformers-converter)"
            )
        from whisperlivekit.asr.faster_whisper import FasterWhisperBackend

        cfg = self.config
        return FasterWhisperBackend(
            files.path,
            device=cfg.device,
            compute_type=cfg.compute_type,
            cpu_threads=cfg.threads,
            beams=cfg.beams,
            task=cfg.task,
        )

    @property
    def ready(self) -> bool:
        return self.backend is not None

    def new_policy(self, language: str | None = None) -> StreamingPolicy:
        """A policy for one session; raises ValueError for a language the model cannot do."""
        language = self.check_language(language or self.config.language)
        return _POLICIES[self.config.backend_policy](self, language)

    def check_language(self, language: str) -> str:
        from faster_whisper.tokenizer import _LANGUAGE_CODES

        if language == "auto" or language == "en":
            return language
        if language not in _LANGUAGE_CODES:
            raise ValueError(
                f"unknown language {language!r}: use a Whisper language code (en, de, ...) or auto"
            )
        if self.model_files is not None and not self.model_files.multilingual:
            raise ValueError(f"model {self.config.model} is English-only: it cannot transcribe {language!r}")
        return language

    def new_vad(self) -> StreamingVAD | None:
        if self.vad_model is None:
            return None
        from whisperlivekit.audio.vad import StreamingVAD

        return StreamingVAD(
            self.vad_model, min_silence_duration_ms=int(self.config.min_silence_duration * 1000)
        )

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking model call off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _local_agreement(engine: TranscriptionEngine, language: str) -> StreamingPolicy:
    from whisperlivekit.asr.local_agreement import LocalAgreementPolicy

    cfg = engine.config
    assert engine.backend is not None
    return LocalAgreementPolicy(
        engine.backend,
        language=language,
        init_prompt=cfg.init_prompt,
        buffer_trimming=cfg.buffer_trimming,
        buffer_trimming_sec=cfg.buffer_trimming_sec,
    )


# A policy is one factory here and one module in whisperlivekit/asr/.
_POLICIES: dict[str, Callable[[TranscriptionEngine, str], StreamingPolicy]] = {
    "localagreement": _local_agreement,
}
