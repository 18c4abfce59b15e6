"""Admission (`--max-sessions`, one count for /asr and /v1/listen) and backpressure (`--max-lag`)
with the real model on real speech."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import httpx
import pytest
from conftest import JFK, LiveServer
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from whisperlivekit.bench.metrics import wer
from whisperlivekit.client import decode_audio, stream_audio, to_pcm16


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


def _live_count(server: LiveServer) -> int:
    return server.server.config.app.state.admission.live


def _wait_for_live_count(server: LiveServer, count: int) -> None:
    """A session leaves the count in its handler's last step, just after its close frame went out."""
    deadline = time.monotonic() + 10
    while _live_count(server) != count:
        assert time.monotonic() < deadline, f"{_live_count(server)} live sessions, expected {count}"
        time.sleep(0.02)


def test_a_full_server_refuses_with_1013_and_admits_again_when_a_session_ends(server, jfk_wav) -> None:
    samples = decode_audio(jfk_wav)
    before = httpx.get(f"{server.http}/metrics").text

    async def scenario() -> None:
        first = asyncio.create_task(stream_audio(server.ws, samples, speed=2.0))
        await asyncio.sleep(1.0)  # the first session is live
        message, code = await refused(server.ws)
        assert message["type"] == "error" and "server full" in message["error"], message
        assert "--max-sessions" in message["error"]
        assert code == 1013
        result = await first
        assert result.error is None and wer(JFK, result.final_text) <= 0.1  # the live one is untouched
        await asyncio.to_thread(_wait_for_live_count, server, 0)
        again = await stream_audio(server.ws, samples[: 3 * 16000], speed=4.0)
        assert again.error is None and again.final_text

    asyncio.run(scenario())
    after = httpx.get(f"{server.http}/metrics").text
    refusals = 'wlk_sessions_refused_total{reason="capacity"}', 'wlk_errors_total{kind="refused_capacity"}'
    for name in refusals:
        assert _value(after, name) == _value(before, name) + 1, name


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
    ]  # fmt: skip
    assert LagWatch(0).check(100) is None


def _value(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


# -- /v1/listen shares the count ------------------------------------------------------------------

LISTEN = "/v1/listen?encoding=linear16&sample_rate=16000&language=en"


async def _listen(url: str, pcm: bytes) -> tuple[list[dict], int | None]:
    """A plain Deepgram client: `pcm` in 100 ms chunks at 4x real time, CloseStream, every message."""
    async with connect(url) as ws:
        for offset in range(0, len(pcm), 3200):
            await ws.send(pcm[offset : offset + 3200])
            await asyncio.sleep(0.025)
        await ws.send(json.dumps({"type": "CloseStream"}))
        messages = [json.loads(raw) async for raw in ws]
        return messages, ws.close_code


def test_asr_and_listen_share_one_max_sessions_count(server, jfk_wav) -> None:
    """--max-sessions 1: a live /asr session keeps /v1/listen out and the other way round; whichever
    ends, the other gets in."""
    listen_url = f"ws://127.0.0.1:{server.port}{LISTEN}"
    pcm = to_pcm16(decode_audio(jfk_wav)[: 4 * 16000])  # "And so, my fellow Americans"
    before = httpx.get(f"{server.http}/metrics").text

    async def scenario() -> None:
        async with connect(server.ws) as asr:  # /asr holds the only place
            assert json.loads(await asr.recv())["type"] == "config"
            assert _live_count(server) == 1
            message, code = await refused(listen_url)
            assert message["type"] == "Error" and "server full" in message["description"], message
            assert "--max-sessions" in message["description"] and message["message"] == "TOO_MANY_REQUESTS"
            assert code == 1013
            assert _live_count(server) == 1  # the refusal took no place and left none
            await asr.send(b"")
            async for _ in asr:
                pass
        await asyncio.to_thread(_wait_for_live_count, server, 0)
        messages, code = await _listen(listen_url, pcm)  # admitted now
        assert code == 1000 and messages[-1]["type"] == "Metadata"
        finals = [m["channel"]["alternatives"][0]["transcript"] for m in messages if m["type"] == "Results"]
        assert "americans" in " ".join(finals).lower(), finals

        await asyncio.to_thread(_wait_for_live_count, server, 0)
        async with connect(listen_url) as listen:  # now /v1/listen holds it
            await listen.send(pcm[:16000])
            deadline = time.monotonic() + 10
            while _live_count(server) != 1:  # the handshake returns before the handler counts itself
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            message, code = await refused(server.ws)
            assert message["type"] == "error" and "server full" in message["error"], message
            assert code == 1013
            await listen.send(json.dumps({"type": "CloseStream"}))
            async for _ in listen:
                pass
            assert listen.close_code == 1000
        await asyncio.to_thread(_wait_for_live_count, server, 0)
        result = await stream_audio(server.ws, decode_audio(jfk_wav)[: 3 * 16000], speed=4.0)
        assert result.error is None and result.final_text  # admitted

    asyncio.run(scenario())
    after = httpx.get(f"{server.http}/metrics").text
    name = 'wlk_sessions_refused_total{reason="capacity"}'
    assert _value(after, name) == _value(before, name) + 2  # both refusals counted


def test_a_listen_client_that_vanishes_leaves_its_place(server, jfk_wav) -> None:
    """No CloseStream, no close frame: the socket just drops mid-stream; the place is free again."""
    listen_url = f"ws://127.0.0.1:{server.port}{LISTEN}"
    pcm = to_pcm16(decode_audio(jfk_wav)[: 2 * 16000])

    async def scenario() -> None:
        ws = await connect(listen_url)
        for offset in range(0, len(pcm), 3200):
            await ws.send(pcm[offset : offset + 3200])
        ws.transport.abort()  # TCP reset: the server sees a disconnect, not a close handshake

    asyncio.run(scenario())
    _wait_for_live_count(server, 0)
    sessions = server.server.config.app.state.sessions
    deadline = time.monotonic() + 10
    while sessions.processors:  # and it is no longer a live session for the store
        assert time.monotonic() < deadline, sessions.processors
        time.sleep(0.02)
