"""Admission (`--max-sessions`) and backpressure (`--max-lag`) with the real model on real speech."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import httpx
import pytest
from conftest import JFK, LiveServer
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from whisperlivekit.bench.metrics import wer
from whisperlivekit.client import decode_audio, stream_audio


@pytest.fixture(scope="module")
def engine():
    from whisperlivekit import TranscriptionEngine

    engine = TranscriptionEngine(pcm_input=True, max_sessions=1, max_lag=1.0)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def server(engine) -> Iterator[LiveServer]:
    from whisperlivekit.server.app import create_app

    with LiveServer(create_app(engine)) as server:
        yield server


async def refused(url: str) -> tuple[dict, int | None]:
    async with connect(url) as ws:
        message = json.loads(await ws.recv())
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
        return message, closed.value.rcvd.code if closed.value.rcvd else None


def test_a_full_server_refuses_with_1013_and_admits_again_when_a_session_ends(server, jfk_wav) -> None:
    samples = decode_audio(jfk_wav)

    async def scenario() -> None:
        first = asyncio.create_task(stream_audio(server.ws, samples, speed=2.0))
        await asyncio.sleep(1.0)  # the first session is live
        message, code = await refused(server.ws)
        assert message["type"] == "error" and "server full" in message["error"], message
        assert "--max-sessions" in message["error"]
        assert code == 1013
        result = await first
        assert result.error is None and wer(JFK, result.final_text) <= 0.1  # the live one is untouched
        again = await stream_audio(server.ws, samples[: 3 * 16000], speed=4.0)
        assert again.error is None and again.final_text

    asyncio.run(scenario())
    metrics = httpx.get(f"{server.http}/metrics").text
    assert 'wlk_sessions_refused_total{reason="capacity"} 1.0' in metrics
    assert 'wlk_errors_total{kind="refused_capacity"} 1.0' in metrics


def test_a_model_slower_than_the_audio_drops_nothing_and_says_it_is_behind(server, jfk_wav) -> None:
    """At 10x real time the model cannot keep up: the lag shows, a warning comes, every word lands."""
    samples = decode_audio(jfk_wav)
    before = httpx.get(f"{server.http}/metrics").text
    result = asyncio.run(stream_audio(server.ws, samples, speed=10.0))
    assert result.error is None
    lags = [m.data["remaining_time_transcription"] for m in result.updates]
    assert max(lags) > 1.0, lags  # behind, and saying so
    assert lags[-1] == 0  # caught up by the end
    warnings = [m.data["warning"] for m in result.messages if m.type == "warning"]
    assert len(warnings) == 1 and "behind" in warnings[0] and "no audio is dropped" in warnings[0]
    assert wer(JFK, result.final_text) <= 0.1, result.final_text
    after = httpx.get(f"{server.http}/metrics").text
    assert _value(after, "wlk_lag_warnings_total") == _value(before, "wlk_lag_warnings_total") + 1
    received, done = (
        _value(after, name) - _value(before, name)
        for name in ("wlk_audio_received_seconds_total", "wlk_audio_transcribed_seconds_total")
    )
    assert received == pytest.approx(11.0, abs=0.01) and done == pytest.approx(received, abs=0.05)


def test_lag_watch_warns_once_until_the_lag_recovers() -> None:
    from whisperlivekit.backpressure import LagWatch

    watch = LagWatch(4.0)
    assert [watch.check(lag) is not None for lag in (1, 4, 5, 6, 3, 5, 1.9, 4.5)] == [
        False, False, True, False, False, False, False, True,
    ]
    assert LagWatch(0).check(100) is None


def _value(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0
