"""The multilingual base model: per-session language, detected once when `auto`."""

from __future__ import annotations

import asyncio

import pytest

from whisperlivekit.audio.decoder import load_audio
from whisperlivekit.bench.metrics import wer

DE_REFERENCE = (
    "für die besten aussichten auf hongkong sollten sie die insel verlassen und zum "
    "gegenüberliegenden ufer von kowloon fahren"
)


@pytest.fixture(scope="module")
def base_engine():
    from whisperlivekit import TranscriptionEngine

    engine = TranscriptionEngine(model="base", pcm_input=True, language="auto")
    yield engine
    engine.close()


async def transcribe(engine, audio, language: str | None) -> tuple[list[dict], str]:
    from whisperlivekit import AudioProcessor

    processor = AudioProcessor(engine, language=language)
    updates = await processor.create_tasks()
    pcm = (audio * 32767).astype("<i2").tobytes()
    for start in range(0, len(pcm), 3200):
        await processor.process_audio(pcm[start : start + 3200])
    await processor.process_audio(b"")
    last: dict = {}
    async for update in updates:
        if update["type"] == "transcript":
            last = update
    await processor.cleanup()
    lines = [line for line in last["lines"] if line["speaker"] > 0]
    return lines, " ".join(line["text"] for line in lines)


def test_german_detected_once_and_transcribed(base_engine, eval_root) -> None:
    audio = load_audio(eval_root / "multi" / "fleurs_de" / "fleurs-de-000.ogg")
    lines, text = asyncio.run(transcribe(base_engine, audio, None))
    assert {line["detected_language"] for line in lines} == {"de"}
    assert wer(DE_REFERENCE, text, language="de") <= 0.35, text


def test_session_language_overrides_the_server_default(base_engine, jfk_wav) -> None:
    lines, text = asyncio.run(transcribe(base_engine, load_audio(jfk_wav), "en"))
    reference = (
        "and so my fellow americans ask not what your country can do for you "
        "ask what you can do for your country"
    )
    assert wer(reference, text) <= 0.15, text
    assert {line["detected_language"] for line in lines} == {None}  # fixed, not detected
