"""Admission control: `--max-sessions` live streams per app; one more is refused, not queued.

One count for every live endpoint (`/asr` and Deepgram's `/v1/listen`): the limit is the machine's
capacity, whichever protocol the streams speak. A refused client gets an error message it can show
(`error` on /asr, Deepgram's `Error` on /v1/listen) and the WebSocket close code 1013 ("try again
later"), so a load balancer or client can retry elsewhere or later.
"""

from __future__ import annotations

CLOSE_TRY_AGAIN_LATER = 1013  # RFC 6455 registry: "Try Again Later"


class Admission:
    """Counts the app's live sessions against a limit read at each connection (0: no limit)."""

    def __init__(self) -> None:
        self.live = 0

    def try_enter(self, limit: int) -> bool:
        if limit and self.live >= limit:
            return False
        self.live += 1
        return True

    def leave(self) -> None:
        self.live = max(0, self.live - 1)

    @staticmethod
    def refusal(limit: int) -> str:
        return (
            f"server full: it holds at most {limit} live sessions (--max-sessions) and all are in use; "
            "try again later"
        )
