"""Soak: one long real-time stream (the hifitts long-form stream looped) and the server's RSS over time.

    .venv/bin/python benchmarks/soak.py --policy simulstreaming --minutes 30 \
        --json benchmarks/results/soak-simulstreaming-tiny.en.json

The question it answers: does the server's memory stay flat over a long session (no state that grows
with the session's length), and does it keep up (lag) from start to end?
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import numpy as np

from whisperlivekit.bench.dataset import load_set
from whisperlivekit.bench.metrics import wer
from whisperlivekit.bench.runner import ServerProcess, sample_rss
from whisperlivekit.client import stream_audio


def looped(minutes: float, gap_s: float = 0.3) -> tuple[np.ndarray, str]:
    stream = load_set("en/hifitts_6097")
    gap = np.zeros(round(gap_s * 16000), np.float32)
    parts, texts, total = [], [], 0.0
    while total < minutes * 60:
        parts += [stream.samples, gap]
        texts.append(stream.reference)
        total += stream.duration_s + gap_s
    return np.concatenate(parts), " ".join(texts)


async def soak(args: argparse.Namespace) -> dict:
    audio, reference = looped(args.minutes)
    server_args = ["--model", args.model, "--backend-policy", args.policy]
    rss: list[tuple[float, float]] = []
    with ServerProcess(server_args) as server:
        assert server.pid is not None
        t0 = time.monotonic()
        sampler = asyncio.create_task(sample_rss(server.pid, rss, t0, period=5.0))
        result = await stream_audio(server.ws_url, audio, speed=args.speed)
        sampler.cancel()
    duration = len(audio) / 16000
    lags = [(m.t, m.data["remaining_time_transcription"]) for m in result.updates]

    def window(values: list[tuple[float, float]], start: float, end: float) -> float:
        inside = [v for t, v in values if start <= t < end]
        return float(np.median(inside)) if inside else float("nan")

    wall = duration / args.speed
    warm = min(300.0, wall / 6)  # the first minutes fill caches and buffers once
    after_warmup = [v for t, v in rss if warm <= t <= wall]
    return {
        "command": f"benchmarks/soak.py --model {args.model} --policy {args.policy} --minutes {args.minutes} "
        f"--speed {args.speed}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "audio_s": round(duration, 1),
        "error": result.error,
        "wer": round(wer(reference, result.final_text), 4),
        "rss_mib": {
            "start": round(rss[0][1], 1) if rss else None,
            "after_warmup_min": round(min(after_warmup), 1) if after_warmup else None,
            "after_warmup_max": round(max(after_warmup), 1) if after_warmup else None,
            "end": round(rss[-1][1], 1) if rss else None,
        },
        "lag_s": {
            "first_5_min_median": window(lags, 0, 300),
            "last_5_min_median": window(lags, wall - 300, wall),
        },
        "drain_s": result.drain_s,
        "rss_samples": [(round(t, 1), round(v, 1)) for t, v in rss],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--policy", default="simulstreaming")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--speed", type=float, default=1.0)
    parser.add_argument("--json")
    args = parser.parse_args()
    report = asyncio.run(soak(args))
    print(json.dumps({k: v for k, v in report.items() if k != "rss_samples"}, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
