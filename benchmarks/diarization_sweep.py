"""Sweep the default diarization backend's parameters on the AMI excerpts, in-process (no server).

    nice -n 19 .venv/bin/python benchmarks/diarization_sweep.py ../shared/eval/diar/ami_pyannote_debug \
        --distance 0.4 0.5 0.6 --window 5 8 --latency 2

Prints DER (missed / false alarm / confusion) over all files for each combination, and the compute
real-time factor. The model is loaded once; each combination replays every file in 100 ms chunks.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import time
from pathlib import Path

from whisperlivekit.audio.decoder import load_audio
from whisperlivekit.bench.diarization import der, diarize_direct, read_rttm, read_uem
from whisperlivekit.diarization.clustering import ClusteringOptions
from whisperlivekit.diarization.local import LocalDiarizationModel, LocalOptions


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("folder")
    p.add_argument("--distance", type=float, nargs="+", default=[0.5])
    p.add_argument("--window", type=float, nargs="+", default=[LocalOptions.window])
    p.add_argument("--latency", type=float, nargs="+", default=[LocalOptions.latency])
    p.add_argument("--active", type=float, nargs="+", default=[LocalOptions.active_threshold])
    p.add_argument("--min-new", type=float, nargs="+", default=[1.0])
    p.add_argument("--step", type=float, nargs="+", default=[0.0], help="0: the default for the latency")
    p.add_argument("--update", type=float, nargs="+", default=[ClusteringOptions.max_update_distance])
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    wavs = sorted(Path(args.folder).glob("*.wav"))
    audio = {w: load_audio(str(w)) for w in wavs}
    model = LocalDiarizationModel(LocalOptions(threads=args.threads))
    for distance, window, latency, active, min_new, step, update in itertools.product(
        args.distance, args.window, args.latency, args.active, args.min_new, args.step, args.update
    ):
        model.options = dataclasses.replace(
            model.options, window=window, latency=latency, active_threshold=active, window_step=step or None,
            clustering=ClusteringOptions(new_speaker_distance=distance, min_new_speaker_seconds=min_new,
                                         max_update_distance=update),
        )
        totals = {"total": 0.0, "missed": 0.0, "false_alarm": 0.0, "confusion": 0.0}
        compute, duration, right = 0.0, 0.0, 0
        for wav in wavs:
            hyp, seconds = diarize_direct(model, audio[wav])
            compute += seconds
            duration += len(audio[wav]) / 16000
            ref = read_rttm(wav.with_suffix(".rttm"))
            right += len({t.speaker for t in hyp}) == len({t.speaker for t in ref})
            for key, value in der(ref, hyp, read_uem(wav.with_suffix(".uem"))).items():
                totals[key] += value
        parts = {k: round(totals[k] / totals["total"], 4) for k in ("missed", "false_alarm", "confusion")}
        print(json.dumps({"distance": distance, "window": window, "latency": latency, "active": active,
                          "min_new": min_new, "step": model.options.step, "update": update,
                          "der": round(sum(parts.values()), 4), **parts,
                          "speakers_right": right, "rtf": round(compute / duration, 3),
                          "at": time.strftime("%H:%M:%S")}), flush=True)


if __name__ == "__main__":
    main()
