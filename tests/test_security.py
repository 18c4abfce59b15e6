"""API tokens on every endpoint, CORS, the browser cookie, limits; against a real server on loopback."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
from pathlib import Path

import httpx
import pytest
from conftest import REPO, LiveServer
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from whisperlivekit.client import decode_audio, stream_audio

TOKENS = "alpha-token,beta-token"


@pytest.fixture(scope="module")
def engine():
    from whisperlivekit import TranscriptionEngine

    engine = TranscriptionEngine(pcm_input=True)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def server(engine, tmp_path_factory):
    from whisperlivekit.server.app import create_app

    config = engine.config.replace(
        api_token=TOKENS,
        cors_origins="https://app.example",
        store=f"sqlite://{tmp_path_factory.mktemp('store')}/sessions.db",
        max_message_bytes=64 * 1024,
    )
    with LiveServer(create_app(engine, config)) as live:
        yield live


async def _close_of(url: str, headers: dict[str, str] | None = None) -> tuple[int | None, list[dict]]:
    messages: list[dict] = []
    async with connect(url, additional_headers=headers or {}, open_timeout=10) as ws:
        try:
            async for frame in ws:
                messages.append(json.loads(frame))
        except ConnectionClosed:
            pass
    return ws.close_code, messages


def test_http_endpoints_need_a_valid_token(server: LiveServer) -> None:
    base = server.http
    assert httpx.get(f"{base}/v1/models").status_code == 401
    refused = httpx.get(f"{base}/v1/models", headers={"Authorization": "Bearer nope"})
    assert refused.status_code == 401 and refused.json()["error"]["message"] == "invalid API token"
    assert refused.headers["www-authenticate"].startswith("Bearer")
    assert httpx.get(f"{base}/v1/models", headers={"Authorization": "Bearer alpha-token"}).status_code == 200
    assert httpx.get(f"{base}/v1/models?token=beta-token").status_code == 200  # either token
    assert httpx.get(f"{base}/v1/models", headers={"Authorization": "Token beta-token"}).status_code == 200
    assert httpx.get(f"{base}/v1/models?token=alpha-tokenX").status_code == 401  # no prefix match
    assert httpx.post(f"{base}/v1/audio/transcriptions").status_code == 401  # before any parsing
    assert httpx.get(f"{base}/v1/sessions/anything").status_code == 401
    assert httpx.delete(f"{base}/v1/sessions/anything").status_code == 401
    assert httpx.get(f"{base}/metrics").status_code in (401, 404)  # covered if present
    # Open: liveness and the page's static code (no data).
    assert httpx.get(f"{base}/health").status_code == 200
    assert httpx.get(f"{base}/").status_code == 200


@pytest.mark.parametrize("path", ["/asr", "/v1/listen"])
@pytest.mark.parametrize("credential", [None, "?token=wrong", "header"])
async def test_websockets_refused_with_4401(server: LiveServer, path: str, credential: str | None) -> None:
    url = f"ws://127.0.0.1:{server.port}{path}"
    headers = None
    if credential == "header":
        headers = {"Authorization": "Bearer wrong"}
    elif credential:
        url += credential
    code, messages = await _close_of(url, headers)
    assert code == 4401
    assert [m["type"] for m in messages] == ["error"]
    assert "token" in messages[0]["error"]


async def test_good_token_streams_and_its_session_is_readable(server: LiveServer, jfk_wav: Path) -> None:
    audio = decode_audio(jfk_wav)
    result = await stream_audio(f"{server.ws}?token=beta-token", audio, speed=3.0)
    assert result.error is None, result.error
    assert "country" in result.final_text.lower()
    session_id = result.config["session_id"]
    headers = {"Authorization": "Bearer alpha-token"}
    srt = httpx.get(f"{server.http}/v1/sessions/{session_id}?format=srt", headers=headers)
    assert srt.status_code == 200 and "-->" in srt.text and "country" in srt.text.lower()
    assert httpx.get(f"{server.http}/v1/sessions/{session_id}?format=srt").status_code == 401


async def test_bearer_header_opens_a_websocket(server: LiveServer) -> None:
    async with connect(server.ws, additional_headers={"Authorization": "Bearer alpha-token"}) as ws:
        config = json.loads(await ws.recv())
        assert config["type"] == "config" and config["session_id"]
        await ws.send(b"")
        types = [json.loads(frame)["type"] async for frame in ws]
    assert types[-1] == "ready_to_stop"


async def test_page_with_token_sets_a_cookie_the_websocket_accepts(server: LiveServer) -> None:
    page = httpx.get(f"{server.http}/?token=alpha-token")
    cookie = page.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "set-cookie" not in httpx.get(f"{server.http}/?token=wrong").headers  # bad token: no cookie
    value = cookie.split(";")[0]
    async with connect(server.ws, additional_headers={"Cookie": value}) as ws:
        assert json.loads(await ws.recv())["type"] == "config"
    code, _ = await _close_of(server.ws, {"Cookie": "wlk_token=forged"})
    assert code == 4401


def test_cors_preflight_allows_only_the_configured_origin(server: LiveServer) -> None:
    ask = {"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"}
    allowed = httpx.options(f"{server.http}/v1/models", headers={"Origin": "https://app.example", **ask})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    other = httpx.options(f"{server.http}/v1/models", headers={"Origin": "https://evil.example", **ask})
    assert "access-control-allow-origin" not in other.headers


async def test_oversized_message_is_refused_with_1009(server: LiveServer, jfk_wav: Path) -> None:
    async with connect(f"{server.ws}?token=alpha-token", max_size=None) as ws:
        assert json.loads(await ws.recv())["type"] == "config"
        await ws.send(b"\0" * (64 * 1024 + 2))
        messages = []
        with pytest.raises(ConnectionClosed):
            while True:
                messages.append(json.loads(await ws.recv()))
    assert ws.close_code == 1009
    assert any("--max-message-bytes" in m.get("error", "") for m in messages)


def test_token_checker_compares_every_token() -> None:
    from whisperlivekit.server.auth import TokenChecker

    checker = TokenChecker(["a" * 32, "b" * 32])
    assert checker.valid("a" * 32) and checker.valid("b" * 32)
    assert not checker.valid("a" * 31) and not checker.valid("") and not checker.valid(None)
    assert not checker.valid("é" * 32)  # non-ASCII is compared as bytes, not rejected with a crash


def test_config_reads_the_token_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from whisperlivekit.config import Config

    monkeypatch.setenv("WLK_API_TOKEN", "from-env")
    assert Config().api_token == "from-env"
    assert Config(api_token="explicit").api_token == "explicit"
    monkeypatch.delenv("WLK_API_TOKEN")
    assert Config().api_token is None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"ssl_certfile": "/nonexistent.pem"}, "go together"),
        ({"ssl_certfile": "/nonexistent.pem", "ssl_keyfile": "/nonexistent.key"}, "not found"),
        ({"api_token": " , "}, "empty"),
        ({"store": "mysql://x"}, "store"),
        ({"max_message_bytes": 10}, "max_message_bytes"),
        ({"idle_timeout": 0}, "idle_timeout"),
    ],
)
def test_bad_security_options_fail_at_start(options: dict, message: str) -> None:
    from whisperlivekit.config import Config

    with pytest.raises(ValueError, match=message):
        Config(**options)


def test_short_load_every_bad_refused_every_good_served(server: LiveServer) -> None:
    """2 s at 100 attempts/s (the 30 s, 200/s run is benchmarks/load_auth.py, see load_auth.md)."""
    spec = importlib.util.spec_from_file_location("load_auth", REPO / "benchmarks" / "load_auth.py")
    assert spec and spec.loader
    load_auth = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("load_auth", load_auth)  # dataclasses look their module up
    spec.loader.exec_module(load_auth)
    result = asyncio.run(load_auth.run_load(server.http, "alpha-token", rate=100, seconds=2))
    assert result.failures == []
    assert result.attempts == result.ok and sum(result.attempts.values()) == 200


async def test_max_session_seconds_ends_the_stream_with_a_warning(engine, jfk_wav: Path) -> None:
    from whisperlivekit.server.app import create_app

    config = engine.config.replace(store="none", max_session_seconds=3.0)
    with LiveServer(create_app(engine, config)) as live:
        result = await stream_audio(live.ws, decode_audio(jfk_wav), speed=1.0, ready_timeout=30)
    warnings = [m.data["warning"] for m in result.messages if m.type == "warning"]
    seen = (result.error, [(round(m.t, 2), m.type) for m in result.messages if m.type != "transcript"])
    assert any("--max-session-seconds" in warning for warning in warnings), seen
    assert result.t_ready_to_stop is not None and result.t_ready_to_stop < 8  # ended, did not run 11 s
    assert "fellow" in result.final_text.lower()  # what came before the limit is transcribed
