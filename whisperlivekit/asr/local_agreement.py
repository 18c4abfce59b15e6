"""LocalAgreement-2 (Macháček et al., 2023, "Turning Whisper into Real-Time Transcription System").

The whole audio buffer is transcribed at every update; a word is committed once two consecutive
hypotheses agree on it. Committed text leaves the buffer when it grows past a limit and is then
given to the model as its prompt, so context survives the cut.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Sequence
from typing import Literal

import numpy as np

from whisperlivekit.asr.base import ASRBackend, AudioBacklog, AudioBuffer, StreamingPolicy, words_text
from whisperlivekit.asr.batching import LanguageDetection, ModelSteps, Transcription, batchable, run_steps
from whisperlivekit.messages import PolicyOutput, Word

SAMPLE_RATE = 16000
MAX_BUFFER_SECONDS = 28.0  # Whisper sees at most 30 s; keep room for the tail padding
# A backlog (a fast upload, a server behind) goes in steps of this much: two hypotheses must agree.
# LJSpeech in 30 s bursts (benchmarks/simulate.py --chunk 30): one decode 75 %, 10 s steps 23 %,
# 5 s 6.4 %, 2 s 6.3 % WER.
MAX_STEP_SECONDS = 5.0
PROMPT_CHARS = 300  # committed text offered as the prompt: always more than PROMPT_TOKENS
# The prompt's length in tokens, fixed so that the prompts of different sessions can share one
# batched decoder call (CTranslate2 wants <|startoftranscript|> at the same position in all).
PROMPT_TOKENS = 48
MAX_OVERLAP_WORDS = 5
LANGUAGE_DETECTION_SECONDS = 1.0
_SENTENCE_END = re.compile(r"[.!?。！？]['\")\]]*$")
_NOT_WORD = re.compile(r"[^\w']+")


def _key(word: Word) -> str:
    """Two hypotheses agree on a word despite case or punctuation changes."""
    return _NOT_WORD.sub("", word.text.casefold())


class HypothesisBuffer:
    """Commits the longest common prefix of consecutive hypotheses."""

    def __init__(self) -> None:
        self.committed: list[Word] = []  # committed words whose audio is still in the buffer
        self.previous: list[Word] = []  # the last hypothesis after the committed point
        self.last_committed_end = 0.0
        # Kept across buffer cuts: a word straddling the cut can be heard again after it.
        self._recent: deque[str] = deque(maxlen=MAX_OVERLAP_WORDS)

    def agree(self, hypothesis: Sequence[Word]) -> list[Word]:
        new = self._after_committed(hypothesis)
        agreed: list[Word] = []
        for word, before in zip(new, self.previous, strict=False):
            if _key(word) != _key(before):
                break
            agreed.append(word)
        self.previous = new[len(agreed) :]
        self._commit(agreed)
        return agreed

    def commit_all(self, hypothesis: Sequence[Word] | None = None) -> list[Word]:
        """Commit a whole hypothesis (or the last one) without waiting for agreement."""
        words = self._after_committed(hypothesis) if hypothesis is not None else self.previous
        if len(words) < len(self.previous):
            # The last decode came back shorter: Whisper drops words, often ones that repeat its
            # prompt ("...can do for you" + "ask what you can do for your country" -> "country").
            # Keep the longer reading, extended by what the last one heard after it.
            words = self.previous + [w for w in words if w.start >= self.previous[-1].end]
        self.previous = []
        self._commit(words)
        return words

    def forget_before(self, time: float) -> None:
        self.committed = [w for w in self.committed if w.end > time]

    def _commit(self, words: list[Word]) -> None:
        if words:
            self.committed.extend(words)
            self._recent.extend(_key(w) for w in words)
            self.last_committed_end = words[-1].end

    def _after_committed(self, hypothesis: Sequence[Word]) -> list[Word]:
        # Alignment times jitter by a frame or two between updates; 0.1 s absorbs it.
        new = [w for w in hypothesis if w.start > self.last_committed_end - 0.1]
        if not new or abs(new[0].start - self.last_committed_end) > 1.0:
            return new
        # The hypothesis may repeat the last committed words: drop the longest such n-gram.
        recent = list(self._recent)
        for n in range(min(len(recent), len(new)), 0, -1):
            if recent[-n:] == [_key(w) for w in new[:n]]:
                return new[n:]
        return new


class LocalAgreementPolicy(StreamingPolicy):
    def __init__(
        self,
        backend: ASRBackend,
        *,
        language: str | None = None,
        init_prompt: str | None = None,
        buffer_trimming: Literal["segment", "sentence"] = "segment",
        buffer_trimming_sec: float = 15.0,
    ) -> None:
        self.backend = backend
        self.language = None if language in (None, "", "auto") else language
        self.detect_language = self.language is None and backend.multilingual
        self.buffer_trimming = buffer_trimming
        self.buffer_trimming_sec = min(buffer_trimming_sec, MAX_BUFFER_SECONDS)
        self.hypothesis = HypothesisBuffer()
        self.buffer = AudioBuffer()
        self.backlog = AudioBacklog()  # inserted, not yet in the buffer
        self.context = (init_prompt or "").strip()  # committed text that has left the buffer
        self.detected_language: str | None = None

    @property
    def pending_seconds(self) -> float:
        return self.buffer.pending_seconds + self.backlog.seconds

    @property
    def buffered_seconds(self) -> float:
        return self.buffer.seconds + self.backlog.seconds

    def insert_audio(self, samples: np.ndarray, start: float) -> None:
        self.backlog.append(samples, start)

    # An update is a generator of model calls (batching.py): alone, `run_steps` answers them one
    # by one; the engine's scheduler answers those of many sessions in one batched call.
    @batchable("process_steps")
    def process(self) -> PolicyOutput:
        return run_steps(self.process_steps(), self.backend)

    @batchable("finish_steps")
    def finish(self) -> PolicyOutput:
        return run_steps(self.finish_steps(), self.backend)

    def process_steps(self) -> ModelSteps[PolicyOutput]:
        committed: list[Word] = []
        while True:  # a backlog in steps, as it would have come in real time
            committed += yield from self._step()
            if not self.backlog:
                return PolicyOutput(tuple(committed), tuple(self.hypothesis.previous))

    def finish_steps(self) -> ModelSteps[PolicyOutput]:
        committed: list[Word] = []
        while self.backlog.seconds > MAX_STEP_SECONDS:
            committed += yield from self._step()
        self._take_backlog()
        latest = (yield from self._transcribe(final=True)) if self.buffer.pending else None
        committed += self.hypothesis.commit_all(latest)
        self._move_to_context(self.hypothesis.committed)
        self.hypothesis.committed = []
        self.buffer.clear()
        return PolicyOutput(tuple(committed), ())

    def _step(self) -> ModelSteps[list[Word]]:
        self._take_backlog(MAX_STEP_SECONDS)
        committed = self.hypothesis.agree((yield from self._transcribe()))
        self._trim()
        return committed

    def _take_backlog(self, seconds: float = math.inf) -> None:
        for samples, start in self.backlog.take(seconds):
            self.buffer.append(samples, start)

    def _transcribe(self, final: bool = False) -> ModelSteps[list[Word]]:
        self.buffer.take_pending()
        audio = self.buffer.samples
        if self.detect_language and (final or self.buffer.seconds >= LANGUAGE_DETECTION_SECONDS):
            self.language, _ = yield LanguageDetection(audio)
            self.detected_language = self.language
            self.detect_language = False
        if self.detect_language:
            return []  # wait for enough audio to tell the language
        start = self.buffer.start
        words = yield Transcription(audio, self._prompt(), self.language, PROMPT_TOKENS)
        return [w.shifted(start) for w in words]

    def _prompt(self) -> str:
        return self.context[-PROMPT_CHARS:]

    def _trim(self) -> None:
        """Cut the buffer at a committed point once it is longer than the trimming limit."""
        if self.buffer.seconds <= self.buffer_trimming_sec:
            return
        committed = self.hypothesis.committed
        cut_index = len(committed) - 1
        if self.buffer_trimming == "sentence":
            ends = [i for i, w in enumerate(committed) if _SENTENCE_END.search(w.text)]
            # Past the hard limit a mid-sentence cut beats losing the start of the audio.
            if ends or self.buffer.seconds < MAX_BUFFER_SECONDS:
                cut_index = ends[-1] if ends else -1
        if cut_index >= 0:
            self._cut(committed[cut_index].end)
            self._move_to_context(committed[: cut_index + 1])
            self.hypothesis.forget_before(committed[cut_index].end)
        elif self.buffer.seconds > MAX_BUFFER_SECONDS:
            # Nothing committed in 28 s of "speech": it is noise to the model; keep the recent part.
            self._cut(self.buffer.end - self.buffer_trimming_sec)

    def _cut(self, time: float) -> None:
        self.buffer.drop_first(round((time - self.buffer.start) * SAMPLE_RATE))

    def _move_to_context(self, words: Sequence[Word]) -> None:
        text = words_text(words)
        if text:
            self.context = f"{self.context} {text}".strip()[-4 * PROMPT_CHARS :]
