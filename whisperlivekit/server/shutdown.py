"""`wlk serve` under uvicorn with TLS, the message-size cap, and a graceful SIGTERM.

SIGTERM: stop accepting connections, end every live stream (as if each client had sent its empty
frame) so each session drains to its last update and `ready_to_stop`, wait at most
`--shutdown-timeout` for them, then let uvicorn shut down as usual. A second SIGTERM or a SIGINT
during the drain exits at once.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from types import FrameType
from typing import TYPE_CHECKING, Any

import uvicorn

if TYPE_CHECKING:
    from whisperlivekit.config import Config
    from whisperlivekit.store.live import LiveSessions

logger = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, sessions: LiveSessions | None, timeout: float) -> None:
        super().__init__(config)
        self.sessions = sessions
        self.drain_timeout = timeout
        self._draining = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig != signal.SIGTERM or self._draining or self.sessions is None or not self.started:
            super().handle_exit(sig, frame)
            return
        self._draining = True
        loop = asyncio.get_event_loop()
        # A signal handler must not await: schedule the drain on the loop (thread- and signal-safe).
        loop.call_soon_threadsafe(lambda: loop.create_task(self._drain_then_exit(sig, frame)))

    async def _drain_then_exit(self, sig: int, frame: FrameType | None) -> None:
        assert self.sessions is not None
        for server in self.servers:
            server.close()  # no new connections from here on
        live = len(self.sessions.processors)
        logger.info("SIGTERM: draining %d live session(s) (at most %g s)", live, self.drain_timeout)
        if not await self.sessions.drain(self.drain_timeout):
            left = len(self.sessions.processors)
            logger.warning("%d session(s) still live after the drain: closing them", left)
        super().handle_exit(sig, frame)


def serve(app: Any, config: Config) -> int:
    """Run `app` until SIGINT/SIGTERM (this blocks)."""
    server_config = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        log_level=config.log_level.lower(),
        ssl_certfile=config.ssl_certfile,
        ssl_keyfile=config.ssl_keyfile,
        # Above our own limit, so an oversized message gets our clear error rather than a bare 1009.
        ws_max_size=2 * config.max_message_bytes,
        timeout_graceful_shutdown=config.shutdown_timeout + 5,
    )
    DrainingServer(server_config, getattr(app.state, "sessions", None), config.shutdown_timeout).run()
    return 0
