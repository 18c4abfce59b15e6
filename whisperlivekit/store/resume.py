"""A transcript that continues a stored session: its lines first, then this stream shifted after them.

The new connection's audio clock starts at 0 again (VAD, policy, decoder all count from there);
shifting what reaches the transcript by the stored session's end keeps one continuous timeline.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from whisperlivekit.diarization.base import SpeakerSegment
from whisperlivekit.messages import Word
from whisperlivekit.output.transcript import DEFAULT_SPEAKER, Line, Transcript


class ResumedTranscript(Transcript):
    def __init__(self, lines: Sequence[Line], offset: float) -> None:
        super().__init__()
        self.lines = [Line(**line.to_dict()) if isinstance(line, Line) else line for line in lines]
        self.offset = offset

    def add_words(
        self, words: Iterable[Word], speaker: int | None = DEFAULT_SPEAKER, language: str | None = None
    ) -> None:
        super().add_words([word.shifted(self.offset) for word in words], speaker, language)

    def add_silence(self, start: float, end: float) -> None:
        super().add_silence(start + self.offset, end + self.offset)

    def add_speakers(self, segments: Iterable[SpeakerSegment], until: float) -> None:
        super().add_speakers(self._shift(segments), until + self.offset)

    def add_turns(self, segments: Iterable[SpeakerSegment]) -> None:
        super().add_turns(self._shift(segments))

    def _shift(self, segments: Iterable[SpeakerSegment]) -> list[SpeakerSegment]:
        return [SpeakerSegment(s.speaker, s.start + self.offset, s.end + self.offset) for s in segments]
