"""Scale-out: the same app on Ray Serve, on a local two-node Ray cluster with two model replicas.

Skipped when ray is not installed (`pip install 'whisperlivekit[ray]'`).
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from conftest import JFK, LiveServer

from whisperlivekit.bench.metrics import normalize, wer
from whisperlivekit.client import decode_audio, stream_audio
from whisperlivekit.config import Config

pytest.importorskip("ray.serve", reason="ray[serve] is not installed: pip install 'whisperlivekit[ray]'")

# Both servers: LocalAgreement, tiny.en, one thread per model call (two replicas share 2 cores here).
CONFIG = Config(pcm_input=True, threads=1, ray_replicas=2, ray_max_replicas=2, ray_replica_cpus=1.0)


@pytest.fixture(scope="module")
def jfk(jfk_wav) -> np.ndarray:
    return decode_audio(jfk_wav)


@pytest.fixture(scope="module")
def plain_server() -> Iterator[LiveServer]:
    from whisperlivekit import TranscriptionEngine
    from whisperlivekit.server.app import create_app

    engine = TranscriptionEngine(CONFIG)
    with LiveServer(create_app(engine)) as server:
        yield server
    engine.close()


@pytest.fixture(scope="module")
def ray_url() -> Iterator[str]:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    from whisperlivekit.ray_serve.deployments import APP_NAME, build_app

    # Two nodes of one CPU each: a model replica reserves one, so each node gets one replica.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(CONFIG), name=APP_NAME, route_prefix="/")
        yield f"ws://127.0.0.1:{port}/asr"
    finally:
        serve.shutdown()
        ray.shutdown()
        cluster.shutdown()


def replicas() -> list[dict]:
    """Every model replica, asked through Serve (20 unpinned calls reach both)."""
    from ray import serve

    handle = serve.get_deployment_handle("ModelReplica", app_name="wlk")
    seen = {}
    for _ in range(20):
        where = handle.where.remote().result(timeout_s=30)
        seen[where["replica"]] = where
    return list(seen.values())


def test_ray_serve_gives_the_plain_servers_transcript(plain_server, ray_url, jfk) -> None:
    plain = asyncio.run(stream_audio(plain_server.ws, jfk, speed=1.0))
    assert plain.error is None and plain.final_text
    on_ray = asyncio.run(stream_audio(ray_url, jfk, speed=1.0))
    assert on_ray.error is None, on_ray.error
    # Not word for word: a replica step's round trip moves where the updates fall, and tiny.en reads
    # jfk's opening differently at some update phases ("my fellow" / "am I fellow").
    assert wer(JFK, plain.final_text) <= 0.1, plain.final_text
    assert wer(plain.final_text, on_ray.final_text) <= 0.1, (on_ray.final_text, plain.final_text)
    assert [m.type for m in on_ray.messages][-1] == "ready_to_stop"


def test_two_sessions_on_two_replicas_on_two_nodes(ray_url, jfk) -> None:
    """Each session stays on its replica (a step elsewhere would fail: "unknown session")."""
    where = replicas()
    assert len(where) == 2 and len({w["node"] for w in where}) == 2

    async def both():
        streams = asyncio.gather(*(stream_audio(ray_url, jfk, speed=2.0) for _ in range(2)))
        await asyncio.sleep(2.5)  # both sessions have had model steps by now
        during = await asyncio.to_thread(replicas)
        return await streams, during

    results, during = asyncio.run(both())
    for result in results:
        assert result.error is None, result.error
        assert "ask not what your country can do for you" in normalize(result.final_text)
    assert sorted(w["sessions"] for w in during) == [1, 1]  # one session per replica
    assert sum(w["sessions"] for w in replicas()) == 0  # and their state freed when they ended
    # The ingress serves the plain app: its /metrics counted these sessions.
    metrics = httpx.get(ray_url.replace("ws://", "http://").replace("/asr", "/metrics")).text
    started = re.search(r"^wlk_sessions_total (\S+)$", metrics, re.M)
    assert "\nwlk_live_sessions 0.0\n" in metrics and started and float(started[1]) >= 2
