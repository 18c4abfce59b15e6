"""Diarization figures (../shared/EVAL.md): DER on RTTM references, cpWER on STM references.

Two ways to produce a hypothesis for a file, both on the same backend code:
- `stream`: through a live server, replayed in real time (`client.stream_audio`); with
  `--no-transcription` its lines are speaker turns (DER), with transcription its lines carry words
  and speakers (cpWER).
- `direct`: the backend fed in 100 ms chunks in-process, for quick parameter sweeps.

    python -m whisperlivekit.bench.diarization der ../shared/eval/diar/ami_pyannote_debug --direct
    python -m whisperlivekit.bench.diarization der ../shared/eval/diar/ami_pyannote_debug
    python -m whisperlivekit.bench.diarization cpwer ../shared/eval/diar/synthetic_tts
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import sys
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SILENCE_SPEAKER = -2


@dataclass(frozen=True)
class Turn:
    speaker: str
    start: float
    end: float


def read_rttm(path: Path) -> list[Turn]:
    turns = []
    for line in path.read_text().splitlines():
        f = line.split()
        if f and f[0] == "SPEAKER":
            turns.append(Turn(f[7], float(f[3]), float(f[3]) + float(f[4])))
    return turns


def read_uem(path: Path) -> list[tuple[float, float]]:
    return [(float(f[2]), float(f[3])) for f in (ln.split() for ln in path.read_text().splitlines()) if f]


def read_stm(path: Path) -> dict[str, list[str]]:
    """Words of each speaker, in order."""
    words: dict[str, list[str]] = defaultdict(list)
    for line in path.read_text().splitlines():
        f = line.split(maxsplit=5)
        if len(f) == 6:
            words[f[2]] += f[5].split()
    return dict(words)


def der(
    reference: list[Turn], hypothesis: list[Turn], uem: list[tuple[float, float]] | None
) -> dict[str, float]:
    """pyannote.metrics DER components (seconds): collar 0, overlap scored, UEM applied."""
    from pyannote.core import Annotation, Segment, Timeline
    from pyannote.metrics.diarization import DiarizationErrorRate

    def annotation(turns: Iterable[Turn]) -> Annotation:
        ann = Annotation()
        for i, t in enumerate(turns):
            if t.end > t.start:
                ann[Segment(t.start, t.end), i] = t.speaker
        return ann

    metric = DiarizationErrorRate(collar=0.0, skip_overlap=False)
    timeline = Timeline([Segment(s, e) for s, e in uem]) if uem else None
    detail = metric(annotation(reference), annotation(hypothesis), uem=timeline, detailed=True)
    return {
        "total": detail["total"],
        "missed": detail["missed detection"],
        "false_alarm": detail["false alarm"],
        "confusion": detail["confusion"],
    }


def cpwer(reference: dict[str, list[str]], hypothesis: dict[str, list[str]]) -> dict[str, float]:
    """Concatenated minimum-permutation WER: the speaker mapping that gives the fewest errors.
    Speakers without a counterpart are scored against nothing (all insertions or deletions)."""
    import jiwer

    from whisperlivekit.bench.metrics import normalize

    ref = {k: normalize(" ".join(v)) for k, v in reference.items()}
    hyp = {k: normalize(" ".join(v)) for k, v in hypothesis.items()}
    ref_keys, hyp_keys = sorted(ref), sorted(hyp)
    slots = max(len(ref_keys), len(hyp_keys))
    ref_keys += [None] * (slots - len(ref_keys))
    hyp_keys += [None] * (slots - len(hyp_keys))

    def errors(r: str | None, h: str | None) -> int:
        rw, hw = (ref[r] if r else "").split(), (hyp[h] if h else "").split()
        if not rw or not hw:
            return len(rw) + len(hw)
        out = jiwer.process_words(" ".join(rw), " ".join(hw))
        return out.substitutions + out.deletions + out.insertions

    best = min(
        (sum(errors(r, h) for r, h in zip(ref_keys, perm, strict=True)), perm)
        for perm in itertools.permutations(hyp_keys)
    )
    words = sum(len(v.split()) for v in ref.values())
    mapping = {h: r for r, h in zip(ref_keys, best[1], strict=True) if h is not None}
    return {"errors": best[0], "words": words, "cpwer": best[0] / max(1, words), "mapping": mapping}


def plain_wer(stm: Path, lines: list[dict[str, Any]]) -> float:
    """WER of the whole transcript against the whole reference, speakers ignored."""
    from whisperlivekit.bench.metrics import wer

    reference = " ".join(ln.split(maxsplit=5)[5] for ln in stm.read_text().splitlines() if ln.strip())
    hypothesis = " ".join(ln["text"] for ln in lines if ln["speaker"] > 0)
    return wer(reference, hypothesis)


# -- hypotheses ---------------------------------------------------------------------------------


def turns_from_lines(lines: list[dict[str, Any]]) -> list[Turn]:
    return [Turn(str(ln["speaker"]), ln["start"], ln["end"]) for ln in lines if ln["speaker"] > 0]


def words_from_lines(lines: list[dict[str, Any]]) -> dict[str, list[str]]:
    words: dict[str, list[str]] = defaultdict(list)
    for ln in lines:
        if ln["speaker"] > 0:
            words[str(ln["speaker"])] += ln["text"].split()
    return dict(words)


def diarize_direct(model: Any, samples: Any, chunk_s: float = 0.1) -> tuple[list[Turn], float]:
    """Feed a backend in `chunk_s` pieces as the session does; returns turns and seconds of compute."""
    session = model.new_session()
    step = round(chunk_s * 16000)
    segments, started = [], time.perf_counter()
    for i in range(0, len(samples), step):
        session.insert_audio(samples[i : i + step], i / 16000)
        segments += session.process()
    segments += session.finish()
    return [Turn(str(s.speaker), s.start, s.end) for s in segments], time.perf_counter() - started


async def stream_lines(url: str, samples: Any, speed: float) -> tuple[list[dict[str, Any]], Any]:
    from whisperlivekit.client import stream_audio

    result = await stream_audio(url, samples, speed=speed)
    if result.error:
        raise RuntimeError(result.error)
    updates = result.updates
    return (updates[-1].data["lines"] if updates else []), result


def diarization_latency(result: Any) -> float | None:
    """Median over updates of how far the diarization lags the audio sent (remaining_time_diarization)."""
    lags = sorted(m.data.get("remaining_time_diarization", 0.0) for m in result.updates)
    return lags[len(lags) // 2] if lags else None


# -- command line -------------------------------------------------------------------------------


def _engine(args: argparse.Namespace, no_transcription: bool) -> Any:
    from whisperlivekit import TranscriptionEngine

    options: dict[str, Any] = {"backend_policy": args.policy} if args.policy else {}
    if args.model:
        options["model"] = args.model
    return TranscriptionEngine(
        pcm_input=True, diarization=True, no_transcription=no_transcription,
        diarization_latency=args.latency, max_speakers=args.max_speakers, threads=args.threads, **options,
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    from whisperlivekit.audio.decoder import load_audio

    folder = Path(args.folder)
    wavs = sorted(folder.glob("*.wav"))
    rows: list[dict[str, Any]] = []
    engine = _engine(args, no_transcription=args.task == "der")
    server = None
    if not args.direct:
        from whisperlivekit.server.app import create_app

        server = _Server(create_app(engine)).__enter__()
    try:
        for wav in wavs:
            samples = load_audio(str(wav))
            row: dict[str, Any] = {"file": wav.name, "duration": len(samples) / 16000}
            if args.direct:
                hyp, compute = diarize_direct(engine.diarization_model, samples)
                row["rtf"] = compute / row["duration"]
                lines: list[dict[str, Any]] = []
            else:
                lines, result = asyncio.run(stream_lines(server.ws, samples, args.speed))
                hyp = turns_from_lines(lines)
                row["diarization_lag_p50"] = diarization_latency(result)
                row["drain_s"] = result.drain_s
            row["speakers"] = len({t.speaker for t in hyp})
            ref_turns = read_rttm(wav.with_suffix(".rttm"))
            row["ref_speakers"] = len({t.speaker for t in ref_turns})
            if args.task == "der":
                uem = wav.with_suffix(".uem")
                row.update(der(ref_turns, hyp, read_uem(uem) if uem.exists() else None))
            else:
                stm = wav.with_suffix(".stm")
                row.update(cpwer(read_stm(stm), words_from_lines(lines)))
                row["mapping"] = {str(k): v for k, v in row["mapping"].items()}
                row["wer"] = plain_wer(stm, lines)  # the same text without speakers: ASR's share
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
    finally:
        if server is not None:
            server.__exit__(None, None, None)
        engine.close()
    return {"rows": rows, "summary": summarize(args.task, rows)}


def summarize(task: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    if task == "der":
        total = sum(r["total"] for r in rows)
        parts = {k: sum(r[k] for r in rows) / (total or 1.0) for k in ("missed", "false_alarm", "confusion")}
        right = sum(r["speakers"] == r["ref_speakers"] for r in rows)
        return {"der": sum(parts.values()), **parts, "speakers_right": right, "files": len(rows)}
    words = sum(r["words"] for r in rows)
    mean_wer = sum(r["wer"] for r in rows) / max(1, len(rows))
    return {"cpwer": sum(r["errors"] for r in rows) / max(1, words), "wer_mean": mean_wer, "files": len(rows)}


class _Server:
    """uvicorn on a free loopback port in a thread (the benchmark's own server)."""

    def __init__(self, app: Any) -> None:
        import socket
        import threading

        import uvicorn

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.ws = f"ws://127.0.0.1:{self.port}/asr"

    def __enter__(self) -> _Server:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m whisperlivekit.bench.diarization", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("task", choices=("der", "cpwer"))
    p.add_argument("folder", help="a folder of WAV files with .rttm (+ .uem) or .stm beside them")
    p.add_argument("--direct", action="store_true", help="feed the backend in-process (no server, no ASR)")
    p.add_argument("--speed", type=float, default=1.0, help="replay speed (1: real time)")
    p.add_argument("--latency", type=float, default=2.0, help="--diarization-latency")
    p.add_argument("--max-speakers", type=int, default=8)
    p.add_argument("--threads", type=int, default=0, help="ASR threads (--threads)")
    p.add_argument("--policy", help="streaming policy for cpwer (default: the server's default)")
    p.add_argument("--model", help="Whisper model for cpwer (default: the server's default)")
    p.add_argument("--json", help="write rows and summary here")
    args = p.parse_args(argv)
    if args.speed <= 0:
        args.speed = math.inf
    data = run(args)
    print(json.dumps(data["summary"], indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
