"""`AudioProcessor`: one live session, from client bytes to transcript updates.

Three asyncio tasks joined by queues of typed messages:
    bytes -> decoder -> [_detect_speech: VAD] -> SpeechAudio | UtteranceEnd | Silence | EndOfStream
          -> [_transcribe: policy on the engine's model thread] -> Transcript -> updates (dicts)
Silence never reaches the model; an utterance end flushes the policy so its last words commit
without waiting for more audio.
With diarization, a fourth task feeds all decoded audio to the session's diarization backend on the
engine's diarization thread (never the model thread), and committed words wait in the transcript
until the speaker timeline reaches them (`buffer_diarization`).
With a target language, another task (translation/stage.py) translates each complete line on the
engine's translation thread; the end of the stream waits until every line has its translation or
error. The session reports to the engine's metrics and warns (never drops audio) past --max-lag.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from whisperlivekit.asr.base import words_text
from whisperlivekit.audio.decoder import SAMPLE_RATE, AudioDecodeError, AudioDecoder, make_decoder
from whisperlivekit.audio.vad import SpeechStart, VADEvent
from whisperlivekit.backpressure import LagWatch
from whisperlivekit.memory import release_free_memory
from whisperlivekit.messages import (
    EndOfStream,
    PipelineItem,
    PolicyOutput,
    Silence,
    SpeechAudio,
    UtteranceEnd,
)
from whisperlivekit.output.transcript import DEFAULT_SPEAKER, Line, Transcript

if TYPE_CHECKING:
    from whisperlivekit.diarization.base import SpeakerSegment
    from whisperlivekit.engine import TranscriptionEngine
    from whisperlivekit.translation.stage import TranslationStage

logger = logging.getLogger(__name__)

DIARIZATION_MIN_STEP = 0.25  # seconds of new audio before asking the backend again
PRE_ROLL_SAMPLES = SAMPLE_RATE  # audio kept before speech starts, for the VAD's start padding
RESUME_CONTEXT_CHARS = 1000  # of a resumed session's text, for the decoder (~200 tokens: its prompt cap)


class AudioProcessor:
    def __init__(
        self,
        engine: TranscriptionEngine,
        *,
        language: str | None = None,
        target_language: str | None = None,
        pcm_input: bool | None = None,
    ) -> None:
        cfg = engine.config
        self.engine = engine
        self.pcm_input = cfg.pcm_input if pcm_input is None else pcm_input
        self.language = language or cfg.language
        self.target_language = target_language or None
        self.transcribing = not cfg.no_transcription
        self._updates: asyncio.Queue[dict | None] = asyncio.Queue()
        self.translation = self._new_translation(cfg.target_language)  # before the policy: may refuse
        self.policy = engine.new_policy(self.language) if self.transcribing else None
        self.vad = engine.new_vad()
        self.diarization = engine.new_diarization()
        self._diarization_audio: asyncio.Queue[tuple[np.ndarray, float] | None] = asyncio.Queue()
        self._diarization_done = asyncio.Event()
        self._diarized_until = 0.0
        self.transcript = Transcript()
        self._decoder: AudioDecoder | None = None
        self._pipeline: asyncio.Queue[PipelineItem] = asyncio.Queue()
        self._tasks: list[asyncio.Task] = []
        self._tentative = ""
        self._received_until = 0.0  # stream time of the last sample decoded
        self._transcribed_until = 0.0  # stream time the model has caught up with
        self._speech_seen = False
        self.utterance_ends: list[float] = []  # VAD utterance ends flushed through the policy (/v1/listen)
        self._last_update: dict | None = None
        self._closed = False
        self.meter = engine.metrics.session()  # Prometheus: audio, word latency, model calls, errors
        self._lag_watch = LagWatch(cfg.max_lag)
        self._released = False

    # -- public API -------------------------------------------------------------------------

    async def create_tasks(self) -> AsyncIterator[dict]:
        """Start the session; iterate the result for updates until `ready_to_stop`."""
        self._decoder = make_decoder(self.pcm_input)
        self.meter.start()
        self._tasks = [asyncio.create_task(self._guard(self._detect_speech), name="wlk-vad")]
        if self.transcribing:
            self._tasks.append(asyncio.create_task(self._guard(self._transcribe), name="wlk-asr"))
        if self.diarization is not None:
            self._tasks.append(asyncio.create_task(self._guard(self._diarize), name="wlk-diar"))
        if self.translation is not None:
            # A resumed session's stored lines were translated then; this stream's clock starts at 0.
            self.translation.skip(len(self.transcript.lines), getattr(self.transcript, "offset", 0.0))
            self._tasks.append(asyncio.create_task(self._guard(self.translation.run), name="wlk-translate"))
        return self._results()

    def _new_translation(self, default_target: str | None) -> TranslationStage | None:
        """The translation stage when this session has a target language (ValueError: unknown/unsupported)."""
        self.target_language = self.target_language or default_target or None
        if not self.target_language or not self.transcribing:
            return None
        from whisperlivekit.translation.stage import new_translation_stage

        return new_translation_stage(
            self.engine, self.language, self.target_language, on_change=self._publish,
            on_warning=lambda warning: self._updates.put_nowait({"type": "warning", "warning": warning}),
        )

    def resume(self, lines: list[Line], until: float) -> None:
        """Continue a stored session: its `lines` come first and this stream's time starts at `until`."""
        from whisperlivekit.store.resume import ResumedTranscript

        self.transcript = ResumedTranscript(lines, until)
        if self.transcribing:  # the model continues from what was said, as within one stream
            said = " ".join(line.text.strip() for line in lines if line.text and line.text.strip())
            if len(said) > RESUME_CONTEXT_CHARS:  # the most recent text, from a word's start
                said = said[-RESUME_CONTEXT_CHARS:].split(" ", 1)[-1]
            self.policy = self.engine.new_policy(self.language, context=said)

    async def process_audio(self, data: bytes) -> None:
        """Feed client bytes; empty bytes end the stream."""
        if self._decoder is None:
            raise RuntimeError("call create_tasks() first")
        if self._closed:
            return
        if data:
            self._decoder.feed(data)
        else:
            self._closed = True
            self._decoder.close()

    async def cleanup(self) -> None:
        """Stop everything (client gone or session over). Safe to call twice."""
        self.meter.end()
        if self._decoder is not None:
            self._decoder.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        close = getattr(self.policy, "close", None)  # a remote policy frees its replica's state
        if close is not None:
            close()
        if not self._released:  # the session's buffers, back to the system; nobody waits for it
            self._released = True
            asyncio.get_running_loop().run_in_executor(None, release_free_memory)

    # -- stages -------------------------------------------------------------------------------

    async def _guard(self, stage: Callable[[], Any]) -> None:
        """A failing stage ends the session with an error message, never the server."""
        try:
            await stage()
        except asyncio.CancelledError:
            raise
        except AudioDecodeError as error:
            logger.info("session audio rejected: %s", error)
            self.meter.error("audio_decode")
            self._fail(str(error))
        except Exception as error:
            logger.exception("session failed")
            self.meter.error("internal")
            self._fail(f"internal error: {type(error).__name__}: {error}")

    def _fail(self, message: str) -> None:
        self._updates.put_nowait({"type": "error", "error": message})
        self._updates.put_nowait(None)
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()

    async def _detect_speech(self) -> None:
        """Decoder -> VAD: forward speech with its stream time, turn pauses into messages."""
        assert self._decoder is not None
        put = self._pipeline.put_nowait
        history = np.zeros(0, dtype=np.float32)
        history_start = 0  # absolute index of history[0]
        received = 0  # samples decoded so far
        sent = 0  # samples forwarded to the ASR so far
        speech_start: int | None = None
        last_speech_end = 0

        def forward(until: int) -> None:
            nonlocal sent
            if until > sent:
                chunk = history[sent - history_start : until - history_start]
                put(SpeechAudio(chunk.copy(), sent / SAMPLE_RATE))
                sent = until

        def silence(start: int, end: int) -> None:
            if (end - start) / SAMPLE_RATE >= self.engine.config.silence_line_threshold:
                put(Silence(start / SAMPLE_RATE, end / SAMPLE_RATE))

        def handle(events: list[VADEvent]) -> None:
            nonlocal speech_start, sent, last_speech_end
            for event in events:
                if isinstance(event, SpeechStart):
                    silence(last_speech_end, event.sample)
                    speech_start = sent = max(event.sample, history_start, last_speech_end)
                else:
                    forward(event.sample)
                    put(UtteranceEnd(event.sample / SAMPLE_RATE))
                    speech_start, last_speech_end = None, max(event.sample, sent)

        async for chunk in self._decoder:
            if self.diarization is not None:
                self._diarization_audio.put_nowait((chunk, received / SAMPLE_RATE))
            received += len(chunk)
            self._received_until = received / SAMPLE_RATE
            if self.translation is not None and self.translation.keep_audio:
                self.translation.add_audio(chunk)
            self._on_received(len(chunk))
            if not self.transcribing:
                continue
            history = np.concatenate([history, chunk])
            if self.vad is None:
                forward(received)
            else:
                handle(self.vad.process(chunk))
                if speech_start is not None:
                    forward(received)
            # Speech has been forwarded up to `received`; only the pre-roll is still needed.
            keep_from = max(history_start, received - PRE_ROLL_SAMPLES)
            history, history_start = history[keep_from - history_start :], keep_from
        if self.diarization is not None:
            self._diarization_audio.put_nowait(None)
        if not self.transcribing:
            return
        if self.vad is not None:
            handle(self.vad.flush())
            silence(last_speech_end, received)
        put(EndOfStream(received / SAMPLE_RATE))

    async def _transcribe(self) -> None:
        """Policy updates whenever enough new speech has arrived and the model is free."""
        min_chunk = self.engine.config.chunk_seconds
        while True:
            items = [await self._pipeline.get()]
            while not self._pipeline.empty():
                items.append(self._pipeline.get_nowait())
            for item in items:
                if isinstance(item, SpeechAudio):
                    self.policy.insert_audio(item.samples, item.start)
                    self._speech_seen = True
                elif isinstance(item, UtteranceEnd):
                    await self._apply(self.policy.finish)
                    self._transcribed_until = item.time
                    self.utterance_ends.append(item.time)
                elif isinstance(item, Silence):
                    self.transcript.add_silence(item.start, item.end)
                    self._transcribed_until = item.end
                    self._publish()
                else:
                    await self._apply(self.policy.finish)
                    self._transcribed_until = item.time
                    if self.diarization is not None:
                        await self._diarization_done.wait()
                        self.transcript.add_speakers((), math.inf)
                    if self.translation is not None:  # every line gets its translation or error first
                        await self.translation.finish(self.transcript.lines)
                    self._publish()
                    self._updates.put_nowait({"type": "ready_to_stop"})
                    self._updates.put_nowait(None)
                    return
            if self.policy.pending_seconds >= min_chunk:
                await self._apply(self.policy.process)

    async def _apply(self, step: Callable[[], PolicyOutput]) -> None:
        target = self._received_until
        with self.meter.model_call():
            output = await self.engine.run(step)
        self._transcribed_until = max(self._transcribed_until, min(target, self._received_until))
        language = getattr(self.policy, "detected_language", None)
        speaker = None if self.diarization is not None else DEFAULT_SPEAKER
        self.transcript.add_words(output.committed, speaker=speaker, language=language)
        self.meter.committed(output.committed)
        self._tentative = words_text(output.tentative)
        self._publish()

    async def _diarize(self) -> None:
        """All decoded audio -> the diarization backend on its own thread -> the speaker timeline."""
        backend = self.diarization
        assert backend is not None
        while True:
            items = [await self._diarization_audio.get()]
            while not self._diarization_audio.empty():
                items.append(self._diarization_audio.get_nowait())
            ended = items[-1] is None
            for item in items:
                if item is not None:
                    backend.insert_audio(*item)
            if ended:
                segments = await self.engine.run_diarization(backend.finish)
                self._add_speakers(segments, math.inf)
                self._diarization_done.set()
                if not self.transcribing:
                    self._updates.put_nowait({"type": "ready_to_stop"})
                    self._updates.put_nowait(None)
                return
            if backend.pending_seconds >= DIARIZATION_MIN_STEP:
                segments = await self.engine.run_diarization(backend.process)
                self._add_speakers(segments, backend.diarized_until)

    def _add_speakers(self, segments: list[SpeakerSegment], until: float) -> None:
        if segments:
            self._speech_seen = True
        if self.transcribing:
            self.transcript.add_speakers(segments, until)
        else:
            self.transcript.add_turns(segments)
        self._diarized_until = min(until, self._received_until)
        self._publish()

    # -- output -------------------------------------------------------------------------------

    def _on_received(self, samples: int) -> None:
        """Metrics, and one warning when the model falls more than --max-lag behind (audio is kept)."""
        self.meter.received(samples / SAMPLE_RATE, self._received_until)
        if self.transcribing:
            warning = self._lag_watch.check(self._received_until - self._transcribed_until)
            if warning is not None:
                self.meter.metrics.lag_warnings.inc()
                self._updates.put_nowait({"type": "warning", "warning": warning})

    def _publish(self) -> None:
        self.meter.transcribed(self._transcribed_until)
        if self.translation is not None:
            self.translation.observe(self.transcript.lines, self._tentative)
        update = self.snapshot()
        comparable = {k: v for k, v in update.items() if not k.startswith("remaining_time")}
        if comparable != self._last_update:
            self._last_update = comparable
            self._updates.put_nowait(update)

    def snapshot(self) -> dict:
        lag = max(0.0, self._received_until - self._transcribed_until) if self.transcribing else 0.0
        diarization_lag = 0.0
        if self.diarization is not None:
            diarization_lag = max(0.0, self._received_until - self._diarized_until)
        return {
            "type": "transcript",
            "status": "active_transcription" if self._speech_seen else "no_audio_detected",
            "lines": self.transcript.to_dicts(),
            "buffer_transcription": self._tentative,
            "buffer_diarization": self.transcript.pending_text,
            "buffer_translation": self.translation.buffer_translation if self.translation else "",
            "remaining_time_transcription": round(lag, 2),
            "remaining_time_diarization": round(diarization_lag, 2),
        }

    async def _results(self) -> AsyncIterator[dict]:
        while (update := await self._updates.get()) is not None:
            yield update
