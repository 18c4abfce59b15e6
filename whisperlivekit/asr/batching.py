"""One model, many streams: the model calls of sessions waiting at the same moment, in one batch.

A policy that supports batching writes its update as a generator of model calls (`ModelSteps`):
it prepares a request (audio, prompt), yields it, gets the model's answer back and applies it.
Alone, `run_steps` answers each request with a plain backend call. Under `BatchScheduler`, the
requests of every session waiting for the model are gathered and answered by one batched call
(`transcribe_batch`), so the policy's logic and state stay in the policy and per-session state is
never shared: each generator only ever receives the answer to its own request.

The scheduler runs on the engine's single model thread, so batched rounds and the one-at-a-time
calls of other policies (`engine.run(fn)`) queue in one FIFO and never run concurrently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np

if TYPE_CHECKING:
    from whisperlivekit.asr.base import ASRBackend
    from whisperlivekit.messages import Word

logger = logging.getLogger(__name__)
T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])
# A session that called the model this recently is expected to call again soon: worth waiting for.
PEER_HORIZON = 2.0


@dataclass(frozen=True)
class Transcription:
    """Transcribe `audio` (times relative to its first sample) after `prompt`."""

    audio: np.ndarray
    prompt: str = ""
    language: str | None = None
    # The prompt's length in tokens, fixed: CTranslate2 decodes a batch only when every prompt puts
    # <|startoftranscript|> at the same position. None: the backend's own limit.
    prompt_tokens: int | None = None

    def run(self, backend: ASRBackend) -> list[Word]:
        batched = getattr(backend, "transcribe_batch", None)
        if batched is not None:  # the same code path alone as in a batch: same words either way
            return batched([self])[0]
        return backend.transcribe(self.audio, prompt=self.prompt, language=self.language)


@dataclass(frozen=True)
class LanguageDetection:
    """The most likely language of `audio` and its probability (once per session: never batched)."""

    audio: np.ndarray

    def run(self, backend: ASRBackend) -> tuple[str, float]:
        return backend.detect_language(self.audio)


ModelRequest = Transcription | LanguageDetection
ModelSteps = Generator[ModelRequest, Any, T]


class BatchedBackend(Protocol):
    def transcribe_batch(self, requests: Sequence[Transcription]) -> list[list[Word]]: ...


def run_steps(steps: ModelSteps[T], backend: ASRBackend) -> T:
    """Drive a policy's update alone: each request is one plain backend call."""
    try:
        request = next(steps)
        while True:
            request = steps.send(request.run(backend))
    except StopIteration as stop:
        return stop.value


def batchable(steps_method: str) -> Callable[[F], F]:
    """Mark a policy method (`process`) as `run_steps` over the generator method `steps_method`,
    so that the engine can schedule the generator itself in a batch instead."""

    def mark(method: F) -> F:
        method.batch_steps = steps_method  # type: ignore[attr-defined]
        return method

    return mark


def steps_of(fn: Callable[..., Any], *args: Any) -> ModelSteps[Any] | None:
    """The generator behind a `batchable` bound method, or None for any other callable."""
    name = getattr(fn, "batch_steps", None)
    owner = getattr(fn, "__self__", None)
    if name is None or owner is None:
        return None
    return getattr(owner, name)(*args)


@dataclass(eq=False)
class _Call:
    """One session's update in flight: its generator, its pending request, its future."""

    steps: ModelSteps[Any]
    owner: int
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    request: ModelRequest | None = None
    started: bool = False
    enqueued: float = field(default_factory=time.monotonic)


class BatchScheduler:
    """Gathers the model requests of concurrent sessions into batched backend calls.

    Rounds run on `executor` (the engine's one model thread). A round takes up to `max_size`
    waiting updates in arrival order (FIFO: each session has at most one update in flight, so a
    busy session cannot starve the others), advances each to its model request, answers all
    transcriptions with one `transcribe_batch` call, and hands each answer back to its own
    generator. An update that needs another model call goes to the back of the queue.

    A round waits up to `max_wait` seconds for more requests, but only for sessions that have been
    calling the model lately and are not queued yet: one session alone never waits.
    """

    def __init__(
        self,
        backend: ASRBackend,
        executor: Executor,
        *,
        max_size: int = 8,
        max_wait: float = 0.0,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.backend = backend
        self.executor = executor
        self.max_size = max_size
        self.max_wait = max_wait
        self.on_batch = on_batch  # told the size of every transcription call (metrics)
        self._queue: deque[_Call] = deque()
        self._arrived = threading.Condition()
        self._last_call: dict[int, float] = {}  # owner -> when its last update finished
        self.batch_sizes: list[int] = []  # requests per transcription call, newest last (bounded)

    async def run(self, steps: ModelSteps[T], owner: object = None) -> T:
        """Run one policy update (`steps`), its model calls batched with other sessions'."""
        loop = asyncio.get_running_loop()
        call = _Call(steps, id(owner if owner is not None else steps), loop, loop.create_future())
        self._enqueue(call)
        return await call.future

    def close(self) -> None:
        """Fail the updates still waiting: the model thread is going away (engine closed)."""
        with self._arrived:
            waiting, self._queue = list(self._queue), deque()
        for call in waiting:
            self._finish(call, error=RuntimeError("the engine was closed"))

    def _enqueue(self, call: _Call) -> None:
        with self._arrived:
            self._queue.append(call)
            self._arrived.notify_all()
        try:
            self.executor.submit(self._round)
        except RuntimeError:  # the executor is shut down: nothing will run this call
            self.close()

    # -- the model thread ---------------------------------------------------------------------

    def _round(self) -> None:
        calls = self._take()
        if not calls:
            return  # an earlier round took them
        requests: list[tuple[_Call, ModelRequest]] = []
        for call in calls:
            # A call back for its next model request has it ready; a new one runs up to its first.
            if call.started or self._advance(call, None, first=True):
                assert call.request is not None
                requests.append((call, call.request))
        transcriptions = [(c, r) for c, r in requests if isinstance(r, Transcription)]
        for call, request in requests:
            if not isinstance(request, Transcription):
                self._answer(call, lambda request=request: request.run(self.backend))
        if transcriptions:
            self._transcribe(transcriptions)

    def _take(self) -> list[_Call]:
        with self._arrived:
            if not self._queue:
                return []
            if self.max_wait > 0 and len(self._queue) < self.max_size:
                self._wait_for_peers()
            count = min(self.max_size, len(self._queue))
            return [self._queue.popleft() for _ in range(count)]

    def _wait_for_peers(self) -> None:
        """Wait (lock held, released while waiting) for recently active sessions not yet queued."""
        now = time.monotonic()
        for owner, seen in list(self._last_call.items()):
            if now - seen > PEER_HORIZON:
                del self._last_call[owner]
        queued = {call.owner for call in self._queue}
        expected = min(self.max_size, len(queued | set(self._last_call)))
        deadline = self._queue[0].enqueued + self.max_wait
        while len(self._queue) < expected and (left := deadline - time.monotonic()) > 0:
            self._arrived.wait(left)

    def _transcribe(self, batch: list[tuple[_Call, Transcription]]) -> None:
        batched: Callable[[Sequence[Transcription]], list[list[Word]]] | None
        batched = getattr(self.backend, "transcribe_batch", None)
        if batched is None or len(batch) == 1:
            for call, request in batch:
                self._record(1)
                self._answer(call, lambda request=request: request.run(self.backend))
            return
        self._record(len(batch))
        try:
            results = batched([request for _, request in batch])
        except Exception:
            # One bad request must not fail the others: answer each alone, errors to their owner.
            logger.exception("batched transcription failed; retrying its %d requests one by one", len(batch))
            for call, request in batch:
                self._answer(call, lambda request=request: request.run(self.backend))
            return
        for (call, _), words in zip(batch, results, strict=True):
            self._answer(call, lambda words=words: words)

    def _record(self, size: int) -> None:
        self.batch_sizes = [*self.batch_sizes[-999:], size]
        if self.on_batch is not None:
            self.on_batch(size)

    def _answer(self, call: _Call, answer: Callable[[], Any]) -> None:
        try:
            result = answer()
        except BaseException as error:  # it belongs to the session that asked
            self._finish(call, error=error)
            return
        if self._advance(call, result):
            self._enqueue(call)  # another model call: back of the queue, behind the others

    def _advance(self, call: _Call, result: Any, first: bool = False) -> bool:
        """Run the policy up to its next model request (True) or its end (future resolved)."""
        try:
            call.request = next(call.steps) if first else call.steps.send(result)
            call.started = True
            call.enqueued = time.monotonic()
            return True
        except StopIteration as stop:
            self._finish(call, value=stop.value)
        except BaseException as error:  # the policy's own failure, for its session
            self._finish(call, error=error)
        return False

    def _finish(self, call: _Call, value: Any = None, error: BaseException | None = None) -> None:
        with self._arrived:
            self._last_call[call.owner] = time.monotonic()
        call.steps.close()

        def resolve() -> None:
            if call.future.done():  # the session was cancelled meanwhile
                return
            if error is not None:
                call.future.set_exception(error)
            else:
                call.future.set_result(value)

        with contextlib.suppress(RuntimeError):  # the session's event loop is closed: nobody waits
            call.loop.call_soon_threadsafe(resolve)
