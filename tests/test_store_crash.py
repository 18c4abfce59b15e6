"""A real `wlk serve` process killed with SIGKILL mid-stream loses no committed line."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from whisperlivekit.client import Message, decode_audio, stream_audio


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServeProcess:
    def __init__(self, *options: str, scheme: str = "http") -> None:
        self.port = _free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "whisperlivekit.cli", "serve", "--pcm-input", "--host", "127.0.0.1",
             "--port", str(self.port), "--log-level", "WARNING", *options],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"wlk serve exited: {self.process.stdout.read()}")
            try:
                health = f"{scheme}://127.0.0.1:{self.port}/health"
                if httpx.get(health, timeout=2, verify=False).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.process.kill()
                raise RuntimeError("wlk serve did not become healthy")
            time.sleep(0.2)

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/asr"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[type[ServeProcess]]:
    started: list[ServeProcess] = []

    class Tracked(ServeProcess):
        def __init__(self, *options: str, scheme: str = "http") -> None:
            super().__init__(*options, scheme=scheme)
            started.append(self)

    yield Tracked
    for process in started:
        process.stop()


@pytest.fixture(scope="module")
def jfk(jfk_wav: Path) -> np.ndarray:
    return decode_audio(jfk_wav)


def _final_lines(lines: list[dict]) -> int:
    return sum(1 for line in lines[:-1] if line["text"])


async def test_sigkill_mid_stream_loses_no_committed_line(serve, tmp_path: Path, jfk: np.ndarray) -> None:
    store = f"sqlite://{tmp_path}/sessions.db"
    server = serve("--store", store)
    seen: list[dict] = []
    killed = asyncio.Event()

    def on_message(message: Message) -> None:
        if message.type == "transcript" and not killed.is_set():
            seen.append(message.data)
            if _final_lines(message.data["lines"]) >= 1:  # at least one final line, mid-stream
                os.kill(server.process.pid, signal.SIGKILL)
                killed.set()

    # A pause past the silence-line threshold (2 s) ends the first line whatever the model writes
    # (greedy tiny.en puts no full stop in jfk on some CPUs, and a line otherwise ends at one).
    audio = np.concatenate([jfk, np.zeros(3 * 16000, np.float32), jfk])
    result = await stream_audio(server.ws, audio, speed=1.5, on_message=on_message, ready_timeout=30)
    assert killed.is_set(), "no line was final before the end of the audio"
    assert result.t_ready_to_stop is None  # it really died mid-stream
    server.process.wait(timeout=30)
    session_id = result.config["session_id"]
    sent = seen[-1]["lines"]  # the last update that left the server before the kill

    restarted = serve("--store", store)
    stored = httpx.get(f"{restarted.http}/v1/sessions/{session_id}").json()
    lines = stored["lines"]
    assert lines[: len(sent) - 1] == sent[:-1]  # every final line, exactly
    assert lines[len(sent) - 1]["text"].startswith(sent[-1]["text"])  # the last one, maybe grown since
    assert not stored["ended"]  # it never ended: the record says so
