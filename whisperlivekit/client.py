"""A small streaming client for the `/asr` WebSocket: replays audio as a live client would and records
every message with its wall-clock arrival time (see ../shared/EVAL.md, "Replay").

Clock: t0 is the monotonic time at which the first audio chunk is sent; every recorded time is seconds
since t0. Chunk k (audio [k*chunk_s, (k+1)*chunk_s)) is sent at t0 + k*chunk_s/speed on an absolute
schedule, so a late send never shifts the following ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import math
import struct
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

SAMPLE_RATE = 16000
SILENCE_SPEAKER = -2


@dataclass
class Message:
    t: float  # arrival, seconds since t0 (negative for messages before the first chunk, e.g. config)
    data: dict[str, Any]

    @property
    def type(self) -> str:
        return message_type(self.data)


@dataclass
class StreamResult:
    messages: list[Message] = field(default_factory=list)
    t_end_of_audio: float | None = None  # when the empty frame was sent
    t_ready_to_stop: float | None = None
    final_text: str = ""  # committed text of the last update
    config: dict[str, Any] | None = None
    error: str | None = None
    audio_duration_s: float = 0.0
    chunk_s: float = 0.1
    speed: float = 1.0
    max_send_lag_s: float = 0.0  # worst lateness of a chunk against its schedule (client/network stall)
    received_bytes: int = 0  # text the server sent (mode=diff sends far less than full updates)

    @property
    def updates(self) -> list[Message]:
        return [m for m in self.messages if m.type == "transcript"]

    @property
    def drain_s(self) -> float | None:
        if self.t_ready_to_stop is None or self.t_end_of_audio is None:
            return None
        return self.t_ready_to_stop - self.t_end_of_audio


def message_type(data: dict[str, Any]) -> str:
    """Upstream WhisperLiveKit sends updates without a "type": treat anything with lines as a transcript."""
    if "type" in data:
        return str(data["type"])
    return "transcript" if "lines" in data else "unknown"


def apply_diff(state: dict[str, Any], diff: dict[str, Any]) -> dict[str, Any]:
    """The state after one `mode=diff` message (docs/protocol.md, "Diff mode"); `state` is not modified."""
    removed = set(diff.get("removed", ()))
    new = {key: value for key, value in state.items() if key not in removed}
    new["lines"] = list(state.get("lines", []))[: diff["keep_lines"]] + list(diff["new_lines"])
    new.update(diff.get("changed", {}))
    return new


class DiffReader:
    """Follows a `mode=diff` stream: `feed` each snapshot or diff, get the full `transcript` update back."""

    def __init__(self) -> None:
        self.state: dict[str, Any] | None = None  # the full update, without its "type"
        self.seq = -1

    def feed(self, message: dict[str, Any]) -> dict[str, Any]:
        kind, seq = message.get("type"), message.get("seq")
        if kind not in ("snapshot", "diff"):
            raise ValueError(f"not a snapshot or diff message: {kind!r}")
        if kind == "diff" and self.state is None:
            raise ValueError("a diff arrived before the snapshot")
        if seq != self.seq + 1:  # the state can no longer be trusted
            raise ValueError(f"message {seq} arrived, expected {self.seq + 1}: one was lost or repeated")
        self.seq = seq
        if kind == "snapshot":
            self.state = {key: value for key, value in message.items() if key not in ("type", "seq")}
        else:
            assert self.state is not None
            self.state = apply_diff(self.state, message)
        return {"type": "transcript", **self.state}


def committed_text(update: dict[str, Any]) -> str:
    """Text of the committed lines, silence lines (speaker -2) and blank lines skipped."""
    parts = []
    for line in update.get("lines") or []:
        text = (line.get("text") or "").strip()
        if text and line.get("speaker") != SILENCE_SPEAKER:
            parts.append(text)
    # With diarization, committed words wait there for their speaker: final text all the same.
    waiting = (update.get("buffer_diarization") or "").strip()
    return " ".join([*parts, waiting] if waiting else parts)


def buffer_text(update: dict[str, Any]) -> str:
    return (update.get("buffer_transcription") or "").strip()


def to_pcm16(samples: np.ndarray) -> bytes:
    return (np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def decode_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode any file FFmpeg reads to float32 mono at `sample_rate`, the same way faster-whisper does
    (s16 mono resampling by swresample), so client, alignment and offline runs see identical samples."""
    import av

    resampler = av.AudioResampler(format="s16", layout="mono", rate=sample_rate)
    chunks: list[np.ndarray] = []
    with av.open(str(path), metadata_errors="ignore") as container:
        for frame in container.decode(audio=0):
            frame.pts = None  # let the resampler count samples itself (robust to odd timestamps)
            chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
        chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))
    if not chunks:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(chunks).astype(np.float32) / 32768.0


def _pcm_chunks(samples: np.ndarray, chunk_s: float) -> list[bytes]:
    step = max(1, round(chunk_s * SAMPLE_RATE))
    data = to_pcm16(samples)
    return [data[2 * i : 2 * (i + step)] for i in range(0, len(samples), step)]


def _webm_chunks(samples: np.ndarray, chunk_s: float) -> list[bytes]:
    """WebM/Opus as a browser's MediaRecorder sends it, cut so that chunk k carries the packets of the
    audio up to (k+1)*chunk_s. Clusters are limited to 100 ms so bytes come out progressively."""
    import av

    buf = io.BytesIO()
    marks: list[tuple[float, int]] = []  # (audio end time of the packet, byte position after muxing it)
    with av.open(buf, "w", format="webm", options={"cluster_time_limit": "100", "flush_packets": "1"}) as out:
        stream = out.add_stream("libopus", rate=48000, layout="mono")
        pcm16 = np.frombuffer(to_pcm16(samples), dtype="<i2")[None, :]
        frame = av.AudioFrame.from_ndarray(pcm16, format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = SAMPLE_RATE, 0, Fraction(1, SAMPLE_RATE)
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
            end = float(((packet.pts or 0) + (packet.duration or 0)) * packet.time_base)
            marks.append((end, buf.tell()))
    data = buf.getvalue()
    n_chunks = max(1, math.ceil(len(samples) / (chunk_s * SAMPLE_RATE)))
    chunks: list[bytes] = []
    start = pos = i = 0
    for k in range(n_chunks):
        while i < len(marks) and marks[i][0] <= (k + 1) * chunk_s + 1e-9:
            pos = max(pos, marks[i][1])
            i += 1
        end = len(data) if k == n_chunks - 1 else pos
        chunks.append(data[start:end])  # may be empty: the sender skips those
        start = max(start, end)
    return chunks


async def stream_audio(
    url: str,
    samples: np.ndarray,
    *,
    chunk_s: float = 0.1,
    speed: float = 1.0,
    pcm: bool = True,
    on_message: Callable[[Message], None] | None = None,
    ready_timeout: float | None = 600.0,
    config_timeout: float = 5.0,
    open_timeout: float = 30.0,
) -> StreamResult:
    """Replay `samples` (float32, 16 kHz mono) to the server at `speed` x real time and collect its replies.

    pcm=True sends raw s16le (server in PCM mode); pcm=False sends WebM/Opus like a browser.
    `speed=math.inf` sends everything at once. Returns once `ready_to_stop` arrives, the server reports an
    error or closes, or `ready_timeout` seconds after the end of audio.
    `on_message` sees each message as it arrives (t is 0.0 for messages before the first chunk).
    """
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    chunks = _pcm_chunks(samples, chunk_s) if pcm else _webm_chunks(samples, chunk_s)
    result = StreamResult(audio_duration_s=len(samples) / SAMPLE_RATE, chunk_s=chunk_s, speed=speed)
    raw: list[tuple[float, dict[str, Any]]] = []  # monotonic arrival times, converted once t0 is known
    t0: float | None = None
    got_config, finished = asyncio.Event(), asyncio.Event()
    diffs = DiffReader()

    async def receive(ws: Any) -> None:
        try:
            async for frame in ws:
                now = time.monotonic()
                if isinstance(frame, bytes):
                    continue  # the protocol has no server->client binary frames
                try:
                    data = json.loads(frame)
                except json.JSONDecodeError:
                    data = {"type": "unparsed", "raw": frame}
                if not isinstance(data, dict):
                    data = {"type": "unparsed", "raw": data}
                result.received_bytes += len(frame.encode())
                kind = message_type(data)
                if kind in ("snapshot", "diff"):  # mode=diff: recorded as the full update it stands for
                    try:
                        data = diffs.feed(data)
                    except ValueError as exc:
                        result.error = f"diff mode: {exc}"
                        finished.set()
                        break
                    kind = "transcript"
                raw.append((now, data))
                if kind == "config":
                    result.config = data
                    got_config.set()
                elif kind == "ready_to_stop":
                    result.t_ready_to_stop = now
                    finished.set()
                elif kind == "error":
                    result.error = str(data.get("error", data))
                    finished.set()
                if on_message is not None:
                    on_message(Message(0.0 if t0 is None else now - t0, data))
        except ConnectionClosed as exc:
            if not finished.is_set() and result.error is None:
                result.error = f"connection closed before ready_to_stop: {exc}"
        finally:
            if not finished.is_set() and result.error is None:
                result.error = "connection closed before ready_to_stop"
            finished.set()

    # No keepalive pings: a busy server may not answer them in time and the session would be cut.
    async with connect(
        url, max_size=None, ping_interval=None, compression=None, open_timeout=open_timeout, close_timeout=5
    ) as ws:
        receiver = asyncio.create_task(receive(ws))
        try:
            # Upstream sends its config first; start anyway if it never comes.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(got_config.wait(), config_timeout)
            t0 = time.monotonic()
            interval = chunk_s / speed if speed > 0 else 0.0
            for k, chunk in enumerate(chunks):
                if finished.is_set():
                    break  # error or close: stop sending
                delay = t0 + k * interval - time.monotonic()
                # sleep(0) when behind: the receiver must still timestamp replies promptly
                await asyncio.sleep(max(delay, 0.0))
                result.max_send_lag_s = max(result.max_send_lag_s, -delay)
                if chunk:  # an empty frame would mean end of audio
                    await ws.send(chunk)
            if not finished.is_set():
                result.t_end_of_audio = time.monotonic() - t0
                await ws.send(b"")
                try:
                    await asyncio.wait_for(finished.wait(), ready_timeout)
                except asyncio.TimeoutError:
                    result.error = f"no ready_to_stop within {ready_timeout} s after the end of audio"
        except ConnectionClosed as exc:
            result.error = result.error or f"connection closed while sending: {exc}"
        finally:
            receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await receiver

    assert t0 is not None
    result.messages = [Message(t - t0, d) for t, d in raw]
    if result.t_ready_to_stop is not None:
        result.t_ready_to_stop -= t0
    updates = result.updates
    result.final_text = committed_text(updates[-1].data) if updates else ""
    return result


def wav_stream_header(sample_rate: int = SAMPLE_RATE) -> bytes:
    """A WAV header of unknown length, for a server that decodes containers rather than raw PCM."""
    fmt = struct.pack("<HHIIHH", 1, 1, sample_rate, sample_rate * 2, 2, 16)
    return b"RIFF\xff\xff\xff\xffWAVEfmt " + struct.pack("<I", 16) + fmt + b"data\xff\xff\xff\xff"


async def stream_updates(
    url: str, chunks: AsyncIterator[bytes], *, mode: str = "diff"
) -> AsyncIterator[dict]:
    """Stream live PCM chunks (s16le 16 kHz mono: a microphone, a file being played) to a server's
    /asr and yield each full `transcript` update (diffs rebuilt), `warning` and `error` as they come.

    A server that expects containers (`useAudioWorklet: false`) gets the PCM as a streamed WAV.
    """
    from websockets.asyncio.client import connect

    url += ("&" if "?" in url else "?") + f"mode={mode}"
    reader = DiffReader()
    async with connect(url, max_size=None, ping_interval=None) as ws:
        config = json.loads(await ws.recv())

        async def feed() -> None:
            if not config.get("useAudioWorklet", True):
                await ws.send(wav_stream_header())
            async for chunk in chunks:
                if chunk:
                    await ws.send(chunk)
            await ws.send(b"")

        feeder = asyncio.create_task(feed())
        try:
            async for raw in ws:
                message = json.loads(raw)
                kind = message_type(message)
                if kind in ("snapshot", "diff"):
                    yield reader.feed(message)
                elif kind in ("transcript", "warning", "error"):
                    yield message
                if kind in ("ready_to_stop", "error"):
                    break
        finally:
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await feeder


async def stream_file(url: str, path: str | Path, **kwargs: Any) -> StreamResult:
    """Decode `path` (any format FFmpeg reads) to 16 kHz mono and replay it with `stream_audio`."""
    samples = await asyncio.to_thread(decode_audio, path)
    return await stream_audio(url, samples, **kwargs)
