"""Admission control: `--max-sessions` live streams per app; one more is refused, not queued.

One count for every live endpoint (`/asr` and Deepgram's `/v1/listen`): the limit is the machine's
capacity, whichever protocol the streams speak. A refused client gets an error message it can show
(`error` on /asr, Deepgram's `Error` on /v1/listen) and the WebSocket close code 1013 ("try again
later"), so a load balancer or client can retry elsewhere or later.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from whisperlivekit.engine import TranscriptionEngine

CLOSE_TRY_AGAIN_LATER = 1013  # RFC 6455 registry: "Try Again Later"


class Admission:
    """Counts the app's live sessions against a limit read at each connection (0: no limit)."""

    def __init__(self) -> None:
        self.live = 0

    @contextmanager
    def seat(self, engine: TranscriptionEngine) -> Iterator[str | None]:
        """Hold one live-session seat for the block. Yields None, or when the server is full the
        refusal to send (counted in the metrics); each endpoint sends it in its own protocol."""
        limit = engine.config.max_sessions
        if limit and self.live >= limit:
            engine.metrics.refuse("capacity")
            yield (
                f"server full: it holds at most {limit} live sessions (--max-sessions) and all are "
                "in use; try again later"
            )
            return
        self.live += 1
        try:
            yield None
        finally:
            self.live -= 1
