"""The translation stage's bookkeeping: which lines are complete, order, context, the tail, and that
every line ends with a translation or an explicit error. The backend here is a stand-in at the
stage's boundary (a real one runs in tests/test_translation.py)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

from whisperlivekit.output.transcript import Line
from whisperlivekit.translation.base import TAIL, TranslationBackend, TranslationRequest
from whisperlivekit.translation.languages import Language, UnsupportedLanguagePair, resolve_language
from whisperlivekit.translation.stage import TranslationStage


class Shouting(TranslationBackend):
    """Translates into capitals; fails on lines containing 'boom'; records what it was asked."""

    name = "shouting"

    def __init__(self) -> None:
        self.requests: list[TranslationRequest] = []
        self.release = threading.Event()
        self.release.set()

    def check_pair(self, source: Language | None, target: Language) -> None:
        if target.iso1 == "ja":
            raise UnsupportedLanguagePair(self.name, source, target, "no Japanese")

    def translate(self, request: TranslationRequest) -> str:
        self.release.wait(5)
        self.requests.append(request)
        if "boom" in request.text:
            raise RuntimeError("the backend fell over")
        if "hush" in request.text:
            return ""
        return request.text.upper()


def make_stage(backend_factory: Callable[[], TranslationBackend], target: str = "pt", *,
               on_complete: bool = True) -> tuple[TranslationStage, list[str], list[int]]:
    warnings: list[str] = []
    changes: list[int] = []

    async def run(fn, *args):
        return await asyncio.to_thread(fn, *args)

    stage = TranslationStage(
        backend_factory, run, target=resolve_language(target), source=resolve_language("en"),
        on_complete=on_complete, on_change=lambda: changes.append(1), on_warning=warnings.append,
        keep_audio=False,
    )
    return stage, warnings, changes


def line(text: str, start: float, speaker: int = 1) -> Line:
    return Line(speaker, text, start, start + 1.0)


def test_lines_are_translated_once_complete_in_order_with_context() -> None:
    backend = Shouting()
    stage, warnings, _ = make_stage(lambda: backend)

    async def scenario() -> list[Line]:
        task = asyncio.create_task(stage.run())
        lines = [line("Hello there.", 0.0), line("and then", 1.0)]
        stage.observe(lines, "more words")
        await asyncio.sleep(0.3)
        # The first line ends a sentence: complete. The second can still grow: not yet.
        assert [r.text for r in backend.requests] == ["Hello there."]
        lines[1].text = "and then it went boom"
        lines += [line("", 2.0, speaker=-2), line("The end", 4.0)]
        await stage.finish(lines)  # the stream ended: every line is complete now
        task.cancel()
        return lines

    lines = asyncio.run(scenario())
    assert warnings == []
    assert [r.text for r in backend.requests] == ["Hello there.", "and then it went boom", "The end"]
    assert [line.translation for line in lines] == ["HELLO THERE.", "", "", "THE END"]
    assert lines[1].translation_error == "RuntimeError: the backend fell over"
    assert lines[2].translation_error is None  # a silence line has nothing to translate
    assert "translation_error" not in lines[0].to_dict() and "translation_error" in lines[1].to_dict()
    # Each request carries the sentences translated before it.
    assert [c.source for c in backend.requests[2].context] == ["Hello there."]


def test_an_empty_translation_is_an_error_not_a_silent_gap() -> None:
    stage, _, _ = make_stage(Shouting)

    async def scenario() -> list[Line]:
        task = asyncio.create_task(stage.run())
        lines = [line("hush now.", 0.0), line("Speak.", 1.0)]
        await stage.finish(lines)
        task.cancel()
        return lines

    lines = asyncio.run(scenario())
    assert lines[0].translation == ""
    assert lines[0].translation_error == "the backend returned an empty translation"
    assert lines[1].translation == "SPEAK." and lines[1].translation_error is None


def test_a_backend_that_cannot_load_marks_every_line() -> None:
    def broken() -> TranslationBackend:
        raise RuntimeError("no weights here")

    stage, warnings, _ = make_stage(broken)

    async def scenario() -> list[Line]:
        task = asyncio.create_task(stage.run())
        lines = [line("One.", 0.0), line("Two", 1.0)]
        stage.observe(lines, "")
        await stage.finish(lines)
        task.cancel()
        return lines

    lines = asyncio.run(scenario())
    assert warnings == ["translation unavailable: no weights here"]
    assert [(x.translation, x.translation_error) for x in lines] == [("", "no weights here")] * 2


def test_unsupported_pair_is_reported_on_the_lines() -> None:
    stage, warnings, _ = make_stage(Shouting, target="ja")

    async def scenario() -> list[Line]:
        task = asyncio.create_task(stage.run())
        lines = [line("One.", 0.0)]
        await stage.finish(lines)
        task.cancel()
        return lines

    lines = asyncio.run(scenario())
    assert "cannot translate English into Japanese: no Japanese" in warnings[0]
    assert "no Japanese" in (lines[0].translation_error or "")


def test_the_tail_fills_buffer_translation_until_it_is_committed() -> None:
    backend = Shouting()
    stage, _, changes = make_stage(lambda: backend, on_complete=False)

    async def scenario() -> None:
        task = asyncio.create_task(stage.run())
        lines = [line("we are", 0.0)]
        stage.observe(lines, "almost there")
        await asyncio.sleep(0.3)
        assert stage.buffer_translation == "WE ARE ALMOST THERE"
        assert backend.requests[-1].line == TAIL and lines[0].translation == ""
        lines[0].text = "we are almost there."  # committed: the line's own translation replaces the tail
        stage.observe(lines, "")
        assert stage.buffer_translation == ""
        await stage.finish(lines)
        assert lines[0].translation == "WE ARE ALMOST THERE." and stage.buffer_translation == ""
        task.cancel()

    asyncio.run(scenario())
    assert changes


def test_finish_waits_for_a_slow_backend() -> None:
    backend = Shouting()
    backend.release.clear()
    stage, _, _ = make_stage(lambda: backend)

    async def scenario() -> list[Line]:
        task = asyncio.create_task(stage.run())
        lines = [line(f"Sentence {i}.", float(i)) for i in range(5)]
        stage.observe(lines, "")
        asyncio.get_running_loop().call_later(0.3, backend.release.set)
        await stage.finish(lines)
        task.cancel()
        return lines

    lines = asyncio.run(scenario())
    assert [x.translation for x in lines] == [f"SENTENCE {i}." for i in range(5)]


def test_translation_options() -> None:
    from whisperlivekit.config import Config

    assert Config(direct_english_translation=True).task == "translate"
    assert Config(target_language="zho_Hans").target_language == "zho_Hans"
    with pytest.raises(ValueError, match="unknown language 'xx'"):
        Config(target_language="xx")
