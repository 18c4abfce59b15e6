"""`/v1/listen` spoken to by a client of Deepgram's live protocol (plain `websockets`), on real speech."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from dataclasses import dataclass, field

import av
import httpx
import numpy as np
import pytest
from conftest import JFK, LiveServer
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from whisperlivekit.bench.metrics import wer
from whisperlivekit.client import decode_audio, to_pcm16
from whisperlivekit.server.deepgram import Linear16Resampler


@dataclass
class Session:
    results: list[dict] = field(default_factory=list)
    metadata: dict | None = None
    utterance_ends: list[dict] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""
    request_id: str | None = None  # the handshake's dg-request-id header

    @property
    def finals(self) -> list[dict]:
        return [r for r in self.results if r["is_final"]]

    @property
    def interims(self) -> list[dict]:
        return [r for r in self.results if not r["is_final"]]

    def final_text(self) -> str:
        return " ".join(
            r["channel"]["alternatives"][0]["transcript"]
            for r in self.finals
            if r["channel"]["alternatives"][0]
        )


async def deepgram_stream(
    url: str,
    pcm: bytes,
    *,
    bytes_per_second: int,
    speed: float = 2.0,
    controls: dict[float, str] | None = None,
) -> Session:
    """Send `pcm` in 100 ms chunks at `speed` x real time, the `controls` messages at their audio
    times, then CloseStream; collect every message until the server closes."""
    session = Session()
    chunk = bytes_per_second // 10
    pending = dict(sorted((controls or {}).items()))
    async with connect(url, max_size=None) as ws:
        session.request_id = ws.response.headers.get("dg-request-id")

        async def receive() -> None:
            async for raw in ws:
                message = json.loads(raw)
                if message["type"] == "Results":
                    session.results.append(message)
                elif message["type"] == "Metadata":
                    session.metadata = message
                elif message["type"] == "UtteranceEnd":
                    session.utterance_ends.append(message)

        receiver = asyncio.create_task(receive())
        start = time.monotonic()
        for k, offset in enumerate(range(0, len(pcm), chunk)):
            await asyncio.sleep(max(0.0, start + k * 0.1 / speed - time.monotonic()))
            await ws.send(pcm[offset : offset + chunk])
            for at in [at for at in pending if at <= (k + 1) * 0.1]:
                await ws.send(json.dumps({"type": pending.pop(at)}))
        await ws.send(json.dumps({"type": "CloseStream"}))
        await asyncio.wait_for(receiver, 120)
        session.close_code, session.close_reason = ws.close_code, ws.close_reason
    return session


def check_results(session: Session, duration: float) -> None:
    """Deepgram's contract: finals tile the audio, words are ordered and inside it."""
    assert session.close_code == 1000
    assert session.metadata is not None and session.metadata["duration"] == pytest.approx(duration, abs=0.05)
    position = 0.0
    for result in session.finals:
        assert result["start"] == pytest.approx(position, abs=2e-3)
        position = result["start"] + result["duration"]
        words = result["channel"]["alternatives"][0]["words"]
        for word in words:
            assert result["start"] - 2e-3 <= word["start"] <= word["end"] <= position + 2e-3
            assert word["word"] == word["word"].lower() and "punctuated_word" in word
        starts = [w["start"] for w in words]
        assert starts == sorted(starts)
    assert position <= duration + 0.05
    assert session.finals[-1]["speech_final"] is True


def resampled(path, rate: int, layout: str) -> bytes:
    """The file as interleaved s16le at `rate`, decoded by FFmpeg (what a telephony client sends)."""
    resampler = av.AudioResampler(format="s16", layout=layout, rate=rate)
    chunks = []
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            chunks += [f.to_ndarray().tobytes() for f in resampler.resample(frame)]
    chunks += [f.to_ndarray().tobytes() for f in resampler.resample(None)]
    return b"".join(chunks)


@pytest.fixture(scope="module")
def listen_url(webm_server) -> str:
    return f"ws://127.0.0.1:{webm_server.port}/v1/listen"


def test_long_form_stream_with_interim_and_final_results(listen_url) -> None:
    from whisperlivekit.bench.dataset import load_set

    stream = load_set("en/hifitts_6097", max_duration_s=30.0, gap_s=1.0)  # pauses the VAD ends utterances at
    query = (
        "?encoding=linear16&sample_rate=16000&channels=1&interim_results=true&punctuate=true&language=en"
        "&utterance_end_ms=1000"
    )
    session = asyncio.run(
        deepgram_stream(listen_url + query, to_pcm16(stream.samples), bytes_per_second=32000, speed=3.0)
    )
    check_results(session, stream.duration_s)
    assert len(session.finals) >= 5 and len(session.interims) >= 5
    # Interim results come before the final that settles them.
    assert session.results.index(session.interims[0]) < session.results.index(session.finals[-1])
    # speech_final where each utterance (1 s pauses between them) ends, and an UtteranceEnd after it.
    utterance_ends = [u.offset_s + u.duration_s for u in stream.utterances]
    speech_finals = [r["start"] + r["duration"] for r in session.finals if r["speech_final"]]
    assert len(speech_finals) >= len(utterance_ends) - 2, (speech_finals, utterance_ends)
    assert all(min(abs(t - end) for end in utterance_ends) < 0.6 for t in speech_finals), speech_finals
    last_words = [u["last_word_end"] for u in session.utterance_ends]
    assert len(last_words) == len(speech_finals) and last_words == sorted(last_words)
    assert wer(stream.reference, session.final_text()) <= 0.2, session.final_text()


def test_44k_stereo_is_resampled_and_finalize_flushes(listen_url, jfk_wav) -> None:
    flac = jfk_wav.with_suffix(".flac")  # 44.1 kHz stereo, as recorded
    pcm = resampled(flac, 44100, "stereo")
    query = "?encoding=linear16&sample_rate=44100&channels=2&smart_format=true&language=en-US"
    # 6.5 s: in the middle of "what your country can do for you", so there is always something to flush.
    controls = {1.0: "KeepAlive", 6.5: "Finalize"}
    session = asyncio.run(
        deepgram_stream(listen_url + query, pcm, bytes_per_second=44100 * 4, speed=1.5, controls=controls)
    )
    check_results(session, 11.0)
    assert not session.interims  # interim_results defaults to false
    flushed = [r for r in session.finals if r["from_finalize"]]
    assert len(flushed) == 1 and flushed[0]["speech_final"]
    before = session.finals[: session.finals.index(flushed[0]) + 1]
    flushed_text = " ".join(r["channel"]["alternatives"][0]["transcript"] for r in before).lower()
    assert "fellow" in flushed_text and "country" in flushed_text and "ask what" not in flushed_text
    assert wer(JFK, session.final_text()) <= 0.15, session.final_text()
    for result in session.finals:  # smart_format: the transcript is the model's own punctuated words
        alternative = result["channel"]["alternatives"][0]
        assert alternative["transcript"] == " ".join(w["punctuated_word"] for w in alternative["words"])


def test_unpunctuated_words_and_transcript(listen_url, jfk_wav) -> None:
    pcm = to_pcm16(decode_audio(jfk_wav))
    session = asyncio.run(deepgram_stream(listen_url + "?encoding=linear16&sample_rate=16000", pcm,
                                          bytes_per_second=32000, speed=np.inf))  # fmt: skip
    assert session.close_code == 1000
    text = session.final_text()
    assert text == text.lower() and "," not in text and "." not in text
    assert wer(JFK, text) <= 0.15, text


@pytest.mark.parametrize(
    ("query", "complaint"),
    [
        ("?encoding=pcm_s16le&sample_rate=16000", "Invalid encoding"),
        ("?encoding=mulaw&sample_rate=8000", "not supported"),
        ("?encoding=linear16", "sample_rate is required"),
        ("?encoding=linear16&sample_rate=sixteen", "Invalid sample_rate"),
        ("?encoding=linear16&sample_rate=1000000", "Invalid sample_rate"),
        ("?encoding=linear16&sample_rate=16000&channels=0", "Invalid channels"),
        ("?encoding=linear16&sample_rate=16000&interim_results=yes", "Invalid interim_results"),
        ("?encoding=linear16&sample_rate=16000&language=de", "English-only"),
        ("?encoding=linear16&sample_rate=16000&diarize=true", "--diarization"),
    ],
)
def test_bad_parameters_are_refused_at_the_handshake(listen_url, query: str, complaint: str) -> None:
    async def attempt() -> InvalidStatus:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(listen_url + query):
                pass
        return refused.value

    error = asyncio.run(attempt())
    response = error.response
    assert response.status_code == 400
    assert complaint in response.headers["dg-error"]
    body = json.loads(response.body)
    assert body["err_code"] == "Bad Request" and complaint in body["err_msg"] and body["request_id"]


def test_undecodable_container_closes_with_data_error(listen_url) -> None:
    async def scenario() -> tuple[int | None, str]:
        async with connect(listen_url) as ws:  # no encoding: a container FFmpeg must recognise
            for _ in range(40):
                await ws.send(b"this is not audio at all " * 400)
            await ws.send(json.dumps({"type": "CloseStream"}))
            with contextlib.suppress(ConnectionClosed):
                async for _ in ws:
                    pass
            return ws.close_code, ws.close_reason

    code, reason = asyncio.run(scenario())
    assert (code, reason) == (1002, "DATA-0000")


def test_resampler_matches_one_shot_resampling_and_keeps_the_pitch() -> None:
    rate, seconds = 48000, 2.0
    t = np.arange(int(rate * seconds)) / rate
    left, right = 0.3 * np.sin(2 * np.pi * 440 * t), 0.3 * np.sin(2 * np.pi * 440 * t + 0.1)
    stereo = np.stack([left, right], 1).reshape(-1)
    data = (stereo * 32767).astype("<i2").tobytes()

    def run(chunk_sizes: list[int]) -> np.ndarray:
        resampler, out, offset = Linear16Resampler(rate, 2), [], 0
        for size in chunk_sizes:
            out.append(resampler.push(data[offset : offset + size]))
            offset += size
        out += [resampler.push(data[offset:]), resampler.flush()]
        return np.frombuffer(b"".join(out), dtype="<i2").astype(np.float32) / 32768

    whole = run([])
    ragged = run([1, 333, 4097, 9, 12345, 7] * 10)  # splits samples and channel frames
    assert np.array_equal(whole, ragged)
    assert abs(len(whole) - 16000 * seconds) <= 64
    spectrum = np.abs(np.fft.rfft(whole[2000:-2000]))
    peak = np.argmax(spectrum) * 16000 / len(whole[2000:-2000])
    assert abs(peak - 440) < 2
    assert 0.25 < np.abs(whole[2000:-2000]).max() < 0.32  # a mixdown, not a sum


def test_silence_from_the_client_closes_with_net_error(listen_url, monkeypatch) -> None:
    from whisperlivekit.server import deepgram

    monkeypatch.setattr(deepgram, "IDLE_TIMEOUT", 0.5)

    async def scenario() -> tuple[int | None, str]:
        async with connect(listen_url + "?encoding=linear16&sample_rate=16000") as ws:
            await ws.send(json.dumps({"type": "KeepAlive"}))  # resets the limit, answers nothing
            with contextlib.suppress(ConnectionClosed):
                async for _ in ws:
                    pass
            return ws.close_code, ws.close_reason

    assert asyncio.run(scenario()) == (1011, "NET-0001")


def test_diarize_gives_each_word_its_speaker(eval_root) -> None:
    """A generated dialogue with exact turns (A, B, A, C, B, A) on a server started with --diarization."""
    from whisperlivekit import TranscriptionEngine
    from whisperlivekit.server.app import create_app

    dialogue = eval_root / "diar" / "synthetic_tts" / "dialogue_espeak.wav"
    engine = TranscriptionEngine(diarization=True)
    try:
        with LiveServer(create_app(engine)) as live:
            url = f"ws://127.0.0.1:{live.port}/v1/listen?encoding=linear16&sample_rate=16000&diarize=true"
            session = asyncio.run(
                deepgram_stream(url, to_pcm16(decode_audio(dialogue)), bytes_per_second=32000, speed=2.0)
            )
    finally:
        engine.close()
    assert session.close_code == 1000
    words = [w for r in session.finals for w in r["channel"]["alternatives"][0]["words"]]
    rttm = dialogue.with_suffix(".rttm").read_text().splitlines()
    turns = [(float(f[3]), float(f[3]) + float(f[4]), f[7]) for f in (line.split() for line in rttm) if f]

    def heard(start: float, end: float) -> int:
        """The speaker most of the turn's words were given."""
        inside = [w["speaker"] for w in words if start <= (w["start"] + w["end"]) / 2 <= end]
        assert inside, (start, end, words)
        return max(set(inside), key=inside.count)

    by_turn = [(name, heard(start, end)) for start, end, name in turns]
    a = {speaker for name, speaker in by_turn if name == "spkA"}
    b = {speaker for name, speaker in by_turn if name == "spkB"}
    assert len(a) == 1 and len(b) == 1 and a != b, by_turn


def _words(text: str) -> list[str]:
    return re.sub(r"[^a-z' ]", " ", text.lower()).split()


def test_a_listen_session_is_stored_under_its_request_id(webm_server, listen_url, jfk_wav) -> None:
    """The request_id is the session id: GET /v1/sessions/{request_id} has every committed word."""
    pcm = to_pcm16(decode_audio(jfk_wav))
    query = "?encoding=linear16&sample_rate=16000&punctuate=true&language=en"
    session = asyncio.run(deepgram_stream(listen_url + query, pcm, bytes_per_second=32000, speed=3.0))
    assert session.close_code == 1000 and session.metadata is not None
    request_id = session.metadata["request_id"]
    assert request_id == session.request_id  # the handshake header and Metadata agree
    assert {r["metadata"]["request_id"] for r in session.results} == {request_id}
    url = f"{webm_server.http}/v1/sessions/{request_id}"
    deadline = time.monotonic() + 10
    while not (stored := httpx.get(url).json())["ended"]:  # marked ended just after the close frame
        assert time.monotonic() < deadline, stored
        time.sleep(0.05)
    assert not stored["live"] and stored["meta"]["api"] == "deepgram"
    text = " ".join(line["text"] for line in stored["lines"] if line["speaker"] != -2)
    assert _words(text) == _words(session.final_text())  # exactly the committed words sent as finals
    assert wer(JFK, text) <= 0.15, text
    txt = httpx.get(url, params={"format": "txt"}).text
    assert "ask not what your country can do for you" in " ".join(_words(txt))


def test_store_none_keeps_no_listen_session(webm_engine, jfk_wav) -> None:
    from whisperlivekit.server.app import create_app

    pcm = to_pcm16(decode_audio(jfk_wav)[: 3 * 16000])
    with LiveServer(create_app(webm_engine, webm_engine.config.replace(store="none"))) as live:
        url = f"ws://127.0.0.1:{live.port}/v1/listen?encoding=linear16&sample_rate=16000"
        session = asyncio.run(deepgram_stream(url, pcm, bytes_per_second=32000, speed=4.0))
        assert session.close_code == 1000 and session.final_text()  # transcribed as usual
        assert session.metadata is not None and session.metadata["request_id"] == session.request_id
        assert httpx.get(f"{live.http}/v1/sessions/{session.request_id}").status_code == 404
