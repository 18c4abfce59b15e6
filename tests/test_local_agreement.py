"""LocalAgreement-2 on scripted hypotheses (the model is the boundary), and lines from words."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from whisperlivekit.asr.base import ASRBackend
from whisperlivekit.asr.local_agreement import HypothesisBuffer, LocalAgreementPolicy
from whisperlivekit.messages import Word
from whisperlivekit.output.transcript import SILENCE_SPEAKER, Transcript


def words(text: str, start: float = 0.0, step: float = 0.5) -> list[Word]:
    return [Word(" " + w, start + i * step, start + (i + 1) * step) for i, w in enumerate(text.split())]


def texts(ws) -> list[str]:
    return [w.text.strip() for w in ws]


def test_commits_only_what_two_hypotheses_agree_on() -> None:
    buffer = HypothesisBuffer()
    assert buffer.agree(words("and so my")) == []
    assert texts(buffer.agree(words("and so my fellow"))) == ["and", "so", "my"]
    # A changed tail is not committed; case and punctuation changes still agree.
    assert texts(buffer.agree(words("And so my fellow Americans,"))) == ["fellow"]
    assert texts(buffer.agree(words("and so my fellow americans ask"))) == ["americans"]
    assert texts(buffer.previous) == ["ask"]


def test_repeated_committed_words_are_not_committed_twice() -> None:
    buffer = HypothesisBuffer()
    buffer.agree(words("one two three"))
    buffer.agree(words("one two three four"))
    # The model re-hears "three" with a time just past the committed end: an n-gram overlap.
    late = [Word(" three", 1.45, 1.9), Word(" four", 1.9, 2.3), Word(" five", 2.3, 2.7)]
    assert texts(buffer.agree(late)) == ["four"]
    assert texts(buffer.committed) == ["one", "two", "three", "four"]
    assert texts(buffer.previous) == ["five"]


class ScriptedBackend(ASRBackend):
    """Returns the next scripted hypothesis and records the prompts it was given."""

    multilingual = False

    def __init__(self, script: list[str]) -> None:
        self.script = iter(script)
        self.prompts: list[str] = []
        self.lengths: list[float] = []

    def transcribe(self, audio: np.ndarray, *, prompt: str = "", language: str | None = None) -> list[Word]:
        self.prompts.append(prompt)
        self.lengths.append(len(audio) / 16000)
        return words(next(self.script), step=1.0)

    def transcribe_file(self, audio, *, language=None, vad_filter=True) -> Iterator[Word]:
        raise NotImplementedError

    def detect_language(self, audio: np.ndarray) -> tuple[str, float]:
        return "en", 1.0


def second(n: float = 1.0) -> np.ndarray:
    return np.zeros(int(16000 * n), dtype=np.float32)


def test_policy_trims_the_buffer_and_keeps_context_in_the_prompt() -> None:
    backend = ScriptedBackend(["a b", "a b c", "a b c d", "c d e"])
    policy = LocalAgreementPolicy(backend, language="en", buffer_trimming_sec=2.5)
    committed: list[Word] = []
    for t in range(3):
        policy.insert_audio(second(), float(t))
        committed += policy.process().committed
    assert texts(committed) == ["a", "b", "c"]
    # The buffer passed 2.5 s, so it was cut after the last committed word ("c" ends at 3.0 s).
    assert policy.buffer.start == 3.0 and policy.buffered_seconds == 0.0
    assert policy.context == "a b c"
    policy.insert_audio(second(), 3.0)
    output = policy.finish()
    assert backend.prompts[-1] == "a b c"
    # Words of the new buffer are shifted to stream time; finish commits without agreement.
    assert texts(output.committed) == ["d", "e"] and output.committed[0].start == 4.0
    assert policy.buffered_seconds == 0.0


def test_a_backlog_reaches_the_model_in_steps() -> None:
    """Audio inserted faster than real time (an upload, a server behind) reaches the model in steps,
    as it would have come in real time: one call on all of it would see only 30 s, and nothing
    would agree."""
    backend = ScriptedBackend(["a b c", "a b c d e", "a b c d e f g"])
    policy = LocalAgreementPolicy(backend, language="en")
    policy.insert_audio(second(12), 0.0)
    assert policy.pending_seconds == 12.0
    output = policy.process()
    assert backend.lengths == [5.0, 10.0, 12.0]
    assert texts(output.committed) == ["a", "b", "c", "d", "e"] and policy.pending_seconds == 0.0
    assert texts(policy.finish().committed) == ["f", "g"]


def test_lines_grow_only_and_break_at_sentences_and_pauses() -> None:
    transcript = Transcript()
    transcript.add_words(words("Hello there. General"))
    assert [line.text for line in transcript.lines] == ["Hello there.", "General"]
    frozen = transcript.to_dicts()[0]
    transcript.add_words(words("Kenobi", start=1.5))
    transcript.add_silence(2.0, 5.0)
    transcript.add_silence(5.0, 6.0)
    transcript.add_words(words("Yes", start=6.0))
    lines = transcript.to_dicts()
    assert lines[0] == frozen
    assert [(line["speaker"], line["text"]) for line in lines] == [
        (1, "Hello there."),
        (1, "General Kenobi"),
        (SILENCE_SPEAKER, ""),
        (1, "Yes"),
    ]
    assert lines[2]["start"] == 2.0 and lines[2]["end"] == 6.0
    assert transcript.text == "Hello there. General Kenobi Yes"


def test_audio_buffer_keeps_the_clock() -> None:
    from whisperlivekit.asr.base import AudioBuffer

    buffer = AudioBuffer()
    buffer.append(np.ones(8000, np.float32), start=2.0)
    buffer.append(np.ones(8000, np.float32), start=2.5)  # contiguous: the start stays
    assert (buffer.start, buffer.seconds, buffer.end, buffer.pending_seconds) == (2.0, 1.0, 3.0, 1.0)
    assert buffer.take_pending() == 16000 and buffer.pending == 0
    buffer.drop_first(4000)
    assert (buffer.start, buffer.seconds, buffer.end) == (2.25, 0.75, 3.0)
    buffer.drop_first(10**9)  # never past the end
    assert len(buffer) == 0 and buffer.start == 3.0
    buffer.clear()
    buffer.append(np.ones(1600, np.float32), start=7.0)  # a new utterance sets a new start
    assert buffer.start == 7.0 and buffer.pending_seconds == 0.1


def test_a_shorter_last_hypothesis_does_not_lose_words() -> None:
    buffer = HypothesisBuffer()
    buffer.agree(words(" ask what you can do", start=8.0))
    tail = words(" for your country.", start=10.5)
    assert buffer.agree([*words(" ask what you can do", start=8.0), *tail]) != []
    # The final decode drops the words it "already said" in its prompt.
    final = buffer.commit_all([Word(" country.", 11.5, 12.0)])
    assert "".join(w.text for w in final) == " for your country."
    buffer = HypothesisBuffer()
    buffer.agree(words(" ask what", start=0.0))
    assert "".join(w.text for w in buffer.commit_all([])) == " ask what"  # nothing at all: keep the last
