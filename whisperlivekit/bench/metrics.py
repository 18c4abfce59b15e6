"""Streaming figures of ../shared/EVAL.md as pure functions: WER, word latency, lag growth, drain time.

Word latency, as measured here (all times in wall seconds since t0 = the first audio chunk sent):
- The final transcript is the committed text of the last update. Its words and the reference words are
  normalised word by word (Whisper's normaliser applied to each whitespace word, so every normalised token
  keeps the index of the word it came from) and aligned with jiwer; tokens aligned as equal or substituted
  are "matched" and take the end time of their reference word from the forced alignment.
- committed time of final token j: the first update whose committed tokens hold token j at index j.
  Committed text only grows, so the index is stable; requiring the same token also makes a word that was
  still being extended ("Ameri" -> "Americans") count only once complete.
- first-appearance time: the first update whose committed + buffer tokens hold token j at index j, and
  never later than the committed time.
- latency = time - word_end_s / speed: at speed s, the audio of stream second x is sent at wall time x/s.
  Chunk k carries audio up to (k+1)*chunk_s and is sent at k*chunk_s/speed, so a very fast server can
  score down to -chunk_s/speed.
- WER itself uses the normaliser on the whole text, exactly as EVAL.md says (number words like
  "twenty five" are joined only in whole-text normalisation; alignment does not need that).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache

import jiwer
import numpy as np

from whisperlivekit.client import Message, StreamResult, buffer_text, committed_text


@lru_cache(maxsize=8)
def get_normalizer(language: str = "en") -> Callable[[str], str]:
    """Whisper's English normaliser for English, the basic one (lowercase, no punctuation) otherwise."""
    if language.split("-")[0].lower() == "en":
        from whisper_normalizer.english import EnglishTextNormalizer

        return EnglishTextNormalizer()
    from whisper_normalizer.basic import BasicTextNormalizer

    return BasicTextNormalizer()


def normalize(text: str, language: str = "en") -> str:
    return " ".join(get_normalizer(language)(text).split())


@lru_cache(maxsize=1 << 16)
def _normalize_word(word: str, language: str) -> tuple[str, ...]:
    return tuple(get_normalizer(language)(word).split())


def normalize_words(words: Sequence[str], language: str = "en") -> tuple[list[str], list[int]]:
    """Normalise word by word: tokens, and for each token the index of the word it came from
    ("don't" -> "do", "not"; "uh" -> nothing)."""
    tokens: list[str] = []
    origin: list[int] = []
    for i, w in enumerate(words):
        for tok in _normalize_word(w, language):
            tokens.append(tok)
            origin.append(i)
    return tokens, origin


def wer_details(reference: str, hypothesis: str, language: str = "en") -> dict[str, float | int]:
    ref, hyp = normalize(reference, language), normalize(hypothesis, language)
    if not ref:
        raise ValueError("empty reference after normalisation")
    out = jiwer.process_words(ref, hyp)
    return {
        "wer": float(out.wer),
        "substitutions": out.substitutions,
        "deletions": out.deletions,
        "insertions": out.insertions,
        "hits": out.hits,
        "n_ref": len(ref.split()),
        "n_hyp": len(hyp.split()),
    }


def wer(reference: str, hypothesis: str, language: str = "en") -> float:
    """WER of `hypothesis` against `reference` after Whisper normalisation, as jiwer computes it."""
    return float(wer_details(reference, hypothesis, language)["wer"])


def align_tokens(ref: Sequence[str], hyp: Sequence[str]) -> list[tuple[str, int | None, int | None]]:
    """Minimum-edit alignment: (op, ref index, hyp index), op in equal/substitute/insert/delete, the missing
    side None. jiwer's alignment, except that each stretch between its equal runs is re-aligned to keep the
    same edit count with as many equal words as possible: jiwer breaks ties towards substitutions
    ("brown fox jumps" / "fox jumped high" -> 3 substitutions), which would time words against their
    neighbours' audio."""
    if not ref or not hyp:
        return [("delete", i, None) for i in range(len(ref))] + [("insert", None, j) for j in range(len(hyp))]
    out: list[tuple[str, int | None, int | None]] = []
    r0 = h0 = 0  # start of the current non-equal stretch

    def flush(r1: int, h1: int) -> None:
        out.extend(
            (op, None if i is None else r0 + i, None if j is None else h0 + j)
            for op, i, j in _align_stretch(ref[r0:r1], hyp[h0:h1])
        )

    for c in jiwer.process_words(" ".join(ref), " ".join(hyp)).alignments[0]:
        if c.type == "equal":
            flush(c.ref_start_idx, c.hyp_start_idx)
            out += [
                ("equal", c.ref_start_idx + k, c.hyp_start_idx + k)
                for k in range(c.ref_end_idx - c.ref_start_idx)
            ]
            r0, h0 = c.ref_end_idx, c.hyp_end_idx
    flush(len(ref), len(hyp))
    return out


def _align_stretch(ref: Sequence[str], hyp: Sequence[str]) -> list[tuple[str, int | None, int | None]]:
    """Edit-distance DP ordered by (edits, -equal words); plain diagonal pairing if the stretch is huge."""
    n, m = len(ref), len(hyp)
    if n * m > 250_000:
        k = min(n, m)
        return (
            [("equal" if ref[i] == hyp[i] else "substitute", i, i) for i in range(k)]
            + [("delete", i, None) for i in range(k, n)]
            + [("insert", None, j) for j in range(k, m)]
        )
    cost = [[(0, 0)] * (m + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        cost[i][0] = (i, 0)
    for j in range(1, m + 1):
        cost[0][j] = (j, 0)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            e, h = cost[i - 1][j - 1]
            diag = (e, h - 1) if ref[i - 1] == hyp[j - 1] else (e + 1, h)
            up, left = cost[i - 1][j], cost[i][j - 1]
            cost[i][j] = min(diag, (up[0] + 1, up[1]), (left[0] + 1, left[1]))
    out: list[tuple[str, int | None, int | None]] = []
    i, j = n, m
    while i or j:  # walking back, gaps before pairs: on ties substitutions land leftmost
        if i and cost[i][j] == (cost[i - 1][j][0] + 1, cost[i - 1][j][1]):
            out.append(("delete", i - 1, None))
            i -= 1
        elif j and cost[i][j] == (cost[i][j - 1][0] + 1, cost[i][j - 1][1]):
            out.append(("insert", None, j - 1))
            j -= 1
        else:
            out.append(("equal" if ref[i - 1] == hyp[j - 1] else "substitute", i - 1, j - 1))
            i, j = i - 1, j - 1
    return out[::-1]


def first_match_times(
    snapshots: Sequence[tuple[float, Sequence[str]]], final: Sequence[str]
) -> list[float | None]:
    """For each index j of `final`, the time of the first snapshot (time, tokens) holding final[j] at j."""
    times: list[float | None] = [None] * len(final)
    lo = 0  # every index below lo is resolved
    for t, toks in snapshots:
        for j in range(lo, min(len(toks), len(final))):
            if times[j] is None and toks[j] == final[j]:
                times[j] = t
        while lo < len(final) and times[lo] is not None:
            lo += 1
        if lo == len(final):
            break
    return times


def lag_growth(ends: Sequence[float], latencies: Sequence[float], duration_s: float) -> float | None:
    """Median latency of words ending in the last fifth of the stream minus that of the first fifth."""
    e, lat = np.asarray(ends, dtype=float), np.asarray(latencies, dtype=float)
    first, last = lat[e <= duration_s / 5], lat[e >= duration_s * 4 / 5]
    if not len(first) or not len(last):
        return None
    return float(np.median(last) - np.median(first))


def _pct(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


@dataclass
class WordLatency:
    ref_word: str  # normalised tokens
    hyp_word: str
    end_s: float  # reference word end on the stream timeline
    first_t: float  # wall seconds since t0
    committed_t: float
    speed: float = 1.0

    @property
    def first_latency(self) -> float:
        return self.first_t - self.end_s / self.speed

    @property
    def committed_latency(self) -> float:
        return self.committed_t - self.end_s / self.speed


@dataclass
class StreamReport:
    name: str = ""
    language: str = "en"
    audio_duration_s: float = 0.0
    speed: float = 1.0
    wer: float | None = None
    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    n_ref_words: int = 0
    n_hyp_words: int = 0
    n_matched: int = 0  # words with a latency
    committed_p50: float | None = None
    committed_p90: float | None = None
    first_p50: float | None = None
    first_p90: float | None = None
    lag_growth: float | None = None  # committed latency
    lag_growth_first: float | None = None
    drain_s: float | None = None
    n_messages: int = 0
    error: str | None = None
    final_text: str = ""
    offline_wer: float | None = None  # filled by the benchmark
    offline_rtf: float | None = None
    peak_rss_mb: float | None = None
    steady_rss_mb: float | None = None
    words: list[WordLatency] = field(default_factory=list, repr=False)

    def to_dict(self, with_words: bool = False) -> dict:
        d = asdict(self)
        d.pop("words")
        if with_words:
            d["words"] = [
                {**asdict(w), "first_latency": w.first_latency, "committed_latency": w.committed_latency}
                for w in self.words
            ]
        return d


def compute_report(
    reference: str,
    word_ends: Sequence[float],
    result: StreamResult,
    *,
    language: str = "en",
    speed: float | None = None,
    duration_s: float | None = None,
    name: str = "",
) -> StreamReport:
    """All streaming figures of one replay. `word_ends[i]` is when `reference.split()[i]` ends in the
    stream (seconds of audio); `speed` and `duration_s` default to those recorded in `result`."""
    ref_words = reference.split()
    if len(word_ends) != len(ref_words):
        raise ValueError(f"{len(word_ends)} word end times for {len(ref_words)} reference words")
    speed = speed or result.speed
    duration_s = duration_s or result.audio_duration_s or (max(word_ends) if word_ends else 0.0)
    rep = StreamReport(
        name=name,
        language=language,
        audio_duration_s=duration_s,
        speed=speed,
        drain_s=result.drain_s,
        n_messages=len(result.messages),
        error=result.error,
        final_text=result.final_text,
    )
    if normalize(reference, language):
        det = wer_details(reference, result.final_text, language)
        rep.wer = float(det["wer"])
        rep.substitutions, rep.deletions, rep.insertions = (
            int(det[k]) for k in ("substitutions", "deletions", "insertions")
        )
        rep.n_ref_words, rep.n_hyp_words = int(det["n_ref"]), int(det["n_hyp"])

    ref_tok, ref_origin = normalize_words(ref_words, language)
    final_tok, _ = normalize_words(result.final_text.split(), language)
    updates = [m for m in result.messages if m.type == "transcript"]
    committed = first_match_times(_snapshots(updates, language, with_buffer=False), final_tok)
    first = first_match_times(_snapshots(updates, language, with_buffer=True), final_tok)

    for op, i, j in align_tokens(ref_tok, final_tok):
        if op in ("equal", "substitute") and i is not None and j is not None and committed[j] is not None:
            c = committed[j]
            f = min(first[j], c) if first[j] is not None else c
            rep.words.append(
                WordLatency(ref_tok[i], final_tok[j], float(word_ends[ref_origin[i]]), f, c, speed)
            )
    rep.n_matched = len(rep.words)
    com = [w.committed_latency for w in rep.words]
    fst = [w.first_latency for w in rep.words]
    ends = [w.end_s for w in rep.words]
    rep.committed_p50, rep.committed_p90 = _pct(com, 50), _pct(com, 90)
    rep.first_p50, rep.first_p90 = _pct(fst, 50), _pct(fst, 90)
    rep.lag_growth = lag_growth(ends, com, duration_s)
    rep.lag_growth_first = lag_growth(ends, fst, duration_s)
    return rep


def _snapshots(updates: Sequence[Message], language: str, with_buffer: bool) -> list[tuple[float, list[str]]]:
    """(arrival time, normalised tokens) per update; committed + buffer when `with_buffer`."""
    out = []
    seen: dict[str, list[str]] = {}  # most updates repeat the previous text: normalise each text once
    for m in updates:
        text = committed_text(m.data)
        if with_buffer:
            text = f"{text} {buffer_text(m.data)}"
        if text not in seen:
            seen[text] = normalize_words(text.split(), language)[0]
        out.append((m.t, seen[text]))
    return out


def summarize(reports: Sequence[StreamReport]) -> dict[str, float | int | None]:
    """Figures of N simultaneous replays of one stream: latencies pooled over the words of all streams,
    the mean WER, and the worst stream for lag growth and drain (capacity asks that every stream keeps up).
    Offline WER/RTF and RSS are per server, so they come from the first report that has them."""
    words = [w for r in reports for w in r.words]
    com = [w.committed_latency for w in words]
    fst = [w.first_latency for w in words]

    def mean(values: list[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return float(np.mean(known)) if known else None

    def worst(values: list[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return max(known) if known else None

    def first(name: str) -> float | None:
        return next((getattr(r, name) for r in reports if getattr(r, name) is not None), None)

    return {
        "n_streams": len(reports),
        "n_errors": sum(1 for r in reports if r.error),
        "audio_duration_s": reports[0].audio_duration_s if reports else None,
        "wer": mean([r.wer for r in reports]),
        "offline_wer": first("offline_wer"),
        "committed_p50": _pct(com, 50),
        "committed_p90": _pct(com, 90),
        "first_p50": _pct(fst, 50),
        "first_p90": _pct(fst, 90),
        # a stream that errored has no lag growth: None then, not the best of the others
        "lag_growth": None
        if any(r.lag_growth is None for r in reports)
        else worst([r.lag_growth for r in reports]),
        "drain_s": None if any(r.drain_s is None for r in reports) else worst([r.drain_s for r in reports]),
        "offline_rtf": first("offline_rtf"),
        "peak_rss_mb": first("peak_rss_mb"),
        "steady_rss_mb": first("steady_rss_mb"),
        "n_timed_words": len(words),
    }
