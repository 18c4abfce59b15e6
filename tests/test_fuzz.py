"""Property-based fuzzing (hypothesis) of the audio decoding and of the /asr protocol handling.

The seeds are benchmarks/fuzz_corpus/ (real speech in every container the live decoder meets);
cases mutate them (byte flips, insertions, deletions, truncation) and cut them into random frames.
`WLK_FUZZ_EXAMPLES` sets the number of cases per property (the long run: benchmarks/fuzz.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import urllib.parse
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from conftest import REPO, LiveServer
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

CORPUS = REPO / "benchmarks" / "fuzz_corpus"
SEEDS = {path.name: path.read_bytes() for path in sorted(CORPUS.glob("seed.*"))}
EXAMPLES = int(os.environ.get("WLK_FUZZ_EXAMPLES", "40"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
MESSAGE_TYPES = {"config", "transcript", "warning", "error", "ready_to_stop"}
CLOSE_CODES = {1000, 1007, 1008, 1009, 4404, 4409, 4410}


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A seed file with a few byte-level mutations, or plain random bytes."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=30_000))
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(name for name in SEEDS if name != "seed.pcm")))])
    for _ in range(draw(st.integers(0, 12))):
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(("flip", "set", "insert", "delete", "truncate")))
        if op == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=64))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 64))]
        else:
            del data[pos:]
    return bytes(data)


def _cut(data: bytes, sizes: list[int]) -> list[bytes]:
    frames, pos, k = [], 0, 0
    while pos < len(data):
        size = sizes[k % len(sizes)] if sizes else len(data)
        frames.append(data[pos : pos + size])
        pos, k = pos + size, k + 1
    return frames


async def _decode(pcm: bool, frames: list[bytes]) -> tuple[list[np.ndarray], Exception | None]:
    from whisperlivekit.audio.decoder import AudioDecodeError, make_decoder

    decoder = make_decoder(pcm)
    for frame in frames:
        decoder.feed(frame)
    decoder.close()
    chunks: list[np.ndarray] = []

    async def drain() -> None:
        async for chunk in decoder:
            chunks.append(chunk)

    try:
        await asyncio.wait_for(drain(), 30)  # a hang is a failure (TimeoutError propagates)
    except AudioDecodeError as error:
        assert str(error).startswith("could not decode audio")
        return chunks, error
    finally:
        thread = getattr(decoder, "_thread", None)
        if thread is not None:
            thread.join(timeout=10)
            assert not thread.is_alive(), "the decoder thread outlived its stream"
    return chunks, None


def _check_audio(chunks: list[np.ndarray]) -> None:
    for chunk in chunks:
        assert chunk.dtype == np.float32 and chunk.ndim == 1
        assert np.all(np.isfinite(chunk)) and np.all(np.abs(chunk) <= 1.0)


@FUZZ
@given(data=mutated(), sizes=st.lists(st.integers(1, 8192), max_size=6))
def test_fuzz_compressed_decoder(data: bytes, sizes: list[int]) -> None:
    """Anything FFmpeg is fed ends cleanly or with AudioDecodeError: no crash, hang or stray thread."""
    chunks, _ = asyncio.run(_decode(False, _cut(data, sizes)))
    _check_audio(chunks)


@FUZZ
@given(data=st.one_of(st.binary(max_size=20_000), st.just(SEEDS["seed.pcm"])),
       sizes=st.lists(st.integers(1, 5000), max_size=6))  # fmt: skip
def test_fuzz_pcm_decoder(data: bytes, sizes: list[int]) -> None:
    """Raw PCM in any framing decodes to exactly the s16le samples, an odd last byte dropped."""
    chunks, error = asyncio.run(_decode(True, _cut(data, sizes)))
    assert error is None
    _check_audio(chunks)
    got = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    usable = len(data) - len(data) % 2
    expected = np.frombuffer(data[:usable], dtype="<i2").astype(np.float32) / 32768.0
    np.testing.assert_array_equal(got, expected)


@FUZZ
@given(headers=st.lists(st.tuples(st.binary(max_size=20), st.binary(max_size=200)), max_size=6),
       query=st.binary(max_size=200))  # fmt: skip
def test_fuzz_credentials_parsing(headers: list[tuple[bytes, bytes]], query: bytes) -> None:
    """Arbitrary Authorization/Cookie headers and query strings never crash the token check."""
    from whisperlivekit.server.auth import TokenChecker, credentials

    interesting = [(b"authorization", value) for _, value in headers] + [(b"cookie", v) for _, v in headers]
    offered = credentials({"query_string": query, "headers": headers + interesting})
    assert all(isinstance(token, str) for token in offered)
    checker = TokenChecker(["s3cret-token"])
    assert not any(checker.valid(token) for token in offered if token != "s3cret-token")


# -- the protocol, against a live server ------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[LiveServer]:
    from whisperlivekit import TranscriptionEngine
    from whisperlivekit.server.app import create_app

    engine = TranscriptionEngine(pcm_input=True)
    config = engine.config.replace(
        store=f"sqlite://{tmp_path_factory.mktemp('fuzz')}/s.db", max_message_bytes=16 * 1024, idle_timeout=5
    )
    with LiveServer(create_app(engine, config)) as live:
        yield live
    engine.close()


QUERY_NAMES = ("language", "target_language", "mode", "session_id", "sample_rate", "token", "x")
actions = st.one_of(
    st.binary(max_size=3200).map(lambda b: ("bytes", b)),
    st.binary(min_size=16 * 1024 + 1, max_size=17 * 1024).map(lambda b: ("bytes", b)),  # over the limit
    st.text(max_size=200).map(lambda t: ("text", t)),
    st.sampled_from([("text", '{"type": "stop"}'), ("text", "{}"), ("close", None), ("abort", None)]),
)


@FUZZ
@given(query=st.dictionaries(st.sampled_from(QUERY_NAMES), st.text(max_size=12), max_size=3),
       steps=st.lists(actions, max_size=8))  # fmt: skip
# Cases the long run found (benchmarks/fuzz.md), kept as regressions: a query warning sent before
# `config`; a text frame after the end of the stream answered after `ready_to_stop`.
@example(query={"x": ""}, steps=[])
@example(query={}, steps=[("bytes", b""), ("text", '{"type": "stop"}'), ("text", "")])
def test_fuzz_asr_protocol(server: LiveServer, query: dict[str, str], steps: list) -> None:
    """Random queries and frames: only protocol messages come back, the session ends with a known
    close code, and the server keeps serving."""
    url = f"{server.ws}?{urllib.parse.urlencode(query)}"
    messages, code, client_closed = asyncio.run(_play(url, steps))
    assert all(isinstance(m, dict) and m.get("type") in MESSAGE_TYPES for m in messages), messages
    if messages:
        assert messages[0]["type"] in ("config", "error")
    if not client_closed:
        assert code in CLOSE_CODES, (code, messages)
        if code == 1000:
            assert messages[-1]["type"] == "ready_to_stop"
        else:
            assert messages[-1]["type"] == "error"
    assert httpx.get(f"{server.http}/health", timeout=10).status_code == 200


async def _play(url: str, steps: list) -> tuple[list[dict], int | None, bool]:
    messages: list[dict] = []
    client_closed = False
    try:
        ws = await connect(url, max_size=None, ping_interval=None, open_timeout=30)
    except InvalidStatus:
        return messages, None, True  # e.g. a query that is not even a valid URL for the handshake

    async def receive() -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in ws:
                messages.append(json.loads(raw))

    receiver = asyncio.create_task(receive())
    try:
        for kind, payload in steps:
            if kind == "close":
                client_closed = True
                await ws.close()
                break
            if kind == "abort":
                client_closed = True
                ws.transport.abort()
                break
            await ws.send(payload)
        if not client_closed:
            await ws.send(b"")
    except ConnectionClosed:
        pass
    try:
        await asyncio.wait_for(receiver, 120)
    finally:
        ws.transport.abort()
    return messages, ws.close_code, client_closed
