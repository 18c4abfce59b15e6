"""Ray Serve's cost per message against the plain server, same model and audio (see ray_overhead.md).

Streams jfk.wav in real time through a plain server and through Ray Serve (a local two-node cluster,
two model replicas, as tests/test_ray.py), RUNS times each, and compares from each server's /metrics:
the model call (a session's request to its result: on Ray, the hop to the replica and back included),
the word latency, and from the client the drain time; plus the bare round trip of a Serve handle
call to a replica (no model) from the driver.

    RAY_USAGE_STATS_ENABLED=0 nice -n 19 .venv/bin/python benchmarks/ray_overhead.py --runs 4 \
        --json benchmarks/results/ray_overhead.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def scrape(http: str) -> dict[str, float]:
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    values: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(f"{http}/metrics").text):
        for sample in family.samples:
            if not sample.labels or (set(sample.labels) == {"le"} and sample.labels["le"] == "+Inf"):
                values[sample.name] = sample.value
    return values


class Target:
    """One server's figures over its runs, from its /metrics before and after."""

    def __init__(self, ws: str, http: str) -> None:
        self.ws, self.http = ws, http
        self.before = scrape(http)
        self.drains: list[float] = []
        self.texts: set[str] = set()
        self.runs = 0

    def run(self, samples) -> None:
        from whisperlivekit.client import stream_audio

        result = asyncio.run(stream_audio(self.ws, samples, speed=1.0))
        assert result.error is None, result.error
        self.drains.append(result.drain_s)
        self.texts.add(result.final_text)
        self.runs += 1

    def figures(self) -> dict:
        after = scrape(self.http)

        def delta(name: str) -> float:
            return after.get(name, 0.0) - self.before.get(name, 0.0)

        def mean_ms(name: str) -> float | None:
            count = delta(f"{name}_count")
            return round(1000 * delta(f"{name}_sum") / count, 1) if count else None

        return {
            "model_calls_per_run": delta("wlk_model_call_seconds_count") / self.runs,
            "model_call_mean_ms": mean_ms("wlk_model_call_seconds"),
            "remote_hop_mean_ms": mean_ms("wlk_remote_hop_seconds"),
            "word_latency_mean_ms": mean_ms("wlk_word_latency_seconds"),
            "drain_median_s": round(statistics.median(self.drains), 3),
            "transcripts": sorted(self.texts),
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--json", type=Path, help="Write the figures here too.")
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from conftest import LiveServer
    from ray import serve
    from ray.cluster_utils import Cluster

    from whisperlivekit import TranscriptionEngine
    from whisperlivekit.client import decode_audio
    from whisperlivekit.config import Config
    from whisperlivekit.ray_serve.deployments import APP_NAME, build_app
    from whisperlivekit.server.app import create_app

    config = Config(pcm_input=True, threads=1, ray_replicas=2, ray_max_replicas=2, ray_replica_cpus=1.0)
    samples = decode_audio(REPO.parent / "shared" / "eval" / "classic" / "jfk.wav")
    figures: dict = {"audio": "classic/jfk.wav (11 s), real time", "runs": args.runs, "model": config.model,
                     "policy": config.backend_policy, "threads": config.threads}  # fmt: skip

    engine = TranscriptionEngine(config)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    try:
        started = time.monotonic()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(config), name=APP_NAME, route_prefix="/")
        figures["ray_start_s"] = round(time.monotonic() - started, 1)
        handle = serve.get_deployment_handle("ModelReplica", app_name=APP_NAME)
        handle.where.remote().result(timeout_s=60)
        trips = []
        for _ in range(100):
            t = time.perf_counter()
            handle.where.remote().result(timeout_s=60)
            trips.append(time.perf_counter() - t)
        figures["handle_round_trip_median_ms"] = round(1000 * statistics.median(trips), 2)
        with LiveServer(create_app(engine)) as server:
            plain = Target(server.ws, server.http)
            on_ray = Target(f"ws://127.0.0.1:{port}/asr", f"http://127.0.0.1:{port}")
            for _ in range(args.runs):  # interleaved: the machine's load drifts over minutes
                plain.run(samples)
                on_ray.run(samples)
            figures["plain"], figures["ray"] = plain.figures(), on_ray.figures()
    finally:
        serve.shutdown()
        ray.shutdown()
        cluster.shutdown()
        engine.close()
    figures["same_transcript"] = figures["plain"]["transcripts"] == figures["ray"]["transcripts"]
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
