"""The ingress side of Ray Serve: sessions run here exactly as in the plain server (decoder, VAD,
transcript, protocol); only the policy's model steps go to a model replica, through `RemotePolicy`.

A session's policy state lives on one replica for the session's life (`SessionRouter` pins it);
the ingress sends that replica the audio gathered since the last step with each step, so a step is
one Ray call per `--min-chunk` of speech.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np

from whisperlivekit.asr.base import StreamingPolicy
from whisperlivekit.config import Config
from whisperlivekit.engine import TranscriptionEngine
from whisperlivekit.messages import PolicyOutput, Word

if TYPE_CHECKING:
    from whisperlivekit.server.metrics import Metrics

T = TypeVar("T")
SAMPLE_RATE = 16000
Action = Literal["process", "finish", "close"]
WordTuple = tuple[str, float, float, float]


@dataclass
class StepRequest:
    """One model step of one session, sent to the replica that holds it."""

    session_id: str
    action: Action
    language: str = "en"
    audio: list[tuple[np.ndarray, float]] = field(default_factory=list)  # (float32 samples, start)
    fresh: bool = False  # the session's first step: the replica creates its policy
    context: str = ""  # with `fresh`: text said before (a resumed session)


@dataclass
class StepResult:
    committed: list[WordTuple] = field(default_factory=list)
    tentative: list[WordTuple] = field(default_factory=list)
    buffered_seconds: float = 0.0
    detected_language: str | None = None
    replica: str = ""
    replica_seconds: float = 0.0  # time the step spent on the replica (waiting for its model included)
    error: str | None = None


def words_to_tuples(words: tuple[Word, ...]) -> list[WordTuple]:
    return [(w.text, w.start, w.end, w.probability) for w in words]


def tuples_to_words(words: list[WordTuple]) -> tuple[Word, ...]:
    return tuple(Word(*w) for w in words)


class RemotePolicy(StreamingPolicy):
    """A session's policy held by a model replica; driven by `IngressEngine.run`, never directly."""

    def __init__(
        self,
        handle: Any,
        language: str,
        background: set[asyncio.Task],
        metrics: Metrics | None = None,
        context: str = "",
    ) -> None:
        self._metrics = metrics
        self.session_id = uuid.uuid4().hex
        self._handle = handle
        self._language = language
        self._context = context
        self._background = background
        self._audio: list[tuple[np.ndarray, float]] = []
        self._pending = 0
        self._buffered = 0.0
        self._fresh = True
        self._closed = False
        self.detected_language: str | None = None
        self.replicas: set[str] = set()  # the replicas that answered: one, unless it was lost

    def insert_audio(self, samples: np.ndarray, start: float) -> None:
        self._audio.append((np.asarray(samples, dtype=np.float32), start))
        self._pending += len(samples)

    def process(self) -> PolicyOutput:
        raise RuntimeError("a RemotePolicy steps through its engine: await engine.run(policy.process)")

    def finish(self) -> PolicyOutput:
        raise RuntimeError("a RemotePolicy steps through its engine: await engine.run(policy.finish)")

    @property
    def pending_seconds(self) -> float:
        return self._pending / SAMPLE_RATE

    @property
    def buffered_seconds(self) -> float:
        return self._buffered + self.pending_seconds

    async def step(self, action: Action) -> PolicyOutput:
        context = self._context if self._fresh else ""  # the replica needs it only to create the policy
        request = StepRequest(self.session_id, action, self._language, self._audio, self._fresh, context)
        self._audio, self._pending = [], 0
        sent = time.perf_counter()
        result: StepResult = await self._handle.step.remote(request)
        if self._metrics is not None:
            self._metrics.remote_hop.observe(max(0.0, time.perf_counter() - sent - result.replica_seconds))
        self._fresh = False
        self.replicas.add(result.replica)
        if result.error is not None:
            raise RuntimeError(f"model replica {result.replica}: {result.error}")
        self._buffered = result.buffered_seconds
        self.detected_language = result.detected_language
        return PolicyOutput(tuples_to_words(result.committed), tuples_to_words(result.tentative))

    def close(self) -> None:
        """Free the replica's state for this session (from the session's cleanup; idempotent)."""
        if self._closed or self._fresh:
            return
        self._closed = True
        request = StepRequest(self.session_id, "close")

        async def send() -> None:
            with contextlib.suppress(Exception):  # the replica may be gone: its state went with it
                await self._handle.step.remote(request)

        task = asyncio.get_running_loop().create_task(send())
        self._background.add(task)
        task.add_done_callback(self._background.discard)


class IngressEngine(TranscriptionEngine):
    """The engine of an ingress replica: VAD and model files here, the ASR model on the replicas."""

    def __init__(self, config: Config, model_handle: Any) -> None:
        self.model_handle = model_handle
        self._background: set[asyncio.Task] = set()
        super().__init__(config)

    def _load(self) -> None:
        from whisperlivekit.asr.model_files import resolve_model

        cfg = self.config
        if cfg.diarization:
            raise ValueError("diarization is not served on Ray yet: run the plain server for it")
        # Resolved here too: /health reports it and language checks need to know if it is multilingual.
        self.model_files = resolve_model(cfg.model, cfg.model_path, cache_dir=cfg.model_cache_dir)
        self.policy_model = self.model_handle
        if cfg.vac:
            from whisperlivekit.audio.vad import SileroVADModel

            self.vad_model = SileroVADModel()

    def new_policy(self, language: str | None = None, context: str = "") -> StreamingPolicy:
        language = self.check_language(language or self.config.language)
        return RemotePolicy(self.model_handle, language, self._background, self.metrics, context)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        policy = getattr(fn, "__self__", None)
        if isinstance(policy, RemotePolicy) and fn.__name__ in ("process", "finish"):
            return await policy.step(fn.__name__)  # type: ignore[return-value]
        return await super().run(fn, *args)
