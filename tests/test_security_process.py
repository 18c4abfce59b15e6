"""A real `wlk serve` process: SIGTERM drains live sessions to `ready_to_stop`, refuses new
connections and exits; TLS (https and wss) with --ssl-certfile/--ssl-keyfile."""

from __future__ import annotations

import asyncio
import json
import signal
import ssl
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from test_store_crash import jfk, serve  # noqa: F401 -- fixtures
from websockets.asyncio.client import connect

from whisperlivekit.client import Message, stream_audio


async def test_sigterm_drains_live_sessions_then_exits(serve, tmp_path: Path, jfk: np.ndarray) -> None:  # noqa: F811
    server = serve("--store", f"sqlite://{tmp_path}/sessions.db", "--shutdown-timeout", "30")
    signalled = asyncio.Event()

    def on_message(message: Message) -> None:
        if message.type == "transcript" and not signalled.is_set() and message.data["lines"]:
            server.process.send_signal(signal.SIGTERM)
            signalled.set()

    started = time.monotonic()
    result = await stream_audio(server.ws, jfk, speed=1.0, on_message=on_message, ready_timeout=60)
    assert signalled.is_set()
    types = [message.type for message in result.messages]
    assert "error" not in types  # the client only notices its socket closing cleanly (1000)
    assert types[-1] == "ready_to_stop"  # drained: the last update, then ready_to_stop
    assert result.final_text  # what it heard before the signal is committed and sent
    assert time.monotonic() - started < 11  # it did not wait for the 11 s of audio to be sent
    with pytest.raises(httpx.HTTPError):  # no new connections
        httpx.get(f"{server.http}/health", timeout=2)
    # uvicorn re-raises the signal it handled once shut down: "killed by SIGTERM" after a clean exit.
    assert server.process.wait(timeout=40) in (0, -signal.SIGTERM)
    assert "Traceback" not in server.process.stdout.read()


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_tls_serves_https_and_wss_with_a_token(serve, tmp_path: Path) -> None:  # noqa: F811
    if subprocess.run(["which", "openssl"], capture_output=True).returncode:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = _self_signed(tmp_path)
    server = serve("--ssl-certfile", str(cert), "--ssl-keyfile", str(key), "--api-token", "tls-token",
                   "--store", "none", scheme="https")  # fmt: skip
    https = f"https://127.0.0.1:{server.port}"
    context = ssl.create_default_context(cafile=str(cert))
    assert httpx.get(f"{https}/v1/models", verify=context).status_code == 401
    assert httpx.get(f"{https}/v1/models?token=tls-token", verify=context).status_code == 200
    with pytest.raises(httpx.HTTPError):  # plain http on the TLS port is not served
        httpx.get(f"http://127.0.0.1:{server.port}/health", timeout=5)
    async with connect(f"wss://127.0.0.1:{server.port}/asr?token=tls-token", ssl=context) as ws:
        assert json.loads(await ws.recv())["type"] == "config"
        await ws.send(b"")
        types = [json.loads(frame)["type"] async for frame in ws]
    assert types[-1] == "ready_to_stop"
