"""The server end to end: real model, real speech, real WebSocket on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics

import httpx
import numpy as np
import pytest
from conftest import JFK
from websockets.asyncio.client import connect

from whisperlivekit.bench.metrics import normalize, wer
from whisperlivekit.client import _webm_chunks, decode_audio, stream_audio

run = asyncio.run
UPDATE_KEYS = {
    "status",
    "lines",
    "buffer_transcription",
    "buffer_diarization",
    "buffer_translation",
    "remaining_time_transcription",
    "remaining_time_diarization",
}


@pytest.fixture(scope="module")
def jfk(jfk_wav) -> np.ndarray:
    return decode_audio(jfk_wav)


def check_protocol(result) -> None:
    """Every update is complete and committed lines only grow."""
    assert result.config is not None and result.config["type"] == "config"
    assert result.messages[-1].data == {"type": "ready_to_stop"}
    previous: list[dict] = []
    for message in result.updates:
        update = message.data
        assert update.keys() >= UPDATE_KEYS
        lines = update["lines"]
        # Every line but the last is final; the last may only grow.
        assert lines[: max(0, len(previous) - 1)] == previous[:-1]
        for line in lines:
            assert isinstance(line["start"], (int, float)) and isinstance(line["end"], (int, float))
            assert 0 <= line["start"] <= line["end"]
            assert line["speaker"] in (1, -2)
        starts = [line["start"] for line in lines]
        assert starts == sorted(starts)
        previous = lines


def test_health_and_page(pcm_server) -> None:
    health = httpx.get(f"{pcm_server.http}/health").json()
    assert health["models_loaded"] is True and health["model"] == "tiny.en"
    page = httpx.get(pcm_server.http + "/")
    assert page.status_code == 200 and "/asr" in page.text


def test_jfk_pcm_streams_in_real_time(pcm_server, jfk) -> None:
    result = run(stream_audio(pcm_server.ws, jfk, speed=1.0))
    assert result.error is None
    assert result.config["useAudioWorklet"] is True
    check_protocol(result)
    assert wer(JFK, result.final_text) <= 0.1, result.final_text
    # Streaming, not batch: words were committed while the audio was still playing.
    early = [m for m in result.updates if m.t < result.t_end_of_audio and m.data["lines"]]
    assert early, "nothing committed before the end of the audio"
    assert result.drain_s is not None and result.drain_s < 5.0
    speech = [line for line in result.updates[-1].data["lines"] if line["speaker"] == 1]
    assert speech[0]["start"] < 1.5 and 9.0 < speech[-1]["end"] <= 11.1


def test_jfk_webm_opus_like_a_browser(webm_server, jfk) -> None:
    result = run(stream_audio(webm_server.ws, jfk, pcm=False, speed=2.0))
    assert result.error is None
    assert result.config["useAudioWorklet"] is False
    check_protocol(result)
    assert wer(JFK, result.final_text) <= 0.1, result.final_text


async def send_raw(
    url: str, frames: list[bytes | str], *, wait: bool = True, timeout: float = 60
) -> list[dict]:
    """Send frames as they are, then collect messages until the server closes or ready_to_stop."""
    messages: list[dict] = []
    async with connect(url, max_size=None) as ws:
        for frame in frames:
            await ws.send(frame)
        if not wait:
            return messages
        with contextlib.suppress(Exception):
            async with asyncio.timeout(timeout):
                async for raw in ws:
                    messages.append(json.loads(raw))
                    if messages[-1].get("type") == "ready_to_stop":
                        break
    return messages


def test_mp3_file_bytes(webm_server, eval_root) -> None:
    data = (eval_root / "classic" / "jfk.mp3").read_bytes()
    frames: list[bytes | str] = [data[i : i + 4096] for i in range(0, len(data), 4096)]
    messages = run(send_raw(webm_server.ws, [*frames, b""]))
    assert messages[-1] == {"type": "ready_to_stop"}
    final = [m for m in messages if m.get("type") == "transcript"][-1]
    text = " ".join(line["text"] for line in final["lines"])
    assert wer(JFK, text) <= 0.1, text


def test_bad_clients_leave_other_sessions_alone(webm_server, jfk) -> None:
    webm = b"".join(_webm_chunks(jfk, 0.25))

    async def scenario() -> None:
        good = asyncio.create_task(stream_audio(webm_server.ws, jfk, pcm=False, speed=1.0))
        await asyncio.sleep(1.0)

        garbage = await send_raw(webm_server.ws, [os.urandom(4096) for _ in range(16)] + [b""])
        assert garbage[-1]["type"] == "error" and "decode" in garbage[-1]["error"]

        truncated = await send_raw(webm_server.ws, [webm[: len(webm) * 6 // 10], b""])
        assert truncated[-1] == {"type": "ready_to_stop"}
        text = " ".join(line["text"] for line in truncated[-2]["lines"])
        # The cut is at 6.6 s of 11 s: the first half of the speech must be there, nothing after.
        assert (
            "and so my fellow" in normalize(text) and "your country" not in normalize(text).split("can")[-1]
        )

        texted = await send_raw(webm_server.ws, ["hello", webm[:30000], json.dumps({"type": "stop"})])
        assert any(m.get("type") == "warning" for m in texted)
        assert texted[-1] == {"type": "ready_to_stop"}

        empty_first = await send_raw(webm_server.ws, [b""])
        assert empty_first[-1] == {"type": "ready_to_stop"}

        await send_raw(webm_server.ws, [webm[: len(webm) // 2]], wait=False)  # vanishes mid-stream

        result = await good
        assert result.error is None
        assert wer(JFK, result.final_text) <= 0.1, result.final_text

    run(scenario())
    health = httpx.get(f"{webm_server.http}/health")
    assert health.status_code == 200


def test_unknown_or_impossible_language_is_refused(pcm_server) -> None:
    for language, reason in (("klingon", "unknown language"), ("de", "English-only")):
        messages = run(send_raw(f"{pcm_server.ws}?language={language}", []))
        assert messages[-1]["type"] == "error" and reason in messages[-1]["error"]


def test_random_pcm_is_just_noise(pcm_server) -> None:
    noise = os.urandom(16000 * 2 * 3 + 1)  # odd length on purpose
    messages = run(send_raw(pcm_server.ws, [noise[i : i + 3201] for i in range(0, len(noise), 3201)] + [b""]))
    assert messages[-1] == {"type": "ready_to_stop"}
    assert not any(m.get("type") == "error" for m in messages)


def test_silence_becomes_silence_lines(pcm_server, jfk) -> None:
    pause = np.zeros(16000 * 3, dtype=np.float32)
    result = run(stream_audio(pcm_server.ws, np.concatenate([jfk, pause, jfk]), speed=4.0))
    assert result.error is None
    lines = result.updates[-1].data["lines"]
    silences = [line for line in lines if line["speaker"] == -2]
    assert len(silences) == 1
    # jfk.wav ends with 0.6 s of room noise; the pause itself is 11.0-14.0 s.
    assert 10.0 < silences[0]["start"] <= 12.0 and 13.5 < silences[0]["end"] < 14.5
    assert wer(f"{JFK} {JFK}", result.final_text) <= 0.1


@pytest.mark.slow
def test_long_form_stream(pcm_server) -> None:
    from whisperlivekit.bench.dataset import load_set

    stream = load_set("en/hifitts_6097")
    result = run(stream_audio(pcm_server.ws, stream.samples, speed=2.0))
    assert result.error is None
    check_protocol(result)
    assert wer(stream.reference, result.final_text) <= 0.15
    lags = [m.data["remaining_time_transcription"] for m in result.updates]
    assert statistics.median(lags) < 5.0
