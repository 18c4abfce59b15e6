"""Prometheus metrics: one registry per engine (never prometheus_client's global default), so two
engines, and the apps around them, can live in one process; `GET /metrics` serves the app's engine.

`Metrics` is what the engine and its scheduler report to (`observe_batch`); `SessionMeter` is one
session's view of it (audio in and transcribed, committed words' latency, model calls, errors).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

    from whisperlivekit.messages import Word

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Seconds: model calls are 10 ms (tiny, short buffer) to several s (base, 30 s buffer, behind).
MODEL_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Seconds from a word's audio arriving to its commit: ~1-3 s when keeping up, tens when behind.
WORD_BUCKETS = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0, 60.0)
HOP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)


class Metrics:
    """The counters of one engine (and every session on it), in a registry of their own."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.live_sessions = Gauge("wlk_live_sessions", "Sessions streaming now.", registry=r)
        self.sessions = Counter("wlk_sessions", "Sessions started.", registry=r)
        self.refused = Counter(
            "wlk_sessions_refused", "Sessions refused at connection, by reason.", ["reason"], registry=r
        )
        self.audio_received = Counter(
            "wlk_audio_received_seconds", "Seconds of audio received (sample clock).", registry=r
        )
        self.audio_transcribed = Counter(
            "wlk_audio_transcribed_seconds",
            "Seconds of received audio the transcription has caught up with (silence skipped by the "
            "VAD included).",
            registry=r,
        )
        self.queue_depth = Gauge(
            "wlk_model_queue_depth", "Model calls requested by sessions and not answered yet.", registry=r
        )
        self.batch_size = Histogram(
            "wlk_batch_size", "Session steps per batched model call.", buckets=BATCH_BUCKETS, registry=r
        )
        self.model_seconds = Histogram(
            "wlk_model_call_seconds",
            "One session's model call, from request to result (waiting for the model included).",
            buckets=MODEL_BUCKETS,
            registry=r,
        )
        self.word_latency = Histogram(
            "wlk_word_latency_seconds",
            "Commit time of a word minus the time its end arrived (the word's end on the stream clock).",
            buckets=WORD_BUCKETS,
            registry=r,
        )
        self.errors = Counter("wlk_errors", "Errors, by kind.", ["kind"], registry=r)
        self.remote_hop = Histogram(
            "wlk_remote_hop_seconds",
            "Ray Serve: a model step's round trip from the ingress minus its time on the model replica.",
            buckets=HOP_BUCKETS,
            registry=r,
        )
        self.lag_warnings = Counter(
            "wlk_lag_warnings", "Sessions warned that the transcription fell behind --max-lag.", registry=r
        )
        # Read at scrape time: a leak of threads or tasks shows as a count that never comes back down.
        Gauge("wlk_threads", "Python threads alive in the server process.", registry=r).set_function(
            threading.active_count
        )
        Gauge("wlk_event_loop_tasks", "Tasks on the server's event loop.", registry=r).set_function(
            _event_loop_tasks
        )

    def observe_batch(self, size: int) -> None:
        """One batched model call serving `size` session steps (the scheduler calls this)."""
        self.batch_size.observe(size)

    def error(self, kind: str) -> None:
        self.errors.labels(kind=kind).inc()

    def refuse(self, reason: str) -> None:
        self.refused.labels(reason=reason).inc()
        self.error(f"refused_{reason}")

    def session(self) -> SessionMeter:
        return SessionMeter(self)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


def _event_loop_tasks() -> float:
    try:
        return float(len(asyncio.all_tasks()))
    except RuntimeError:  # scraped from outside the event loop (a test rendering directly)
        return float("nan")


class SessionMeter:
    """One session's reports; `start`/`end` are idempotent so cleanup may run twice."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        # (stream time received up to, monotonic arrival): maps a word's end to when it arrived.
        # Bounded: during a long silence nothing commits, so the oldest marks fall off first.
        self._arrivals: deque[tuple[float, float]] = deque(maxlen=20000)
        self._transcribed = 0.0
        self._live = False

    def start(self) -> None:
        if not self._live:
            self._live = True
            self.metrics.sessions.inc()
            self.metrics.live_sessions.inc()

    def end(self) -> None:
        if self._live:
            self._live = False
            self.metrics.live_sessions.dec()

    def received(self, seconds: float, until: float) -> None:
        """`seconds` of audio decoded; the stream now reaches `until`."""
        self.metrics.audio_received.inc(seconds)
        self._arrivals.append((until, time.monotonic()))

    def transcribed(self, until: float) -> None:
        if until > self._transcribed:
            self.metrics.audio_transcribed.inc(until - self._transcribed)
            self._transcribed = until

    def committed(self, words: Iterable[Word]) -> None:
        now = time.monotonic()
        for word in words:
            arrived = self._arrival(word.end)
            if arrived is not None:
                self.metrics.word_latency.observe(max(0.0, now - arrived))

    def _arrival(self, t: float) -> float | None:
        """When stream time `t` arrived: the first mark at or past it. Words commit in time order,
        so marks before `t` are never needed again."""
        marks = self._arrivals
        while len(marks) > 1 and marks[0][0] < t:
            marks.popleft()
        return marks[0][1] if marks else None

    @contextlib.contextmanager
    def model_call(self) -> Iterator[None]:
        self.metrics.queue_depth.inc()
        started = time.perf_counter()
        try:
            yield
        finally:
            self.metrics.queue_depth.dec()
            self.metrics.model_seconds.observe(time.perf_counter() - started)

    def error(self, kind: str) -> None:
        self.metrics.error(kind)


def add_metrics_route(app: FastAPI) -> None:
    """`GET /metrics`: the app's engine's registry in Prometheus text format."""
    from fastapi import Response

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        engine = app.state.engine
        if engine is None:
            return Response("# models loading\n", status_code=503, media_type=CONTENT_TYPE)
        return Response(engine.metrics.render(), media_type=CONTENT_TYPE)
