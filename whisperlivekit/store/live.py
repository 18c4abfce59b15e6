"""Live sessions and their record: ids, the store writes, resume, and the registry shutdown drains.

`SessionRecorder.wrap(updates)` sits between the AudioProcessor and the socket: each transcript
update's changed lines are written (and committed) *before* the update goes out, so every line a
client has seen survives a killed server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from whisperlivekit.output.transcript import Line

if TYPE_CHECKING:
    from whisperlivekit.session import AudioProcessor
    from whisperlivekit.store.base import Store

logger = logging.getLogger(__name__)

PURGE_EVERY = 3600.0  # seconds between retention sweeps (done lazily, at a session's start)
# Application close codes for a refused resume (docs/protocol.md).
CLOSE_UNKNOWN_SESSION = 4404
CLOSE_SESSION_BUSY = 4409
CLOSE_SESSION_EXPIRED = 4410
CLOSE_STORE_DOWN = 1011  # RFC 6455 internal error: the store failed while resuming


class ResumeError(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def new_session_id() -> str:
    return secrets.token_urlsafe(16)  # 128 bits: unguessable, so the id alone names one session


@dataclass
class LiveSessions:
    """The sessions this server is running now, and what the store needs to know about them."""

    store: Store | None
    resume_window: float = 300.0
    retention_days: float = 30.0
    processors: dict[str, AudioProcessor] = field(default_factory=dict)
    draining: bool = False
    _last_purge: float = 0.0

    async def begin(
        self,
        processor: AudioProcessor,
        resume_id: str | None,
        meta: dict[str, Any],
        *,
        new_id: str | None = None,
    ) -> SessionRecorder:
        """Register a session (new, or resumed from the store); raises ResumeError.

        `new_id`: the id of a new session when its client was told it already (Deepgram's request
        id goes out in the handshake); a fresh one otherwise.
        """
        now = time.time()
        await self._maybe_purge(now)
        if resume_id is None:
            session_id = new_id or new_session_id()
            recorder = SessionRecorder(self.store, session_id)
            if self.store is not None:
                try:
                    await asyncio.to_thread(self.store.create, session_id, now, meta)
                except Exception as error:  # a store that is down must not stop live transcription
                    logger.exception("could not store session %s", session_id)
                    recorder = SessionRecorder(None, session_id)
                    recorder.problem = f"the transcript is not being stored: {type(error).__name__}: {error}"
        else:
            if resume_id in self.processors:
                raise ResumeError(f"session {resume_id} is live on another connection", CLOSE_SESSION_BUSY)
            self.processors[resume_id] = processor  # reserved before any await: one resume wins
            try:
                recorder = await self._resume(processor, resume_id, now)
            except ResumeError:
                self.finish(resume_id, processor)
                raise
            except Exception as error:
                self.finish(resume_id, processor)
                logger.exception("could not resume session %s", resume_id)
                raise ResumeError(f"the transcript store is unavailable: {error}", CLOSE_STORE_DOWN) from None
        self.processors[recorder.session_id] = processor
        return recorder

    def finish(self, session_id: str, processor: AudioProcessor) -> None:
        """`processor`'s session is no longer live. Only its own entry goes: the previous
        connection's late cleanup must not free an id that a resume has claimed since."""
        if self.processors.get(session_id) is processor:
            del self.processors[session_id]

    async def _resume(self, processor: AudioProcessor, session_id: str, now: float) -> SessionRecorder:
        if self.store is None:
            raise ResumeError(
                "this server keeps no transcripts (--store none): nothing to resume", CLOSE_UNKNOWN_SESSION
            )
        stored = await asyncio.to_thread(self.store.get, session_id)
        if stored is None:
            raise ResumeError(f"unknown session {session_id}", CLOSE_UNKNOWN_SESSION)
        if now - stored.updated > self.resume_window:
            raise ResumeError(
                f"session {session_id} ended {now - stored.updated:.0f} s ago, past the resume window "
                f"({self.resume_window:.0f} s)",
                CLOSE_SESSION_EXPIRED,
            )
        await asyncio.to_thread(self.store.reopen, session_id, now)
        processor.resume(stored.lines, stored.stream_until)
        return SessionRecorder(self.store, session_id, [line.to_dict() for line in stored.lines])

    async def _maybe_purge(self, now: float) -> None:
        if self.store is None or not self.retention_days or now - self._last_purge < PURGE_EVERY:
            return
        self._last_purge = now
        try:
            gone = await asyncio.to_thread(self.store.purge, now - self.retention_days * 86400)
        except Exception:  # retention is housekeeping: never the reason a session fails
            logger.exception("retention sweep failed")
            return
        if gone:
            logger.info("retention: deleted %d stored session(s)", gone)

    async def drain(self, timeout: float) -> bool:
        """Shutdown: end every live stream, wait (bounded) for them to finish; True if all did."""
        self.draining = True
        for processor in list(self.processors.values()):
            await processor.process_audio(b"")
        deadline = time.monotonic() + timeout
        while self.processors and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return not self.processors


def line_from_dict(data: dict[str, Any]) -> Line:
    """A protocol line back into a Line (fields other stages may add are not stored)."""
    return Line(
        int(data["speaker"]), str(data.get("text", "")), float(data["start"]), float(data["end"]),
        str(data.get("translation") or ""), data.get("detected_language"),
    )  # fmt: skip


class SessionRecorder:
    def __init__(self, store: Store | None, session_id: str, stored: list[dict] | None = None) -> None:
        self.store = store
        self.session_id = session_id
        self._written: list[dict] = list(stored or [])
        self._failed = False
        self._closed = False
        self.problem: str | None = None  # a warning for the client at the start

    async def wrap(self, updates: AsyncIterator[dict]) -> AsyncIterator[dict]:
        async for update in updates:
            if update.get("type") == "transcript":
                warning = await self.record(update["lines"])
                if warning:
                    yield {"type": "warning", "warning": warning}
            yield update

    async def close(self) -> None:
        """The session is over (ended, failed or the client left): mark it so in the store."""
        if self.store is not None and not self._failed and not self._closed:
            self._closed = True
            with contextlib.suppress(Exception):
                await asyncio.shield(asyncio.to_thread(self.store.end, self.session_id, time.time()))

    async def record(self, lines: list[dict]) -> str | None:
        """Write the lines that changed since the last write; a warning text if the store failed."""
        if self.store is None or self._failed:
            return None
        first = 0
        while first < min(len(lines), len(self._written)) and lines[first] == self._written[first]:
            first += 1
        if first == len(lines):
            return None
        changed = [line_from_dict(line) for line in lines[first:]]
        try:
            # Shielded: a client leaving mid-write must not cancel a commit half-way.
            await asyncio.shield(
                asyncio.to_thread(self.store.save_lines, self.session_id, first, changed, time.time())
            )
        except Exception as error:
            logger.exception("could not store session %s", self.session_id)
            self._failed = True
            return f"the transcript is not being stored: {type(error).__name__}: {error}"
        self._written = [dict(line) for line in lines]
        return None
