"""Which translation backends exist, and loading one from the config (once per engine)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from whisperlivekit.config import Config
    from whisperlivekit.translation.base import TranslationBackend

BACKENDS = ("whisper", "bergamot", "apertium", "nllb")


def load_translation_backend(config: Config) -> TranslationBackend:
    """The backend `config.translation_backend` names; a RuntimeError says what is missing."""
    name = config.translation_backend
    if name == "whisper":
        from whisperlivekit.translation.whisper_task import WhisperTranslateBackend

        return WhisperTranslateBackend(config)
    if name == "bergamot":
        from whisperlivekit.translation.bergamot import BergamotBackend

        return BergamotBackend()
    if name == "apertium":
        from whisperlivekit.translation.apertium import ApertiumBackend

        return ApertiumBackend()
    if name == "nllb":
        from whisperlivekit.translation.nllb import NLLBBackend

        return NLLBBackend(
            config.translation_model, device=config.device, compute_type=config.compute_type,
            threads=config.threads, cache_dir=config.model_cache_dir, beams=config.beams,
        )
    raise ValueError(f"unknown translation backend {name!r}: one of {', '.join(BACKENDS)}")
