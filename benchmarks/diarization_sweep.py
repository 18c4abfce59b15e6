"""Sweep the default diarization backend's parameters on the AMI excerpts, in-process (no server).

    nice -n 19 .venv/bin/python benchmarks/diarization_sweep.py ../shared/eval/diar/ami_pyannote_debug \
        --distance 0.4 0.5 0.6 --window 5 8 --latency 2
    nice -n 19 .venv/bin/python benchmarks/diarization_sweep.py ../shared/eval/diar/ami_pyannote_debug \
        --cache --set active_threshold=0.4,0.3 --set min_embedding_seconds=0.25,0.5

Prints DER (missed / false alarm / confusion) over all files for each combination, and the compute
real-time factor. The model is loaded once; each combination replays every file in 100 ms chunks.
`--set FIELD=V1,V2` sweeps any numeric `LocalOptions` field. With `--cache` the segmentation and
embedding outputs are memoised on their exact inputs, so combinations that only change the
aggregation/binarisation/clustering replay in seconds (the figures are identical; the rtf is not a
compute figure then). Missed speech is also split into frames where the reference has one speaker
and frames where it has two or more (`missed_overlap`, as a fraction of the total speaker time).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import itertools
import json
import time
from pathlib import Path

import numpy as np

from whisperlivekit.audio.decoder import load_audio
from whisperlivekit.bench.diarization import Turn, der, diarize_direct, read_rttm, read_uem
from whisperlivekit.diarization.clustering import ClusteringOptions
from whisperlivekit.diarization.local import LocalDiarizationModel, LocalOptions


def memoise(model: LocalDiarizationModel) -> None:
    """Cache segment() and embed() on their exact inputs (same outputs, no recomputation)."""
    segment, embed = model.segment, model.embed
    seg_cache: dict[bytes, np.ndarray] = {}
    emb_cache: dict[bytes, np.ndarray] = {}

    def key(*arrays: np.ndarray) -> bytes:
        h = hashlib.blake2b(digest_size=16)
        for a in arrays:
            h.update(np.ascontiguousarray(a).tobytes())
            h.update(str(a.shape).encode())
        return h.digest()

    def cached_segment(audio: np.ndarray) -> np.ndarray:
        k = key(audio)
        if k not in seg_cache:
            seg_cache[k] = segment(audio)
        return seg_cache[k]

    def cached_embed(audio: np.ndarray, masks: list[np.ndarray]) -> np.ndarray:
        keys = [key(audio, m) for m in masks]
        missing = [i for i, k in enumerate(keys) if k not in emb_cache]
        if missing:
            for i, e in zip(missing, embed(audio, [masks[i] for i in missing]), strict=True):
                emb_cache[keys[i]] = e
        return np.stack([emb_cache[k] for k in keys]) if keys else embed(audio, [])

    model.segment, model.embed = cached_segment, cached_embed  # type: ignore[method-assign]


def missed_split(ref: list[Turn], hyp: list[Turn], uem: list[tuple[float, float]]) -> tuple[float, float]:
    """Missed speaker time (s) in frames with one reference speaker, and with two or more (10 ms grid)."""
    rate = 100
    n = int(max([t.end for t in ref + hyp] + [e for _, e in uem]) * rate) + 2
    speakers = sorted({t.speaker for t in ref})
    active = np.zeros((n, max(1, len(speakers))), dtype=bool)
    for t in ref:
        active[round(t.start * rate) : round(t.end * rate), speakers.index(t.speaker)] = True
    inside = np.zeros(n, dtype=bool)
    for s, e in uem:
        inside[round(s * rate) : round(e * rate)] = True
    count = (active & inside[:, None]).sum(axis=1)
    hyp_count = np.zeros(n, dtype=int)
    for t in hyp:
        hyp_count[round(t.start * rate) : round(t.end * rate)] += 1
    missed = np.maximum(count - hyp_count * inside, 0)
    return float(missed[count == 1].sum() / rate), float(missed[count > 1].sum() / rate)


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
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=V1,V2",
        help="sweep a numeric LocalOptions field (repeatable)",
    )
    p.add_argument("--cache", action="store_true", help="memoise model outputs (fast; rtf meaningless)")
    p.add_argument("--dump", type=Path, help="write each combination's hypotheses as RTTM under this folder")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    wavs = sorted(Path(args.folder).glob("*.wav"))
    audio = {w: load_audio(str(w)) for w in wavs}
    model = LocalDiarizationModel(LocalOptions(threads=args.threads))
    if args.cache:
        memoise(model)
    extra = [(f, [float(v) for v in vs.split(",")]) for f, vs in (s.split("=", 1) for s in args.set)]
    base = model.options
    for n, (distance, window, latency, active, min_new, step, update, *values) in enumerate(
        itertools.product(
            args.distance,
            args.window,
            args.latency,
            args.active,
            args.min_new,
            args.step,
            args.update,
            *[vs for _, vs in extra],
        )
    ):
        fields = {f: v for (f, _), v in zip(extra, values, strict=True)}
        model.options = dataclasses.replace(
            base,
            window=window,
            latency=latency,
            active_threshold=active,
            window_step=step or None,
            clustering=ClusteringOptions(
                new_speaker_distance=distance,
                min_new_speaker_seconds=min_new,
                max_update_distance=update,
            ),
            **fields,
        )
        totals = {"total": 0.0, "missed": 0.0, "false_alarm": 0.0, "confusion": 0.0}
        compute, duration, right, missed_overlap = 0.0, 0.0, 0, 0.0
        for wav in wavs:
            hyp, seconds = diarize_direct(model, audio[wav])
            compute += seconds
            duration += len(audio[wav]) / 16000
            ref, uem = read_rttm(wav.with_suffix(".rttm")), read_uem(wav.with_suffix(".uem"))
            right += len({t.speaker for t in hyp}) == len({t.speaker for t in ref})
            for key, value in der(ref, hyp, uem).items():
                totals[key] += value
            missed_overlap += missed_split(ref, hyp, uem)[1]
            if args.dump:
                out = args.dump / str(n)
                out.mkdir(parents=True, exist_ok=True)
                rows = [
                    f"SPEAKER {wav.stem} 1 {t.start:.3f} {t.end - t.start:.3f} <NA> <NA> {t.speaker}"
                    " <NA> <NA>\n"
                    for t in hyp
                ]
                (out / f"{wav.stem}.rttm").write_text("".join(rows))
        parts = {k: round(totals[k] / totals["total"], 4) for k in ("missed", "false_alarm", "confusion")}
        print(
            json.dumps(
                {
                    "distance": distance,
                    "window": window,
                    "latency": latency,
                    "active": active,
                    "min_new": min_new,
                    "step": model.options.step,
                    "update": update,
                    **fields,
                    "der": round(sum(parts.values()), 4),
                    **parts,
                    "missed_overlap": round(missed_overlap / totals["total"], 4),
                    "speakers_right": right,
                    "rtf": round(compute / duration, 3),
                    "at": time.strftime("%H:%M:%S"),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
