"""Soak with churn: N clients connecting, streaming real speech in real time and leaving, again and
again, against one server, while its RSS, threads, event-loop tasks, open files and live sessions
are sampled.

    .venv/bin/python benchmarks/soak_sessions.py --sessions 8 --minutes 20 \
        --json benchmarks/results/soak-sessions-8.json

Each client loops: pick a random run of consecutive utterances (10-45 s) from the English sets, stream
it at 1x, and either finish (wait for `ready_to_stop`, then score the transcript against the human
reference) or, one time in five, leave at a random moment without a word (the connection is closed
mid-stream). Then it waits 0-5 s and comes back. A finished session is complete when it ended with
`ready_to_stop`, without error, and its transcript has most of the reference's words (WER < 0.5: far
above tiny.en's own error on these sets, far below what a lost sentence costs on 10-45 s), or, for a
clip the model itself gets wrong (tiny.en drops whole FLEURS utterances), a WER within 0.1 of the
same model's offline WER on that clip, computed after the server has stopped.

The questions: does memory stay flat while sessions come and go; do threads, tasks and files come back
to where they were once everyone has left; does every session that finished get its whole transcript?
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import time
import urllib.request
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from whisperlivekit.bench.dataset import SAMPLE_RATE, Utterance, decode_audio, load_manifest, select
from whisperlivekit.bench.metrics import wer
from whisperlivekit.bench.runner import ServerProcess
from whisperlivekit.client import stream_audio

SETS = ("en/hifitts_6097", "en/ljspeech", "en/librivox_pocketsphinx", "en/fleurs_en")
GAP_S = 0.5


@dataclass
class SessionRecord:
    client: int
    started_s: float
    audio_s: float
    left_early: bool
    clip: str
    ended_s: float = 0.0
    ready_to_stop: bool = False
    error: str | None = None
    wer: float | None = None
    drain_s: float | None = None
    offline_wer: float | None = None  # of the same clip, for the sessions above the WER bound


@dataclass
class Sample:
    t: float
    rss_mib: float
    threads: int
    fds: int
    live_sessions: float
    tasks: float
    model_threads: float


class Clips:
    """Random runs of consecutive utterances of one set, decoded once."""

    def __init__(self, seed: int) -> None:
        rows = load_manifest()
        self.sets = [select(rows, name) for name in SETS]
        self.audio: dict[str, np.ndarray] = {}
        self.rng = random.Random(seed)
        self.picked: dict[str, tuple[np.ndarray, str]] = {}

    def _decode(self, u: Utterance) -> np.ndarray:
        if u.rel_path not in self.audio:
            self.audio[u.rel_path] = decode_audio(u.path, SAMPLE_RATE)
        return self.audio[u.rel_path]

    def pick(self) -> tuple[np.ndarray, str, str]:
        """Audio, reference and a name for the clip (set:first-last utterance)."""
        rows = self.rng.choice(self.sets)
        target = self.rng.uniform(10.0, 45.0)
        i = first = self.rng.randrange(len(rows))
        parts, texts, total = [], [], 0.0
        while total < target and i < len(rows):
            audio = self._decode(rows[i])
            parts += [audio, np.zeros(round(GAP_S * SAMPLE_RATE), np.float32)]
            texts.append(rows[i].reference)
            total += len(audio) / SAMPLE_RATE + GAP_S
            i += 1
        name = f"{rows[0].set_name}:{first}-{i - 1}"
        self.picked[name] = (np.concatenate(parts[:-1]), " ".join(texts))
        return *self.picked[name], name


def scrape(http: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{http}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.labels
    }


async def sampler(pid: int, http: str, out: list[Sample], t0: float, period: float) -> None:
    import psutil

    proc = psutil.Process(pid)
    while True:
        try:
            metrics = await asyncio.to_thread(scrape, http)
            out.append(
                Sample(
                    t=round(time.monotonic() - t0, 1),
                    rss_mib=round(proc.memory_info().rss / 2**20, 1),
                    threads=proc.num_threads(),  # OS threads: Python's plus native pools (CTranslate2, onnx)
                    fds=proc.num_fds(),
                    live_sessions=metrics.get("wlk_live_sessions", float("nan")),
                    tasks=metrics.get("wlk_event_loop_tasks", float("nan")),
                    model_threads=metrics.get("wlk_threads", float("nan")),
                )
            )
        except Exception as exc:  # a missed sample must not end the soak
            print(f"sample failed: {exc!r}")
        await asyncio.sleep(period)


async def client(
    i: int, url: str, clips: Clips, deadline: float, t0: float, out: list[SessionRecord], speed: float
) -> None:
    rng = random.Random(1000 + i)
    await asyncio.sleep(rng.uniform(0, 5))  # do not all arrive in the same instant
    while time.monotonic() < deadline:
        audio, reference, name = clips.pick()
        record = SessionRecord(
            i, round(time.monotonic() - t0, 1), round(len(audio) / SAMPLE_RATE, 1), False, name
        )
        record.left_early = rng.random() < 0.2
        out.append(record)
        stream = stream_audio(url, audio, speed=speed, ready_timeout=300.0)
        if record.left_early:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stream, timeout=rng.uniform(1.0, record.audio_s / speed))
        else:
            result = await stream
            record.ready_to_stop = result.t_ready_to_stop is not None
            record.error = result.error
            record.wer = round(wer(reference, result.final_text), 4)
            record.drain_s = None if result.drain_s is None else round(result.drain_s, 2)
        record.ended_s = round(time.monotonic() - t0, 1)
        await asyncio.sleep(rng.uniform(0, 5))


def _whole(record: SessionRecord) -> bool:
    """Most of the reference came back, or as much as the same model gets offline on the same clip
    (tiny.en drops whole FLEURS utterances offline too)."""
    wer_ = record.wer if record.wer is not None else 1.0
    return wer_ < 0.5 or (record.offline_wer is not None and wer_ <= record.offline_wer + 0.1)


def score_offline(records: list[SessionRecord], clips: Clips, model: str) -> None:
    """Offline WER of the clips whose streaming WER is above the bound (after the server is gone)."""
    from whisperlivekit import TranscriptionEngine

    suspects = [r for r in records if not r.left_early and r.wer is not None and r.wer >= 0.5]
    if not suspects:
        return
    engine = TranscriptionEngine(model=model, pcm_input=True)
    try:
        backend, offline = engine.file_backend(), {}
        for record in suspects:
            if record.clip not in offline:
                audio, reference = clips.picked[record.clip]
                hypothesis = "".join(w.text for w in backend.transcribe_file(audio))
                offline[record.clip] = round(wer(reference, hypothesis), 4)
            record.offline_wer = offline[record.clip]
    finally:
        engine.close()


def summary(
    records: list[SessionRecord], samples: list[Sample], idle_before: Sample, idle_after: Sample
) -> dict:
    finished = [r for r in records if not r.left_early and r.ended_s]
    complete = [r for r in finished if r.ready_to_stop and r.error is None and _whole(r)]
    wers = [r.wer for r in finished if r.wer is not None]
    drains = [r.drain_s for r in finished if r.drain_s is not None]
    half = samples[len(samples) // 2 :]
    first_quarter = samples[len(samples) // 8 : len(samples) // 4] or samples[:1]
    return {
        "sessions": len(records),
        "left_early": sum(r.left_early for r in records),
        "finished": len(finished),
        "complete": len(complete),
        "incomplete": [asdict(r) for r in finished if r not in complete],
        "wer_median": float(np.median(wers)) if wers else None,
        "drain_s_median_p90": [float(np.median(drains)), float(np.percentile(drains, 90))]
        if drains
        else None,
        "max_live_sessions": max(s.live_sessions for s in samples),
        "rss_mib": {
            "idle_before": idle_before.rss_mib,
            "second_eighth_to_quarter_median": float(np.median([s.rss_mib for s in first_quarter])),
            "second_half_median": float(np.median([s.rss_mib for s in half])),
            "second_half_max": max(s.rss_mib for s in half),
            "idle_after": idle_after.rss_mib,
        },
        "idle_before": asdict(idle_before),
        "idle_after": asdict(idle_after),
    }


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    clips = Clips(args.seed)
    server_args = [
        "--model",
        args.model,
        "--backend-policy",
        args.policy,
        "--store",
        "none",
        *args.server_arg,
    ]
    samples: list[Sample] = []
    records: list[SessionRecord] = []
    with ServerProcess(server_args) as server:
        assert server.pid is not None
        http = server.ws_url.replace("ws://", "http://").removesuffix("/asr")
        t0 = time.monotonic()
        # One session alone first, so the baseline includes what the first session starts once.
        warm_audio, *_ = clips.pick()
        await stream_audio(server.ws_url, warm_audio[: 10 * SAMPLE_RATE], speed=4.0)
        await asyncio.sleep(3)
        probe: list[Sample] = []
        task = asyncio.create_task(sampler(server.pid, http, probe, t0, 1.0))
        await asyncio.sleep(1.5)
        task.cancel()
        idle_before = probe[0]
        watch = asyncio.create_task(sampler(server.pid, http, samples, t0, args.period))
        deadline = time.monotonic() + args.minutes * 60
        await asyncio.gather(
            *(
                client(i, server.ws_url, clips, deadline, t0, records, args.speed)
                for i in range(args.sessions)
            )
        )
        await asyncio.sleep(5)  # let the last sessions' cleanup run
        watch.cancel()
        probe = []
        task = asyncio.create_task(sampler(server.pid, http, probe, t0, 1.0))
        await asyncio.sleep(1.5)
        task.cancel()
        idle_after = probe[0]
    score_offline(records, clips, args.model)
    report = summary(records, samples, idle_before, idle_after)
    return {
        "command": f"benchmarks/soak_sessions.py --sessions {args.sessions} --minutes {args.minutes} "
        f"--speed {args.speed} "
        f"--model {args.model} --policy {args.policy}"
        + "".join(f" --server-arg={a}" for a in args.server_arg),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        **report,
        "records": [asdict(r) for r in records],
        "samples": [asdict(s) for s in samples],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--policy", default="localagreement")
    parser.add_argument("--server-arg", action="append", default=[], help="extra `wlk serve` option (repeat)")
    parser.add_argument("--period", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--speed", type=float, default=1.0, help="x real time (a stress test above 1)")
    parser.add_argument("--json")
    args = parser.parse_args()
    report = asyncio.run(soak(args))
    print(json.dumps({k: v for k, v in report.items() if k not in ("records", "samples")}, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
