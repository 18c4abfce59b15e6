"""`GET /metrics`: real sessions on the real model move the Prometheus figures they should."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from conftest import LiveServer

from whisperlivekit.client import decode_audio, stream_audio


@pytest.fixture(scope="module")
def engine():
    from whisperlivekit import TranscriptionEngine

    engine = TranscriptionEngine(pcm_input=True)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def server(engine) -> Iterator[LiveServer]:
    from whisperlivekit.server.app import create_app

    with LiveServer(create_app(engine)) as server:
        yield server


def scrape(server: LiveServer) -> dict[str, float]:
    """Sample name (with labels) -> value, parsed with prometheus_client's own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    response = httpx.get(f"{server.http}/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return values


def test_a_session_is_counted_while_it_streams_and_its_audio_and_words_after(server, jfk_wav) -> None:
    samples = decode_audio(jfk_wav)
    before = scrape(server)
    assert before["wlk_live_sessions"] == 0 and before["wlk_model_queue_depth"] == 0

    async def stream_and_watch() -> tuple[object, float]:
        task = asyncio.create_task(stream_audio(server.ws, samples, speed=2.0))
        live = 0.0
        while not task.done():
            await asyncio.sleep(0.5)
            live = max(live, (await asyncio.to_thread(scrape, server))["wlk_live_sessions"])
        return await task, live

    result, live = asyncio.run(stream_and_watch())
    assert result.error is None
    assert live == 1
    after = scrape(server)
    duration = len(samples) / 16000
    assert after["wlk_live_sessions"] == 0
    assert after["wlk_sessions_total"] - before["wlk_sessions_total"] == 1
    received = after["wlk_audio_received_seconds_total"] - before["wlk_audio_received_seconds_total"]
    transcribed = after["wlk_audio_transcribed_seconds_total"] - before["wlk_audio_transcribed_seconds_total"]
    assert received == pytest.approx(duration, abs=0.01)
    assert transcribed == pytest.approx(duration, abs=0.05)  # the model caught up with all of it
    words = len(result.final_text.split())
    latencies = after["wlk_word_latency_seconds_count"] - before.get("wlk_word_latency_seconds_count", 0)
    assert latencies == words  # one observation per committed word
    # At 2x real time, words commit within seconds of their audio, never before it arrived.
    mean = (after["wlk_word_latency_seconds_sum"] - before.get("wlk_word_latency_seconds_sum", 0)) / words
    assert 0.0 < mean < 8.0
    assert after["wlk_model_call_seconds_count"] > before.get("wlk_model_call_seconds_count", 0) + 3
    assert after["wlk_model_queue_depth"] == 0
    assert not any(key.startswith("wlk_errors_total") for key in after)
    # The session's tasks are gone once it has left (the soak benchmark watches these over hours).
    assert before["wlk_event_loop_tasks"] >= 1 and before["wlk_threads"] >= 1
    assert after["wlk_event_loop_tasks"] == before["wlk_event_loop_tasks"]


def test_two_engines_keep_separate_registries(engine) -> None:
    from whisperlivekit.server.metrics import Metrics

    other = Metrics()  # would raise "Duplicated timeseries" on a shared registry
    other.observe_batch(3)
    other.error("internal")
    text = other.render().decode()
    assert 'wlk_batch_size_bucket{le="3.0"} 1.0' in text and 'wlk_errors_total{kind="internal"} 1.0' in text
    assert 'wlk_errors_total{kind="internal"}' not in engine.metrics.render().decode()


def test_word_latency_maps_word_ends_to_their_arrival() -> None:
    from whisperlivekit.messages import Word
    from whisperlivekit.server.metrics import Metrics

    metrics = Metrics()
    meter = metrics.session()
    meter.received(1.0, 1.0)
    meter.received(1.0, 2.0)
    meter.committed([Word(" a", 0.2, 0.9), Word(" b", 1.0, 1.8)])
    assert metrics.word_latency._sum.get() == pytest.approx(0.0, abs=0.05)  # both arrived just now
    assert np.isclose(metrics.word_latency._buckets[0].get(), 2)
