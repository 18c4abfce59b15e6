"""Whisper on CTranslate2 through faster-whisper, shaped for streaming.

faster-whisper's `transcribe()` pads every window to 30 s before encoding. A streaming buffer
is usually 1-15 s, and the CTranslate2 encoder accepts shorter inputs, so we encode only the audio
we have (about 6x cheaper for a 5 s buffer) and drive generate/align ourselves, reusing
faster-whisper's feature extractor, tokenizer, prompt builder and word alignment.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterator, Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from whisperlivekit.asr.base import ASRBackend
from whisperlivekit.messages import Word

if TYPE_CHECKING:
    from ctranslate2 import StorageView
    from faster_whisper.tokenizer import Tokenizer

    from whisperlivekit.asr.batching import Transcription

logger = logging.getLogger(__name__)

HOP_LENGTH = 160  # samples per mel frame
FRAMES_PER_SECOND = 16000 // HOP_LENGTH
MAX_FRAMES = 3000  # the encoder's positional embedding covers 30 s
# The encoder sees only the audio we have plus some silence, not 30 s of padding. Whisper needs
# both: without trailing silence it loops on the last words, and on a short window it garbles
# everything. Measured with tiny.en int8 (WER; encode+decode time per buffer):
#   60 single Hi-Fi TTS utterances (1.5-5 s): window 5 s 29%, 10 s 8.8%, 15 s 6.3%, 30 s 7.3%
#   10 buffers of ~11 s: +0 s 23%, +1 s 7.2%, 30 s 7.8% (at twice the cost)
MIN_WINDOW = 15 * 16000
TAIL_PADDING = 16000
MAX_WINDOW = MAX_FRAMES * HOP_LENGTH
MAX_TOKENS = 448
PROMPT_TOKENS = MAX_TOKENS // 2 - 1
# A hypothesis this compressible is a repetition loop, not speech (Whisper's own threshold).
MAX_COMPRESSION_RATIO = 2.4
NO_SPEECH_THRESHOLD = 0.6
LOGPROB_THRESHOLD = -1.0
END_MARGIN = 0.05
# Speech is 2-5 tokens a second; fewer from 2 s of voiced audio means the decoder skipped some.
MIN_TOKENS_PER_SECOND = 1.0


class Decoded(NamedTuple):
    tokens: list[int]
    avg_logprob: float
    no_speech_prob: float

    def plausible(self, tokenizer: Tokenizer) -> bool:
        return self.avg_logprob >= LOGPROB_THRESHOLD and not self.is_loop(tokenizer)

    def is_silence(self) -> bool:
        return self.no_speech_prob > NO_SPEECH_THRESHOLD and self.avg_logprob < LOGPROB_THRESHOLD

    def is_loop(self, tokenizer: Tokenizer) -> bool:
        text = tokenizer.decode(self.tokens).encode()
        return len(text) > 40 and len(text) / len(zlib.compress(text)) > MAX_COMPRESSION_RATIO


class _Job(NamedTuple):
    """One transcription request, prepared."""

    index: int
    tokenizer: Tokenizer
    features: np.ndarray
    num_frames: int
    seconds: float
    previous: list[int] | None  # prompt tokens
    max_new: int


class _Encoded:
    """Encoder output of a batch, from which any subset can be decoded or aligned."""

    def __init__(self, output: StorageView, count: int) -> None:
        self.output = output
        self.count = count
        self._array: np.ndarray | None = None

    @classmethod
    def of(cls, model: Any, features: list[np.ndarray]) -> _Encoded:
        from faster_whisper.transcribe import get_ctranslate2_storage

        def storage(batch: list[np.ndarray]) -> StorageView:
            return get_ctranslate2_storage(np.ascontiguousarray(np.stack(batch), dtype=np.float32))

        if len(features) > 1 and model.device == "cpu":
            # On a CPU one batched encoder call was slower than one call per item (0.7x for 2-8
            # items, benchmarks/batching.md); the decoder still gains from the batch.
            outputs = [np.asarray(model.encode(storage([f]))) for f in features]
            return cls(get_ctranslate2_storage(np.ascontiguousarray(np.concatenate(outputs))), len(features))
        # A subset is sliced from host memory, so a batch's output comes back to the CPU.
        return cls(model.encode(storage(features), to_cpu=len(features) > 1), len(features))

    def select(self, indices: list[int]) -> StorageView:
        if indices == list(range(self.count)):
            return self.output
        import ctranslate2

        if self._array is None:
            self._array = np.asarray(self.output)
        return ctranslate2.StorageView.from_array(np.ascontiguousarray(self._array[indices]))


class FasterWhisperBackend(ASRBackend):
    def __init__(
        self,
        model_dir: str | Path,
        *,
        device: str = "auto",
        compute_type: str = "int8",
        cpu_threads: int = 0,
        beams: int = 1,
        task: str = "transcribe",
        pad_to_30s: bool = False,
    ) -> None:
        from faster_whisper import WhisperModel

        self.model = WhisperModel(
            str(model_dir), device=device, compute_type=compute_type, cpu_threads=cpu_threads
        )
        self.multilingual = self.model.model.is_multilingual
        self.beams = beams
        self.task = task
        self.pad_to_30s = pad_to_30s

    @cache  # noqa: B019 - one tokenizer per language for the model's life; the model lives as long
    def tokenizer(self, language: str | None) -> Tokenizer:
        from faster_whisper.tokenizer import Tokenizer

        if not self.multilingual:
            language = "en"
        return Tokenizer(self.model.hf_tokenizer, self.multilingual, task=self.task, language=language)

    def encode_features(self, audio: np.ndarray, pad_to_30s: bool) -> tuple[np.ndarray, int]:
        """Log-mel features of the window the encoder sees, and the number of frames that hold audio."""
        num_frames = min(len(audio) // HOP_LENGTH, MAX_FRAMES)
        window = MAX_WINDOW if pad_to_30s else max(MIN_WINDOW, len(audio) + TAIL_PADDING)
        padding = max(0, window - len(audio))
        features = self.model.feature_extractor(np.pad(audio, (0, padding)), padding=0)
        features = features[:, : min(MAX_FRAMES, features.shape[-1] & ~1)]  # even: the conv stride is 2
        return features, num_frames

    def encode(self, audio: np.ndarray, pad_to_30s: bool) -> tuple[StorageView, int]:
        """Encoder output and the number of mel frames that hold audio."""
        features, num_frames = self.encode_features(audio, pad_to_30s)
        return _Encoded.of(self.model.model, [features]).select([0]), num_frames

    def detect_language(self, audio: np.ndarray) -> tuple[str, float]:
        if not self.multilingual:
            return "en", 1.0
        encoder_output, _ = self.encode(audio, pad_to_30s=True)
        token, probability = self.model.model.detect_language(encoder_output)[0][0]
        return token[2:-2], probability

    def transcribe(self, audio: np.ndarray, *, prompt: str = "", language: str | None = None) -> list[Word]:
        from whisperlivekit.asr.batching import Transcription

        return self.transcribe_batch([Transcription(audio, prompt, language)])[0]

    def transcribe_batch(self, requests: Sequence[Transcription]) -> list[list[Word]]:
        """Words of each request, as `transcribe` would give them alone, with batched model calls.

        Requests whose encoder windows, languages and prompt lengths match share one encoder and
        one decoder call (CTranslate2 needs equal shapes and <|startoftranscript|> at one position).
        """
        results: list[list[Word]] = [[] for _ in requests]
        groups: dict[tuple[object, ...], list[_Job]] = {}
        for index, request in enumerate(requests):
            if len(request.audio) < self.sample_rate // 10:
                continue
            job = self._job(index, request)
            key = (job.features.shape[-1], id(job.tokenizer), len(job.previous or ()))
            groups.setdefault(key, []).append(job)
        for jobs in groups.values():
            for job, words in zip(jobs, self._transcribe_group(jobs), strict=True):
                results[job.index] = words
        return results

    def _job(self, index: int, request: Transcription) -> _Job:
        tokenizer = self.tokenizer(request.language)
        features, num_frames = self.encode_features(request.audio, self.pad_to_30s)
        prompt = request.prompt.strip()
        limit = request.prompt_tokens if request.prompt_tokens is not None else PROMPT_TOKENS
        previous = tokenizer.encode(" " + prompt)[-limit:] if prompt and limit > 0 else None
        seconds = len(request.audio) / self.sample_rate
        # Bounding the output by the audio length cuts off runaway repetition loops early.
        max_new = 10 + int(8 * seconds)
        return _Job(index, tokenizer, features, num_frames, seconds, previous, max_new)

    def _transcribe_group(self, jobs: list[_Job]) -> list[list[Word]]:
        tokenizer = jobs[0].tokenizer
        encoded = _Encoded.of(self.model.model, [job.features for job in jobs])
        everyone = list(range(len(jobs)))
        decoded = self._generate_batch(tokenizer, encoded, jobs, everyone, prompted=True)
        sparse = [
            job.seconds >= 2.0 and len(d.tokens) < MIN_TOKENS_PER_SECOND * job.seconds
            for job, d in zip(jobs, decoded, strict=True)
        ]
        # A prompt sometimes derails the decoder: it skips words it believes were said
        # (prompt "...can do for you", audio "ask what you can do for your country" -> "country").
        again = [
            i for i in everyone if jobs[i].previous and (sparse[i] or not decoded[i].plausible(tokenizer))
        ]
        retries = self._generate_batch(tokenizer, encoded, jobs, again, prompted=False)
        for i, retry in zip(again, retries, strict=True):
            if sparse[i] and retry.plausible(tokenizer) and len(retry.tokens) > len(decoded[i].tokens):
                decoded[i] = retry
            else:
                decoded[i] = max(decoded[i], retry, key=lambda d: d.avg_logprob)
        kept = [i for i in everyone if decoded[i].tokens and not decoded[i].is_silence()
                and not decoded[i].is_loop(tokenizer)]
        results: list[list[Word]] = [[] for _ in jobs]
        # Alignment pads a batch to its longest text, which moves the last word's end: only
        # texts of one length share a call.
        by_length: dict[int, list[int]] = {}
        for i in kept:
            by_length.setdefault(len(decoded[i].tokens), []).append(i)
        for same in by_length.values():
            texts = [decoded[i].tokens for i in same]
            words = self._words(tokenizer, texts, encoded.select(same), [jobs[i].num_frames for i in same])
            for i, w in zip(same, words, strict=True):
                results[i] = w
        return results

    def _generate_batch(
        self, tokenizer: Tokenizer, encoded: _Encoded, jobs: list[_Job], indices: list[int], *, prompted: bool
    ) -> list[Decoded]:
        """Greedy/beam decoding of `jobs[indices]` (with their prompts, or none) in one call."""
        if not indices:
            return []
        previous = [jobs[i].previous if prompted else None for i in indices]
        limits = [jobs[i].max_new for i in indices]
        results = self._generate(tokenizer, encoded.select(indices), previous, max(limits))
        for k, (i, limit) in enumerate(zip(indices, limits, strict=True)):
            # CTranslate2 has one length limit per batch; a text that may have reached its own limit
            # is decoded again alone, so that it ends where it would alone.
            if len(limits) > 1 and len(results[k].tokens) + 1 >= limit and limit < max(limits):
                results[k] = self._generate(tokenizer, encoded.select([i]), [previous[k]], limit)[0]
        return results

    def _generate(
        self,
        tokenizer: Tokenizer,
        encoder_output: StorageView,
        previous: list[list[int] | None],
        max_new: int,
    ) -> list[Decoded]:
        from faster_whisper.transcribe import get_suppressed_tokens

        prompts = [self.model.get_prompt(tokenizer, p, without_timestamps=True) for p in previous]
        results = self.model.model.generate(
            encoder_output,
            prompts,
            beam_size=self.beams,
            # CTranslate2, like Whisper's sample_len, generates at most max_length // 2 tokens.
            max_length=min(MAX_TOKENS, max(len(prompts[0]) + max_new, 2 * max_new)),
            suppress_blank=True,
            suppress_tokens=list(get_suppressed_tokens(tokenizer, [-1])),
            return_scores=True,
            return_no_speech_prob=True,
        )
        decoded = []
        for result in results:
            tokens = [t for t in result.sequences_ids[0] if t < tokenizer.eot]
            # CTranslate2 scores are normalised by length; Whisper's avg_logprob counts the EOT too.
            avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
            decoded.append(Decoded(tokens, avg_logprob, result.no_speech_prob))
        return decoded

    def _words(
        self, tokenizer: Tokenizer, texts: list[list[int]], encoder_output: StorageView, num_frames: list[int]
    ) -> list[list[Word]]:
        from faster_whisper.transcribe import merge_punctuations

        alignments = self.model.find_alignment(tokenizer, texts, encoder_output, num_frames)  # type: ignore[arg-type]
        words = []
        for alignment, frames in zip(alignments, num_frames, strict=True):
            merge_punctuations(alignment, "\"'“¿([{-", "\"'.。,，!！?？:：”)]}、")
            duration = frames / FRAMES_PER_SECOND
            # Words aligned to the very end of the audio have none of it: a loop the decoder ran into.
            words.append([
                Word(w["word"], float(w["start"]), float(min(w["end"], duration)), float(w["probability"]))
                for w in alignment
                if w["word"] and w["start"] < duration - END_MARGIN
            ])
        return words

    def transcribe_file(
        self,
        audio: np.ndarray,
        *,
        language: str | None = None,
        vad_filter: bool = True,
        task: str | None = None,
        prompt: str | None = None,
    ) -> Iterator[Word]:
        """Offline transcription of a whole recording (30 s windows, conditioned on the past)."""
        segments, _ = self.model.transcribe(
            audio,
            language=language if self.multilingual else "en",
            task=task or self.task,
            initial_prompt=prompt or None,
            beam_size=self.beams,
            word_timestamps=True,
            vad_filter=vad_filter,
        )
        for segment in segments:
            for word in segment.words or ():
                yield Word(word.word, word.start, word.end, word.probability)
