"""Every malformed thing a client can send, against real servers on loopback (raw PCM and WebM).

Each bad client runs while a good client streams real speech to the same server, and the good
client's transcript must come out right: no bad input may disturb another session.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import LiveServer
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from whisperlivekit.client import _webm_chunks, decode_audio, stream_audio, to_pcm16

MAX_MESSAGE = 256 * 1024
IDLE_TIMEOUT = 2.0
EXPECTED_WORDS = {"fellow", "ask", "not", "country"}


@pytest.fixture(scope="module")
def pcm_engine_la():
    from whisperlivekit import TranscriptionEngine

    engine = TranscriptionEngine(pcm_input=True)
    yield engine
    engine.close()


def _server(engine: Any, tmp: Path) -> LiveServer:
    from whisperlivekit.server.app import create_app

    config = engine.config.replace(
        store=f"sqlite://{tmp}/sessions.db", max_message_bytes=MAX_MESSAGE, idle_timeout=IDLE_TIMEOUT
    )
    return LiveServer(create_app(engine, config))


@pytest.fixture(scope="module")
def pcm(pcm_engine_la, tmp_path_factory) -> Iterator[LiveServer]:
    with _server(pcm_engine_la, tmp_path_factory.mktemp("pcm")) as live:
        yield live


@pytest.fixture(scope="module")
def webm(webm_engine, tmp_path_factory) -> Iterator[LiveServer]:
    with _server(webm_engine, tmp_path_factory.mktemp("webm")) as live:
        yield live


@pytest.fixture(scope="module")
def jfk(jfk_wav: Path) -> np.ndarray:
    return decode_audio(jfk_wav)


def _words(text: str) -> set[str]:
    return set(re.sub(r"[^a-z ]", " ", text.lower()).split())


async def _alongside_good_session(
    server: LiveServer, jfk: np.ndarray, bad: Callable[[], Awaitable[Any]], pcm: bool = True
) -> Any:
    """Run `bad()` while a good client streams jfk; the good one must come out right. `bad()`'s result."""
    good, outcome = await asyncio.gather(stream_audio(server.ws, jfk, speed=2.5, pcm=pcm), bad())
    assert good.error is None, good.error
    assert _words(good.final_text) >= EXPECTED_WORDS, good.final_text
    return outcome


async def _session(
    url: str, frames: list[bytes | str], *, end: bool = True, pause: float = 0.0
) -> tuple[int | None, list[dict]]:
    """Send frames (then the empty frame), collect every message until the server closes."""
    messages: list[dict] = []
    async with connect(url, max_size=None, ping_interval=None, open_timeout=30) as ws:

        async def receive() -> None:
            with contextlib.suppress(ConnectionClosed):
                async for raw in ws:
                    messages.append(json.loads(raw))

        receiver = asyncio.create_task(receive())
        with contextlib.suppress(ConnectionClosed):
            for frame in frames:
                await ws.send(frame)
                await asyncio.sleep(pause)
            if end:
                await ws.send(b"")
        await asyncio.wait_for(receiver, 120)
    return ws.close_code, messages


def _types(messages: list[dict]) -> list[str]:
    return [m.get("type", "?") for m in messages]


async def test_random_bytes_in_pcm_mode_are_noise_not_a_crash(pcm: LiveServer, jfk: np.ndarray) -> None:
    noise = os.urandom(16000 * 2 * 4)  # 4 s of full-scale white noise as s16le

    async def bad() -> tuple[int | None, list[dict]]:
        return await _session(pcm.ws, [noise[i : i + 3200] for i in range(0, len(noise), 3200)], pause=0.02)

    code, messages = await _alongside_good_session(pcm, jfk, bad)
    assert code == 1000 and _types(messages)[-1] == "ready_to_stop"


async def test_random_bytes_in_webm_mode_get_a_decode_error(webm: LiveServer, jfk: np.ndarray) -> None:
    garbage = os.urandom(1_200_000)  # FFmpeg gives up probing after ~1 MB

    async def bad() -> tuple[int | None, list[dict]]:
        return await _session(webm.ws, [garbage[i : i + 60_000] for i in range(0, len(garbage), 60_000)])

    code, messages = await _alongside_good_session(webm, jfk, bad, pcm=False)
    assert code == 1007
    assert any("could not decode audio" in m.get("error", "") for m in messages)


async def test_webm_corrupted_after_a_valid_start(webm: LiveServer, jfk: np.ndarray) -> None:
    valid = b"".join(_webm_chunks(jfk[:32000], 0.1))
    broken = valid[:3000] + os.urandom(len(valid))  # a real header, then garbage clusters

    async def bad() -> tuple[int | None, list[dict]]:
        return await _session(webm.ws, [broken[i : i + 4000] for i in range(0, len(broken), 4000)])

    code, messages = await _alongside_good_session(webm, jfk, bad, pcm=False)
    assert code in (1000, 1007)  # decoded what it could, or a clear decode error
    assert _types(messages)[-1] in ("ready_to_stop", "error")
    if code == 1007:
        assert "could not decode audio" in messages[-1]["error"]


async def test_odd_length_pcm_frames_are_reassembled(pcm: LiveServer, jfk: np.ndarray) -> None:
    data = to_pcm16(jfk)
    sizes = [3201, 1, 999, 1601, 7]  # split samples across frames
    frames, pos, k = [], 0, 0
    while pos < len(data):
        frames.append(data[pos : pos + sizes[k % len(sizes)]])
        pos += sizes[k % len(sizes)]
        k += 1

    async def bad() -> tuple[int | None, list[dict]]:
        return await _session(pcm.ws, frames, pause=0.012)

    code, messages = await _alongside_good_session(pcm, jfk, bad)
    assert code == 1000
    last = [m for m in messages if m.get("type") == "transcript"][-1]
    assert _words(" ".join(line["text"] for line in last["lines"])) >= EXPECTED_WORDS


BAD_QUERIES = {
    "sample_rate=44100": "16000 Hz",
    "sample_rate=abc": "invalid sample_rate",
    "mode=bogus": "unknown mode",
    "language=xx-nope": "language",
    "session_id=": "unknown session",
    "session_id=../../etc/passwd": "unknown session",
}


async def test_bad_query_values_are_refused_clearly(pcm: LiveServer, jfk: np.ndarray) -> None:
    async def bad() -> list[tuple[int | None, list[dict]]]:
        return list(await asyncio.gather(*(_session(f"{pcm.ws}?{q}", [b"\0" * 3200]) for q in BAD_QUERIES)))

    outcomes = await _alongside_good_session(pcm, jfk, bad)
    for (code, messages), message in zip(outcomes, BAD_QUERIES.values(), strict=True):
        assert code in (1008, 4404)
        assert _types(messages) == ["error"] and message in messages[0]["error"]


async def test_unknown_query_names_get_a_warning_and_work(pcm: LiveServer, jfk: np.ndarray) -> None:
    result = await stream_audio(f"{pcm.ws}?colour=blue&sample_rate=16000", jfk[: 16000 * 5], speed=4)
    assert result.error is None
    warnings = [m.data["warning"] for m in result.messages if m.type == "warning"]
    assert warnings == ["unknown query parameter(s) ignored: colour"]
    assert "fellow" in _words(result.final_text)


async def test_huge_frames_are_refused_with_1009(pcm: LiveServer, jfk: np.ndarray) -> None:
    async def bad() -> tuple[int | None, list[dict]]:
        return await _session(pcm.ws, [b"\0" * 3200, os.urandom(MAX_MESSAGE + 1), b"\0" * 3200])

    code, messages = await _alongside_good_session(pcm, jfk, bad)
    assert code == 1009
    assert "--max-message-bytes" in messages[-1]["error"]


async def test_text_frames_get_warnings_and_the_session_goes_on(pcm: LiveServer, jfk: np.ndarray) -> None:
    audio = to_pcm16(jfk[: 16000 * 5])
    texts: list[bytes | str] = ["hello", "{not json", "[1, 2]", '{"type": "unknown"}', "\u0000\ufffd" * 100,
                                "x" * (MAX_MESSAGE // 2)]  # fmt: skip
    frames: list[bytes | str] = []
    for i, start in enumerate(range(0, len(audio), 3200)):
        frames.append(audio[start : start + 3200])
        if i < len(texts):
            frames.append(texts[i])

    async def bad() -> tuple[int | None, list[dict]]:
        return await _session(pcm.ws, frames, pause=0.02)

    code, messages = await _alongside_good_session(pcm, jfk, bad)
    assert code == 1000 and _types(messages).count("warning") == len(texts)
    assert "fellow" in _words(" ".join(line["text"] for line in messages[-2]["lines"]))


async def test_text_stop_frame_ends_the_stream(pcm: LiveServer) -> None:
    code, messages = await _session(pcm.ws, [b"\0" * 3200, json.dumps({"type": "stop"})], end=False)
    assert code == 1000 and _types(messages)[-1] == "ready_to_stop"


async def test_flood_of_tiny_frames(pcm: LiveServer, jfk: np.ndarray) -> None:
    data = to_pcm16(jfk[: 16000 * 2])
    frames = [data[i : i + 1] for i in range(len(data))]  # 64,000 one-byte frames, as fast as possible

    async def bad() -> tuple[int | None, list[dict]]:
        return await _session(pcm.ws, frames)

    code, messages = await _alongside_good_session(pcm, jfk, bad)
    assert code == 1000 and _types(messages)[-1] == "ready_to_stop"


async def test_slow_loris_clients(pcm: LiveServer, jfk: np.ndarray) -> None:
    """Half-sent handshakes held open, and WebSockets that connect then send nothing."""

    async def bad() -> list[tuple[int | None, list[dict]]]:
        loop = asyncio.get_running_loop()
        sockets = []
        for _ in range(30):
            sock = socket.create_connection(("127.0.0.1", pcm.port))
            sock.sendall(b"GET /asr HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n")  # never finished
            sockets.append(sock)

        async def silent() -> tuple[int | None, list[dict]]:
            return await _session(pcm.ws, [], end=False)

        async def trickle() -> None:
            for _ in range(20):  # a byte now and then: the handshake never completes
                for sock in sockets:
                    with contextlib.suppress(OSError):
                        await loop.sock_sendall(sock, b"X")
                await asyncio.sleep(0.2)

        idle = await asyncio.gather(*(silent() for _ in range(5)), trickle())
        for sock in sockets:
            sock.close()
        return idle[:-1]

    idle = await _alongside_good_session(pcm, jfk, bad)
    for code, messages in idle:
        assert code == 1008
        assert "--idle-timeout" in messages[-1]["error"]


async def test_abrupt_disconnects(pcm: LiveServer, jfk: np.ndarray) -> None:
    audio = to_pcm16(jfk[: 16000 * 3])

    async def bad() -> None:
        for when in ("before_handshake", "after_config", "mid_audio", "after_end"):
            for _ in range(3):
                if when == "before_handshake":
                    _, writer = await asyncio.open_connection("127.0.0.1", pcm.port)
                    writer.write(b"GET /asr HTTP/1.1\r\nHost: x\r\n")
                    writer.transport.abort()
                    continue
                ws = await connect(pcm.ws, ping_interval=None)
                await ws.recv()
                if when in ("mid_audio", "after_end"):
                    for i in range(0, len(audio), 3200):
                        await ws.send(audio[i : i + 3200])
                        await asyncio.sleep(0.005)
                if when == "after_end":
                    await ws.send(b"")
                ws.transport.abort()  # no close frame: the TCP connection just vanishes
                await asyncio.sleep(0.1)

    await _alongside_good_session(pcm, jfk, bad)
    sessions = pcm.server.config.app.state.sessions
    for _ in range(100):  # every vanished session is cleaned up
        if not sessions.processors:
            break
        await asyncio.sleep(0.1)
    assert not sessions.processors
