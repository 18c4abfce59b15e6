"""`wlk bench`: measure a model and policy on this machine, as ../shared/EVAL.md defines the figures.

Without --url it starts `wlk serve` with the given options in a subprocess (one per model x policy);
with --url it measures any server speaking the /asr protocol (upstream WhisperLiveKit included).
Each set of the manifest becomes one long stream (utterances joined with 0.3 s of silence) replayed in
real time; word latencies are timed against a cached forced alignment with the same model.

  wlk bench --set en/hifitts_6097 --model tiny.en --json out.json --plot plots/
  wlk bench --capacity --model tiny.en                   # first 3 min of en/hifitts_6097, N = 1, 2, …
  wlk bench --url ws://127.0.0.1:9000/asr --model tiny.en --label upstream --set classic/jfk.wav
  wlk bench --from-json a.json b.json --plot plots/      # table and plots of earlier runs together
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import gc
import json
import os
import platform
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from whisperlivekit.bench.alignment import Aligner
    from whisperlivekit.bench.dataset import LongStream
    from whisperlivekit.bench.metrics import StreamReport
    from whisperlivekit.bench.runner import Replay

DEFAULT_SET = "en/hifitts_6097"
CAPACITY_DURATION_S = 180.0  # EVAL.md: capacity over a 3-minute stream


def add_bench_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `bench` on the `wlk` subcommands."""
    parser = subparsers.add_parser(
        "bench",
        help="Benchmark a model and policy (WER, latency, lag growth, capacity…).",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_bench_arguments(parser)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wlk bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_bench_arguments(parser)
    return parser


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    data = p.add_argument_group("data")
    data.add_argument(
        "--set",
        dest="sets",
        action="extend",
        nargs="+",
        metavar="NAME",
        help=f"manifest folder prefix or file path, one stream each (default: {DEFAULT_SET})",
    )
    data.add_argument("--manifest", help="manifest.tsv (default: $WLK_EVAL_DIR or ../shared/eval)")
    data.add_argument("--limit", type=int, help="first N utterances of each set only")
    data.add_argument(
        "--max-duration", type=float, help="first utterances of each set up to this many seconds"
    )

    server = p.add_argument_group("server")
    server.add_argument("--url", help="measure this running server (ws://…/asr) instead of starting one")
    server.add_argument(
        "--model",
        dest="models",
        action="extend",
        nargs="+",
        metavar="NAME",
        help="model(s) to serve, and to align and transcribe offline with (default: tiny.en)",
    )
    server.add_argument(
        "--policy",
        dest="policies",
        action="extend",
        nargs="+",
        metavar="NAME",
        help="streaming policy(ies), passed to the server as --backend-policy (default: the server's)",
    )
    server.add_argument("--server-args", default="", help="more `wlk serve` options, one string")
    server.add_argument(
        "--server-cmd",
        help="start this server instead of ours: one shell-quoted command with {port} for the port it must "
        "listen on at 127.0.0.1 (e.g. upstream WhisperLiveKit from another virtualenv)",
    )
    server.add_argument("--server-pid", type=int, help="with --url: sample this process's RSS")
    server.add_argument("--label", help="name of the configuration in the table (one configuration only)")

    replay = p.add_argument_group("replay")
    mode = replay.add_mutually_exclusive_group()
    mode.add_argument("--streams", type=int, default=1, help="simultaneous real-time streams (default 1)")
    mode.add_argument(
        "--capacity",
        action="store_true",
        help=f"largest N of simultaneous streams whose lag growth stays under --capacity-threshold "
        f"(default set: the first {CAPACITY_DURATION_S:.0f} s of {DEFAULT_SET})",
    )
    replay.add_argument("--capacity-max", type=int, default=8, help="stop the search at this N")
    replay.add_argument(
        "--capacity-start", type=int, default=1, help="resume a search at this N (smaller N count as passed)"
    )
    replay.add_argument("--capacity-threshold", type=float, default=1.0, help="lag growth limit (s)")
    replay.add_argument("--speed", type=float, default=1.0, help="pacing, x real time (default 1)")
    replay.add_argument("--chunk-ms", type=float, default=100.0)
    replay.add_argument("--webm", action="store_true", help="send WebM/Opus instead of PCM s16le")
    replay.add_argument(
        "--ready-timeout", type=float, default=600.0, help="seconds to wait for ready_to_stop"
    )
    replay.add_argument(
        "--no-language-hint", action="store_true", help="do not add ?language=<set language> to the URL"
    )

    ref = p.add_argument_group("reference")
    ref.add_argument("--model-dir", help="CTranslate2 dir for alignment and offline WER (default: --model's)")
    ref.add_argument("--compute-type", default="int8", help="of the aligner and offline transcription")
    ref.add_argument("--threads", type=int, default=2, help="of the aligner and offline transcription")
    ref.add_argument("--cache-dir", help="alignment cache (default: user cache dir)")
    ref.add_argument("--no-offline", action="store_true", help="skip offline WER and file-transcription RTF")

    out = p.add_argument_group("output")
    out.add_argument("--json", type=Path, help="write every figure (and per-word latencies) here")
    out.add_argument("--plot", type=Path, metavar="DIR", help="write PNG plots here")
    out.add_argument(
        "--from-json",
        type=Path,
        nargs="+",
        metavar="FILE",
        help="no measurement: table/plots of these results",
    )
    out.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    return run_bench(args)


# --- the run --------------------------------------------------------------------------------------------


@dataclass
class Target:
    """One configuration: a server to start (model, policy, options) or one at a URL."""

    model: str
    policy: str | None
    server_args: list[str]
    url: str | None = None
    label: str | None = None
    server_cmd: list[str] | None = None  # a foreign server to start
    server: dict[str, Any] = field(default_factory=dict)  # command and /health answer, for the record

    def describe(self) -> str:
        if self.label:
            return self.label
        health = self.server.get("health") or {}
        policy = self.policy or health.get("policy")
        if (self.url or self.server_cmd) and not health.get("policy"):  # not ours: say where it is
            return f"{self.url or Path(self.server_cmd[0]).name} ({self.model})"
        return f"{policy or 'default'}/{health.get('model') or self.model}"


@dataclass
class Reference:
    word_ends: list[float]
    offline: dict[str, Any]  # wer, rtf, text of the offline whole-file transcription with the same model
    file: dict[str, Any]  # wer, rtf of the project's own file transcription (own server only)


def log(msg: str) -> None:
    print(f"[wlk bench] {msg}", file=sys.stderr, flush=True)


def run_bench(args: argparse.Namespace) -> int:
    if args.from_json:
        data = merge([json.loads(Path(p).read_text()) for p in args.from_json])
        return _finish(args, data, 0)

    from whisperlivekit.bench.dataset import load_set

    sets = args.sets or [DEFAULT_SET]
    if any(_is_diarization_set(name) for name in sets):
        return run_diarization_sets(args, sets)
    targets = make_targets(args)
    max_duration = args.max_duration or (CAPACITY_DURATION_S if args.capacity else None)
    try:
        streams = [
            load_set(s, limit=args.limit, manifest=args.manifest, max_duration_s=max_duration) for s in sets
        ]
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"wlk bench: {error}") from None
    for s in streams:
        log(f"{s.name}: {len(s.utterances)} utterances, {s.duration_s:.1f} s")
    data: dict[str, Any] = {
        "command": _command(args),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "runs": [],
        "capacity": [],
    }
    status = 0
    aligners: dict[str, Aligner] = {}
    offline: dict[tuple[str, str], dict[str, Any]] = {}  # (model dir, set) -> offline figures
    for i, target in enumerate(targets):
        refs = [prepare_reference(args, target, s, aligners, offline) for s in streams]
        gc.collect()  # the aligner and file-transcription models are gone before the server starts
        status |= asyncio.run(_measure_target(args, target, streams, refs, data, last=i == len(targets) - 1))
    return _finish(args, data, status)


def _is_diarization_set(name: str) -> bool:
    return name.strip("/").split("/")[0] == "diar"


def run_diarization_sets(args: argparse.Namespace, sets: list[str]) -> int:
    """`diar/` sets are folders of recordings with RTTM (speaker turns) or STM (turns with text)
    references, not manifest rows: the diarization benchmark scores them, DER or cpWER."""
    from whisperlivekit.bench import diarization
    from whisperlivekit.bench.dataset import find_eval_dir

    if not all(_is_diarization_set(name) for name in sets):
        raise SystemExit("wlk bench: run diarization sets (diar/...) apart from transcription sets")
    if args.url or args.server_cmd or args.capacity or len(args.models or []) > 1:
        raise SystemExit("wlk bench: a diarization set runs our own server with one model; no --url, "
                         "--server-cmd or --capacity")
    root = Path(args.manifest).parent if args.manifest else find_eval_dir()
    for name in sets:
        folder = root / name.strip("/")
        if not folder.is_dir():
            raise SystemExit(f"wlk bench: no folder {folder}")
        task = "cpwer" if any(folder.glob("*.stm")) else "der"  # STM has the words, RTTM only turns
        argv = [task, str(folder), "--speed", str(args.speed)]
        if args.policies:
            argv += ["--policy", args.policies[0]]
        if args.models:
            argv += ["--model", args.models[0]]
        if args.json:
            out = args.json if len(sets) == 1 else args.json.with_stem(f"{args.json.stem}-{folder.name}")
            argv += ["--json", str(out)]
        log(f"{name}: {task.upper()} of {len(list(folder.glob('*.wav')))} recordings")
        diarization.main(argv)
    return 0


def make_targets(args: argparse.Namespace) -> list[Target]:
    models = args.models or ["tiny.en"]
    policies: list[str | None] = list(args.policies or [None])
    extra = shlex.split(args.server_args)
    if args.url or args.server_cmd:
        if len(models) > 1 or len(policies) > 1 or (args.url and args.server_cmd):
            raise SystemExit(
                "wlk bench: with --url or --server-cmd, give one --model (the one the server runs) and one "
                "--policy, and not both"
            )
        cmd = shlex.split(args.server_cmd) if args.server_cmd else None
        return [Target(models[0], policies[0], extra, url=args.url, label=args.label, server_cmd=cmd)]
    if args.label and len(models) * len(policies) > 1:
        raise SystemExit("wlk bench: --label names one configuration")
    return [
        Target(m, p, ["--model", m, *(["--backend-policy", p] if p else []), *extra], label=args.label)
        for p in policies
        for m in models
    ]


def _aligner(args: argparse.Namespace, model: str, cache: dict[str, Aligner]) -> Aligner:
    from whisperlivekit.bench.alignment import Aligner

    model_dir = args.model_dir
    if model_dir is None:
        from whisperlivekit.asr.model_files import resolve_model

        found = resolve_model(model, download=False)
        if found.format != "ctranslate2":
            raise SystemExit(
                f"wlk bench: {model}: {found.format} weights at {found.path}; pass --model-dir CT2_DIR"
            )
        model_dir = str(found.path)
    if model_dir not in cache:
        cache[model_dir] = Aligner(
            model_dir, compute_type=args.compute_type, cpu_threads=args.threads, cache_dir=args.cache_dir
        )
    return cache[model_dir]


def prepare_reference(
    args: argparse.Namespace,
    target: Target,
    stream: LongStream,
    aligners: dict[str, Aligner],
    offline_cache: dict[tuple[str, str], dict[str, Any]],
) -> Reference:
    """Word-end timeline (cached forced alignment), offline WER and RTF, and for our own server the RTF
    of its file transcription; all before the server starts, so nothing else competes for the CPU."""
    from whisperlivekit.bench.metrics import wer

    aligner = _aligner(args, target.model, aligners)
    log(f"{stream.name}: word timeline from a forced alignment with {target.model} (cached on disk)")
    word_ends = [w.end for w in aligner.align_stream(stream)]
    offline: dict[str, Any] = {}
    file: dict[str, Any] = {}
    if not args.no_offline:
        key = (str(aligner.model_dir), stream.name)
        if key not in offline_cache:
            log(f"{stream.name}: offline whole-file transcription")
            text, secs = aligner.transcribe(stream.samples, stream.language)
            offline_cache[key] = {
                "wer": _wer(wer, stream, text),
                "rtf": secs / stream.duration_s,
                "text": text,
            }
        offline = offline_cache[key]
        if target.url is None and target.server_cmd is None:  # our own file transcription
            from whisperlivekit.bench.runner import file_transcription

            log(f"{stream.name}: file transcription (wlk transcribe) for its RTF")
            language = None if stream.language == "multi" else stream.language
            text, secs = file_transcription(target.server_args, stream.samples, language)
            file = {"wer": _wer(wer, stream, text), "rtf": secs / stream.duration_s}
    aligner._model = None  # free the model: the server should have the CPU and the memory
    return Reference(word_ends, offline, file)


def _wer(wer: Any, stream: LongStream, text: str) -> float | None:
    try:
        return float(wer(stream.reference, text, stream.language))
    except ValueError:
        return None


async def _measure_target(
    args: argparse.Namespace,
    target: Target,
    streams: list[LongStream],
    refs: list[Reference],
    data: dict[str, Any],
    last: bool = True,
) -> int:
    from whisperlivekit.bench.runner import ServerProcess, get_health, health_url

    status = 0
    server: contextlib.AbstractContextManager[Any]
    if target.url:
        server = contextlib.nullcontext()
        target.server = {"url": target.url, "health": get_health(health_url(target.url)) or {}}
    else:
        server = ServerProcess(target.server_args, pcm=not args.webm, command=target.server_cmd)
        log(f"starting a server: {shlex.join(target.server_cmd or ['wlk', 'serve', *target.server_args])}")
    with server as proc:
        if proc is not None:
            target.server = {"command": proc.command, "health": proc.health}
            log(f"server up on port {proc.port}: {json.dumps(proc.health)}")
            url, pid = proc.ws_url, proc.pid
        else:
            url, pid = target.url, args.server_pid
        for stream, ref in zip(streams, refs, strict=True):
            if args.capacity:
                data["capacity"].append(await measure_capacity(args, target, url, pid, stream, ref))
            else:
                run = await measure_run(args, target, url, pid, stream, ref)
                data["runs"].append(run)
                status |= int(run["summary"]["n_errors"] > 0)
                if len(streams) > 1 or not last:  # the final table comes at the end anyway
                    log("\n" + format_table({"runs": [run]}))
            if args.json:
                _write_json(args.json, data)
    return status


def _stream_url(args: argparse.Namespace, url: str, stream: LongStream) -> str:
    from whisperlivekit.bench.runner import with_query

    if args.no_language_hint or stream.language == "multi":
        return url
    return with_query(url, language=stream.language)


async def _replay(
    args: argparse.Namespace,
    target: Target,
    url: str,
    pid: int | None,
    stream: LongStream,
    ref: Reference,
    n: int,
    ready_timeout: float,
) -> tuple[Replay, list[StreamReport]]:
    from whisperlivekit.bench.metrics import compute_report
    from whisperlivekit.bench.runner import replay_streams, rss_figures

    replay = await replay_streams(
        _stream_url(args, url, stream),
        stream.samples,
        n,
        speed=args.speed,
        chunk_s=args.chunk_ms / 1000,
        pcm=not args.webm,
        ready_timeout=ready_timeout,
        server_pid=pid,
        label=f"{target.describe()} {stream.name}" + (f" x{n}" if n > 1 else ""),
        progress=not args.quiet and sys.stderr.isatty(),
    )
    peak, steady = rss_figures(replay.rss, stream.duration_s / args.speed)
    reports = []
    for result in replay.results:
        rep = compute_report(
            stream.reference,
            ref.word_ends,
            result,
            language=stream.language,
            speed=args.speed,
            duration_s=stream.duration_s,
            name=stream.name,
        )
        rep.offline_wer, rep.offline_rtf = ref.offline.get("wer"), ref.offline.get("rtf")
        rep.peak_rss_mb, rep.steady_rss_mb = peak, steady
        reports.append(rep)
    return replay, reports


def _run_header(args: argparse.Namespace, target: Target, stream: LongStream) -> dict[str, Any]:
    return {
        "label": target.describe(),
        "model": target.model,
        "policy": target.policy or (target.server.get("health") or {}).get("policy"),
        "url": target.url,
        "server": target.server,
        "set": stream.name,
        "n_utterances": len(stream.utterances),
        "audio_duration_s": stream.duration_s,
        "speed": args.speed,
        "chunk_s": args.chunk_ms / 1000,
        "input": "webm" if args.webm else "pcm",
        "loadavg_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,  # others on the machine
    }


async def measure_run(
    args: argparse.Namespace, target: Target, url: str, pid: int | None, stream: LongStream, ref: Reference
) -> dict[str, Any]:
    from whisperlivekit.bench.metrics import summarize

    replay, reports = await _replay(args, target, url, pid, stream, ref, args.streams, args.ready_timeout)
    summary = summarize(reports) | {"file_wer": ref.file.get("wer"), "file_rtf": ref.file.get("rtf")}
    return _run_header(args, target, stream) | {
        "offline": ref.offline,
        "file": ref.file,
        "summary": summary,
        "streams": [r.to_dict(with_words=True) for r in reports],
        "max_send_lag_s": [r.max_send_lag_s for r in replay.results],
        "rss_samples": [(round(t, 2), round(v, 1)) for t, v in replay.rss],
    }


async def measure_capacity(
    args: argparse.Namespace, target: Target, url: str, pid: int | None, stream: LongStream, ref: Reference
) -> dict[str, Any]:
    from whisperlivekit.bench.metrics import summarize
    from whisperlivekit.bench.runner import capacity_search

    # A stream still draining after half its length is far behind: its lag growth fails anyway.
    ready_timeout = min(args.ready_timeout, max(60.0, stream.duration_s / 2))
    summaries: dict[int, dict[str, Any]] = {}

    async def run_round(n: int) -> list[StreamReport]:
        log(f"capacity: {n} simultaneous stream(s) of {stream.name} ({stream.duration_s:.0f} s)")
        _, reports = await _replay(args, target, url, pid, stream, ref, n, ready_timeout)
        summaries[n] = summarize(reports)
        return reports

    def show(rnd: Any, _reports: list[StreamReport]) -> None:
        lags = ", ".join("n/a" if v is None else f"{v:.2f}" for v in rnd.lag_growth)
        log(f"capacity: N={rnd.n} {'keeps up' if rnd.ok else 'FAILS'}: lag growth [{lags}] s {rnd.reason}")

    capacity, rounds = await capacity_search(
        run_round,
        start=args.capacity_start,
        max_streams=args.capacity_max,
        threshold_s=args.capacity_threshold,
        on_round=show,
    )
    return _run_header(args, target, stream) | {
        "offline": ref.offline,
        "file": ref.file,
        "threshold_s": args.capacity_threshold,
        "capacity": capacity,
        "capacity_start": args.capacity_start,
        "capacity_max": args.capacity_max,
        "rounds": [r.to_dict() | {"summary": summaries[r.n]} for r in rounds],
    }


# --- output --------------------------------------------------------------------------------------------


def merge(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "sources": [{k: d.get(k) for k in ("command", "date", "machine")} for d in docs],
        "runs": [r for d in docs for r in d.get("runs", [])],
        "capacity": [c for d in docs for c in d.get("capacity", [])],
    }


def _finish(args: argparse.Namespace, data: dict[str, Any], status: int) -> int:
    print(format_table(data))
    if args.json:
        _write_json(args.json, data)
        log(f"results: {args.json}")
    if args.plot:
        from whisperlivekit.bench.plots import plot_all

        for path in plot_all(data, args.plot):
            log(f"plot: {path}")
    return status


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def _s(v: float | None, digits: int = 2) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def format_table(data: dict[str, Any]) -> str:
    """The runs and capacity searches of a result document as aligned text tables."""
    blocks = []
    if data.get("runs"):
        rows = [
            (
                "config",
                "set",
                "audio s",
                "N",
                "WER",
                "offline",
                "committed p50/p90 s",
                "first p50/p90 s",
                "lag growth s",
                "drain s",
                "RTF file/offline",
                "RSS peak/steady MiB",
            )
        ]
        for r in data["runs"]:
            s = r["summary"]
            rows.append(
                (
                    r["label"],
                    r["set"],
                    f"{r['audio_duration_s']:.0f}",
                    str(s["n_streams"]) + (f" ({s['n_errors']} failed)" if s["n_errors"] else ""),
                    _pct(s["wer"]),
                    _pct(s["offline_wer"]),
                    f"{_s(s['committed_p50'])} / {_s(s['committed_p90'])}",
                    f"{_s(s['first_p50'])} / {_s(s['first_p90'])}",
                    _s(s["lag_growth"]),
                    _s(s["drain_s"]),
                    f"{_s(s.get('file_rtf'), 3)} / {_s(s['offline_rtf'], 3)}",
                    f"{_s(s['peak_rss_mb'], 0)} / {_s(s['steady_rss_mb'], 0)}",
                )
            )
        blocks.append(_align(rows))
    if data.get("capacity"):
        rows = [
            (
                "config",
                "set",
                "audio s",
                "capacity",
                "lag growth by N (worst stream) s",
                "committed p50 by N s",
            )
        ]
        for c in data["capacity"]:
            lags = " ".join(
                f"{r['n']}:{_s(max((v for v in r['lag_growth'] if v is not None), default=None))}"
                + ("" if r["ok"] else "✗")
                for r in c["rounds"]
            )
            p50 = " ".join(f"{r['n']}:{_s(r['summary']['committed_p50'])}" for r in c["rounds"])
            rows.append((c["label"], c["set"], f"{c['audio_duration_s']:.0f}", capacity_text(c), lags, p50))
        blocks.append(_align(rows))
    return "\n\n".join(blocks)


def capacity_text(cap: dict[str, Any]) -> str:
    """'3', or '≥6' when every round passed up to the search's limit (the real capacity is unknown)."""
    rounds = cap["rounds"]
    capped = bool(rounds) and all(r["ok"] for r in rounds)
    return f"≥{cap['capacity']}" if capped else str(cap["capacity"])


def _align(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _command(args: argparse.Namespace) -> str:
    argv = getattr(args, "argv", None)
    if argv is None:  # called through `wlk bench`
        argv = sys.argv[2:] if sys.argv[1:2] == ["bench"] else sys.argv[1:]
    return shlex.join(["wlk", "bench", *argv])


def machine_info() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cores": cores, "cpu": cpu, "platform": platform.platform(), "python": platform.python_version()}


if __name__ == "__main__":
    sys.exit(main())
