"""Committed words and silences of one session, grouped into the `lines` clients display.

Lines only grow: a committed line never changes except the last one getting more words, so a
client can render incrementally and a store can persist lines as they close.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from whisperlivekit.messages import Word

SILENCE_SPEAKER = -2
DEFAULT_SPEAKER = 1
_SENTENCE_END = re.compile(r"[.!?。！？…]['\")\]]*$")


@dataclass(slots=True)
class Line:
    speaker: int
    text: str
    start: float
    end: float
    translation: str = ""
    detected_language: str | None = None

    def to_dict(self) -> dict:
        data = asdict(self)
        data["start"] = round(self.start, 2)
        data["end"] = round(self.end, 2)
        return data


class Transcript:
    def __init__(self) -> None:
        self.lines: list[Line] = []
        self.words: list[Word] = []

    def add_words(
        self, words: Iterable[Word], speaker: int = DEFAULT_SPEAKER, language: str | None = None
    ) -> None:
        for word in words:
            self.words.append(word)
            last = self.lines[-1] if self.lines else None
            if last is None or last.speaker != speaker or _SENTENCE_END.search(last.text):
                start = max(word.start, last.end) if last else word.start
                self.lines.append(Line(speaker, word.text.strip(), start, word.end, "", language))
            else:
                last.text += word.text if word.text.startswith(" ") else " " + word.text
                last.end = max(last.end, word.end)

    def add_silence(self, start: float, end: float) -> None:
        if self.lines and self.lines[-1].speaker == SILENCE_SPEAKER:
            self.lines[-1].end = end
        else:
            self.lines.append(Line(SILENCE_SPEAKER, "", start, end))

    @property
    def text(self) -> str:
        return " ".join(line.text for line in self.lines if line.speaker != SILENCE_SPEAKER)

    def to_dicts(self) -> list[dict]:
        return [line.to_dict() for line in self.lines]
