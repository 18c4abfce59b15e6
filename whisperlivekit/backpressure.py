"""Backpressure: what a session says when the model falls behind its audio.

Nothing is dropped: audio that arrives while the model is busy is folded into the next update
(larger chunks), and `remaining_time_transcription` reports the lag. Past `--max-lag` seconds the
client also gets one `warning`; a new warning comes only after the lag fell back under half of it.
"""

from __future__ import annotations


class LagWatch:
    def __init__(self, max_lag: float) -> None:
        self.max_lag = max_lag  # 0: never warn
        self._warned = False

    def check(self, lag: float) -> str | None:
        """A warning to send now, or None."""
        if not self.max_lag:
            return None
        if self._warned:
            if lag < self.max_lag / 2:
                self._warned = False
            return None
        if lag <= self.max_lag:
            return None
        self._warned = True
        return (
            f"the server is {lag:.1f} s behind this stream (more than --max-lag {self.max_lag:g} s): "
            "transcripts arrive late and the model processes larger chunks to catch up; no audio is dropped"
        )
