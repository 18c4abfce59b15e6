"""Whisper on CTranslate2 through faster-whisper, shaped for streaming.

faster-whisper's `transcribe()` pads every window to 30 s before encoding. A streaming buffer
is usually 1-15 s, and the CTranslate2 encoder accepts shorter inputs, so we encode only the audio
we have (about 6x cheaper for a 5 s buffer) and drive generate/align ourselves, reusing
faster-whisper's feature extractor, tokenizer, prompt builder and word alignment.
"""

from __future__ import annotations

import logging
import zlib
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from whisperlivekit.asr.base import ASRBackend
from whisperlivekit.messages import Word

if TYPE_CHECKING:
    import ctranslate2
    from faster_whisper.tokenizer import Tokenizer

logger = logging.getLogger(__name__)

HOP_LENGTH = 160  # samples per mel frame
FRAMES_PER_SECOND = 16000 // HOP_LENGTH
MAX_FRAMES = 3000  # the encoder's positional embedding covers 30 s
# Without any trailing silence Whisper loops on the last words of an unpadded buffer. On 100
# Hi-Fi TTS utterances in ~11 s buffers (tiny.en int8) WER was 23% unpadded, 7.2% with 1 s of
# zeros and 7.8% with the full 30 s, at half the cost of the latter.
TAIL_PADDING = 16000
MAX_TOKENS = 448
PROMPT_TOKENS = MAX_TOKENS // 2 - 1
# A hypothesis this compressible is a repetition loop, not speech (Whisper's own threshold).
MAX_COMPRESSION_RATIO = 2.4
NO_SPEECH_THRESHOLD = 0.6
LOGPROB_THRESHOLD = -1.0


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

    def encode(self, audio: np.ndarray, pad_to_30s: bool) -> tuple[ctranslate2.StorageView, int]:
        """Encoder output and the number of mel frames that hold audio."""
        from faster_whisper.transcribe import get_ctranslate2_storage

        num_frames = min(len(audio) // HOP_LENGTH, MAX_FRAMES)
        padding = MAX_FRAMES * HOP_LENGTH if pad_to_30s else TAIL_PADDING
        features = self.model.feature_extractor(np.pad(audio, (0, padding)), padding=0)
        target = MAX_FRAMES if pad_to_30s else min(MAX_FRAMES, features.shape[-1] & ~1)  # conv stride 2
        features = features[:, :target]
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
        previous = tokenizer.encode(" " + prompt.strip())[-PROMPT_TOKENS:] if prompt.strip() else None
        prompt_tokens = self.model.get_prompt(tokenizer, previous, without_timestamps=True)
        # Bounding the output by the audio length cuts off runaway repetition loops early.
        max_new = 10 + int(8 * len(audio) / self.sample_rate)
        result = self.model.model.generate(
            encoder_output,
            [prompt_tokens],
            beam_size=self.beams,
            max_length=min(MAX_TOKENS, len(prompt_tokens) + max_new),
            suppress_blank=True,
            suppress_tokens=self._suppressed_tokens(tokenizer),
            return_scores=True,
            return_no_speech_prob=True,
        )[0]
        tokens = [t for t in result.sequences_ids[0] if t < tokenizer.eot]
        if not tokens or self._is_hallucination(tokenizer, tokens, result.scores[0], result.no_speech_prob):
            return []
        return self._words(tokenizer, tokens, encoder_output, num_frames)

    def _suppressed_tokens(self, tokenizer: Tokenizer) -> list[int]:
        from faster_whisper.transcribe import get_suppressed_tokens

        return list(get_suppressed_tokens(tokenizer, [-1]))

    @staticmethod
    def _is_hallucination(
        tokenizer: Tokenizer, tokens: list[int], score: float, no_speech_prob: float
    ) -> bool:
        avg_logprob = score * len(tokens) / (len(tokens) + 1)  # CT2 normalises by length
        if no_speech_prob > NO_SPEECH_THRESHOLD and avg_logprob < LOGPROB_THRESHOLD:
            return True
        text = tokenizer.decode(tokens).encode()
        return len(text) > 40 and len(text) / len(zlib.compress(text)) > MAX_COMPRESSION_RATIO

    def _words(
        self, tokenizer: Tokenizer, tokens: list[int], encoder_output: ctranslate2.StorageView, num_frames: int
    ) -> list[Word]:
        from faster_whisper.transcribe import merge_punctuations

        alignment = self.model.find_alignment(tokenizer, [tokens], encoder_output, num_frames)[0]
        merge_punctuations(alignment, "\"'“¿([{-", "\"'.。,，!！?？:：”)]}、")
        duration = num_frames / FRAMES_PER_SECOND
        return [
            Word(w["word"], float(min(w["start"], duration)), float(min(w["end"], duration)), float(w["probability"]))
            for w in alignment
            if w["word"]
        ]
