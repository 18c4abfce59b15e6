"""The ASGI app: WebSocket `/asr`, `GET /health`, and the browser page at `/`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import TYPE_CHECKING

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from whisperlivekit.output.diff import DiffEncoder
from whisperlivekit.server.admission import CLOSE_TRY_AGAIN_LATER, Admission
from whisperlivekit.server.metrics import add_metrics_route
from whisperlivekit.server.sessions_api import (
    end_live_session,
    install_sessions,
    receive_guard,
    start_live_session,
)
from whisperlivekit.session import AudioProcessor

if TYPE_CHECKING:
    from whisperlivekit.config import Config
    from whisperlivekit.engine import TranscriptionEngine

logger = logging.getLogger(__name__)

# WebSocket close codes (RFC 6455).
CLOSE_NORMAL = 1000
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_INVALID_PAYLOAD = 1007
CLOSE_POLICY_VIOLATION = 1008
CLOSE_INTERNAL_ERROR = 1011


def create_app(engine: TranscriptionEngine | None = None, config: Config | None = None) -> FastAPI:
    """An app around `engine`, or around an engine built from `config` at start-up."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = app.state.engine is None  # an engine passed in belongs to the caller, who closes it
        if owned:
            from whisperlivekit.engine import TranscriptionEngine

            # Loading takes seconds: do it off the loop so /health answers meanwhile.
            app.state.engine = await asyncio.to_thread(TranscriptionEngine, config)
        yield
        if owned:
            app.state.engine.close()

    app = FastAPI(title="WhisperLiveKit", lifespan=lifespan)
    app.state.engine = engine
    app.state.admission = Admission()  # --max-sessions: one count per app, /asr and /v1/listen alike
    _include_integrations(app)
    install_sessions(app, config or (engine.config if engine is not None else None))  # store, auth
    add_metrics_route(app)

    @app.get("/health")
    async def health() -> JSONResponse:
        current: TranscriptionEngine | None = app.state.engine
        if current is None or not current.ready:
            return JSONResponse({"status": "loading", "models_loaded": False}, status_code=503)
        files = current.model_files
        return JSONResponse(
            {
                "status": "ok",
                "models_loaded": True,
                "model": current.config.model,
                "model_source": files.source if files else None,
                "policy": current.config.backend_policy,
                "pcm_input": current.config.pcm_input,
            }
        )

    @app.get("/")
    async def page() -> HTMLResponse:
        html = resources.files("whisperlivekit.web").joinpath("index.html").read_text(encoding="utf-8")
        return HTMLResponse(html)

    # The page's scripts, styles and AudioWorklet (ES modules, no build step).
    app.mount("/web", StaticFiles(packages=[("whisperlivekit", "web")]), name="web")

    @app.websocket("/asr")
    async def asr(websocket: WebSocket) -> None:
        await websocket.accept()
        current: TranscriptionEngine | None = app.state.engine
        if current is None:
            await _refuse(websocket, "the server is still loading its models", CLOSE_INTERNAL_ERROR)
            return
        with app.state.admission.seat(current) as refusal:
            if refusal:
                await _refuse(websocket, refusal, CLOSE_TRY_AGAIN_LATER)
            else:
                await run_session(websocket, current)

    return app


def _include_integrations(app: FastAPI) -> None:
    """The APIs other tools already speak: OpenAI's file transcription, Deepgram's live WebSocket."""
    from whisperlivekit.server.deepgram import create_deepgram_router
    from whisperlivekit.server.openai_api import create_openai_router

    app.include_router(create_openai_router())
    app.include_router(create_deepgram_router())


async def run_session(websocket: WebSocket, engine: TranscriptionEngine) -> None:
    """Pump one client's audio into an AudioProcessor and its updates back out."""
    params = websocket.query_params
    mode = params.get("mode", "full")
    if mode not in ("full", "diff"):
        await _refuse(websocket, f"unknown mode {mode!r}: use full or diff", CLOSE_POLICY_VIOLATION)
        return
    try:
        processor = AudioProcessor(
            engine, language=params.get("language"), target_language=params.get("target_language")
        )
    except ValueError as error:
        await _refuse(websocket, str(error), CLOSE_POLICY_VIOLATION)
        return
    recorder = await start_live_session(websocket, processor)  # id, resume, query; sends `config`
    if recorder is None:
        return
    updates = recorder.wrap(await processor.create_tasks())  # stored before sent
    encoder = DiffEncoder() if mode == "diff" else None
    sender = asyncio.create_task(_send_updates(websocket, updates, encoder))
    receive = receive_guard(websocket)  # message size, idle and session-length limits
    try:
        while not sender.done():
            receiving = asyncio.ensure_future(receive())
            done, _ = await asyncio.wait({receiving, sender}, return_when=asyncio.FIRST_COMPLETED)
            if receiving not in done:
                receiving.cancel()
                break
            message = receiving.result()
            if message["type"] == "websocket.disconnect":
                logger.info("client disconnected mid-stream")
                break
            if message.get("bytes") is not None:
                await processor.process_audio(message["bytes"])
            elif message.get("text") is not None:
                await _on_text(websocket, processor, message["text"])
        if sender.done() and sender.exception() is None:
            code = CLOSE_INVALID_PAYLOAD if sender.result() else CLOSE_NORMAL
            # Everything is stored and sent: no longer live *before* the close, so a client that
            # reconnects at once to resume it is not refused as "live on another connection".
            await end_live_session(websocket, recorder, processor)
            with contextlib.suppress(Exception):
                await websocket.close(code)
    except WebSocketDisconnect:
        logger.info("client disconnected")
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await sender
        await processor.cleanup()
        await end_live_session(websocket, recorder, processor)  # idempotent: a client that vanished ends here


async def _send_updates(
    websocket: WebSocket, updates: AsyncIterator[dict], encoder: DiffEncoder | None = None
) -> bool:
    """Forward updates until the session ends; True when it ended on an error.

    With an encoder (`mode=diff`), transcript updates go out as a snapshot and then diffs.
    """
    failed = False
    async for update in updates:
        failed = failed or update.get("type") == "error"
        if encoder is not None and update.get("type") == "transcript":
            update = encoder.encode(update)
        await websocket.send_json(update)
    return failed


async def _on_text(websocket: WebSocket, processor: AudioProcessor, text: str) -> None:
    """Text frames are not audio; `{"type": "stop"}` is accepted as the end of the stream."""
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict) and data.get("type") == "stop":
        await processor.process_audio(b"")
        return
    await websocket.send_json(
        {"type": "warning", "warning": "text frames are ignored: send audio as binary frames"}
    )


async def _refuse(websocket: WebSocket, reason: str, code: int) -> None:
    with contextlib.suppress(Exception):
        await websocket.send_json({"type": "error", "error": reason})
        await websocket.close(code)
