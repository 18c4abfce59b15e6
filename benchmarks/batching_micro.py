"""Per-call cost of N separate CTranslate2 Whisper calls against one batched call of N.

Encoder (a 15 s window, the streaming default for buffers up to 14 s) and greedy decoder
(`generate`, no prompt) measured separately, on N different real clips of en/hifitts_6097; then a
whole LocalAgreement model call (`transcribe_batch`: features, encoder, decoder with a 48-token
prompt, alignment) on N different 10 s buffers, alone N times against batched.

    nice -n 19 .venv/bin/python benchmarks/batching_micro.py --model tiny.en --sizes 1 2 4 8 \
        [--threads 1 --clock cpu]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

EVAL = Path(__file__).resolve().parents[2] / "shared" / "eval" / "en" / "hifitts_6097"


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
clock = time.perf_counter


def best_of(repeats: int, fn: Callable[[], object]) -> float:
    """Least time of `repeats` runs: the machine is shared, the minimum is the least noisy."""
    times = []
    for _ in range(repeats):
        start = clock()
        fn()
        times.append(clock() - start)
    return min(times)


def main() -> None:
    import ctranslate2
    import soundfile as sf
    from faster_whisper.transcribe import get_suppressed_tokens

    from whisperlivekit.asr.batching import Transcription
    from whisperlivekit.asr.faster_whisper import FasterWhisperBackend
    from whisperlivekit.asr.model_files import resolve_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="CTranslate2 CPU threads (0: all cores)")
    parser.add_argument("--seconds", type=float, default=8.0, help="audio per clip (window: 15 s)")
    parser.add_argument("--clock", choices=list(CLOCKS), default="wall",
                        help="wall time, or the process's CPU time (all threads: cores spent, "
                        "less disturbed by other processes on a shared machine)")
    args = parser.parse_args()
    global clock
    clock = CLOCKS[args.clock]

    backend = FasterWhisperBackend(resolve_model(args.model, None).path, cpu_threads=args.threads)
    model = backend.model.model
    tokenizer = backend.tokenizer("en")
    clips = sorted(EVAL.glob("*.wav"))[: max(args.sizes)]
    audios = [sf.read(c, dtype="float32")[0][: int(args.seconds * 16000)] for c in clips]
    features = [backend.encode_features(a, pad_to_30s=False)[0] for a in audios]
    prompt = backend.model.get_prompt(tokenizer, None, without_timestamps=True)
    options = dict(beam_size=1, max_length=len(prompt) + 10 + int(8 * args.seconds), suppress_blank=True,
                   suppress_tokens=list(get_suppressed_tokens(tokenizer, [-1])), return_scores=True)

    def storage(batch: list[np.ndarray]) -> ctranslate2.StorageView:
        return ctranslate2.StorageView.from_array(np.ascontiguousarray(np.stack(batch), dtype=np.float32))

    encoded = [np.asarray(model.encode(storage([f])))[0] for f in features]

    def decode(batch: list[np.ndarray]) -> list[Any]:
        return model.generate(storage(batch), [prompt] * len(batch), **options)

    tokens = sum(len(r.sequences_ids[0]) for r in decode(encoded))  # also the warm-up
    print(f"model {args.model}, {os.cpu_count()} cores, threads {args.threads or 'all'}, {args.clock} time, "
          f"load {os.getloadavg()[0]:.2f}, window {features[0].shape[-1] / 100:.0f} s, "
          f"{tokens / len(encoded):.0f} tokens per clip on average")
    print("| N | encoder: N calls | encoder: 1 batch of N | speed-up "
          "| decoder: N calls | decoder: 1 batch of N | speed-up |")
    print("|---|---|---|---|---|---|---|")
    for n in args.sizes:
        enc_solo = best_of(args.repeats, lambda n=n: [model.encode(storage([f])) for f in features[:n]])
        enc_batch = best_of(args.repeats, lambda n=n: model.encode(storage(features[:n])))
        dec_solo = best_of(args.repeats, lambda n=n: [decode([e]) for e in encoded[:n]])
        dec_batch = best_of(args.repeats, lambda n=n: decode(encoded[:n]))
        print(f"| {n} | {enc_solo * 1000:.0f} ms | {enc_batch * 1000:.0f} ms | {enc_solo / enc_batch:.2f}x "
              f"| {dec_solo * 1000:.0f} ms | {dec_batch * 1000:.0f} ms | {dec_solo / dec_batch:.2f}x |",
              flush=True)

    # Whole model calls as the streaming policy makes them: 10 s buffers of consecutive utterances.
    joined = np.concatenate([sf.read(c, dtype="float32")[0] for c in sorted(EVAL.glob("*.wav"))[:60]])
    context = "the quick brown fox jumps over the lazy dog and runs away into the forest " * 4
    requests = [Transcription(joined[i * 160000 : (i + 1) * 160000], context, "en", 48)
                for i in range(max(args.sizes))]
    backend.transcribe_batch(requests[:2])  # warm-up
    print()
    print("| N | transcription: N calls | 1 batched call of N | speed-up |")
    print("|---|---|---|---|")
    for n in args.sizes:
        solo = best_of(args.repeats, lambda n=n: [backend.transcribe_batch([r]) for r in requests[:n]])
        batch = best_of(args.repeats, lambda n=n: backend.transcribe_batch(requests[:n]))
        print(f"| {n} | {solo * 1000:.0f} ms | {batch * 1000:.0f} ms | {solo / batch:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
