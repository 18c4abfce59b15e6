"""Evaluation data: the shared manifest and long-form streams built from it (../shared/EVAL.md).

Streaming needs long audio, so a "set" (a folder prefix such as `en/hifitts_6097`) becomes one stream:
its utterances joined in manifest order with 0.3 s of silence between, references joined likewise.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from whisperlivekit.client import SAMPLE_RATE, decode_audio

GAP_S = 0.3
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Utterance:
    path: Path  # absolute
    rel_path: str  # as written in the manifest
    duration_s: float
    language: str
    reference: str
    ref_type: str
    source: str = ""
    sample_rate: int = 0
    channels: int = 0
    speaker: str = ""
    license: str = ""

    @property
    def set_name(self) -> str:
        return self.rel_path.rsplit("/", 1)[0]


class Segment(NamedTuple):
    """Where one utterance lies in a long stream."""

    offset_s: float
    duration_s: float
    reference: str
    path: Path


@dataclass
class LongStream:
    name: str
    samples: np.ndarray  # float32, 16 kHz mono
    reference: str
    utterances: list[Segment] = field(default_factory=list)
    language: str = "en"
    sample_rate: int = SAMPLE_RATE

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate


def find_eval_dir() -> Path:
    """$WLK_EVAL_DIR, else ../shared/eval next to the repository (or the working directory)."""
    if env := os.environ.get("WLK_EVAL_DIR"):
        return Path(env)
    for base in (REPO_ROOT, Path.cwd()):
        candidate = base.parent / "shared" / "eval"
        if (candidate / "manifest.tsv").is_file():
            return candidate
    raise FileNotFoundError("evaluation data not found: set WLK_EVAL_DIR to the folder holding manifest.tsv")


def load_manifest(manifest: str | Path | None = None) -> list[Utterance]:
    path = Path(manifest) if manifest else find_eval_dir() / "manifest.tsv"
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        # QUOTE_NONE: references contain quotes that are text, not CSV quoting
        for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            rows.append(
                Utterance(
                    path=(path.parent / row["path"]).resolve(),
                    rel_path=row["path"],
                    duration_s=float(row["duration_s"] or 0),
                    language=row["language"],
                    reference=row["reference"],
                    ref_type=row["ref_type"],
                    source=row.get("source", ""),
                    sample_rate=int(row.get("sample_rate") or 0),
                    channels=int(row.get("channels") or 0),
                    speaker=row.get("speaker", ""),
                    license=row.get("license", ""),
                )
            )
    return rows


def select(utterances: list[Utterance], set_name: str, ref_type: str = "human") -> list[Utterance]:
    """Rows of one set (folder prefix, or one exact file path) with the given reference type, in order."""
    prefix = set_name.strip("/")
    return [
        u
        for u in utterances
        if (u.rel_path == prefix or u.rel_path.startswith(prefix + "/")) and u.ref_type == ref_type
    ]


def build_long_stream(utterances: list[Utterance], name: str = "stream", gap_s: float = GAP_S) -> LongStream:
    """Join utterances with `gap_s` of silence between them (none before the first or after the last)."""
    if not utterances:
        raise ValueError("no utterances to join")
    gap = np.zeros(round(gap_s * SAMPLE_RATE), dtype=np.float32)
    parts: list[np.ndarray] = []
    segments: list[Segment] = []
    n = 0
    for i, u in enumerate(utterances):
        if i:
            parts.append(gap)
            n += len(gap)
        audio = decode_audio(u.path, SAMPLE_RATE)
        segments.append(Segment(n / SAMPLE_RATE, len(audio) / SAMPLE_RATE, u.reference.strip(), u.path))
        parts.append(audio)
        n += len(audio)
    languages = {u.language for u in utterances}
    return LongStream(
        name=name,
        samples=np.concatenate(parts),
        reference=" ".join(s.reference for s in segments),
        utterances=segments,
        language=languages.pop() if len(languages) == 1 else "multi",
    )


def load_set(
    set_name: str,
    *,
    limit: int | None = None,
    manifest: str | Path | None = None,
    ref_type: str = "human",
    gap_s: float = GAP_S,
    max_duration_s: float | None = None,
) -> LongStream:
    """The long stream of a set: e.g. `load_set("en/hifitts_6097")`, first `limit` utterances only, and
    only the first utterances that fit in `max_duration_s` (at least one) when given."""
    rows = select(load_manifest(manifest), set_name, ref_type)
    if not rows:
        raise ValueError(f"no {ref_type!r} rows under {set_name!r} in the manifest")
    rows = rows[:limit] if limit else rows
    if max_duration_s is not None:
        rows = rows[: first_fitting(rows, max_duration_s, gap_s)]
    return build_long_stream(rows, name=set_name.strip("/"), gap_s=gap_s)


def first_fitting(rows: list[Utterance], max_duration_s: float, gap_s: float = GAP_S) -> int:
    """How many leading utterances (manifest durations, gaps between) fit in `max_duration_s`; at least 1."""
    total, n = 0.0, 0
    for u in rows:
        total += u.duration_s + (gap_s if n else 0.0)
        if total > max_duration_s and n:
            break
        n += 1
    return n
