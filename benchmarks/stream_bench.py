"""Streaming benchmark (../shared/EVAL.md): replay one long stream to a running server and report WER beside
the offline WER of the same model, committed / first-appearance word latency, lag growth, drain time and
the server's RSS.

    python benchmarks/stream_bench.py --url ws://127.0.0.1:8000/asr --set en/hifitts_6097 \
        [--speed 1] [--limit N] [--model-dir DIR] [--server-pid PID] [--json OUT]
    python benchmarks/stream_bench.py --set classic/jfk.wav --offline-only
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from whisperlivekit.bench.alignment import Aligner
from whisperlivekit.bench.dataset import LongStream, load_set
from whisperlivekit.bench.metrics import StreamReport, compute_report, wer
from whisperlivekit.client import Message, StreamResult, buffer_text, committed_text, stream_audio


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="ws://127.0.0.1:8000/asr")
    p.add_argument("--set", default="en/hifitts_6097", help="manifest folder prefix (or one file path)")
    p.add_argument("--limit", type=int, help="first N utterances of the set only")
    p.add_argument("--manifest", help="manifest.tsv (default: $WLK_EVAL_DIR or ../shared/eval)")
    p.add_argument("--speed", type=float, default=1.0, help="pacing, x real time")
    p.add_argument("--chunk-ms", type=float, default=100.0)
    p.add_argument("--webm", action="store_true", help="send WebM/Opus instead of PCM s16le")
    p.add_argument(
        "--model-dir",
        help="CTranslate2 Whisper dir for alignment and offline WER (default: packaged tiny.en)",
    )
    p.add_argument("--model", help="model name resolved like the server does (e.g. base); --model-dir wins")
    p.add_argument("--compute-type", default="int8")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cache-dir", help="alignment cache (default: user cache dir)")
    p.add_argument("--server-pid", type=int, help="sample this process's RSS (with children) every second")
    p.add_argument("--ready-timeout", type=float, default=600.0, help="seconds to wait for ready_to_stop")
    p.add_argument("--offline-only", action="store_true", help="only the offline WER, no server")
    p.add_argument("--no-offline", action="store_true", help="skip the offline transcription")
    p.add_argument("--json", help="write the report here")
    p.add_argument("--words", action="store_true", help="per-word latencies in the JSON")
    p.add_argument("-v", "--verbose", action="store_true", help="print transcript updates as they arrive")
    return p.parse_args(argv)


async def sample_rss(pid: int, out: list[tuple[float, float]], t_start: float, period: float = 1.0) -> None:
    """Append (seconds since t_start, RSS MiB of pid and its children) every `period` until cancelled."""
    import psutil

    proc = psutil.Process(pid)
    while True:
        try:
            rss = proc.memory_info().rss
            for child in proc.children(recursive=True):
                with contextlib.suppress(psutil.Error):  # a child that just exited
                    rss += child.memory_info().rss
        except psutil.Error:
            return
        out.append((time.monotonic() - t_start, rss / 2**20))
        await asyncio.sleep(period)


async def replay(
    args: argparse.Namespace, stream: LongStream, rss: list[tuple[float, float]]
) -> tuple[StreamResult, float]:
    """Stream and sample RSS meanwhile; returns the result and the monotonic start of the RSS clock."""
    t_start = time.monotonic()
    sampler = asyncio.create_task(sample_rss(args.server_pid, rss, t_start)) if args.server_pid else None

    def show(m: Message) -> None:
        if m.type == "transcript":
            tail = committed_text(m.data)[-70:]
            print(f"\r{m.t:7.1f}s  {tail} |{buffer_text(m.data)[-30:]}"[:120].ljust(120), end="", flush=True)

    try:
        result = await stream_audio(
            args.url,
            stream.samples,
            chunk_s=args.chunk_ms / 1000,
            speed=args.speed,
            pcm=not args.webm,
            on_message=show if args.verbose else None,
            ready_timeout=args.ready_timeout,
        )
    finally:
        if sampler:
            sampler.cancel()
    if args.verbose:
        print()
    return result, t_start


def rss_figures(rss: list[tuple[float, float]], wall_audio_s: float) -> tuple[float | None, float | None]:
    """Peak over the session; steady state = median over the second half of the audio's wall time."""
    if not rss:
        return None, None
    steady = [v for t, v in rss if wall_audio_s / 2 <= t <= wall_audio_s] or [v for _, v in rss]
    return max(v for _, v in rss), float(np.median(steady))


def fmt(v: Any, unit: str = "", pct: bool = False) -> str:
    if v is None:
        return "n/a"
    return f"{100 * v:.1f}%" if pct else f"{v:.2f}{unit}"


def print_table(rep: StreamReport, offline_only: bool = False) -> None:
    rows = [
        ("set", f"{rep.name} ({rep.audio_duration_s:.1f} s audio, speed {rep.speed:g}x)"),
        ("offline WER", fmt(rep.offline_wer, pct=True) + f"  (RTF {fmt(rep.offline_rtf)})"),
    ]
    rows += (
        []
        if offline_only
        else [
            (
                "WER",
                fmt(rep.wer, pct=True) + f"  (S {rep.substitutions} D {rep.deletions} I {rep.insertions}"
                f" / {rep.n_ref_words} words)",
            ),
            (
                "committed latency p50 / p90",
                f"{fmt(rep.committed_p50, ' s')} / {fmt(rep.committed_p90, ' s')}",
            ),
            ("first-appearance p50 / p90", f"{fmt(rep.first_p50, ' s')} / {fmt(rep.first_p90, ' s')}"),
            (
                "lag growth committed / first",
                f"{fmt(rep.lag_growth, ' s')} / {fmt(rep.lag_growth_first, ' s')}",
            ),
            ("drain", fmt(rep.drain_s, " s")),
            (
                "server RSS peak / steady",
                f"{fmt(rep.peak_rss_mb, ' MiB')} / {fmt(rep.steady_rss_mb, ' MiB')}",
            ),
            ("words timed / messages", f"{rep.n_matched} / {rep.n_messages}"),
        ]
    )
    if rep.error:
        rows.append(("error", rep.error))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stream = load_set(args.set, limit=args.limit, manifest=args.manifest)
    print(f"{stream.name}: {len(stream.utterances)} utterances, {stream.duration_s:.1f} s", file=sys.stderr)
    model_dir = args.model_dir
    if model_dir is None and args.model:
        from whisperlivekit.asr.model_files import resolve_model

        found = resolve_model(args.model, download=False)
        if found.format != "ctranslate2":
            raise SystemExit(f"{args.model}: {found.format} weights at {found.path}, need a CTranslate2 dir")
        model_dir = found.path
    aligner = Aligner(
        model_dir, compute_type=args.compute_type, cpu_threads=args.threads, cache_dir=args.cache_dir
    )

    offline_text, offline_wer, offline_rtf = None, None, None
    if not args.no_offline:
        offline_text, secs = aligner.transcribe(stream.samples, stream.language)
        offline_wer = wer(stream.reference, offline_text, stream.language)
        offline_rtf = secs / stream.duration_s
    out: dict[str, Any] = {
        "command": shlex.join([sys.executable, *sys.argv]),
        "set": stream.name,
        "limit": args.limit,
        "model_dir": str(aligner.model_dir),
        "compute_type": args.compute_type,
        "offline_text": offline_text,
    }
    if args.offline_only:
        rep = StreamReport(
            name=stream.name,
            language=stream.language,
            audio_duration_s=stream.duration_s,
            speed=args.speed,
            offline_wer=offline_wer,
            offline_rtf=offline_rtf,
        )
    else:
        word_ends = [w.end for w in aligner.align_stream(stream)]
        aligner._model = None  # free the model before replaying: the server should have the CPU
        gc.collect()
        rss: list[tuple[float, float]] = []
        result, _ = asyncio.run(replay(args, stream, rss))
        rep = compute_report(
            stream.reference,
            word_ends,
            result,
            language=stream.language,
            speed=args.speed,
            duration_s=stream.duration_s,
            name=stream.name,
        )
        rep.offline_wer, rep.offline_rtf = offline_wer, offline_rtf
        rep.peak_rss_mb, rep.steady_rss_mb = rss_figures(rss, stream.duration_s / args.speed)
        out |= {
            "url": args.url,
            "config": result.config,
            "t_end_of_audio": result.t_end_of_audio,
            "max_send_lag_s": result.max_send_lag_s,
            "rss_samples": rss,
        }
    print_table(rep, args.offline_only)
    if args.json:
        out["report"] = rep.to_dict(with_words=args.words)
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 1 if rep.error else 0


if __name__ == "__main__":
    sys.exit(main())
