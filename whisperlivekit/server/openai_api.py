"""OpenAI-compatible file transcription: `POST /v1/audio/transcriptions`, `POST /v1/audio/translations`
and `GET /v1/models`, so the official `openai` client (and every tool built on it) works unchanged.

A request runs the engine's file path (`engine.file_backend()`: whole 30 s windows, no streaming
policy) on the engine's model thread, a few words at a time, so live sessions interleave with a long
upload instead of waiting for all of it, and a request past its time limit stops at the next window.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
import zlib
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from whisperlivekit.messages import Word
from whisperlivekit.output.formats import format_lines
from whisperlivekit.output.transcript import SILENCE_SPEAKER, Line, Transcript

if TYPE_CHECKING:
    import numpy as np
    from starlette.datastructures import UploadFile

    from whisperlivekit.engine import TranscriptionEngine

logger = logging.getLogger(__name__)

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json", "diarized_json")
GRANULARITIES = ("word", "segment")
BASE_TIME_LIMIT = 60.0  # seconds every request gets, on top of Config.file_time_limit x its duration
WORDS_PER_STEP = 16  # words pulled per model-thread call: at most one 30 s window of decoding
SAMPLE_RATE = 16000
# Subtitle-sized captions (srt, vtt, segments): two lines of 42 characters, at most 7 s.
MAX_CAPTION_S = 7.0
MAX_CAPTION_CHARS = 84
CAPTION_GAP_S = 1.0
DIARIZATION_STEP = 10  # seconds of audio per diarization call
MODEL_ALIAS = "whisper-1"  # what OpenAI clients send by default

# Whisper's languages, as verbose_json names them (OpenAI answers "english", not "en").
_LANGUAGE_TABLE = (
    "en:english zh:chinese de:german es:spanish ru:russian ko:korean fr:french ja:japanese pt:portuguese "
    "tr:turkish pl:polish ca:catalan nl:dutch ar:arabic sv:swedish it:italian id:indonesian hi:hindi "
    "fi:finnish vi:vietnamese he:hebrew uk:ukrainian el:greek ms:malay cs:czech ro:romanian da:danish "
    "hu:hungarian ta:tamil no:norwegian th:thai ur:urdu hr:croatian bg:bulgarian lt:lithuanian la:latin "
    "mi:maori ml:malayalam cy:welsh sk:slovak te:telugu fa:persian lv:latvian bn:bengali sr:serbian "
    "az:azerbaijani sl:slovenian kn:kannada et:estonian mk:macedonian br:breton eu:basque is:icelandic "
    "hy:armenian ne:nepali mn:mongolian bs:bosnian kk:kazakh sq:albanian sw:swahili gl:galician "
    "mr:marathi pa:punjabi si:sinhala km:khmer sn:shona yo:yoruba so:somali af:afrikaans oc:occitan "
    "ka:georgian be:belarusian tg:tajik sd:sindhi gu:gujarati am:amharic yi:yiddish lo:lao uz:uzbek "
    "fo:faroese ht:haitian_creole ps:pashto tk:turkmen nn:nynorsk mt:maltese sa:sanskrit "
    "lb:luxembourgish my:myanmar bo:tibetan tl:tagalog mg:malagasy as:assamese tt:tatar haw:hawaiian "
    "ln:lingala ha:hausa ba:bashkir jw:javanese su:sundanese yue:cantonese"
)
_LANGUAGE_NAMES = {
    code: name.replace("_", " ") for code, name in (pair.split(":") for pair in _LANGUAGE_TABLE.split())
}


class APIError(Exception):
    """An error answered the way OpenAI answers it: `{"error": {"message", "type", "param", "code"}}`."""

    def __init__(
        self, status: int, message: str, *, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def response(self) -> JSONResponse:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        body = {"message": self.message, "type": kind, "param": self.param, "code": self.code}
        return JSONResponse({"error": body}, status_code=self.status)


@dataclass(frozen=True, slots=True)
class FileRequest:
    task: str  # "transcribe" or "translate"
    response_format: str
    language: str | None
    prompt: str | None
    granularities: tuple[str, ...]
    stream: bool = False  # server-sent `transcript.text.delta` events as the words come


@dataclass(frozen=True, slots=True)
class FileResult:
    words: list[Word]
    language: str  # of the output text: the detected/given language, or "en" for a translation
    duration: float
    speakers: list[Any] | None = None  # SpeakerSegments, when the server diarizes (diarized_json)


def create_openai_router() -> APIRouter:
    router = APIRouter(prefix="/v1")

    @router.get("/models")
    async def models(request: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": _model_cards(request)})

    @router.get("/models/{model_id:path}")
    async def model(request: Request, model_id: str) -> JSONResponse:
        for card in _model_cards(request):
            if card["id"] == model_id:
                return JSONResponse(card)
        return APIError(
            404, f"The model '{model_id}' does not exist", param="model", code="model_not_found"
        ).response()

    @router.post("/audio/transcriptions")
    async def transcriptions(request: Request) -> Response:
        return await _handle(request, "transcribe")

    @router.post("/audio/translations")
    async def translations(request: Request) -> Response:
        return await _handle(request, "translate")

    return router


def _model_cards(request: Request) -> list[dict[str, Any]]:
    engine: TranscriptionEngine | None = request.app.state.engine
    names = [MODEL_ALIAS] + ([engine.config.model] if engine is not None else [])
    return [{"id": name, "object": "model", "created": 0, "owned_by": "whisperlivekit"} for name in names]


async def _handle(request: Request, task: str) -> Response:
    engine: TranscriptionEngine | None = request.app.state.engine
    try:
        if engine is None or not engine.ready:
            raise APIError(503, "the server is still loading its models")
        limit = int(engine.config.max_upload_mb * 1_000_000)
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit + 64_000:  # + room for the form
            raise _too_large(engine)
        async with request.form(max_files=1, max_fields=32) as form:
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise APIError(400, "'file' is required: upload the audio as a multipart file", param="file")
            if upload.size is not None and upload.size > limit:
                raise _too_large(engine)
            options = _parse_options(form, task)
            audio = await asyncio.to_thread(_decode_upload, upload)
        if options.stream:
            job = await _prepare(engine, audio, options)
            return StreamingResponse(_events(engine, job), media_type="text/event-stream")
        result = await _transcribe(engine, audio, options)
    except HTTPException as error:  # a malformed multipart body, as Starlette reports it
        return APIError(error.status_code, str(error.detail)).response()
    except APIError as error:
        return error.response()
    return _render(result, options)


def _too_large(engine: TranscriptionEngine) -> APIError:
    return APIError(
        413,
        f"the upload is larger than this server's limit of {engine.config.max_upload_mb:g} MB "
        "(--max-upload-mb)",
        param="file",
        code="file_too_large",
    )


def _parse_options(form: Any, task: str) -> FileRequest:
    def field(name: str) -> str | None:
        value = form.get(name)
        return value.strip() or None if isinstance(value, str) else None

    response_format = field("response_format") or "json"
    allowed = RESPONSE_FORMATS if task == "transcribe" else RESPONSE_FORMATS[:5]
    if response_format not in allowed:
        raise APIError(400, f"response_format must be one of {', '.join(allowed)}", param="response_format")
    stream = (field("stream") or "false").lower() == "true"
    if stream and response_format not in ("json", "text"):
        raise APIError(400, "stream=true goes with response_format json or text", param="stream")
    granularities = tuple(
        value
        for key in ("timestamp_granularities[]", "timestamp_granularities")
        for value in form.getlist(key)
        if isinstance(value, str)
    )
    if unknown := set(granularities) - set(GRANULARITIES):
        raise APIError(
            400,
            f"timestamp_granularities: unknown {sorted(unknown)}; use word and/or segment",
            param="timestamp_granularities",
        )
    language = field("language") if task == "transcribe" else None
    return FileRequest(
        task, response_format, language, field("prompt"), granularities or ("segment",), stream
    )


def _decode_upload(upload: UploadFile) -> np.ndarray:
    """The upload as float32 16 kHz mono. PyAV wants a real file for probing, so spill it to one."""
    from whisperlivekit.audio.decoder import AudioDecodeError, load_audio

    suffix = os.path.splitext(upload.filename or "")[1][:10]
    with tempfile.NamedTemporaryFile(suffix=suffix) as spill:
        upload.file.seek(0)
        shutil.copyfileobj(upload.file, spill)
        spill.flush()
        try:
            audio = load_audio(spill.name)
        except AudioDecodeError as error:
            message = str(error).replace(spill.name, upload.filename or "file")
            raise APIError(400, message, param="file", code="invalid_audio") from None
    if not len(audio):
        raise APIError(400, "the file holds no audio", param="file", code="invalid_audio")
    return audio


@dataclass(slots=True)
class FileJob:
    """A validated request, ready to run: its words come from `words` on the model thread."""

    words: Iterator[Word]
    language: str
    duration: float
    time_limit: float

    def close(self) -> None:
        with contextlib.suppress(ValueError):  # still running on the model thread: it ends there
            self.words.close()  # type: ignore[attr-defined]


async def _prepare(engine: TranscriptionEngine, audio: np.ndarray, options: FileRequest) -> FileJob:
    """Check what the model can do and detect the language: the errors a client gets before any result."""
    if getattr(engine.config, "no_transcription", False):
        raise APIError(400, "this server only diarizes (--no-transcription): it has no transcription")
    try:
        backend = engine.file_backend()
    except ValueError as error:
        raise APIError(400, str(error)) from None
    duration = len(audio) / SAMPLE_RATE
    if options.task == "translate" and not backend.multilingual:
        raise APIError(
            400,
            f"model {engine.config.model} is English-only and cannot translate: start the server "
            "with a multilingual model (e.g. --model base)",
            param="model",
            code="translation_unsupported",
        )
    language = options.language or engine.config.language
    try:
        language = engine.check_language(language)
    except ValueError as error:
        raise APIError(400, str(error), param="language") from None
    if language == "auto":
        # Detected once here, so verbose_json can say which language it heard.
        language = (await engine.run(backend.detect_language, audio[: 30 * SAMPLE_RATE]))[0]
    words = backend.transcribe_file(
        audio, language=language, vad_filter=engine.config.vac, task=options.task, prompt=options.prompt
    )
    output_language = "en" if options.task == "translate" else language
    return FileJob(
        words, output_language, duration, BASE_TIME_LIMIT + engine.config.file_time_limit * duration
    )


async def _transcribe(engine: TranscriptionEngine, audio: np.ndarray, options: FileRequest) -> FileResult:
    job = await _prepare(engine, audio, options)
    diarize = options.response_format == "diarized_json" and getattr(engine, "diarization_model", None)
    try:
        # Transcription and diarization run on their own threads: side by side.
        words, speakers = await asyncio.wait_for(
            asyncio.gather(_collect(engine, job.words), _diarize(engine, audio) if diarize else _none()),
            job.time_limit,
        )
    except asyncio.TimeoutError:
        raise _timeout(job) from None
    finally:
        job.close()
    return FileResult(words, job.language, job.duration, speakers)


def _event(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def _timeout(job: FileJob) -> APIError:
    return APIError(
        504,
        f"transcription took longer than its limit of {job.time_limit:.0f} s (--file-time-limit)",
        code="timeout",
    )


async def _events(engine: TranscriptionEngine, job: FileJob) -> AsyncIterator[str]:
    """`stream=true`: server-sent events, a `transcript.text.delta` per few words, then `...done`."""
    deadline = time.monotonic() + job.time_limit
    text = ""
    try:
        while time.monotonic() < deadline:
            batch = await engine.run(_take, job.words, WORDS_PER_STEP)
            if not batch:
                yield _event({"type": "transcript.text.done", "text": text})
                return
            delta = (" " if text else "") + _joined(batch)
            text += delta
            yield _event({"type": "transcript.text.delta", "delta": delta})
        yield _event({"type": "error", "error": {"message": _timeout(job).message, "code": "timeout"}})
    finally:
        job.close()


async def _collect(engine: TranscriptionEngine, words: Iterator[Word]) -> list[Word]:
    """Pull words on the model thread a few at a time: other sessions' calls run in between."""
    collected: list[Word] = []
    while batch := await engine.run(_take, words, WORDS_PER_STEP):
        collected.extend(batch)
    return collected


async def _diarize(engine: TranscriptionEngine, audio: np.ndarray) -> list[Any]:
    """Speaker segments of the whole file, fed to a diarization session in steps like a live stream."""
    session = engine.diarization_model.new_session()  # type: ignore[attr-defined]
    step = DIARIZATION_STEP * SAMPLE_RATE
    segments: list[Any] = []

    def feed(start: int) -> list[Any]:
        session.insert_audio(audio[start : start + step], start / SAMPLE_RATE)
        return session.process()

    for start in range(0, len(audio), step):
        segments += await engine.run_diarization(feed, start)  # type: ignore[attr-defined]
    segments += await engine.run_diarization(session.finish)  # type: ignore[attr-defined]
    return segments


async def _none() -> None:
    return None


def _take(words: Iterator[Word], count: int) -> list[Word]:
    batch = []
    for word in words:
        batch.append(word)
        if len(batch) == count:
            break
    return batch


# -- responses ------------------------------------------------------------------------------------


def _render(result: FileResult, options: FileRequest) -> Response:
    words = _clamped(result.words, result.duration)
    transcript = Transcript()
    if result.speakers is None:
        transcript.add_words(words)
    else:  # each word goes to the speaker who talks most while it is said
        transcript.add_words(words, speaker=None)
        transcript.add_speakers(result.speakers, until=result.duration + 1.0)
    spoken = [line for line in transcript.lines if line.speaker != SILENCE_SPEAKER and line.text]
    text = " ".join(line.text for line in spoken)
    captions = _captions(spoken, words)
    lines = [line for line, _ in captions]
    fmt = options.response_format
    usage = {"type": "duration", "seconds": math.ceil(result.duration)}
    if fmt == "text":
        return PlainTextResponse(text + "\n")
    if fmt in ("srt", "vtt"):
        return PlainTextResponse(format_lines(lines, fmt), media_type="text/plain")
    if fmt == "json":
        return JSONResponse({"text": text, "usage": usage})
    if fmt == "diarized_json":
        segments = [
            {"type": "transcript.text.segment", "id": f"seg_{i:03d}", "start": round(line.start, 3),
             "end": round(line.end, 3), "text": line.text, "speaker": str(line.speaker)}
            for i, line in enumerate(lines)
        ]  # fmt: skip
        return JSONResponse(
            {
                "task": "transcribe",
                "duration": round(result.duration, 3),
                "text": text,
                "segments": segments,
                "usage": usage,
            }
        )
    body: dict[str, Any] = {
        "task": options.task,
        "language": _LANGUAGE_NAMES.get(result.language, result.language),
        "duration": round(result.duration, 3),
        "text": text,
        "usage": usage,
    }
    if "segment" in options.granularities:
        body["segments"] = _segments(captions)
    if "word" in options.granularities:
        body["words"] = [
            {"word": w.text.strip(), "start": round(w.start, 3), "end": round(w.end, 3)} for w in words
        ]
    return JSONResponse(body)


def _clamped(words: Sequence[Word], duration: float) -> list[Word]:
    """Times inside the audio and in order: the aligner may place a last word a few ms past the end,
    or a word a few ms before its neighbour's end."""
    ordered, until = [], 0.0
    for w in words:
        start = min(max(w.start, until), duration)
        until = min(max(w.end, start), duration)
        ordered.append(Word(w.text, start, until, w.probability))
    return ordered


def _captions(lines: Sequence[Line], words: Sequence[Word]) -> list[tuple[Line, list[Word]]]:
    """Transcript lines cut to subtitle size, each with its words.

    A line ends only at a sentence end or a change of speaker, and Whisper often writes no
    punctuation at all: one line could last minutes. A caption also ends at a pause, or before it
    grows past MAX_CAPTION_S or MAX_CAPTION_CHARS.
    """
    captions: list[tuple[Line, list[Word]]] = []
    queue = list(words)
    for line in lines:
        mine: list[Word] = []  # the line's words: its text is theirs, joined (spaces aside)
        size, target = 0, len("".join(line.text.split()))
        while queue and size < target:
            mine.append(queue.pop(0))
            size += len("".join(mine[-1].text.split()))
        chunk: list[Word] = []
        for word in mine:
            text = _joined([*chunk, word])
            if chunk and (
                word.end - chunk[0].start > MAX_CAPTION_S
                or len(text) > MAX_CAPTION_CHARS
                or word.start - chunk[-1].end >= CAPTION_GAP_S
            ):
                captions.append(_caption(line, chunk))
                chunk = []
            chunk.append(word)
        if chunk:
            captions.append(_caption(line, chunk))
    return captions


def _joined(words: Sequence[Word]) -> str:
    return "".join(w.text if w.text.startswith(" ") else " " + w.text for w in words).strip()


def _caption(line: Line, words: list[Word]) -> tuple[Line, list[Word]]:
    text = _joined(words)
    return Line(line.speaker, text, words[0].start, words[-1].end, "", line.detected_language), words


def _segments(captions: Sequence[tuple[Line, list[Word]]]) -> list[dict[str, Any]]:
    """One segment per caption, with Whisper's quality figures computed from its words."""
    segments = []
    for i, (line, words) in enumerate(captions):
        logprobs = [math.log(max(w.probability, 1e-10)) for w in words]
        encoded = line.text.encode()
        segments.append({
            "id": i,
            "seek": int(line.start * 100),  # in 10 ms frames, as Whisper counts it
            "start": round(line.start, 3),
            "end": round(line.end, 3),
            "text": " " + line.text,
            "tokens": [],
            "temperature": 0.0,
            "avg_logprob": round(sum(logprobs) / len(logprobs), 4) if logprobs else 0.0,
            "compression_ratio": round(len(encoded) / max(1, len(zlib.compress(encoded))), 4),
            "no_speech_prob": 0.0,
        })  # fmt: skip
    return segments
