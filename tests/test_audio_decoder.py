"""Audio input stage: PCM and PyAV streaming decoders, load_audio. Uses the real JFK clip."""

from __future__ import annotations

import asyncio
import gc
import io
import os
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from whisperlivekit.audio.decoder import (
    SAMPLE_RATE,
    AudioDecodeError,
    AudioDecoder,
    PcmDecoder,
    PyAVDecoder,
    load_audio,
    make_decoder,
)

JFK_SECONDS = 11.0


@pytest.fixture(scope="module")
def classic() -> Path:
    """shared/eval/classic next to the repo root (override with WLK_EVAL_DIR)."""
    root = Path(os.environ.get("WLK_EVAL_DIR") or Path(__file__).resolve().parents[2] / "shared" / "eval")
    if not (root / "classic" / "jfk.wav").is_file():
        pytest.skip(f"evaluation audio not found under {root}")
    return root / "classic"


@pytest.fixture(scope="module")
def jfk(classic: Path) -> np.ndarray:
    return load_audio(classic / "jfk.wav")


def encode(audio: np.ndarray, container: str, **options: str) -> bytes:
    """16 kHz float mono -> 48 kHz Opus in `container`, the way a browser MediaRecorder records."""
    out = io.BytesIO()
    with av.open(out, mode="w", format=container, options=options) as muxer:
        stream = muxer.add_stream("libopus", rate=48000, layout="mono")
        resampler = av.AudioResampler(format="s16", layout="mono", rate=48000)
        pcm = (audio * 32767).astype(np.int16)[None, :]
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        for resampled in [*resampler.resample(frame), *resampler.resample(None)]:
            muxer.mux(stream.encode(resampled))
        muxer.mux(stream.encode(None))
    return out.getvalue()


CLUSTER_ID, UNKNOWN_SIZE = b"\x1f\x43\xb6\x75", b"\x01\xff\xff\xff\xff\xff\xff\xff"


def _vint(data: bytes, pos: int) -> tuple[int, int]:
    """EBML variable-length integer at pos -> (value without the length marker, byte length)."""
    length = 9 - data[pos].bit_length()
    return int.from_bytes(data[pos : pos + length], "big") & ((1 << (7 * length)) - 1), length


def mediarecorder_webm(audio: np.ndarray) -> bytes:
    """WebM as Chrome's MediaRecorder streams it: unknown-size segment AND clusters, no cues.

    FFmpeg's live mode gives the unknown-size segment; cluster sizes are rewritten to 'unknown'.
    """
    webm = encode(audio, "webm", live="1")
    segment = webm.find(b"\x18\x53\x80\x67")
    pos = segment + 4 + _vint(webm, segment + 4)[1]
    out = [webm[:pos]]
    while pos < len(webm):  # top-level children of the segment
        id_len = _vint(webm, pos)[1]
        size, size_len = _vint(webm, pos + id_len)
        body = pos + id_len + size_len
        is_cluster = webm[pos : pos + id_len] == CLUSTER_ID
        out += [webm[pos : pos + id_len], UNKNOWN_SIZE if is_cluster else webm[pos + id_len : body]]
        out.append(webm[body : body + size])
        pos = body + size
    assert out.count(UNKNOWN_SIZE) > 5  # ~1 s clusters
    return b"".join(out)


def pieces(data: bytes, seed: int = 0) -> Iterator[bytes]:
    """Random 1-4 KB slices, like WebSocket frames."""
    rng = np.random.default_rng(seed)
    pos = 0
    while pos < len(data):
        size = int(rng.integers(1000, 4096))
        yield data[pos : pos + size]
        pos += size


def envelope(audio: np.ndarray, hop: int = 320) -> np.ndarray:
    """RMS per 20 ms: compares waveforms through lossy codecs."""
    frames = audio[: len(audio) // hop * hop].reshape(-1, hop)
    return np.sqrt((frames**2).mean(axis=1))


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    ea, eb = envelope(a), envelope(b)
    n = min(len(ea), len(eb))
    return float(np.corrcoef(ea[:n], eb[:n])[0, 1])


class Collector:
    """Drains a decoder in a background task, like a session does."""

    def __init__(self, decoder: AudioDecoder) -> None:
        self.chunks: list[np.ndarray] = []
        self.task = asyncio.create_task(self._run(decoder))

    async def _run(self, decoder: AudioDecoder) -> None:
        async for chunk in decoder:
            assert chunk.dtype == np.float32 and chunk.ndim == 1
            self.chunks.append(chunk)

    @property
    def seconds(self) -> float:
        return sum(len(c) for c in self.chunks) / SAMPLE_RATE

    def audio(self) -> np.ndarray:
        return np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.float32)

    async def wait_for_seconds(self, seconds: float, timeout: float = 5.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while self.seconds < seconds:
            assert asyncio.get_running_loop().time() < deadline, f"only {self.seconds:.2f} s decoded"
            await asyncio.sleep(0.01)

    async def finish(self, timeout: float = 10.0) -> np.ndarray:
        await asyncio.wait_for(self.task, timeout)
        return self.audio()


# -- PCM ---------------------------------------------------------------------------------------


async def test_pcm_odd_splits_reassemble_exactly() -> None:
    rng = np.random.default_rng(1)
    samples = np.concatenate([[-32768, 32767, 0, 16384, -16384], rng.integers(-32768, 32768, 5000)])
    data = samples.astype("<i2").tobytes()
    decoder = make_decoder(pcm_input=True)
    assert isinstance(decoder, PcmDecoder)
    collector = Collector(decoder)
    pos = 0
    for size in [1, 3, 2, 7, 1, 1, 999, 4, 5]:  # odd sizes split samples between frames
        decoder.feed(data[pos : pos + size])
        pos += size
    decoder.feed(data[pos:])
    decoder.close()
    decoder.close()  # idempotent
    audio = await collector.finish()
    np.testing.assert_array_equal(audio, samples.astype(np.float32) / 32768)
    assert audio[:5].tolist() == [-1.0, 32767 / 32768, 0.0, 0.5, -0.5]


async def test_pcm_drops_dangling_byte_and_ignores_feed_after_close() -> None:
    decoder = PcmDecoder()
    collector = Collector(decoder)
    decoder.feed(np.array([1000, -1000], "<i2").tobytes() + b"\x01")
    decoder.close()
    decoder.feed(b"\x00\x40")
    assert (await collector.finish()).tolist() == [1000 / 32768, -1000 / 32768]


# -- compressed streams -------------------------------------------------------------------------


async def stream_decode(data: bytes, collector_check_half: bool = True) -> np.ndarray:
    decoder = make_decoder(pcm_input=False)
    assert isinstance(decoder, PyAVDecoder)
    collector = Collector(decoder)
    chunks = list(pieces(data))
    half = len(chunks) // 2
    for chunk in chunks[:half]:
        decoder.feed(chunk)
        await asyncio.sleep(0)
    if collector_check_half:
        # Incremental: audio from the first half comes out while the client is still sending.
        await collector.wait_for_seconds(0.35 * JFK_SECONDS)
        assert not collector.task.done()
    for chunk in chunks[half:]:
        decoder.feed(chunk)
    decoder.close()
    return await collector.finish()


@pytest.mark.parametrize("container", ["mediarecorder", "webm", "ogg"])
async def test_opus_stream_matches_original(jfk: np.ndarray, container: str) -> None:
    data = mediarecorder_webm(jfk) if container == "mediarecorder" else encode(jfk, container)
    audio = await stream_decode(data)
    assert abs(len(audio) / SAMPLE_RATE - JFK_SECONDS) <= 0.1
    assert correlation(audio, jfk) > 0.95
    assert np.abs(audio).max() <= 1.0


async def test_mp3_stream_matches_original(classic: Path, jfk: np.ndarray) -> None:
    audio = await stream_decode((classic / "jfk.mp3").read_bytes())
    assert abs(len(audio) / SAMPLE_RATE - JFK_SECONDS) <= 0.1
    assert correlation(audio, jfk) > 0.95


async def test_webm_first_audio_needs_only_the_header_and_a_block(jfk: np.ndarray) -> None:
    data = mediarecorder_webm(jfk)
    decoder = PyAVDecoder()
    collector = Collector(decoder)
    decoder.feed(data[:4000])  # header (~300 bytes) + the first few Opus blocks
    await collector.wait_for_seconds(0.02, timeout=2.0)
    decoder.close()
    await collector.finish()


@pytest.mark.parametrize("live", [True, False])
async def test_truncated_webm_ends_cleanly_with_audio_before_the_cut(jfk: np.ndarray, live: bool) -> None:
    data = mediarecorder_webm(jfk) if live else encode(jfk, "webm")
    cut = int(len(data) * 0.6) + 7  # mid-block, mid-cluster
    audio = await stream_decode(data[:cut], collector_check_half=False)
    seconds = len(audio) / SAMPLE_RATE
    assert 0.5 * JFK_SECONDS < seconds < 0.65 * JFK_SECONDS
    assert correlation(audio, jfk[: len(audio)]) > 0.95


async def test_random_bytes_raise_soon_after_close() -> None:
    decoder = PyAVDecoder()
    decoder.feed(np.random.default_rng(2).bytes(64_000))
    decoder.close()

    async def drain() -> None:
        async for _ in decoder:
            pass

    with pytest.raises(AudioDecodeError, match=r"^could not decode audio: "):
        await asyncio.wait_for(drain(), 5)


async def test_endless_garbage_raises_without_close() -> None:
    decoder = PyAVDecoder()
    collector = Collector(decoder)
    decoder.feed(np.random.default_rng(3).bytes(1_500_000))  # past FFmpeg's 1 MB probe limit
    with pytest.raises(AudioDecodeError):
        await collector.finish(timeout=10)
    decoder.close()


async def test_empty_stream_ends_cleanly_without_audio() -> None:
    decoder = PyAVDecoder()
    collector = Collector(decoder)
    decoder.close()
    decoder.feed(b"late bytes")  # ignored after close()
    assert len(await collector.finish(timeout=5)) == 0


async def test_worker_thread_ends_on_close_and_when_abandoned(jfk: np.ndarray) -> None:
    header = encode(jfk, "webm")[:3000]
    closed = PyAVDecoder()
    closed.feed(header)
    closed.close()
    abandoned = PyAVDecoder()
    abandoned.feed(header)  # the thread now blocks inside FFmpeg waiting for more bytes
    threads = [closed._thread, abandoned._thread]
    del closed, abandoned
    gc.collect()
    for thread in threads:
        await asyncio.to_thread(thread.join, 5)
        assert not thread.is_alive()


# -- load_audio ---------------------------------------------------------------------------------


async def test_load_audio_formats_agree(classic: Path, jfk: np.ndarray) -> None:
    for name in ["jfk.wav", "jfk.flac", "jfk.mp3"]:  # 16 kHz mono / 44.1 kHz stereo / mp3
        audio = load_audio(classic / name)
        assert audio.dtype == np.float32 and audio.ndim == 1
        assert abs(len(audio) / SAMPLE_RATE - JFK_SECONDS) <= 0.05, name
        assert correlation(audio, jfk) > 0.98, name
        # Stereo is averaged, not summed: the level matches the mono original.
        assert np.abs(audio).max() == pytest.approx(np.abs(jfk).max(), rel=0.1), name
    at_8k = load_audio(classic / "jfk.flac", sample_rate=8000)
    assert len(at_8k) == pytest.approx(8000 * JFK_SECONDS, abs=80)


async def test_load_audio_errors_are_readable(tmp_path: Path) -> None:
    with pytest.raises(AudioDecodeError, match=r"could not decode audio: .*missing\.wav"):
        load_audio(tmp_path / "missing.wav")
    junk = tmp_path / "junk.mp3"
    junk.write_bytes(b"this is not audio at all\n" * 100)
    with pytest.raises(AudioDecodeError, match=r"could not decode audio: .*junk\.mp3"):
        load_audio(junk)
