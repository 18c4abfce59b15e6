"""Orchestration for `wlk bench`: a server subprocess on a free port, N simultaneous real-time streams,
the capacity search, RSS sampling and the RTF of file transcription (../shared/EVAL.md)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import numpy as np

from whisperlivekit.bench.metrics import StreamReport
from whisperlivekit.client import SAMPLE_RATE, Message, StreamResult, stream_audio

RssSamples = list[tuple[float, float]]  # (seconds since the replay started, MiB)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def health_url(ws_url: str) -> str:
    """ws://host:port/asr?… -> http://host:port/health"""
    parts = urlsplit(ws_url)
    scheme = "https" if parts.scheme == "wss" else "http"
    return urlunsplit((scheme, parts.netloc, "/health", "", ""))


def with_query(url: str, **params: str) -> str:
    """`url` with `params` added to its query string (existing ones win)."""
    parts = urlsplit(url)
    query = "&".join(q for q in (urlencode(params), parts.query) if q)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def get_health(url: str, timeout: float = 2.0) -> dict[str, Any] | None:
    """The JSON of a 200 answer from `url`, else None (not up yet, still loading, or no such endpoint)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data = json.loads(response.read() or b"{}")
            return data if isinstance(data, dict) else {}
    except (OSError, ValueError):  # URLError and HTTPError (503 while loading) are OSErrors
        return None


def is_ready(health: dict[str, Any] | None) -> bool:
    """Ours answers 503 while loading; upstream answers 200 with "ready": false."""
    return health is not None and health.get("ready", True) is not False and health.get("models_loaded", True)


class ServerProcess:
    """`wlk serve` with the given options (or any `command` with a {port} to fill) in a subprocess on a free
    loopback port, as a context manager that returns once /health answers. A subprocess, not a thread: its
    CPU and RSS are its own, as in production, and the client never shares the GIL with the model."""

    def __init__(
        self,
        server_args: Sequence[str] = (),
        *,
        pcm: bool = True,
        log_level: str = "WARNING",
        startup_timeout: float = 300.0,
        command: Sequence[str] | None = None,
    ) -> None:
        self.server_args = list(server_args)
        self.custom = list(command) if command else None  # another server: "{port}" is replaced
        self.pcm = pcm
        self.log_level = log_level
        self.startup_timeout = startup_timeout
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.health: dict[str, Any] = {}
        self._log: IO[bytes] | None = None

    @property
    def command(self) -> list[str]:
        if self.custom:
            return [a.replace("{port}", str(self.port)) for a in self.custom]
        base = [sys.executable, "-m", "whisperlivekit.cli", "serve", "--host", "127.0.0.1"]
        base += ["--port", str(self.port), "--log-level", self.log_level]
        base += ["--pcm-input"] if self.pcm else ["--no-pcm-input"]
        return base + self.server_args  # the caller's options come last, so they win

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/asr"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def log_tail(self, n: int = 3000) -> str:
        if self._log is None:
            return ""
        self._log.flush()
        return Path(self._log.name).read_bytes()[-n:].decode(errors="replace")

    def __enter__(self) -> ServerProcess:
        self.port = free_port()
        self._log = tempfile.NamedTemporaryFile(prefix="wlk-bench-server-", suffix=".log")
        self.proc = subprocess.Popen(self.command, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.startup_timeout
        url = health_url(self.ws_url)
        while not is_ready(health := get_health(url)):
            if self.proc.poll() is not None:
                tail = self.log_tail()
                self.__exit__()
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{tail}")
            if time.monotonic() > deadline:
                self.__exit__()
                raise TimeoutError(f"server not healthy after {self.startup_timeout:.0f} s")
            time.sleep(0.5)
        self.health = health or {}
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None


async def sample_rss(pid: int, out: RssSamples, t_start: float, period: float = 1.0) -> None:
    """Append (seconds since t_start, RSS MiB of pid and its children) every `period` until cancelled."""
    import psutil

    try:
        proc = psutil.Process(pid)
    except psutil.Error:
        return
    while True:
        try:
            rss = proc.memory_info().rss
            for child in proc.children(recursive=True):
                with contextlib.suppress(psutil.Error):  # a child that just exited
                    rss += child.memory_info().rss
        except psutil.Error:
            return
        out.append((time.monotonic() - t_start, rss / 2**20))
        await asyncio.sleep(period)


def rss_figures(rss: RssSamples, wall_audio_s: float) -> tuple[float | None, float | None]:
    """Peak over the replay; steady state = median over the second half of the audio's wall time."""
    if not rss:
        return None, None
    steady = [v for t, v in rss if wall_audio_s / 2 <= t <= wall_audio_s] or [v for _, v in rss]
    return max(v for _, v in rss), float(np.median(steady))


@dataclass
class Replay:
    """What N simultaneous replays of one stream produced."""

    results: list[StreamResult]
    rss: RssSamples = field(default_factory=list)
    wall_s: float = 0.0


class _Progress:
    """One terminal bar per replay over wall time, with the server's worst reported lag meanwhile."""

    def __init__(self, n: int, total_s: float, label: str, enabled: bool) -> None:
        from tqdm import tqdm

        self.lag = [0.0] * n
        self.words = [0] * n
        self.bar = tqdm(
            total=round(total_s, 1),
            unit="s",
            desc=label[-40:],
            disable=not enabled,
            file=sys.stderr,
            bar_format="{desc} {bar} {n:.0f}/{total:.0f} s audio {postfix}",
            leave=False,
        )

    def on_message(self, i: int) -> Callable[[Message], None]:
        def seen(m: Message) -> None:
            if m.type == "transcript":
                self.lag[i] = float(m.data.get("remaining_time_transcription") or 0.0)
                self.words[i] = sum(len((ln.get("text") or "").split()) for ln in m.data.get("lines") or [])

        return seen

    async def run(self, t_start: float) -> None:
        while True:
            self.bar.n = min(self.bar.total, round(time.monotonic() - t_start, 1))
            self.bar.set_postfix_str(f"server lag {max(self.lag):.1f} s, {sum(self.words)} words")
            await asyncio.sleep(0.5)

    def close(self) -> None:
        self.bar.close()


async def replay_streams(
    url: str,
    samples: np.ndarray,
    n: int = 1,
    *,
    speed: float = 1.0,
    chunk_s: float = 0.1,
    pcm: bool = True,
    ready_timeout: float = 600.0,
    server_pid: int | None = None,
    label: str = "",
    progress: bool = True,
) -> Replay:
    """Replay `samples` on `n` simultaneous connections (all starting together: the worst case) while
    sampling the server's RSS. A connection that fails becomes a result with `error` set."""
    rss: RssSamples = []
    t_start = time.monotonic()
    bar = _Progress(n, len(samples) / SAMPLE_RATE / speed, label, progress)
    helpers = [asyncio.create_task(bar.run(t_start))]
    if server_pid:
        helpers.append(asyncio.create_task(sample_rss(server_pid, rss, t_start)))
    try:
        outcomes = await asyncio.gather(
            *(
                stream_audio(
                    url,
                    samples,
                    chunk_s=chunk_s,
                    speed=speed,
                    pcm=pcm,
                    ready_timeout=ready_timeout,
                    on_message=bar.on_message(i),
                )
                for i in range(n)
            ),
            return_exceptions=True,
        )
    finally:
        for task in helpers:
            task.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
        bar.close()
    results = []
    for out in outcomes:
        if isinstance(out, BaseException):
            out = StreamResult(
                error=f"{type(out).__name__}: {out}", audio_duration_s=len(samples) / SAMPLE_RATE
            )
        results.append(out)
    return Replay(results, rss, time.monotonic() - t_start)


# --- capacity -----------------------------------------------------------------------------------------


@dataclass
class CapacityRound:
    n: int
    ok: bool
    reason: str
    lag_growth: list[float | None]
    committed_p50: list[float | None]
    wer: list[float | None]
    errors: list[str | None]
    peak_rss_mb: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def judge_round(n: int, reports: Sequence[StreamReport], threshold_s: float = 1.0) -> CapacityRound:
    """A round passes when every stream finished without error and its lag growth stays under
    `threshold_s` (a stream without a lag growth figure, e.g. nothing transcribed, fails)."""
    reasons = []
    for i, r in enumerate(reports):
        if r.error:
            reasons.append(f"stream {i}: {r.error}")
        elif r.lag_growth is None:
            reasons.append(f"stream {i}: no lag growth (too few timed words)")
        elif r.lag_growth >= threshold_s:
            reasons.append(f"stream {i}: lag growth {r.lag_growth:.2f} s")
    return CapacityRound(
        n=n,
        ok=not reasons,
        reason="; ".join(reasons),
        lag_growth=[r.lag_growth for r in reports],
        committed_p50=[r.committed_p50 for r in reports],
        wer=[r.wer for r in reports],
        errors=[r.error for r in reports],
        peak_rss_mb=max((r.peak_rss_mb for r in reports if r.peak_rss_mb is not None), default=None),
    )


async def capacity_search(
    run_round: Callable[[int], Awaitable[list[StreamReport]]],
    *,
    start: int = 1,
    max_streams: int = 8,
    threshold_s: float = 1.0,
    pause_s: float = 2.0,
    on_round: Callable[[CapacityRound, list[StreamReport]], None] | None = None,
) -> tuple[int, list[CapacityRound]]:
    """N = 1, 2, 3 … simultaneous streams until the first round that fails (or `max_streams`). On a
    CPU, capacity is a few streams: stepping by one costs little more than doubling then bisecting and
    measures every N below the answer. Returns the largest passing N (0 if even one fails) and the rounds.
    `start` > 1 resumes an earlier search: every N below it is taken as passed."""
    rounds: list[CapacityRound] = []
    capacity = start - 1
    for n in range(start, max_streams + 1):
        reports = await run_round(n)
        judged = judge_round(n, reports, threshold_s)
        rounds.append(judged)
        if on_round:
            on_round(judged, reports)
        if not judged.ok:
            break
        capacity = n
        await asyncio.sleep(pause_s)  # let the server close the previous sessions
    return capacity, rounds


# --- file transcription -----------------------------------------------------------------------------


def write_wav(path: str | os.PathLike[str], samples: np.ndarray) -> None:
    import wave

    from whisperlivekit.client import to_pcm16

    with wave.open(os.fspath(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(SAMPLE_RATE)
        f.writeframes(to_pcm16(samples))


def file_transcription(
    server_args: Sequence[str], samples: np.ndarray, language: str | None = None
) -> tuple[str, float]:
    """The project's own file transcription (`wlk transcribe` with the server's options) of `samples`:
    its text and its processing time (model loading excluded; RTF = time / audio duration)."""
    import argparse

    from whisperlivekit.config import add_config_arguments, config_from_args
    from whisperlivekit.engine import TranscriptionEngine
    from whisperlivekit.transcribe import transcribe_file

    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    engine = TranscriptionEngine(config_from_args(parser.parse_args(list(server_args))))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            wav = Path(tmp) / "stream.wav"
            write_wav(wav, samples)
            t = time.perf_counter()
            transcript = transcribe_file(engine, wav, language=language, progress=False)
            return transcript.text, time.perf_counter() - t
    finally:
        engine.close()
