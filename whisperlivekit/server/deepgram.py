"""A Deepgram-compatible live WebSocket, `/v1/listen`, over the same AudioProcessor as `/asr`.

Tools written for Deepgram's streaming API connect unchanged: raw `linear16` audio at any sample
rate and channel count (resampled with FFmpeg's swresample through PyAV) or, without `encoding`, any
container FFmpeg reads; `KeepAlive`, `Finalize` and `CloseStream` text messages; `Results` messages
with interim (`is_final: false`) and final results, and `Metadata` before the close. What Deepgram
calls a final result is our committed text: it never changes once sent.

Bad query parameters are refused at the handshake with HTTP 400, a `dg-error` header and a JSON
body, as Deepgram does; audio that cannot be decoded closes the socket with 1002 `DATA-0000`, and 10 s
without any message closes it with 1011 `NET-0001`.

Like `/asr`, a stream counts against `--max-sessions` (one count for both endpoints; one more is
sent Deepgram's `Error` message and closed with 1013) and is a stored session: its id is the
`request_id` (handshake header `dg-request-id`, every `Results`, `Metadata`), its committed lines
are written to the store before the results carrying them go out, and `GET /v1/sessions/{id}`
returns them.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import json
import logging
import re
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse

from whisperlivekit.messages import Word
from whisperlivekit.server.admission import CLOSE_TRY_AGAIN_LATER, Admission
from whisperlivekit.server.sessions_api import end_live_session, live_sessions
from whisperlivekit.session import AudioProcessor
from whisperlivekit.store.live import SessionRecorder, new_session_id

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

    from whisperlivekit.engine import TranscriptionEngine

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
IDLE_TIMEOUT = 10.0  # Deepgram closes a socket that sent nothing (audio or KeepAlive) for 10 s
# Encodings Deepgram knows; only linear16 (and containers, without `encoding`) are decoded here.
DEEPGRAM_ENCODINGS = (
    "linear16", "linear32", "flac", "alaw", "mulaw", "amr-nb", "amr-wb", "opus", "ogg-opus", "speex", "g729",
)  # fmt: skip
SUPPORTED_ENCODINGS = ("linear16",)
MIN_RATE, MAX_RATE = 4000, 192000
MAX_CHANNELS = 8
# A Finalize is an end of utterance forced by silence: the VAD needs this much past its own threshold.
FINALIZE_MARGIN = 0.3
CLOSE_DATA_ERROR = 1002  # Deepgram's code for undecodable audio (DATA-0000)
CLOSE_NET_ERROR = 1011
_NOT_A_WORD = re.compile(r"[^\w'\-]+")


class BadRequest(Exception):
    """A query parameter Deepgram would refuse at the handshake."""


@dataclass(frozen=True, slots=True)
class ListenOptions:
    encoding: str | None  # None: a container (WebM, Ogg, WAV...) decoded by FFmpeg
    sample_rate: int
    channels: int
    language: str
    interim_results: bool
    punctuate: bool
    utterance_end: bool  # `utterance_end_ms` given: an UtteranceEnd after each utterance's words
    diarize: bool  # words carry `speaker` (0, 1, ...): needs a server started with --diarization

    @classmethod
    def parse(cls, params: Mapping[str, str], engine: TranscriptionEngine) -> ListenOptions:
        if getattr(engine.config, "no_transcription", False):
            raise BadRequest("this server only diarizes (--no-transcription): it has no transcription")
        encoding = params.get("encoding") or None
        if encoding is not None and encoding not in DEEPGRAM_ENCODINGS:
            raise BadRequest(
                f"Invalid encoding '{encoding}'; expected one of {', '.join(DEEPGRAM_ENCODINGS)}"
            )
        if encoding is not None and encoding not in SUPPORTED_ENCODINGS:
            raise BadRequest(
                f"encoding '{encoding}' is not supported by this server: send linear16, or a container "
                "(WebM, Ogg, WAV, MP3...) without the encoding parameter"
            )
        rate_text = params.get("sample_rate")
        if encoding is not None and rate_text is None:
            raise BadRequest("sample_rate is required when encoding is set")
        sample_rate = _integer(params, "sample_rate", SAMPLE_RATE, MIN_RATE, MAX_RATE)
        channels = _integer(params, "channels", 1, 1, MAX_CHANNELS)
        if _flag(params, "multichannel", False):
            raise BadRequest("multichannel=true is not supported by this server: channels are mixed down")
        language = params.get("language") or engine.config.language
        language = "auto" if language == "multi" else language.split("-")[0].lower()
        try:
            language = engine.check_language(language)
        except ValueError as error:
            raise BadRequest(f"language: {error}") from None
        punctuate = _flag(params, "punctuate", False) or _flag(params, "smart_format", False)
        interim = _flag(params, "interim_results", False)
        # Our utterance ends come from the VAD (--min-silence-duration), not from this gap.
        utterance_end = _integer(params, "utterance_end_ms", 0, 1000, 60_000) > 0
        diarize = _flag(params, "diarize", False)
        if diarize and getattr(engine, "diarization_model", None) is None:
            raise BadRequest("diarize=true needs a server started with --diarization")
        return cls(encoding, sample_rate, channels, language, interim, punctuate, utterance_end, diarize)


def _integer(params: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    text = params.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise BadRequest(f"Invalid {name} '{text}': expected an integer") from None
    if not low <= value <= high:
        raise BadRequest(f"Invalid {name} {value}: expected {low} to {high}")
    return value


def _flag(params: Mapping[str, str], name: str, default: bool) -> bool:
    text = params.get(name)
    if text is None:
        return default
    if text.lower() not in ("true", "false"):
        raise BadRequest(f"Invalid {name} '{text}': expected true or false")
    return text.lower() == "true"


class Linear16Resampler:
    """Interleaved s16le at any rate and channel count -> 16 kHz mono s16le, chunk by chunk.

    swresample keeps its filter state between chunks, so the output is the same as resampling the
    whole stream at once; bytes that split a sample frame wait for the next chunk.
    """

    def __init__(self, sample_rate: int, channels: int) -> None:
        import av

        self.sample_rate, self.channels = sample_rate, channels
        self._layout = {1: "mono", 2: "stereo"}.get(channels, f"{channels}c")
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        self._rest = b""

    def push(self, data: bytes) -> bytes:
        import av
        import numpy as np

        data = self._rest + data
        frame_bytes = 2 * self.channels
        usable = len(data) - len(data) % frame_bytes
        self._rest = data[usable:]
        if not usable:
            return b""
        samples = np.frombuffer(data[:usable], dtype="<i2").reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout=self._layout)
        frame.sample_rate = self.sample_rate
        frame.pts = None  # let the resampler count samples itself
        return b"".join(out.to_ndarray().tobytes() for out in self._resampler.resample(frame))

    def flush(self) -> bytes:
        return b"".join(out.to_ndarray().tobytes() for out in self._resampler.resample(None))


def create_deepgram_router() -> APIRouter:
    router = APIRouter()

    @router.websocket("/v1/listen")
    async def listen(websocket: WebSocket) -> None:
        request_id = new_session_id()  # also the stored session's id: GET /v1/sessions/{request_id}
        engine: TranscriptionEngine | None = websocket.app.state.engine
        if engine is None or not engine.ready:
            await _deny(websocket, 503, "the server is still loading its models", request_id)
            return
        try:
            options = ListenOptions.parse(websocket.query_params, engine)
        except BadRequest as error:
            await _deny(websocket, 400, str(error), request_id)
            return
        await websocket.accept(headers=[(b"dg-request-id", request_id.encode())])
        # The same count as /asr: --max-sessions bounds the live streams of both endpoints together.
        admission: Admission = websocket.app.state.admission
        with admission.seat(engine) as refusal:
            if refusal:
                await _refuse(websocket, refusal, "TOO_MANY_REQUESTS", request_id)
            else:
                await DeepgramSession(websocket, engine, options, request_id).run()

    return router


async def _deny(websocket: WebSocket, status: int, message: str, request_id: str) -> None:
    """Refuse the handshake the way Deepgram does: an HTTP error with `dg-error` and a JSON body."""
    body = {"err_code": "Bad Request" if status == 400 else "Service Unavailable", "err_msg": message,
            "request_id": request_id}  # fmt: skip
    headers = {"dg-error": message, "dg-request-id": request_id}
    try:
        await websocket.send_denial_response(JSONResponse(body, status_code=status, headers=headers))
    except RuntimeError:  # a server without the denial-response extension: the closest we can do
        await websocket.accept()
        await websocket.close(1008, message[:120])


async def _refuse(websocket: WebSocket, description: str, message: str, request_id: str) -> None:
    """Refuse an accepted socket: Deepgram's `Error` message (its SDKs raise it as an error event),
    then close 1013 "try again later" with `message` as the reason."""
    with contextlib.suppress(Exception):
        await websocket.send_json(
            {"type": "Error", "description": description, "message": message, "request_id": request_id}
        )
        await websocket.close(CLOSE_TRY_AGAIN_LATER, message)


class DeepgramSession:
    """One `/v1/listen` connection: Deepgram's messages in, AudioProcessor updates out as `Results`."""

    def __init__(
        self, websocket: WebSocket, engine: TranscriptionEngine, options: ListenOptions, request_id: str
    ) -> None:
        self.websocket, self.engine, self.options, self.request_id = websocket, engine, options, request_id
        self.processor = AudioProcessor(
            engine, language=options.language, pcm_input=options.encoding is not None
        )
        native = (options.sample_rate, options.channels) == (SAMPLE_RATE, 1)
        needs_resampling = options.encoding is not None and not native
        self.resampler = (
            Linear16Resampler(options.sample_rate, options.channels) if needs_resampling else None
        )
        self.model_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"whisperlivekit:{engine.config.model}"))
        self._audio_hash = hashlib.sha256()
        self._fed = 0.0  # seconds given to the processor (its clock), Finalize silence included
        self._inserted: list[tuple[float, float]] = []  # (processor time, seconds) of Finalize silence
        self._final_words = 0  # committed words already sent in final results
        self._final_until = 0.0  # client time where the last final result ended
        self._words_until = 0.0  # client time where the last committed word ended
        self._last_interim = ""
        self._buffer = ""  # the tentative text of the last update
        self._ends_seen = 0  # processor.utterance_ends already turned into speech_final
        self._finalize_pending = False
        self._utterance_open = False  # a final went out that was not speech_final
        self._last_word_end: float | None = None  # of the utterance not yet closed by an UtteranceEnd
        self._closing = False

    async def run(self) -> None:
        sessions = live_sessions(self.websocket)
        if sessions.draining:
            reason = "the server is shutting down: reconnect later"
            await _refuse(self.websocket, reason, "SHUTTING_DOWN", self.request_id)
            return
        recorder = await sessions.begin(self.processor, None, self._stored_meta(), new_id=self.request_id)
        if recorder.problem:  # Deepgram's protocol has no warning message: the operator's log says it
            logger.warning("deepgram session %s: %s", self.request_id, recorder.problem)
        try:
            await self._stream(recorder)
        finally:
            await self.processor.cleanup()
            # No longer live; `ended` in the store.
            await end_live_session(self.websocket, recorder, self.processor)

    async def _stream(self, recorder: SessionRecorder) -> None:
        updates = recorder.wrap(await self.processor.create_tasks())  # stored before sent
        emitter = asyncio.create_task(self._emit(updates))
        try:
            while not emitter.done():
                receiving = asyncio.ensure_future(self.websocket.receive())
                # After CloseStream the client only waits: the idle limit is for live streams.
                timeout = None if self._closing else IDLE_TIMEOUT
                done, _ = await asyncio.wait(
                    {receiving, emitter}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if not done:  # neither audio nor any message for IDLE_TIMEOUT
                    receiving.cancel()
                    await self._close(CLOSE_NET_ERROR, "NET-0001")
                    return
                if receiving not in done:
                    receiving.cancel()
                    break
                message = receiving.result()
                if message["type"] == "websocket.disconnect":
                    return
                if message.get("bytes") is not None:
                    await self._on_audio(message["bytes"])
                elif message.get("text") is not None:
                    await self._on_control(message["text"])
            if emitter.exception() is not None:  # sending failed: the client is gone
                return
            code, reason = emitter.result()
            if code == 1000:
                await self._send(self._metadata())
            await self._close(code, reason)
        except WebSocketDisconnect:
            logger.info("deepgram client disconnected")
        finally:
            emitter.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await emitter

    def _stored_meta(self) -> dict[str, Any]:
        """What the store keeps about the session besides its lines (`meta` in GET /v1/sessions/ID)."""
        options = self.options
        return {"api": "deepgram", "language": options.language, "encoding": options.encoding or "container",
                "sample_rate": options.sample_rate, "channels": options.channels}  # fmt: skip

    # -- client -> server -------------------------------------------------------------------------

    async def _on_audio(self, data: bytes) -> None:
        if not data:  # Deepgram's older end-of-stream signal
            await self._close_stream()
            return
        if self._closing:
            return
        self._audio_hash.update(data)
        if self.resampler is not None:
            data = self.resampler.push(data)
        await self._feed(data)

    async def _on_control(self, text: str) -> None:
        try:
            kind = json.loads(text).get("type")
        except (ValueError, AttributeError):
            kind = None
        if kind == "CloseStream":
            await self._close_stream()
        elif kind == "Finalize":
            await self._finalize()
        elif kind != "KeepAlive":  # KeepAlive only resets the idle timer, which any message does
            logger.info("ignored deepgram control message %r", text[:80])

    async def _feed(self, pcm_or_container: bytes) -> None:
        if self.options.encoding is not None:
            self._fed += len(pcm_or_container) / 2 / SAMPLE_RATE
        await self.processor.process_audio(pcm_or_container)

    async def _finalize(self) -> None:
        """Flush what is tentative now: silence long enough for the VAD to end the utterance."""
        vad = self.processor.vad
        if self.options.encoding is None or self._closing or vad is None:
            return  # a container stream's clock is not ours to extend; without a VAD nothing ends
        if not self._buffer and not vad.in_speech:
            return  # nothing is tentative: there is nothing to flush
        seconds = self.engine.config.min_silence_duration + FINALIZE_MARGIN
        self._finalize_pending = True
        self._inserted.append((self._fed, seconds))
        await self._feed(b"\x00\x00" * round(seconds * SAMPLE_RATE))

    async def _close_stream(self) -> None:
        if self._closing:
            return
        self._closing = True
        if self.resampler is not None:
            await self._feed(self.resampler.flush())
        await self.processor.process_audio(b"")

    # -- server -> client -------------------------------------------------------------------------

    async def _emit(self, updates: AsyncIterator[dict]) -> tuple[int, str]:
        """Turn updates into Results until the stream ends; the close code and reason to use."""
        async for update in updates:
            kind = update.get("type")
            if kind == "transcript":
                for result in self._results(update):
                    await self._send(result)
            elif kind == "warning":  # lag, or a store that failed: Deepgram has no message for it
                logger.info("deepgram session %s: %s", self.request_id, update.get("warning"))
            elif kind == "error":
                logger.info("deepgram session ended on an error: %s", update.get("error"))
                reason = "DATA-0000" if "decode" in str(update.get("error")) else "internal error"
                return (CLOSE_DATA_ERROR if reason == "DATA-0000" else CLOSE_NET_ERROR), reason
        return 1000, ""

    def _results(self, update: dict) -> list[dict[str, Any]]:
        results = []
        words = self.processor.transcript.words
        buffer = self._buffer = update.get("buffer_transcription", "")
        # The speaker stopped when the VAD ended the utterance and the policy flushed it: the
        # processor records that end right after publishing the flushed update, nothing tentative.
        ends = self.processor.utterance_ends
        paused = not buffer and (len(ends) > self._ends_seen or self._closing)
        if not buffer:
            self._ends_seen = len(ends)
        new = words[self._final_words :]
        # An utterance that ended with nothing left to commit still gets its speech_final.
        if new or (paused and (self._finalize_pending or self._utterance_open)):
            self._final_words = len(words)
            start = self._final_until
            end = max([start, *(self._client_time(w.end) for w in new)])
            results.append(self._result(new, start, end, is_final=True, speech_final=paused))
            self._final_until = end
            self._last_interim = ""
            self._utterance_open = not paused
            if new:
                self._last_word_end = self._client_time(new[-1].end)
            if paused:
                self._finalize_pending = False
                if self.options.utterance_end and self._last_word_end is not None:
                    results.append(
                        {
                            "type": "UtteranceEnd",
                            "channel": [0, 1],
                            "last_word_end": round(self._last_word_end, 3),
                        }
                    )
                    self._last_word_end = None
        if self.options.interim_results and buffer and buffer != self._last_interim:
            self._last_interim = buffer
            results.append(self._interim(buffer))
        return results

    def _interim(self, text: str) -> dict[str, Any]:
        """Interim words have no alignment yet: spread them over the audio after the last final."""
        start = self._final_until
        end = max(start, self._client_time(self._fed)) if self.options.encoding else start
        tokens = text.split()
        step = (end - start) / max(1, len(tokens))
        words = [Word(" " + t, start + i * step, start + (i + 1) * step, 0.0) for i, t in enumerate(tokens)]
        return self._result(words, start, end, is_final=False, speech_final=False, client_times=True)

    def _result(
        self,
        words: list[Word],
        start: float,
        end: float,
        *,
        is_final: bool,
        speech_final: bool,
        client_times: bool = False,
    ) -> dict[str, Any]:
        items = [self._word(w, client_times) for w in words]
        key = "punctuated_word" if self.options.punctuate else "word"
        confidence = sum(w.probability for w in words) / len(words) if words and is_final else 0.0
        return {
            "type": "Results",
            "channel_index": [0, 1],
            "duration": round(end - start, 3),
            "start": round(start, 3),
            "is_final": is_final,
            "speech_final": speech_final,
            "from_finalize": is_final and self._finalize_pending and speech_final,
            "channel": {
                "alternatives": [
                    {
                        "transcript": " ".join(item[key] for item in items if item[key]),
                        "confidence": round(confidence, 4),
                        "words": items,
                    }
                ]
            },
            "metadata": {
                "request_id": self.request_id,
                "model_info": self._model_info(),
                "model_uuid": self.model_uuid,
            },
        }

    def _word(self, word: Word, client_times: bool) -> dict[str, Any]:
        punctuated = word.text.strip()
        if client_times:
            start, end = word.start, word.end
        else:  # committed words: the aligner may overlap neighbours by a few ms; keep them in order
            start = max(self._client_time(word.start), self._words_until)
            end = self._words_until = max(self._client_time(word.end), start)
        item: dict[str, Any] = {
            "word": _NOT_A_WORD.sub("", punctuated.lower()),
            "start": round(start, 3),
            "end": round(max(start, end), 3),
            "confidence": round(word.probability, 4),
        }
        if self.options.punctuate:
            item["punctuated_word"] = punctuated
        if self.options.diarize and not client_times:  # committed words have their speaker by now
            item["speaker"] = self.processor.transcript.speaker_at(word.start, word.end) - 1
        return item

    def _client_time(self, t: float) -> float:
        """Processor time -> the client's audio time: Finalize silence never happened for the client."""
        shift = 0.0
        for at, seconds in self._inserted:
            if t > at:
                shift += min(seconds, t - at)
        return max(0.0, t - shift)

    def _model_info(self) -> dict[str, str]:
        return {"name": self.engine.config.model, "version": "whisperlivekit", "arch": "whisper"}

    def _metadata(self) -> dict[str, Any]:
        duration = self._client_time(self._fed) if self.options.encoding else self._final_until
        return {
            "type": "Metadata",
            "transaction_key": "deprecated",
            "request_id": self.request_id,
            "sha256": self._audio_hash.hexdigest(),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z"),
            "duration": round(duration, 3),
            "channels": self.options.channels,
            "models": [self.model_uuid],
            "model_info": {self.model_uuid: self._model_info()},
        }

    async def _send(self, message: dict[str, Any]) -> None:
        await self.websocket.send_json(message)

    async def _close(self, code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            await self.websocket.close(code, reason)
