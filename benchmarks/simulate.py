"""Zero-latency simulation of a policy: the session's VAD segmentation, fixed or random update sizes,
and model time taken as zero. It isolates what the policy commits from how fast the machine is.
Commit latency here is the stream time of the update that output a word minus the word's end in the
bench's forced alignment: comparable between settings of one policy, not with real-time runs (no
model time; random updates average 1 s).

    .venv/bin/python benchmarks/simulate.py --policy simulstreaming --set en/hifitts_6097 [--random]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from whisperlivekit.audio.vad import SpeechStart
from whisperlivekit.bench.alignment import Aligner
from whisperlivekit.bench.dataset import load_set
from whisperlivekit.bench.metrics import align_tokens, normalize_words, wer
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
) -> list[tuple[Word, float]]:
    """The committed words, each with the stream time (s) of the update that output it."""
    rng = np.random.default_rng(seed)
    policy, words = engine.new_policy("en"), []
    for start, end in speech_segments(engine, audio):
        at = start
        while at < end:
            step = int(16000 * (rng.uniform(chunk_s, 3 * chunk_s) if jitter else chunk_s))
            policy.insert_audio(audio[at : min(end, at + step)], at / 16000)
            at = min(end, at + step)
            words += [(w, at / 16000) for w in policy.process().committed]
        words += [(w, end / 16000) for w in policy.finish().committed]
    return words


def commit_latencies(reference: str, word_ends: list[float], words: list[tuple[Word, float]]) -> np.ndarray:
    """Output time minus reference word end, for every hypothesis token aligned to a reference one."""
    ref, ref_word = normalize_words(reference.split())
    hyp, hyp_word = normalize_words([w.text for w, _ in words])
    return np.array([
        words[hyp_word[j]][1] - word_ends[ref_word[i]]
        for op, i, j in align_tokens(ref, hyp)
        if op in ("equal", "substitute") and i is not None and j is not None
    ])


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
    aligner = Aligner()  # tiny.en, cached on disk: the same word ends as `wlk bench`
    for name in args.set:
        stream = load_set(name)
        word_ends = [w.end for w in aligner.align_stream(stream)]
        wers, p50s = [], []
        for seed in args.seeds if args.random else [0]:
            t0 = time.perf_counter()
            words = simulate(engine, stream.samples, args.chunk, args.random, seed)
            wers.append(wer(stream.reference, "".join(w.text for w, _ in words)))
            latency = commit_latencies(stream.reference, word_ends, words)
            p50s.append(float(np.median(latency)))
            print(f"{name}: WER {wers[-1]:.2%} over {stream.duration_s:.0f} s, commit latency p50 "
                  f"{p50s[-1]:.2f} s, p90 {np.percentile(latency, 90):.2f} s (seed {seed}, "
                  f"{time.perf_counter() - t0:.0f} s to simulate)", flush=True)
        if len(wers) > 1:
            mean, sd = np.mean(wers), np.std(wers, ddof=1)
            print(f"{name}: mean WER {mean:.2%}, sd {sd:.2%}, mean latency p50 {np.mean(p50s):.2f} s "
                  f"over {len(wers)} seeds")
    engine.close()


if __name__ == "__main__":
    main()
