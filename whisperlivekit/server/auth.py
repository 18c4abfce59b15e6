"""API tokens on every endpoint: one ASGI middleware in front of the whole app.

A middleware (not a per-route dependency) so that every router, present or future (/asr, the
OpenAI and Deepgram APIs, /v1/sessions), is covered without touching it. Credentials, any of:
  * query `?token=...` (the only way a browser WebSocket can carry one),
  * `Authorization: Bearer ...` (or `Token ...`, as Deepgram clients send it),
  * the `wlk_token` cookie, which `GET /?token=...` sets (HttpOnly, SameSite=Strict) so that the
    browser page served by this server can open its WebSocket without the token in its code.
Open without a token: `/health` (liveness, no data), `/` and `/web/*` (the page's static code, no
data). A refused HTTP request is a 401; a refused WebSocket is accepted then closed with 4401.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CLOSE_UNAUTHORIZED = 4401  # 4000-4999: application codes; 4401 mirrors HTTP 401
COOKIE = "wlk_token"
OPEN_PATHS = ("/health", "/", "/favicon.ico")
OPEN_PREFIXES = ("/web/",)


class TokenChecker:
    """Constant-time comparison against every allowed token."""

    def __init__(self, tokens: Sequence[str]) -> None:
        if not tokens:
            raise ValueError("at least one token is needed")
        self._tokens = [token.encode() for token in tokens]

    def valid(self, candidate: str | None) -> bool:
        if not candidate:
            return False
        given = candidate.encode("utf-8", "surrogateescape")
        matched = False
        for token in self._tokens:  # no early exit: the time does not tell which token matched
            matched |= hmac.compare_digest(given, token)
        return matched


def credentials(scope: Scope) -> list[str]:
    """Every token the request offers: query, Authorization header, cookie."""
    found: list[str] = []
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    found += query.get("token", [])
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, rest = value.decode("latin-1").partition(" ")
            if scheme.lower() in ("bearer", "token") and rest.strip():
                found.append(rest.strip())
        elif name == b"cookie":
            cookie: SimpleCookie = SimpleCookie()
            try:
                cookie.load(value.decode("latin-1"))
            except Exception:  # a malformed cookie header is not a credential, nor a crash
                continue
            if COOKIE in cookie:
                found.append(cookie[COOKIE].value)
    return found


class TokenAuth:
    """ASGI middleware: let a request through only with a valid token (or to an open path)."""

    def __init__(self, app: ASGIApp, tokens: Sequence[str]) -> None:
        self.app = app
        self.checker = TokenChecker(tokens)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        offered = credentials(scope)
        authorized = any([self.checker.valid(token) for token in offered])  # list: check them all
        path = scope.get("path", "")
        if authorized:
            if kind == "http" and path == "/" and _query_token(scope):
                send = _setting_cookie(send, _query_token(scope) or "", scope.get("scheme") == "https")
            await self.app(scope, receive, send)
        elif path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            await self.app(scope, receive, send)
        elif kind == "http":
            await _deny_http(send, _reason(offered))
        else:
            await _deny_websocket(receive, send, _reason(offered))


def _reason(offered: list[str]) -> str:
    return "invalid API token" if offered else "an API token is required (query token or Bearer header)"


def _query_token(scope: Scope) -> str | None:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
    return values[0] if values else None


def _setting_cookie(send: Send, token: str, secure: bool) -> Send:
    morsel = f"{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict" + ("; Secure" if secure else "")

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = dict(message)
            message["headers"] = [*message.get("headers", []), (b"set-cookie", morsel.encode("latin-1"))]
        await send(message)

    return wrapped


async def _deny_http(send: Send, reason: str) -> None:
    body = json.dumps({"error": {"message": reason, "type": "authentication_error", "code": 401}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"www-authenticate", b'Bearer realm="whisperlivekit"'),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _deny_websocket(receive: Receive, send: Send, reason: str) -> None:
    # Closing before accept() would be an HTTP 403 with no reason; accept, then close with 4401 so
    # the client sees an application code it can act on.
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": json.dumps({"type": "error", "error": reason})})
    await send({"type": "websocket.close", "code": CLOSE_UNAUTHORIZED, "reason": reason})


def install_security(app: Any, api_token: str | None, cors_origins: str | None) -> None:
    """Add the token check and CORS (outermost, so preflights are answered without a token)."""
    from whisperlivekit.server.limits import parse_origins, parse_tokens

    tokens = parse_tokens(api_token)
    if tokens:
        app.add_middleware(TokenAuth, tokens=tokens)
    origins = parse_origins(cors_origins)
    if origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["*"],
            allow_headers=["*"],
            allow_credentials="*" not in origins,
        )
