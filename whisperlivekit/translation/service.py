"""The engine's part of translation: one backend per engine, loaded on first use, and its own thread.

The backend runs on a worker thread of its own, never the model thread, so translating a line
never delays an ASR update (on a CPU they still share the cores).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from whisperlivekit.config import Config
    from whisperlivekit.translation.base import TranslationBackend

T = TypeVar("T")


class TranslationService:
    def __init__(self, config: Config) -> None:
        self.config = config
        self._backend: TranslationBackend | None = None
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None

    @property
    def loaded(self) -> TranslationBackend | None:
        return self._backend

    def backend(self) -> TranslationBackend:
        """Load the configured backend once (blocking: call it off the event loop)."""
        with self._lock:
            if self._backend is None:
                from whisperlivekit.translation.backends import load_translation_backend

                self._backend = load_translation_backend(self.config)
            return self._backend

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wlk-translate")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def close(self) -> None:
        # Wait for a call in flight: a backend must not be freed under it.
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            backend, self._backend = self._backend, None
        if backend is not None:
            backend.close()
