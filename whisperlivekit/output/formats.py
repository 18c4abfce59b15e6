"""Transcript lines as text, JSON, SRT or WebVTT."""

from __future__ import annotations

import json
from collections.abc import Sequence

from whisperlivekit.output.transcript import SILENCE_SPEAKER, Line

FORMATS = ("text", "json", "srt", "vtt")


def format_lines(lines: Sequence[Line], fmt: str) -> str:
    spoken = [line for line in lines if line.speaker != SILENCE_SPEAKER and line.text]
    if fmt == "text":
        return "\n".join(line.text for line in spoken) + "\n"
    if fmt == "json":
        return json.dumps({"lines": [line.to_dict() for line in lines]}, ensure_ascii=False, indent=2) + "\n"
    if fmt == "srt":
        blocks = [
            f"{i}\n{_timestamp(line.start, ',')} --> {_timestamp(line.end, ',')}\n{line.text}\n"
            for i, line in enumerate(spoken, 1)
        ]
        return "\n".join(blocks)
    if fmt == "vtt":
        blocks = [
            f"{_timestamp(line.start, '.')} --> {_timestamp(line.end, '.')}\n{line.text}\n" for line in spoken
        ]
        return "WEBVTT\n\n" + "\n".join(blocks)
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


def _timestamp(seconds: float, decimal_marker: str) -> str:
    millis = round(max(0.0, seconds) * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal_marker}{millis:03d}"
