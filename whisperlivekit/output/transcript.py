"""Committed words and silences of one session, grouped into the `lines` clients display.

Lines only grow: a committed line never changes except the last one getting more words, so a
client can render incrementally and a store can persist lines as they close.

With diarization, a committed word waits (as `pending_text`, the protocol's `buffer_diarization`)
until the speaker timeline covers it; it then takes the speaker who talks most during it. Words
are placed in time order, so lines still only grow, and a line never mixes two speakers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from whisperlivekit.diarization.base import SpeakerSegment
from whisperlivekit.messages import Word

SILENCE_SPEAKER = -2
DEFAULT_SPEAKER = 1
NEAREST_SEGMENT_SECONDS = 1.0  # a word in no segment takes the nearest one this close, else the last speaker
_SENTENCE_END = re.compile(r"[.!?。！？…]['\")\]]*$")


@dataclass(slots=True)
class Line:
    speaker: int
    text: str
    start: float
    end: float
    translation: str = ""
    detected_language: str | None = None
    translation_error: str | None = None  # why this line has no translation; sent only when set

    def to_dict(self) -> dict:
        data = asdict(self)
        if self.translation_error is None:
            del data["translation_error"]
        data["start"] = round(self.start, 2)
        data["end"] = round(self.end, 2)
        return data


@dataclass(frozen=True, slots=True)
class _Pending:
    word: Word | None  # None: a silence
    start: float
    end: float
    language: str | None = None
    speaker: int | None = None  # given by the caller; None: from the timeline


class Transcript:
    def __init__(self) -> None:
        self.lines: list[Line] = []
        self.words: list[Word] = []
        self.speakers: list[SpeakerSegment] = []  # the diarization timeline, in arrival order
        self._pending: list[_Pending] = []  # committed, waiting for the timeline to reach them
        self._speakers_until = -math.inf
        self._first_segment = 0  # segments before this index end before every pending word

    def add_words(
        self, words: Iterable[Word], speaker: int | None = DEFAULT_SPEAKER, language: str | None = None
    ) -> None:
        """Commit words; `speaker=None` means diarization decides (see `add_speakers`)."""
        for word in words:
            if speaker is None or self._pending:
                self._pending.append(_Pending(word, word.start, word.end, language, speaker))
            else:
                self._place(word, speaker, language)
        self._release()

    def add_silence(self, start: float, end: float) -> None:
        if self._pending:
            self._pending.append(_Pending(None, start, end))
        else:
            self._place_silence(start, end)

    def add_speakers(self, segments: Iterable[SpeakerSegment], until: float) -> None:
        """Speaker segments that are final, and the stream time the timeline is now complete up to."""
        self.speakers.extend(segments)
        self._speakers_until = max(self._speakers_until, until)
        self._release()

    def add_turns(self, segments: Iterable[SpeakerSegment]) -> None:
        """Diarization alone: each speaker turn is a line with empty text."""
        for segment in segments:
            last = self.lines[-1] if self.lines else None
            if last is not None and last.speaker == segment.speaker and segment.start - last.end < 0.05:
                last.end = max(last.end, segment.end)
            else:
                self.lines.append(Line(segment.speaker, "", segment.start, segment.end))

    @property
    def pending_text(self) -> str:
        return "".join(p.word.text for p in self._pending if p.word is not None).strip()

    @property
    def text(self) -> str:
        return " ".join(line.text for line in self.lines if line.speaker != SILENCE_SPEAKER)

    def to_dicts(self) -> list[dict]:
        return [line.to_dict() for line in self.lines]

    # -- placing ----------------------------------------------------------------------------------

    def _release(self) -> None:
        while self._pending:
            item = self._pending[0]
            if item.word is not None and not item.speaker and item.end > self._speakers_until:
                return
            self._pending.pop(0)
            if item.word is None:
                self._place_silence(item.start, item.end)
            else:
                speaker = item.speaker or self.speaker_at(item.start, item.end)
                self._place(item.word, speaker, item.language)

    def speaker_at(self, start: float, end: float) -> int:
        """The speaker who talks most in [start, end]; else the nearest segment within 1 s; else the
        previous line's speaker (a word in a gap of the timeline belongs to the turn around it)."""
        while (
            self._first_segment < len(self.speakers)
            and self.speakers[self._first_segment].end < start - 10 * NEAREST_SEGMENT_SECONDS
        ):
            self._first_segment += 1  # segments arrive roughly in time order: old ones are never needed
        overlap: dict[int, float] = {}
        nearest, nearest_gap = None, NEAREST_SEGMENT_SECONDS
        for segment in self.speakers[self._first_segment :]:
            shared = min(end, segment.end) - max(start, segment.start)
            if shared > 0:
                overlap[segment.speaker] = overlap.get(segment.speaker, 0.0) + shared
            gap = max(segment.start - end, start - segment.end, 0.0)
            if gap < nearest_gap:
                nearest, nearest_gap = segment.speaker, gap
        if overlap:
            return max(overlap, key=lambda s: (overlap[s], -s))
        if nearest is not None:
            return nearest
        spoken = [line.speaker for line in self.lines if line.speaker > 0]
        return spoken[-1] if spoken else DEFAULT_SPEAKER

    def _place(self, word: Word, speaker: int, language: str | None) -> None:
        self.words.append(word)
        last = self.lines[-1] if self.lines else None
        if last is None or last.speaker != speaker or _SENTENCE_END.search(last.text):
            start = max(word.start, last.end) if last else word.start
            self.lines.append(Line(speaker, word.text.strip(), start, word.end, "", language))
        else:
            last.text += word.text if word.text.startswith(" ") else " " + word.text
            last.end = max(last.end, word.end)

    def _place_silence(self, start: float, end: float) -> None:
        if self.lines and self.lines[-1].speaker == SILENCE_SPEAKER:
            self.lines[-1].end = end
        else:
            self.lines.append(Line(SILENCE_SPEAKER, "", start, end))
