"""Validation of the security/storage options and of what a live client may send.

Kept apart from app.py so the rules (and their error texts) are in one place and testable alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

    from whisperlivekit.config import Config

SAMPLE_RATE = 16000
CLOSE_MESSAGE_TOO_BIG = 1009  # RFC 6455
# Query parameters /asr understands; anything else gets a warning (a typo must not pass silently).
KNOWN_QUERY = frozenset({"language", "target_language", "mode", "token", "session_id", "sample_rate"})


def check_security_options(config: Config) -> None:
    """Config.__post_init__ validation of the `# Security and storage` section."""
    if config.max_message_bytes < 1024:
        raise ValueError("max_message_bytes must be >= 1024")
    if config.max_session_seconds <= 0:
        raise ValueError("max_session_seconds must be > 0")
    if config.idle_timeout <= 0:
        raise ValueError("idle_timeout must be > 0")
    if config.resume_window < 0:
        raise ValueError("resume_window must be >= 0")
    if config.retention_days < 0:
        raise ValueError("retention_days must be >= 0 (0 keeps forever)")
    if config.shutdown_timeout < 0:
        raise ValueError("shutdown_timeout must be >= 0")
    if bool(config.ssl_certfile) != bool(config.ssl_keyfile):
        raise ValueError("ssl_certfile and ssl_keyfile go together")
    for path in (config.ssl_certfile, config.ssl_keyfile):
        if path and not os.path.isfile(path):
            raise ValueError(f"TLS file not found: {path}")
    if config.api_token is not None and not parse_tokens(config.api_token):
        raise ValueError("api_token is empty")
    from whisperlivekit.store import check_store_url

    check_store_url(config.store)


def parse_tokens(value: str | None) -> tuple[str, ...]:
    """`a,b , c` -> ('a', 'b', 'c'); None or blank -> ()."""
    if not value:
        return ()
    return tuple(token.strip() for token in value.split(",") if token.strip())


def parse_origins(value: str | None) -> list[str]:
    return [origin.strip() for origin in (value or "").split(",") if origin.strip()]


@dataclass
class QueryCheck:
    error: str | None = None
    warnings: list[str] = field(default_factory=list)


def check_asr_query(params: Mapping[str, str], pcm_input: bool) -> QueryCheck:
    """Refuse what cannot work (a PCM rate other than 16 kHz); warn about names /asr ignores."""
    result = QueryCheck()
    rate = params.get("sample_rate")
    if rate is not None:
        try:
            value = int(rate)
        except ValueError:
            result.error = f"invalid sample_rate {rate!r}: expected an integer"
            return result
        if pcm_input and value != SAMPLE_RATE:
            result.error = (
                f"this server takes raw PCM s16le at {SAMPLE_RATE} Hz mono; sample_rate={value} "
                "cannot be used: resample on the client (or use /v1/listen with encoding=linear16)"
            )
            return result
    unknown = sorted(set(params) - KNOWN_QUERY)
    if unknown:
        result.warnings.append(f"unknown query parameter(s) ignored: {', '.join(unknown)}")
    return result


def too_big(size: int, limit: int) -> str:
    return f"message of {size} bytes exceeds the limit of {limit} bytes (--max-message-bytes)"


class ReceiveGuard:
    """`websocket.receive()` with the session limits applied, for the /asr receive loop.

    * a message over `max_bytes`: an error, close 1009;
    * nothing received for `idle_timeout` s before the stream's end (a stalled or slow-loris
      client holding a session open): an error, close 1008;
    * past `max_session_seconds`: a warning, then an end of stream is injected, so the session
      drains normally (last update, `ready_to_stop`);
    * after the end of the stream every frame is ignored (no warning may follow `ready_to_stop`).
    A refusal is returned as a `websocket.disconnect` message: the loop then ends the session.
    """

    def __init__(
        self, websocket: Any, max_bytes: int, max_session_seconds: float, idle_timeout: float
    ) -> None:
        self.websocket = websocket
        self.max_bytes = max_bytes
        self.max_session_seconds = max_session_seconds
        self.idle_timeout = idle_timeout
        self.started = self.last = time.monotonic()
        self.stream_ended = False  # after the end of stream, waiting on the server is not idling

    async def receive(self) -> dict[str, Any]:
        while self.stream_ended:
            message = await self.websocket.receive()
            if message["type"] != "websocket.receive":
                return message
            # The stream has ended: later frames are ignored, so nothing follows `ready_to_stop`.
        end_at = self.started + self.max_session_seconds
        idle_at = self.last + self.idle_timeout
        # Which deadline a timeout means is decided now: uvloop's timers have millisecond
        # resolution and may fire just before `end_at` by the clock (seen: an idle error at 3.0 s).
        session_over_first = end_at <= idle_at
        try:
            message = await asyncio.wait_for(
                self.websocket.receive(), max(0.0, min(end_at, idle_at) - time.monotonic())
            )
        except asyncio.TimeoutError:
            self.stream_ended = True
            if session_over_first:
                await self._send(
                    "warning",
                    f"the session reached --max-session-seconds ({self.max_session_seconds:g} s): "
                    "its stream ends here",
                )
                return {"type": "websocket.receive", "bytes": b""}
            return await self._refuse(
                f"no data for {self.idle_timeout:g} s (--idle-timeout): closing the session", 1008
            )
        self.last = time.monotonic()
        return await self._checked(message)

    async def _checked(self, message: dict[str, Any]) -> dict[str, Any]:
        data = message.get("bytes")
        text = message.get("text")
        size = len(data) if data is not None else len(text.encode("utf-8", "replace")) if text else 0
        if size > self.max_bytes:
            self.stream_ended = True
            return await self._refuse(too_big(size, self.max_bytes), CLOSE_MESSAGE_TOO_BIG)
        if data == b"" or (text is not None and _is_stop(text)):
            self.stream_ended = True
        return message

    async def _send(self, kind: str, text: str) -> None:
        with contextlib.suppress(Exception):
            await self.websocket.send_json({"type": kind, kind: text})

    async def _refuse(self, reason: str, code: int) -> dict[str, Any]:
        await self._send("error", reason)
        with contextlib.suppress(Exception):
            await self.websocket.close(code, reason[:120])
        return {"type": "websocket.disconnect", "code": code}


def _is_stop(text: str) -> bool:
    if len(text) > 256:
        return False
    try:
        data = json.loads(text)
    except ValueError:
        return False
    return isinstance(data, dict) and data.get("type") == "stop"
