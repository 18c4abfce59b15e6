"""Stored sessions over HTTP, and the glue that gives every live session (/asr, /v1/listen) an id
and a record.

`GET /v1/sessions/{id}?format=json|txt|srt|vtt` returns a session's transcript (json: with its
metadata); `DELETE /v1/sessions/{id}` deletes it. Both sit behind the API token like everything else.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from whisperlivekit.output.formats import format_lines
from whisperlivekit.store import open_store
from whisperlivekit.store.live import LiveSessions, ResumeError, SessionRecorder

if TYPE_CHECKING:
    from fastapi import WebSocket

    from whisperlivekit.config import Config
    from whisperlivekit.session import AudioProcessor

CLOSE_TRY_AGAIN_LATER = 1013  # RFC 6455: the server is shutting down
CLOSE_POLICY_VIOLATION = 1008
TEXT_TYPES = {"txt": "text/plain", "text": "text/plain", "srt": "application/x-subrip", "vtt": "text/vtt"}


def install_sessions(app: FastAPI, config: Config | None) -> None:
    """Open the store, add the sessions API, the token check and CORS; close the store at exit."""
    from whisperlivekit.config import Config
    from whisperlivekit.server.auth import install_security

    config = config or Config()

    store = open_store(config.store)
    app.state.sessions = LiveSessions(store, config.resume_window, config.retention_days)
    app.state.limits = config
    app.include_router(create_sessions_router())
    install_security(app, config.api_token, config.cors_origins)
    if store is None:
        return
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(application: Any) -> AsyncIterator[Any]:
        async with inner(application) as state:
            yield state
        store.close()

    app.router.lifespan_context = lifespan


def create_sessions_router() -> APIRouter:
    router = APIRouter()

    @router.get("/v1/sessions/{session_id}")
    async def get_session(session_id: str, request: Request, format: str = "json") -> Response:
        sessions: LiveSessions = request.app.state.sessions
        if format not in ("json", *TEXT_TYPES):
            return _error(400, f"unknown format {format!r}: use json, txt, srt or vtt")
        if sessions.store is None:
            return _error(404, "this server keeps no transcripts (--store none)")
        stored = await asyncio.to_thread(sessions.store.get, session_id)
        if stored is None:
            return _error(404, f"unknown session {session_id}")
        if format == "json":
            return JSONResponse({**stored.to_dict(), "live": session_id in sessions.processors})
        text = format_lines(stored.lines, "text" if format == "txt" else format)
        return PlainTextResponse(text, media_type=TEXT_TYPES[format])

    @router.delete("/v1/sessions/{session_id}")
    async def delete_session(session_id: str, request: Request) -> Response:
        sessions: LiveSessions = request.app.state.sessions
        if sessions.store is None:
            return _error(404, "this server keeps no transcripts (--store none)")
        if session_id in sessions.processors:
            return _error(409, f"session {session_id} is live: delete it once it has ended")
        if not await asyncio.to_thread(sessions.store.delete, session_id):
            return _error(404, f"unknown session {session_id}")
        return Response(status_code=204)

    return router


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "code": status}}, status_code=status)


def live_sessions(websocket: WebSocket) -> LiveSessions:
    """The app's live sessions; an app built without install_sessions gets ones with no store."""
    sessions: LiveSessions | None = getattr(websocket.app.state, "sessions", None)
    return sessions if sessions is not None else LiveSessions(None)


async def start_live_session(websocket: WebSocket, processor: AudioProcessor) -> SessionRecorder | None:
    """Check the query, register the session (new or resumed) and send the `config` message;
    None when it was refused (and closed)."""
    from whisperlivekit.server.limits import check_asr_query

    params = websocket.query_params
    check = check_asr_query(params, processor.pcm_input)
    if check.error:
        await _refuse(websocket, check.error, CLOSE_POLICY_VIOLATION)
        return None
    sessions = live_sessions(websocket)
    if sessions.draining:
        await _refuse(websocket, "the server is shutting down: reconnect later", CLOSE_TRY_AGAIN_LATER)
        return None
    meta = {k: v for k, v in params.items() if k in ("language", "target_language", "mode")}
    try:
        recorder = await sessions.begin(processor, params.get("session_id"), meta)
    except ResumeError as error:
        await _refuse(websocket, str(error), error.code)
        return None
    try:  # the config message comes first, then any warning about the query
        await websocket.send_json(
            {"type": "config", "useAudioWorklet": processor.pcm_input, "session_id": recorder.session_id}
        )
        for warning in [*check.warnings, *([recorder.problem] if recorder.problem else [])]:
            await websocket.send_json({"type": "warning", "warning": warning})
    except Exception:
        await end_live_session(websocket, recorder, processor)  # the client left already: do not hold its id
        raise
    return recorder


async def end_live_session(
    websocket: WebSocket, recorder: SessionRecorder, processor: AudioProcessor
) -> None:
    sessions: LiveSessions | None = getattr(websocket.app.state, "sessions", None)
    if sessions is not None:
        sessions.finish(recorder.session_id, processor)
    await recorder.close()


def receive_guard(websocket: WebSocket) -> Any:
    """The receive function the /asr loop uses: limits from the app's config."""
    from whisperlivekit.config import Config
    from whisperlivekit.server.limits import ReceiveGuard

    config: Config = getattr(websocket.app.state, "limits", None) or Config(store="none")
    return ReceiveGuard(
        websocket, config.max_message_bytes, config.max_session_seconds, config.idle_timeout
    ).receive


async def _refuse(websocket: WebSocket, reason: str, code: int) -> None:
    with contextlib.suppress(Exception):
        await websocket.send_json({"type": "error", "error": reason})
        await websocket.close(code, reason[:120])
