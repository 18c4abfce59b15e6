"""Live translation end to end, through the `/asr` WebSocket on loopback, on real recorded speech:
Spanish and German FLEURS clips into English with Whisper's `task=translate` (multilingual base),
and English into Portuguese with Bergamot (tiny.en). Every committed line must get a translation,
in the target language (language ID + words the sentence must contain)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from conftest import LiveServer

from whisperlivekit.client import StreamResult, decode_audio, stream_audio

run = asyncio.run
LANGUAGES = ["en", "es", "de", "pt", "fr", "it"]


def language_of(text: str, candidates: list[str] = LANGUAGES) -> str:
    from langid.langid import LanguageIdentifier, model

    identifier = LanguageIdentifier.from_modelstring(model, norm_probs=True)
    identifier.set_languages(candidates)
    return identifier.classify(text)[0]


@pytest.fixture(scope="module")
def base_server() -> Iterator[LiveServer]:
    from whisperlivekit import TranscriptionEngine
    from whisperlivekit.server.app import create_app

    engine = TranscriptionEngine(model="base", pcm_input=True, translation_backend="whisper", store="none")
    engine.translation.backend()  # loaded up front, so sessions can be checked against it
    with LiveServer(create_app(engine)) as server:
        yield server
    engine.close()


@pytest.fixture(scope="module")
def bergamot_server() -> Iterator[LiveServer]:
    from whisperlivekit import TranscriptionEngine
    from whisperlivekit.server.app import create_app

    engine = TranscriptionEngine(pcm_input=True, translation_backend="bergamot", store="none")
    with LiveServer(create_app(engine)) as server:
        yield server
    engine.close()


def spoken(update: dict) -> list[dict]:
    return [line for line in update["lines"] if line["speaker"] > 0 and line["text"].strip()]


def check_translated(result: StreamResult, source: str, target: str) -> list[dict]:
    """Every spoken line of the final update has a translation in `target`; lines only grew."""
    assert result.error is None, result.error
    assert result.messages[-1].data == {"type": "ready_to_stop"}
    assert not [m.data for m in result.messages if m.type == "warning"]
    previous: list[dict] = []
    for message in result.updates:
        lines = message.data["lines"]
        # Committed text never changes; only a line's translation is filled in after the fact.
        strip = [{k: v for k, v in line.items() if k != "translation"} for line in lines]
        assert strip[: max(0, len(previous) - 1)] == previous[:-1]
        previous = strip
    final = result.updates[-1].data
    lines = spoken(final)
    assert lines, "nothing was transcribed"
    for line in lines:
        assert "translation_error" not in line, line
        assert line["translation"].strip(), line
        # One line is too short to tell apart from six languages; that it left the source is not.
        assert language_of(line["translation"], [source, target]) == target, line
    assert language_of(" ".join(line["translation"] for line in lines)) == target
    assert final["buffer_translation"] == ""
    return lines


def test_spanish_speech_into_english_with_whisper(base_server, eval_root) -> None:
    audio = decode_audio(eval_root / "multi" / "fleurs_es" / "fleurs-es-002.ogg")
    url = base_server.ws + "?language=es&target_language=en"
    result = run(stream_audio(url, audio, speed=2.0))
    lines = check_translated(result, "es", "en")
    assert all(language_of(line["text"]) == "es" for line in lines)  # the transcript stays Spanish
    english = " ".join(line["translation"] for line in lines).lower()
    # "fue tanta la cantidad de gente ... al funeral en la plaza de san pedro"
    assert "funeral" in english and "people" in english, english


def test_german_speech_into_english_with_whisper(base_server, eval_root) -> None:
    audio = decode_audio(eval_root / "multi" / "fleurs_de" / "fleurs-de-000.ogg")
    # Language detected (auto): each line's detected_language is its source. NLLB's spelling works too.
    url = base_server.ws + "?target_language=eng_Latn"
    lines = check_translated(run(stream_audio(url, audio, speed=2.0)), "de", "en")
    assert {line["detected_language"] for line in lines} == {"de"}
    english = " ".join(line["translation"] for line in lines).lower()
    # "für die besten aussichten auf hongkong sollten sie die insel verlassen ..."
    assert "hong kong" in english and "island" in english, english


def test_a_pair_the_backend_cannot_do_is_refused(base_server, jfk_wav) -> None:
    url = base_server.ws + "?language=en&target_language=de"
    result = run(stream_audio(url, decode_audio(jfk_wav)[:16000], speed=4.0))
    assert result.error is not None and "whisper translation backend cannot translate" in result.error
    assert "into German: Whisper translates into English only" in result.error


def test_english_speech_into_portuguese_with_bergamot(bergamot_server, jfk_wav) -> None:
    url = bergamot_server.ws + "?target_language=pt-BR"
    result = run(stream_audio(url, decode_audio(jfk_wav), speed=1.5))
    lines = check_translated(result, "en", "pt")
    portuguese = " ".join(line["translation"] for line in lines).lower()
    # "ask not what your country can do for you"
    assert "país" in portuguese and "americanos" in portuguese, portuguese
    # Without --translate-on-complete the uncommitted tail was translated live as well.
    assert any(m.data["buffer_translation"] for m in result.updates)


def test_direct_english_translation_writes_the_transcript_in_english(eval_root) -> None:
    """--direct-english-translation (the original's name): Whisper's task=translate is the ASR itself."""
    from whisperlivekit import TranscriptionEngine
    from whisperlivekit.server.app import create_app

    engine = TranscriptionEngine(model="base", pcm_input=True, direct_english_translation=True, store="none")
    audio = decode_audio(eval_root / "multi" / "fleurs_es" / "fleurs-es-002.ogg")
    with LiveServer(create_app(engine)) as server:
        result = run(stream_audio(server.ws + "?language=es", audio, speed=2.0))
    engine.close()
    lines = spoken(result.updates[-1].data)
    text = " ".join(line["text"] for line in lines)
    assert lines and language_of(text) == "en", text
    assert all(line["translation"] == "" for line in lines)  # no second pass
