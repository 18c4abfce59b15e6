"""Client bytes -> float32 mono 16 kHz audio.

Two decoders share one interface: `feed()` bytes as they arrive, `close()` at end of input, and
`async for chunk in decoder` to get numpy float32 arrays in [-1, 1] until the input is drained.

* `PcmDecoder`: raw s16le 16 kHz mono, converted on the spot.
* `PyAVDecoder`: any container/codec FFmpeg knows (WebM/Opus from a browser MediaRecorder,
  Ogg/Opus, MP3, WAV, FLAC...), decoded incrementally in-process with PyAV. FFmpeg pulls from a
  blocking byte stream in a dedicated thread; decoded audio is handed back to the event loop.

Behaviour at the edges (the tests pin these down):

* An empty compressed stream (closed before any byte arrived) ends cleanly with no audio.
* A stream cut short (client stopped mid-cluster) ends cleanly with everything decodable.
* Undecodable input raises `AudioDecodeError` from the iterator: as soon as FFmpeg gives up
  probing (about 1 MB of garbage) or right after `close()`.
* Latency (measured): WebM/Opus audio comes out ~3 ms after the bytes carrying it are fed, from
  the first ~2 KB on (header + first block), also with MediaRecorder's unknown-size clusters.
  MP3 starts after ~2 KB but trails by one 1 KB demuxer read (~0.18 s at 55 kbps). Ogg comes
  out page by page. WAV needs 64 KB before the first audio (FFmpeg sniffs for S/PDIF, ~2 s at
  16 kHz) and FLAC ~110 KB; both are meant for uploads more than live streams.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import weakref
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from typing import Any

import av
import numpy as np

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000

# probesize=32 (FFmpeg's minimum) makes stream-info probing stop after the header instead of
# waiting for ~15 KB of packets (MP3 first audio: 15 KB -> 2 KB). Format detection itself is
# governed by formatprobesize and keeps its default, so big ID3 tags still work.
_OPEN_OPTIONS = {"probesize": "32"}

_END = object()  # queue marker: input fully drained


class AudioDecodeError(Exception):
    """The client's audio cannot be decoded (message is meant for the client)."""


def _error_text(exc: BaseException) -> str:
    # FFmpegError's str() carries errno and a '<none>' filename; strerror is the readable part.
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def _resampler(rate: int) -> av.AudioResampler:
    # Keep the source layout: FFmpeg's own stereo->mono downmix adds the channels at -3 dB each,
    # which clips identical channels. We average them instead (_to_mono_array).
    return av.AudioResampler(format="flt", rate=rate)


def _to_mono_array(frame: av.AudioFrame) -> np.ndarray:
    samples = frame.to_ndarray().reshape(-1, frame.layout.nb_channels)  # packed: interleaved
    mono = samples[:, 0] if samples.shape[1] == 1 else samples.mean(axis=1, dtype=np.float32)
    # Lossy codecs overshoot slightly; clipping also copies the samples out of FFmpeg's buffer.
    return np.clip(mono, -1.0, 1.0)


class AudioDecoder(ABC):
    """Bytes in (`feed`, `close`), float32 chunks out (`async for`). Create inside the event loop."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._final: Any = None  # _END or the AudioDecodeError, once the iterator has seen it

    @abstractmethod
    def feed(self, data: bytes) -> None:
        """Queue client bytes; never blocks. Bytes fed after close() are ignored."""

    @abstractmethod
    def close(self) -> None:
        """End of input: the iterator finishes once what was fed is decoded. Idempotent."""

    async def __aiter__(self) -> AsyncIterator[np.ndarray]:
        while self._final is None:
            item = await self._queue.get()
            chunks: list[np.ndarray] = []
            # Merge whatever else is already decoded: fewer, larger chunks for the consumer.
            while isinstance(item, np.ndarray):
                chunks.append(item)
                item = self._queue.get_nowait() if not self._queue.empty() else None
            if item is not None:
                self._final = item
            if chunks:
                yield chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
        if isinstance(self._final, AudioDecodeError):
            raise self._final


class PcmDecoder(AudioDecoder):
    """Raw PCM s16le, 16 kHz, mono. A trailing odd byte waits for the next feed()."""

    def __init__(self) -> None:
        super().__init__()
        self._carry = b""
        self._closed = False

    def feed(self, data: bytes) -> None:
        if self._closed:
            return  # late frames racing a session shutdown are not worth an exception
        data = self._carry + data
        usable = len(data) - len(data) % 2
        self._carry = data[usable:]
        if usable:
            samples = np.frombuffer(data, dtype="<i2", count=usable // 2)
            self._queue.put_nowait(samples.astype(np.float32) / 32768.0)

    def close(self) -> None:
        if not self._closed:
            self._closed = True  # a dangling odd byte is half a sample: dropped
            self._queue.put_nowait(_END)


class _ByteStream:
    """File-like object FFmpeg reads from (worker thread) while the event loop appends to it.

    Deliberately has no seek/tell/close: PyAV then treats it as a non-seekable live stream.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._cond = threading.Condition()
        self.eof = False
        self.received = 0

    def push(self, data: bytes) -> None:
        with self._cond:
            if not self.eof:
                self._buffer += data
                self.received += len(data)
                self._cond.notify()

    def end(self) -> None:
        with self._cond:
            self.eof = True
            self._cond.notify()

    def abort(self) -> None:
        """Drop pending bytes and end: used when nobody will read the output any more."""
        with self._cond:
            self._buffer.clear()
            self.eof = True
            self._cond.notify()

    def read(self, size: int = -1) -> bytes:
        # Return whatever is there (FFmpeg copes with short reads); b"" means end of file.
        with self._cond:
            while not self._buffer and not self.eof:
                self._cond.wait()
            size = len(self._buffer) if size < 0 else size
            data = bytes(self._buffer[:size])
            del self._buffer[:size]
            return data


def _decode_stream(stream: _ByteStream, emit: Callable[[Any], None]) -> None:
    """Worker thread body: demux + decode + resample until EOF, reporting through emit()."""
    try:
        container = av.open(stream, mode="r", container_options=_OPEN_OPTIONS)
    except av.FFmpegError as exc:
        if stream.received == 0:
            return  # closed before anything arrived: an empty stream, not an error
        raise AudioDecodeError(f"could not decode audio: {_error_text(exc)}") from exc
    with container:
        if not container.streams.audio:
            raise AudioDecodeError("could not decode audio: the stream has no audio track")
        resampler = _resampler(SAMPLE_RATE)
        decoded, bad_packets, last_error = 0, 0, ""
        try:
            for packet in container.demux(container.streams.audio[0]):
                try:
                    frames = packet.decode()
                except av.FFmpegError as exc:  # one corrupt packet only costs its own audio
                    bad_packets, last_error = bad_packets + 1, _error_text(exc)
                    continue
                for frame in frames:
                    for out in resampler.resample(frame):
                        decoded += out.samples
                        emit(_to_mono_array(out))
        except av.FFmpegError as exc:
            # After close(), a demux error is a truncated tail: keep what we have. Before, the
            # live stream itself is broken.
            if not (stream.eof and decoded):
                raise AudioDecodeError(f"could not decode audio: {_error_text(exc)}") from exc
            logger.debug("truncated audio stream: %s", _error_text(exc))
        for out in resampler.resample(None):
            decoded += out.samples
            emit(_to_mono_array(out))
        if bad_packets and not decoded:
            raise AudioDecodeError(f"could not decode audio: {bad_packets} packet(s) failed ({last_error})")


class PyAVDecoder(AudioDecoder):
    """Compressed audio decoded incrementally by FFmpeg (PyAV) in a per-decoder daemon thread."""

    def __init__(self) -> None:
        super().__init__()
        self._stream = _ByteStream()
        loop, queue, stream = self._loop, self._queue, self._stream

        # The thread only sees these closures, never `self`: an abandoned decoder can still be
        # garbage-collected, and its finalizer below unblocks and ends the thread.
        def emit(item: Any) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # event loop closed: nobody is listening, stop reading
                stream.abort()

        def run() -> None:
            try:
                _decode_stream(stream, emit)
            except AudioDecodeError as exc:
                emit(exc)
            except Exception as exc:  # never let a codec surprise kill the session silently
                logger.exception("audio decoder crashed")
                emit(AudioDecodeError(f"could not decode audio: {type(exc).__name__}: {exc}"))
            else:
                emit(_END)

        weakref.finalize(self, stream.abort)
        self._thread = threading.Thread(target=run, name="wlk-audio-decoder", daemon=True)
        self._thread.start()

    def feed(self, data: bytes) -> None:
        self._stream.push(data)  # ignored after close(): the stream is at EOF

    def close(self) -> None:
        self._stream.end()


def make_decoder(pcm_input: bool) -> AudioDecoder:
    """The decoder for a session: raw PCM from an AudioWorklet client, else anything FFmpeg reads."""
    return PcmDecoder() if pcm_input else PyAVDecoder()


def load_audio(path: str | os.PathLike[str], sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode a whole file (wav, flac, mp3, opus...) to float32 mono at `sample_rate`."""
    try:
        with av.open(os.fspath(path), mode="r") as container:
            if not container.streams.audio:
                raise AudioDecodeError(f"could not decode audio: {path}: no audio track")
            resampler = _resampler(sample_rate)
            chunks = [
                _to_mono_array(out)
                for frame in container.decode(container.streams.audio[0])
                for out in resampler.resample(frame)
            ]
            chunks += [_to_mono_array(out) for out in resampler.resample(None)]
    except av.FFmpegError as exc:
        raise AudioDecodeError(f"could not decode audio: {path}: {_error_text(exc)}") from exc
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
