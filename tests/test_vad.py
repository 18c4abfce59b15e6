"""Streaming Silero VAD on the real JFK clip, padded with silence."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from whisperlivekit.audio.decoder import SAMPLE_RATE, load_audio
from whisperlivekit.audio.vad import (
    SileroVADModel,
    SpeechEnd,
    SpeechStart,
    StreamingVAD,
    VADEvent,
    default_model_path,
)

PAD = 3 * SAMPLE_RATE  # 3 s of silence around the speech


@pytest.fixture(scope="module")
def jfk(jfk_wav: Path) -> np.ndarray:
    return load_audio(jfk_wav)


@pytest.fixture(scope="module")
def model() -> SileroVADModel:
    return SileroVADModel()


def quiet(kind: str, n: int, seed: int = 0) -> np.ndarray:
    if kind == "zeros":
        return np.zeros(n, np.float32)
    return (0.003 * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)  # ~-50 dBFS hiss


def run(vad: StreamingVAD, audio: np.ndarray, chunk: int | None = None) -> list[VADEvent]:
    chunk = chunk or len(audio)
    events = [e for i in range(0, len(audio), chunk) for e in vad.process(audio[i : i + chunk])]
    return events + vad.flush()


def segments(events: list[VADEvent]) -> list[tuple[int, int]]:
    """Checks strict start/end alternation and returns (start, end) pairs."""
    assert [type(e) for e in events] == [SpeechStart, SpeechEnd] * (len(events) // 2)
    pairs = [(s.sample, e.sample) for s, e in zip(events[::2], events[1::2], strict=True)]
    for (start, end), (next_start, _) in zip(pairs, [*pairs[1:], (None, None)], strict=True):
        assert start < end and (next_start is None or end <= next_start)
    return pairs


@pytest.mark.parametrize("kind", ["zeros", "noise"])
def test_speech_found_between_silences(model: SileroVADModel, jfk: np.ndarray, kind: str) -> None:
    audio = np.concatenate([quiet(kind, PAD, 1), jfk, quiet(kind, PAD, 2)])
    pairs = segments(run(StreamingVAD(model), audio))
    assert pairs
    speech_end = PAD + len(jfk)
    assert abs(pairs[0][0] - PAD) <= 0.5 * SAMPLE_RATE
    assert abs(pairs[-1][1] - speech_end) <= 0.7 * SAMPLE_RATE
    # Nothing in the silences; and the segments cover most of the speech.
    assert pairs[0][0] >= PAD - 0.2 * SAMPLE_RATE and pairs[-1][1] <= speech_end + 0.7 * SAMPLE_RATE
    assert sum(end - start for start, end in pairs) > 0.7 * len(jfk)


def test_events_do_not_depend_on_chunking(model: SileroVADModel, jfk: np.ndarray) -> None:
    audio = np.concatenate([quiet("noise", PAD), jfk, quiet("zeros", PAD)])
    whole = run(StreamingVAD(model), audio)
    assert len(whole) >= 2
    assert run(StreamingVAD(model), audio, chunk=SAMPLE_RATE // 10) == whole  # 100 ms
    assert run(StreamingVAD(model), audio, chunk=37) == whole


@pytest.mark.parametrize("kind", ["zeros", "noise"])
def test_silence_gives_no_events(model: SileroVADModel, kind: str) -> None:
    vad = StreamingVAD(model)
    assert run(vad, quiet(kind, 10 * SAMPLE_RATE), chunk=1600) == []
    assert not vad.in_speech


def test_streams_sharing_a_model_do_not_interfere(model: SileroVADModel, jfk: np.ndarray) -> None:
    a_audio = np.concatenate([quiet("zeros", PAD), jfk, quiet("zeros", PAD)])
    b_audio = np.concatenate([jfk[::-1], quiet("noise", PAD)])  # different content, same model
    separate = run(StreamingVAD(model), a_audio), run(StreamingVAD(model), b_audio)
    a, b = StreamingVAD(model), StreamingVAD(model)
    events: tuple[list[VADEvent], list[VADEvent]] = ([], [])
    for i in range(0, max(len(a_audio), len(b_audio)), 1000):
        events[0].extend(a.process(a_audio[i : i + 1000]))
        events[1].extend(b.process(b_audio[i : i + 1000]))
    events[0].extend(a.flush())
    events[1].extend(b.flush())
    assert events == separate
    assert separate[0] != separate[1]


def test_flush_closes_open_speech_at_last_sample(model: SileroVADModel, jfk: np.ndarray) -> None:
    vad = StreamingVAD(model)
    speech = jfk[: 2 * SAMPLE_RATE + 100]  # cut mid-word: speech still open
    events = vad.process(np.concatenate([quiet("zeros", PAD), speech]))
    assert [type(e) for e in events] == [SpeechStart] and vad.in_speech
    assert vad.flush() == [SpeechEnd(PAD + len(speech))]
    assert not vad.in_speech and vad.flush() == []


def test_silence_and_padding_options(model: SileroVADModel, jfk: np.ndarray) -> None:
    audio = np.concatenate([quiet("zeros", PAD), jfk, quiet("zeros", PAD)])
    default = segments(run(StreamingVAD(model), audio))
    patient = segments(run(StreamingVAD(model, min_silence_duration_ms=2000), audio))
    assert len(patient) < len(default)  # JFK's pauses are < 2 s: fewer, longer segments
    tight = segments(run(StreamingVAD(model, speech_pad_ms=0), audio))
    assert tight[0][0] - default[0][0] == int(0.1 * SAMPLE_RATE)  # 100 ms default start padding
    early = segments(run(StreamingVAD(model, prefix_pad_ms=300), audio))
    assert default[0][0] - early[0][0] == int(0.2 * SAMPLE_RATE)  # a wider start only
    assert [end for _, end in early] == [end for _, end in default]


def test_prefix_padding_keeps_an_unvoiced_onset(model: SileroVADModel, eval_root: Path) -> None:
    """LJ001-0001 opens on the "p" of "Printing" at once: Silero rises with the voiced "ri" ~0.25 s
    later, so Silero's own 100 ms padding (the default) cuts the word and both policies lose it;
    `--vad-prefix-padding 0.3` keeps it."""
    audio = load_audio(eval_root / "en" / "ljspeech" / "LJ001-0001.wav")
    frames = np.abs(audio[: len(audio) // 160 * 160]).reshape(-1, 160).max(axis=1)  # 10 ms peaks
    onset = int(np.argmax(frames > 0.1 * frames.max())) * 160
    silero = segments(run(StreamingVAD(model), audio))
    wider = segments(run(StreamingVAD(model, prefix_pad_ms=300), audio))
    assert silero[0][0] > onset >= wider[0][0]


def test_reset_restarts_the_clock(model: SileroVADModel, jfk: np.ndarray) -> None:
    audio = np.concatenate([quiet("zeros", SAMPLE_RATE), jfk[: 3 * SAMPLE_RATE]])
    vad = StreamingVAD(model)
    first = run(vad, audio)
    vad.process(jfk[: SAMPLE_RATE + 123])  # leave state, speech and a partial frame behind
    vad.reset()
    assert not vad.in_speech and run(vad, audio) == first


def test_model_path_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_model_path().name == "silero_vad.onnx"
    assert SileroVADModel(default_model_path()).session is not None
    with pytest.raises(Exception, match=r"missing\.onnx"):
        SileroVADModel(tmp_path / "missing.onnx")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)  # package not installed
    with pytest.raises(RuntimeError, match="pip install silero-vad"):
        SileroVADModel()


REFERENCE = """
import json, sys
import numpy as np, torch
from silero_vad.utils_vad import OnnxWrapper, VADIterator
audio = torch.from_numpy(np.load(sys.argv[1]))
model = OnnxWrapper(sys.argv[2], force_onnx_cpu=True)
vad = VADIterator(model, min_silence_duration_ms=500, speech_pad_ms=100)
events = [vad(audio[i : i + 512]) for i in range(0, len(audio) - 511, 512)]
print(json.dumps([e for e in events if e]))
"""


def test_matches_silero_reference_iterator(model: SileroVADModel, jfk: np.ndarray, tmp_path: Path) -> None:
    """Same events as Silero's own OnnxWrapper + VADIterator (run in a subprocess: it imports torch)."""
    pytest.importorskip("torch")
    audio = np.concatenate([quiet("zeros", PAD), jfk, quiet("noise", PAD)])
    np.save(tmp_path / "audio.npy", audio)
    script = [sys.executable, "-c", REFERENCE, str(tmp_path / "audio.npy"), str(default_model_path())]
    reference = json.loads(subprocess.run(script, capture_output=True, text=True, check=True).stdout)
    ours = [
        {"start": e.sample} if isinstance(e, SpeechStart) else {"end": e.sample}
        for e in StreamingVAD(model).process(audio)
    ]
    assert len(reference) >= 2 and ours == reference
