"""Whisper on CTranslate2 through faster-whisper, shaped for streaming.

faster-whisper's `transcribe()` pads every window to 30 s before encoding. A streaming buffer
is usually 1-15 s, and the CTranslate2 encoder accepts shorter inputs, so we encode only the audio
we have (about 6x cheaper for a 5 s buffer) and drive generate/align ourselves, reusing
faster-whisper's feature extractor, tokenizer, prompt builder and word alignment.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from whisperlivekit.asr.base import ASRBackend
from whisperlivekit.messages import Word

if TYPE_CHECKING:
    from ctranslate2 import StorageView
    from faster_whisper.tokenizer import Tokenizer

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

    def encode(self, audio: np.ndarray, pad_to_30s: bool) -> tuple[StorageView, int]:
        """Encoder output and the number of mel frames that hold audio."""
        from faster_whisper.transcribe import get_ctranslate2_storage

        num_frames = min(len(audio) // HOP_LENGTH, MAX_FRAMES)
        window = MAX_WINDOW if pad_to_30s else max(MIN_WINDOW, len(audio) + TAIL_PADDING)
        padding = max(0, window - len(audio))
        features = self.model.feature_extractor(np.pad(audio, (0, padding)), padding=0)
        features = features[:, : min(MAX_FRAMES, features.shape[-1] & ~1)]  # even: the conv stride is 2
        storage = get_ctranslate2_storage(np.ascontiguousarray(features[None], dtype=np.float32))
        return self.model.model.encode(storage, to_cpu=False), num_frames

    def detect_language(self, audio: np.ndarray) -> tuple[str, float]:
        if not self.multilingual:
            return "en", 1.0
        encoder_output, _ = self.encode(audio, pad_to_30s=True)
        token, probability = self.model.model.detect_language(encoder_output)[0][0]
        return token[2:-2], probability

    def transcribe(self, audio: np.ndarray, *, prompt: str = "", language: str | None = None) -> list[Word]:
        if len(audio) < self.sample_rate // 10:
            return []
        tokenizer = self.tokenizer(language)
        encoder_output, num_frames = self.encode(audio, self.pad_to_30s)
        # Bounding the output by the audio length cuts off runaway repetition loops early.
        max_new = 10 + int(8 * len(audio) / self.sample_rate)
        previous = tokenizer.encode(" " + prompt.strip())[-PROMPT_TOKENS:] if prompt.strip() else None
        decoded = self._generate(tokenizer, encoder_output, previous, max_new)
        seconds = len(audio) / self.sample_rate
        sparse = seconds >= 2.0 and len(decoded.tokens) < MIN_TOKENS_PER_SECOND * seconds
        if previous and (sparse or not decoded.plausible(tokenizer)):
            # A prompt sometimes derails the decoder: it skips words it believes were said
            # (prompt "...can do for you", audio "ask what you can do for your country" -> "country").
            retry = self._generate(tokenizer, encoder_output, None, max_new)
            if sparse and retry.plausible(tokenizer) and len(retry.tokens) > len(decoded.tokens):
                decoded = retry
            else:
                decoded = max(decoded, retry, key=lambda d: d.avg_logprob)
        if not decoded.tokens or decoded.is_silence() or decoded.is_loop(tokenizer):
            return []
        return self._words(tokenizer, decoded.tokens, encoder_output, num_frames)

    def _generate(
        self, tokenizer: Tokenizer, encoder_output: StorageView, previous: list[int] | None, max_new: int
    ) -> Decoded:
        from faster_whisper.transcribe import get_suppressed_tokens

        prompt = self.model.get_prompt(tokenizer, previous, without_timestamps=True)
        result = self.model.model.generate(
            encoder_output,
            [prompt],
            beam_size=self.beams,
            max_length=min(MAX_TOKENS, len(prompt) + max_new),
            suppress_blank=True,
            suppress_tokens=list(get_suppressed_tokens(tokenizer, [-1])),
            return_scores=True,
            return_no_speech_prob=True,
        )[0]
        tokens = [t for t in result.sequences_ids[0] if t < tokenizer.eot]
        # CTranslate2 scores are normalised by length; Whisper's avg_logprob counts the EOT too.
        avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
        return Decoded(tokens, avg_logprob, result.no_speech_prob)

    def _words(
        self, tokenizer: Tokenizer, tokens: list[int], encoder_output: StorageView, num_frames: int
    ) -> list[Word]:
        from faster_whisper.transcribe import merge_punctuations

        alignment = self.model.find_alignment(tokenizer, [tokens], encoder_output, num_frames)[0]
        merge_punctuations(alignment, "\"'“¿([{-", "\"'.。,，!！?？:：”)]}、")
        duration = num_frames / FRAMES_PER_SECOND
        # Words aligned to the very end of the audio have none of it: a loop the decoder ran into.
        return [
            Word(w["word"], float(w["start"]), float(min(w["end"], duration)), float(w["probability"]))
            for w in alignment
            if w["word"] and w["start"] < duration - END_MARGIN
        ]

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
