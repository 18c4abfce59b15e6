"""One model, many streams: the batch scheduler and the batched CTranslate2 path.

The real tiny.en model on real recorded speech: sessions batched together must get exactly the
words each gets alone. The scheduler's own rules (FIFO, no wait alone) on a recording backend.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from whisperlivekit.asr.base import ASRBackend
from whisperlivekit.asr.batching import BatchScheduler, ModelSteps, Transcription, run_steps, steps_of
from whisperlivekit.asr.local_agreement import LocalAgreementPolicy
from whisperlivekit.bench.metrics import normalize, wer
from whisperlivekit.client import decode_audio, stream_audio
from whisperlivekit.config import Config
from whisperlivekit.messages import Word

CONTEXT = "and so my fellow americans ask not what your country can do for you ask what you can do " * 3


@pytest.fixture(scope="module")
def engine():
    from whisperlivekit import TranscriptionEngine

    # LocalAgreement (the policy that batches), tiny.en; a wait lines the sessions up even on a fast machine.
    engine = TranscriptionEngine(pcm_input=True, backend_policy="localagreement", batch_max_wait=0.05)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def clips(eval_root: Path) -> dict[str, np.ndarray]:
    """Three different speakers and texts: jfk and two Hi-Fi TTS utterances."""
    names = ["classic/jfk.wav", "en/hifitts_6097/astralplane_03_leadbeater_0639.wav",
             "en/hifitts_6097/bambatse_02_haggard_0323.wav"]
    return {name: decode_audio(eval_root / name) for name in names}


def text(words: Sequence[Word]) -> str:
    return "".join(w.text for w in words).strip()


def test_a_batch_gives_each_request_exactly_its_words_alone(engine, clips) -> None:
    backend = engine.policy_model
    # Mixed prompts: the prompted ones share one decoder call, the others another.
    requests = [
        Transcription(audio, CONTEXT if i % 2 else "", "en", 48) for i, audio in enumerate(clips.values())
    ]
    requests.append(Transcription(np.zeros(800, dtype=np.float32)))  # too short: no words, no error
    alone = [backend.transcribe_batch([r])[0] for r in requests]
    together = backend.transcribe_batch(requests)
    assert together == alone
    assert "ask not what your country" in text(together[0]).lower()
    assert all(together[:3]) and together[3] == []


async def _stream_policy(policy: LocalAgreementPolicy, audio: np.ndarray, scheduler: BatchScheduler | None
                         ) -> list[Word]:
    """Feed `audio` 2 s at a time, as a session does; the model calls alone or scheduled."""

    async def step(steps: ModelSteps) -> list[Word]:
        if scheduler is None:
            return list(run_steps(steps, policy.backend).committed)
        return list((await scheduler.run(steps, owner=policy)).committed)

    words: list[Word] = []
    for start in range(0, len(audio), 32000):
        policy.insert_audio(audio[start : start + 32000], start / 16000)
        words += await step(policy.process_steps())
    return words + await step(policy.finish_steps())


def test_sessions_batched_together_get_their_solo_transcripts(engine, clips) -> None:
    backend = engine.policy_model

    def policy() -> LocalAgreementPolicy:  # a short trimming limit: cuts and prompts happen early
        return LocalAgreementPolicy(backend, language="en", buffer_trimming_sec=4.0)

    solo = [text(asyncio.run(_stream_policy(policy(), audio, None))) for audio in clips.values()]
    executor = ThreadPoolExecutor(max_workers=1)
    scheduler = BatchScheduler(backend, executor, max_size=8, max_wait=0.05)

    async def together() -> list[list[Word]]:
        return await asyncio.gather(*(_stream_policy(policy(), audio, scheduler) for audio in clips.values()))

    batched = [text(words) for words in asyncio.run(together())]
    executor.shutdown()
    assert batched == solo
    assert "fellow americans ask not what" in batched[0].lower()
    assert max(scheduler.batch_sizes) >= 2  # they did share calls (how many line up depends on timing)


def test_concurrent_websocket_streams_each_get_their_own_words(engine, clips) -> None:
    from conftest import LiveServer

    from whisperlivekit.server.app import create_app

    async def all_streams(url: str) -> list:
        return await asyncio.gather(*(stream_audio(url, audio, speed=3.0) for audio in clips.values()))

    before = len(engine.batcher.batch_sizes)
    with LiveServer(create_app(engine)) as server:
        results = asyncio.run(all_streams(server.ws))
    requests = [Transcription(audio) for audio in clips.values()]
    alone = [text(words) for words in engine.policy_model.transcribe_batch(requests)]
    for result, reference in zip(results, alone, strict=True):
        assert result.error is None
        assert wer(normalize(reference), normalize(result.final_text)) < 0.25, (reference, result.final_text)
    assert max(engine.batcher.batch_sizes[before:]) > 1, "the sessions never shared a model call"


class RecordingBackend(ASRBackend):
    """Answers each transcription with one word naming its request: who was served with whom."""

    multilingual = False

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def transcribe_batch(self, requests: Sequence[Transcription]) -> list[list[Word]]:
        self.batches.append([r.prompt for r in requests])
        return [[Word(r.prompt, 0.0, 1.0)] for r in requests]

    def transcribe(self, audio: np.ndarray, *, prompt: str = "", language: str | None = None) -> list[Word]:
        return self.transcribe_batch([Transcription(audio, prompt, language)])[0]

    def transcribe_file(self, audio, **kwargs) -> Iterator[Word]:
        raise NotImplementedError

    def detect_language(self, audio: np.ndarray) -> tuple[str, float]:
        return "en", 1.0


def calls(name: str, count: int) -> ModelSteps[list[str]]:
    """An update that needs `count` model calls, and returns the words it got back."""
    got = []
    for i in range(count):
        words = yield Transcription(np.zeros(16000, dtype=np.float32), f"{name}{i}")
        got.append(words[0].text)
    return got


def test_a_busy_session_goes_to_the_back_of_the_queue() -> None:
    backend = RecordingBackend()
    executor = ThreadPoolExecutor(max_workers=1)
    scheduler = BatchScheduler(backend, executor, max_size=2)
    release = threading.Event()

    async def scenario() -> list[list[str]]:
        executor.submit(release.wait)  # the model is busy: the three updates queue up
        updates = [asyncio.ensure_future(scheduler.run(calls(name, n), owner=name))
                   for name, n in (("a", 3), ("b", 1), ("c", 1))]
        await asyncio.sleep(0.05)
        release.set()
        return await asyncio.gather(*updates)

    results = asyncio.run(scenario())
    executor.shutdown()
    # Each update got exactly its own answers, in order.
    assert results == [["a0", "a1", "a2"], ["b0"], ["c0"]]
    # a's second call waits behind c, which arrived before it needed it.
    assert backend.batches == [["a0", "b0"], ["c0", "a1"], ["a2"]]


def test_one_session_alone_never_waits_and_errors_stay_with_their_session() -> None:
    backend = RecordingBackend()
    executor = ThreadPoolExecutor(max_workers=1)
    scheduler = BatchScheduler(backend, executor, max_size=8, max_wait=0.05)

    def failing() -> ModelSteps[None]:
        yield Transcription(np.zeros(16000, dtype=np.float32), "x")
        raise RuntimeError("policy bug")

    async def scenario() -> float:
        start = time.monotonic()
        for i in range(20):
            assert await scheduler.run(calls(f"s{i}-", 1), owner="alone") == [f"s{i}-0"]
        elapsed = time.monotonic() - start
        with pytest.raises(RuntimeError, match="policy bug"):
            await scheduler.run(failing(), owner="alone")
        return elapsed

    elapsed = asyncio.run(scenario())
    executor.shutdown()
    assert elapsed < 20 * 0.05 / 2  # a wait of 50 ms per update would take 1 s
    assert all(len(batch) == 1 for batch in backend.batches)


def test_only_batchable_policy_updates_are_scheduled(engine) -> None:
    policy = engine.new_policy("en")
    assert steps_of(policy.process) is not None and steps_of(policy.finish) is not None
    assert steps_of(policy.insert_audio, np.zeros(1), 0.0) is None
    assert steps_of(len, []) is None
    with pytest.raises(ValueError, match="batch_max_size"):
        Config(batch_max_size=0)
    with pytest.raises(ValueError, match="batch_max_wait"):
        Config(batch_max_wait=0.5)
