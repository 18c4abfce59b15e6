"""One session's translation stage: committed lines in, each line's `translation` out.

Runs as its own asyncio task beside the ASR; backend calls go to the engine's translation thread.
- A line is translated once it is complete: it is not the last line, or it ends a sentence (the
  transcript starts a new line after one), or the stream ended. Lines are translated in order, and
  the previous sentences and their translations travel with each request as context.
- Without `translate_on_complete`, the uncommitted tail (the last, still growing line plus the
  ASR's tentative words) is translated into `buffer_translation` whenever the stage is idle, the
  latest tail winning; complete lines always go first.
- Nothing is lost: every complete line gets its translation or `translation_error`; at the end of
  the stream `finish` waits for all of them (or marks them timed out).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from whisperlivekit.translation.base import TAIL, Translated, TranslationRequest, TranslationResult
from whisperlivekit.translation.languages import Language, resolve_language

if TYPE_CHECKING:
    from whisperlivekit.output.transcript import Line
    from whisperlivekit.translation.base import TranslationBackend

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
SILENCE_SPEAKER = -2
SENTENCE_END = re.compile(r"[.!?。！？…]['\")\]]*$")  # the rule that closes a transcript line
CONTEXT_SENTENCES = 3
AUDIO_PAD_S = 0.3  # around a line's word times: the first/last word's edges are approximate
MIN_TAIL_INTERVAL_S = 1.0  # the tail is retranslated at most this often
FINISH_TIMEOUT_S = 120.0

Runner = Callable[..., Awaitable[Any]]


def line_is_complete(lines: list[Line], index: int, ended: bool) -> bool:
    return ended or index < len(lines) - 1 or bool(SENTENCE_END.search(lines[index].text))


class TranslationStage:
    def __init__(
        self,
        load_backend: Callable[[], TranslationBackend],
        run: Runner,
        *,
        target: Language,
        source: Language | None,
        on_complete: bool,
        on_change: Callable[[], None],
        on_warning: Callable[[str], None],
        keep_audio: bool,
    ) -> None:
        self._load_backend = load_backend  # blocking, run on the translation thread
        self._run = run
        self.target = target
        self.source = source
        self.on_complete = on_complete
        self._on_change = on_change
        self._on_warning = on_warning
        self.keep_audio = keep_audio  # the session feeds audio only to backends that translate speech
        self.backend: TranslationBackend | None = None
        self._failure: str | None = None  # the backend could not load or cannot do this pair
        self._lines: list[Line] = []
        self._queue: deque[int] = deque()  # complete lines waiting, in order
        self._next_line = 0  # lines before it are queued or done
        self._in_flight: int | None = None
        self._context: deque[Translated] = deque(maxlen=CONTEXT_SENTENCES)
        self._tail: tuple[str, float] | None = None  # the tail to translate next: text, stream start
        self._tail_done = ""  # the tail text `buffer_translation` belongs to
        self._tail_epoch = 0  # bumped when the tail is committed or gone: older results are stale
        self._last_tail_at = -float("inf")
        self.buffer_translation = ""
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._chunks: list[np.ndarray] = []
        self._audio_start = 0  # absolute sample index of the first kept sample
        self._audio_end = 0
        self._time_offset = 0.0  # stream time of audio sample 0 (a resumed session's lines come first)

    # -- inputs from the session ---------------------------------------------------------------

    def skip(self, lines: int, time_offset: float) -> None:
        """Lines already translated (a resumed session's), and the stream time this audio starts at."""
        self._next_line, self._time_offset = lines, time_offset

    def _sample(self, t: float) -> int:
        return int((t - self._time_offset) * SAMPLE_RATE) - self._audio_start

    def add_audio(self, samples: np.ndarray) -> None:
        self._chunks.append(samples)
        self._audio_end += len(samples)

    def observe(self, lines: list[Line], tentative: str, ended: bool = False) -> None:
        """Queue the lines that became complete and note the current tail. Cheap; call on every update."""
        self._lines = lines
        complete = self._next_line
        while complete < len(lines) and line_is_complete(lines, complete, ended):
            complete += 1
        for index in range(self._next_line, complete):
            if lines[index].speaker != SILENCE_SPEAKER and lines[index].text.strip():
                self._queue.append(index)
                self._idle.clear()
        if complete > self._next_line:  # the tail's lines are committed: their translations replace it
            self._clear_tail()
        self._next_line = complete
        self._observe_tail(lines, tentative, ended)
        if self._queue or self._tail:
            self._wake.set()

    def _observe_tail(self, lines: list[Line], tentative: str, ended: bool) -> None:
        if self.on_complete:
            return
        growing = lines[self._next_line :] if self._next_line < len(lines) else []
        text = " ".join([*(line.text for line in growing), tentative]).strip()
        if ended or not text:
            self._clear_tail()
            self._tail = None
            return
        if text != self._tail_done and (self._tail is None or self._tail[0] != text):
            start = growing[0].start if growing else (lines[-1].end if lines else 0.0)
            self._tail = (text, start)

    def _clear_tail(self) -> None:
        self._tail_done, self.buffer_translation = "", ""
        self._tail_epoch += 1

    async def finish(self, lines: list[Line]) -> None:
        """End of stream: translate what is left and wait until every line has its result."""
        self.observe(lines, "", ended=True)
        try:
            await asyncio.wait_for(self._idle.wait(), FINISH_TIMEOUT_S)
        except TimeoutError:
            for index in [*([self._in_flight] if self._in_flight is not None else []), *self._queue]:
                self._set_error(index, f"translation did not finish within {FINISH_TIMEOUT_S:.0f} s")
            self._queue.clear()

    # -- the task --------------------------------------------------------------------------------

    async def run(self) -> None:
        await self._start()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue or self._tail:
                if self._queue:
                    index = self._queue[0]
                    await self._translate_line(index)
                    if self._queue and self._queue[0] == index:  # else `finish` gave up on it
                        self._queue.popleft()
                    self._in_flight = None
                elif self._tail_due():
                    await self._translate_tail()
                else:  # the tail is not due yet: wait for it, or for a line to complete
                    with contextlib.suppress(TimeoutError):
                        remaining = MIN_TAIL_INTERVAL_S - (time.monotonic() - self._last_tail_at)
                        await asyncio.wait_for(self._wake.wait(), max(0.01, remaining))
                    self._wake.clear()
                    continue
                self._trim_audio()
                self._on_change()
            self._idle.set()

    async def _start(self) -> None:
        try:
            self.backend = await self._run(self._load_backend)
            self.backend.check_pair(self.source, self.target)
        except Exception as error:
            self._failure = str(error)
            logger.warning("translation unavailable: %s", error)
            self._on_warning(f"translation unavailable: {error}")

    def _tail_due(self) -> bool:
        return time.monotonic() - self._last_tail_at >= MIN_TAIL_INTERVAL_S

    async def _translate_line(self, index: int) -> None:
        self._in_flight = index
        line = self._lines[index]
        request = TranslationRequest(
            index, line.text, self._source_of(line), self.target, tuple(self._context),
            self._audio(line.start, line.end) if self.keep_audio else None,
        )
        result = await self._call(request)
        if result.error is not None:
            self._set_error(index, result.error)
        else:
            line.translation = result.text
            self._context.append(Translated(line.text, result.text))

    async def _translate_tail(self) -> None:
        assert self._tail is not None
        (text, start), self._tail = self._tail, None
        self._last_tail_at = time.monotonic()
        epoch = self._tail_epoch
        source = self._source_of(self._lines[-1]) if self._lines else self.source
        end = self._audio_end / SAMPLE_RATE + self._time_offset
        audio = self._audio(start, end) if self.keep_audio else None
        request = TranslationRequest(TAIL, text, source, self.target, tuple(self._context), audio)
        result = await self._call(request)
        # A newer tail keeps this translation until its own replaces it; a committed one drops it.
        if result.error is None and epoch == self._tail_epoch:
            self._tail_done, self.buffer_translation = text, result.text

    async def _call(self, request: TranslationRequest) -> TranslationResult:
        if self._failure is not None or self.backend is None:
            return TranslationResult(request.line, "", self._failure or "translation unavailable")
        started = time.perf_counter()
        try:
            text = await self._run(self.backend.translate, request)
        except Exception as error:
            logger.warning("translation of line %d failed: %s", request.line, error)
            return TranslationResult(request.line, "", f"{type(error).__name__}: {error}",
                                     time.perf_counter() - started)
        if not text.strip() and request.text.strip():  # a line never ends with nothing and no reason
            return TranslationResult(request.line, "", "the backend returned an empty translation")
        return TranslationResult(request.line, text, None, time.perf_counter() - started)

    def _set_error(self, index: int, message: str) -> None:
        self._lines[index].translation_error = message

    def _source_of(self, line: Line) -> Language | None:
        if self.source is not None:
            return self.source
        if line.detected_language:
            try:
                return resolve_language(line.detected_language)
            except ValueError:
                return None
        return None

    # -- audio -------------------------------------------------------------------------------------

    def _audio(self, start: float, end: float) -> np.ndarray:
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks)]
        kept = self._chunks[0] if self._chunks else np.zeros(0, dtype=np.float32)
        first = max(0, self._sample(start - AUDIO_PAD_S))
        last = max(first, self._sample(end + AUDIO_PAD_S))
        return kept[first:last]

    def _trim_audio(self) -> None:
        """Forget the audio of lines that are done; the growing line and the queue keep theirs."""
        if not self.keep_audio or not self._lines:
            return
        needed = self._queue[0] if self._queue else self._next_line
        keep_from = self._lines[needed].start if needed < len(self._lines) else self._lines[-1].end
        drop = self._sample(keep_from - AUDIO_PAD_S)
        if drop <= 0:
            return
        kept = np.concatenate(self._chunks) if self._chunks else np.zeros(0, dtype=np.float32)
        drop = min(drop, len(kept))
        self._chunks, self._audio_start = [kept[drop:]], self._audio_start + drop


def new_translation_stage(
    engine: Any,
    language: str,
    target_language: str,
    *,
    on_change: Callable[[], None],
    on_warning: Callable[[str], None],
) -> TranslationStage:
    """The stage for one session; ValueError for an unknown language, or a pair the loaded backend
    cannot do (so the server refuses the session at once instead of failing every line)."""
    target = resolve_language(target_language)
    files = engine.model_files
    if language == "auto" and files is not None and not files.multilingual:
        language = "en"  # an English-only model never detects anything else
    source = None if language == "auto" else resolve_language(language)
    service = engine.translation
    if service.loaded is not None:
        service.loaded.check_pair(source, target)
    cfg = engine.config
    return TranslationStage(
        service.backend, service.run, target=target, source=source,
        on_complete=cfg.translate_on_complete, on_change=on_change, on_warning=on_warning,
        keep_audio=cfg.translation_backend == "whisper",
    )
