"""Zero-latency simulation of a policy: the session's VAD segmentation, fixed or random update sizes,
and model time taken as zero. It isolates what the policy commits from how fast the machine is.

    .venv/bin/python benchmarks/simulate.py --policy simulstreaming --set en/hifitts_6097 [--random]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from whisperlivekit.audio.vad import SpeechStart
from whisperlivekit.bench.dataset import load_set
from whisperlivekit.bench.metrics import wer
from whisperlivekit.config import Config
from whisperlivekit.engine import TranscriptionEngine
from whisperlivekit.messages import Word

VAD_STEP = 640  # samples per VAD call, as 40 ms client frames


def speech_segments(engine: TranscriptionEngine, audio: np.ndarray) -> list[tuple[int, int]]:
    vad = engine.new_vad()
    assert vad is not None
    events = [e for i in range(0, len(audio), VAD_STEP) for e in vad.process(audio[i : i + VAD_STEP])]
    segments, start = [], 0
    for event in [*events, *vad.flush()]:
        if isinstance(event, SpeechStart):
            start = event.sample
        else:
            segments.append((start, event.sample))
    return segments


def simulate(
    engine: TranscriptionEngine, audio: np.ndarray, chunk_s: float, jitter: bool, seed: int = 0
) -> list[Word]:
    rng = np.random.default_rng(seed)
    policy, words = engine.new_policy("en"), []
    for start, end in speech_segments(engine, audio):
        at = start
        while at < end:
            step = int(16000 * (rng.uniform(chunk_s, 3 * chunk_s) if jitter else chunk_s))
            policy.insert_audio(audio[at : min(end, at + step)], at / 16000)
            words += policy.process().committed
            at += step
        words += policy.finish().committed
    return words


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--policy", default="simulstreaming")
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--set", nargs="+", default=["en/hifitts_6097", "en/ljspeech"])
    parser.add_argument("--chunk", type=float, default=0.5, help="seconds per update")
    parser.add_argument("--random", action="store_true", help="update sizes uniform in [chunk, 3 chunk]")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="with --random: one run per seed, and their mean (where the updates fall "
                        "moves a policy's WER by about a point on a 4-minute set)")
    parser.add_argument("--option", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="any other Config field, e.g. --option beams 3")
    args = parser.parse_args()
    options = {name: type(getattr(Config(), name))(value) for name, value in args.option}
    engine = TranscriptionEngine(model=args.model, backend_policy=args.policy, pcm_input=True, **options)
    for name in args.set:
        stream = load_set(name)
        wers = []
        for seed in args.seeds if args.random else [0]:
            t0 = time.perf_counter()
            words = simulate(engine, stream.samples, args.chunk, args.random, seed)
            wers.append(wer(stream.reference, "".join(w.text for w in words)))
            print(f"{name}: WER {wers[-1]:.2%} over {stream.duration_s:.0f} s (seed {seed}, "
                  f"{time.perf_counter() - t0:.0f} s to simulate)", flush=True)
        if len(wers) > 1:
            mean, sd = np.mean(wers), np.std(wers, ddof=1)
            print(f"{name}: mean WER {mean:.2%}, sd {sd:.2%} over {len(wers)} seeds")
    engine.close()


if __name__ == "__main__":
    main()
