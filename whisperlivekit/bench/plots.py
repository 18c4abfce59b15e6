"""PNG plots of `wlk bench` results, drawn from the result JSON (so old results can be re-plotted).
matplotlib is imported on first use, with the Agg backend: no display needed."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from whisperlivekit.bench.cli import capacity_text

COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def slug(*parts: str) -> str:
    """A file-name-safe name: ("la/tiny.en", "en/hifitts_6097") -> "la-tiny.en_en-hifitts_6097"."""
    return "_".join(re.sub(r"[^A-Za-z0-9_.+-]+", "-", p).strip("-") for p in parts if p)


def run_title(run: dict[str, Any]) -> str:
    n = run["summary"].get("n_streams", 1)
    return f"{run['label']} · {run['set']}" + (f" · {n} streams" if n > 1 else "")


def plot_word_latency(run: dict[str, Any], path: Path) -> Path:
    """Latency of each word over stream time (committed, and first appearance in lines or buffer)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 3.6), dpi=90)
    for i, stream in enumerate(run["streams"]):
        words = stream.get("words") or []
        color = COLORS[i % len(COLORS)]
        ends = [w["end_s"] for w in words]
        tag = f" (stream {i + 1})" if len(run["streams"]) > 1 else ""
        ax.plot(
            ends, [w["committed_latency"] for w in words], ".", ms=3, color=color, label="committed" + tag
        )
        ax.plot(
            ends,
            [w["first_latency"] for w in words],
            "x",
            ms=2.5,
            alpha=0.5,
            color=color,
            label="first seen" + tag,
        )
    s = run["summary"]
    ax.set_title(
        f"{run_title(run)} — committed p50 {_f(s.get('committed_p50'))} s, "
        f"lag growth {_f(s.get('lag_growth'))} s",
        fontsize=9,
    )
    ax.set_xlabel("word end in the stream (s)")
    ax.set_ylabel("latency (s)")
    ax.axhline(0, color="0.6", lw=0.8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_summary(runs: list[dict[str, Any]], path: Path) -> Path:
    """WER (beside offline WER) and word latency per configuration and set, side by side."""
    plt = _pyplot()
    import numpy as np

    names = [f"{r['label']}\n{r['set']}" for r in runs]
    x = np.arange(len(runs))
    fig, (ax_wer, ax_lat) = plt.subplots(1, 2, figsize=(max(7, 1.3 * len(runs) + 3), 5), dpi=90)
    w = 0.38
    wer = [100 * (r["summary"].get("wer") or 0) for r in runs]
    off = [100 * (r["summary"].get("offline_wer") or 0) for r in runs]
    bars = [
        (ax_wer, ax_wer.bar(x - w / 2, wer, w, label="streaming", color="tab:blue")),
        (ax_wer, ax_wer.bar(x + w / 2, off, w, label="offline (same model)", color="0.7")),
    ]
    ax_wer.set_ylabel("WER (%)")
    ax_wer.set_title("WER", fontsize=10)
    w = 0.27
    for k, (key, label, color) in enumerate(
        (
            ("first_p50", "first seen p50", "tab:green"),
            ("committed_p50", "committed p50", "tab:blue"),
            ("committed_p90", "committed p90", "tab:purple"),
        )
    ):
        values = [r["summary"].get(key) or 0 for r in runs]
        bars.append((ax_lat, ax_lat.bar(x + (k - 1) * w, values, w, label=label, color=color)))
    ax_lat.set_ylabel("word latency (s)")
    ax_lat.set_title("latency", fontsize=10)
    for ax, container in bars:
        ax.bar_label(container, fmt="%.1f", fontsize=6)
    latencies = [r["summary"].get("committed_p90") or 0 for r in runs]
    if max(latencies) > 20 * max(min(latencies), 0.1):  # one system far behind: keep the others readable
        ax_lat.set_yscale("log")
    for ax in (ax_wer, ax_lat):
        ax.margins(y=0.15)
        ax.set_xticks(x, names, fontsize=7, rotation=35, ha="right")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_capacity(cap: dict[str, Any], path: Path) -> Path:
    """Lag growth of every stream against the number of simultaneous streams, with the 1 s limit."""
    plt = _pyplot()
    from matplotlib.ticker import ScalarFormatter

    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=90)
    for rnd in cap["rounds"]:
        values = [v for v in rnd["lag_growth"] if v is not None]
        ax.plot([rnd["n"]] * len(values), values, "o", color="tab:blue" if rnd["ok"] else "tab:red", ms=4)
        missing = len(rnd["lag_growth"]) - len(values)
        if missing:
            ax.annotate(f" {missing} failed", (rnd["n"], cap["threshold_s"]), fontsize=7, color="tab:red")
    ax.axhline(cap["threshold_s"], color="tab:red", lw=0.8, ls="--", label=f"{cap['threshold_s']:g} s limit")
    ns = [r["n"] for r in cap["rounds"]]
    ax.set_xticks(ns)
    ax.set_xlim(min(ns) - 0.5, max(ns) + 0.5)
    ax.set_xlabel("simultaneous real-time streams")
    ax.set_ylabel("lag growth (s)")
    values = [abs(v) for r in cap["rounds"] for v in r["lag_growth"] if v is not None]
    if max(values, default=0.0) > 10:  # a failing N can lag by minutes, a passing one by tenths
        ax.set_yscale("symlog", linthresh=1.0)
        ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.set_title(
        f"{cap['label']} · {cap['set']} ({cap['audio_duration_s']:.0f} s): capacity {capacity_text(cap)}",
        fontsize=9,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_all(data: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """Every plot of a result document: one per run, one summary, one per capacity search."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [
        plot_word_latency(r, out / f"latency_{slug(r['label'], r['set'])}.png") for r in data.get("runs", [])
    ]
    if data.get("runs"):
        paths.append(plot_summary(data["runs"], out / "summary.png"))
    paths += [
        plot_capacity(c, out / f"capacity_{slug(c['label'], c['set'])}.png") for c in data.get("capacity", [])
    ]
    return paths


def _f(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"
