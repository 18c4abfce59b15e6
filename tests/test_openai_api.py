"""The OpenAI-compatible REST API, driven by the official `openai` client against a real server."""

from __future__ import annotations

import itertools
import threading
import time
import wave
from pathlib import Path

import httpx
import openai
import pytest
import srt
import webvtt
from conftest import JFK, LiveServer

from whisperlivekit.bench.metrics import wer
from whisperlivekit.client import to_pcm16
from whisperlivekit.server import openai_api

JFK_SECONDS = 11.0


@pytest.fixture(scope="module")
def server(webm_server):
    """tiny.en (English-only), the embedded default; the session's shared server (stopping a server
    closes its engine, so no second server may wrap that engine)."""
    return webm_server


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.http}/v1", api_key="not-needed", max_retries=0, timeout=300)


def transcribe(client: openai.OpenAI, path: Path, **options):
    with open(path, "rb") as audio:
        return client.audio.transcriptions.create(model="whisper-1", file=audio, **options)


def test_json_and_text(client, jfk_wav) -> None:
    result = transcribe(client, jfk_wav)
    assert wer(JFK, result.text) <= 0.1, result.text
    assert result.usage is not None and result.usage.seconds == JFK_SECONDS
    text = transcribe(client, jfk_wav, response_format="text")
    assert isinstance(text, str) and text.endswith("\n") and text.strip() == result.text


def test_prompt_reaches_the_model(client, jfk_wav) -> None:
    plain = transcribe(client, jfk_wav).text
    prompt = "Hello, everyone. Welcome to the show! Today, we talk politics."
    styled = transcribe(client, jfk_wav, prompt=prompt).text
    assert "." not in plain and "." in styled  # Whisper follows the prompt's punctuation
    assert wer(JFK, styled) <= 0.15, styled


def test_srt_and_vtt_parse_with_subtitle_libraries(client, jfk_wav) -> None:
    subtitles = list(srt.parse(transcribe(client, jfk_wav, response_format="srt")))
    assert subtitles and [s.index for s in subtitles] == list(range(1, len(subtitles) + 1))
    assert wer(JFK, " ".join(s.content for s in subtitles)) <= 0.1
    assert all(0 <= s.start.total_seconds() < s.end.total_seconds() <= JFK_SECONDS for s in subtitles)
    # Subtitle-sized, although the model wrote one unpunctuated sentence of 10 s.
    assert len(subtitles) >= 2 and all(len(s.content) <= 84 for s in subtitles)
    assert all((s.end - s.start).total_seconds() <= 7.0 for s in subtitles)
    captions = webvtt.from_string(transcribe(client, jfk_wav, response_format="vtt")).captions
    assert wer(JFK, " ".join(c.text for c in captions)) <= 0.1
    assert all(0 <= c.start_in_seconds < c.end_in_seconds <= JFK_SECONDS for c in captions)
    assert [c.text for c in captions] == [s.content for s in subtitles]


def test_verbose_json_word_timings_are_monotonic_and_inside_the_audio(client, jfk_wav) -> None:
    result = transcribe(
        client, jfk_wav, response_format="verbose_json", timestamp_granularities=["word", "segment"]
    )
    assert result.language == "english" and result.duration == pytest.approx(JFK_SECONDS, abs=0.01)
    words = result.words
    assert wer(JFK, " ".join(w.word for w in words)) <= 0.1
    for previous, word in itertools.pairwise(words):
        assert previous.end <= word.start + 1e-3
    assert all(0 <= w.start <= w.end <= result.duration for w in words)
    assert words[0].start < 1.0 and words[-1].end > 9.0  # the speech spans the clip
    assert result.segments and result.segments[0].start <= words[0].start
    assert " ".join(s.text.strip() for s in result.segments) == result.text
    # Without granularities: segments only, as OpenAI answers.
    plain = transcribe(client, jfk_wav, response_format="verbose_json")
    assert plain.words is None and plain.segments


def test_diarized_json_names_one_speaker_without_diarization(client, jfk_wav) -> None:
    result = transcribe(client, jfk_wav, response_format="diarized_json")
    assert result.task == "transcribe" and result.segments
    assert {s.speaker for s in result.segments} == {"1"}
    assert wer(JFK, " ".join(s.text for s in result.segments)) <= 0.1


def test_other_containers_and_models_list(client, jfk_wav) -> None:
    result = transcribe(client, jfk_wav.with_suffix(".mp3"), response_format="json")
    assert wer(JFK, result.text) <= 0.15
    ids = [m.id for m in client.models.list()]
    assert ids == ["whisper-1", "tiny.en"]
    assert client.models.retrieve("tiny.en").owned_by == "whisperlivekit"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("whisper-2")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the client marks translations deprecated
def test_errors_are_answered_as_openai_does(server, client, jfk_wav, tmp_path) -> None:
    no_file = httpx.post(f"{server.http}/v1/audio/transcriptions", data={"model": "whisper-1"})
    assert no_file.status_code == 400 and no_file.json()["error"]["param"] == "file"
    with open(jfk_wav, "rb") as audio, pytest.raises(openai.BadRequestError, match="English-only"):
        client.audio.translations.create(model="whisper-1", file=audio)
    with pytest.raises(openai.BadRequestError, match="English-only"):
        transcribe(client, jfk_wav, language="de")
    with pytest.raises(openai.BadRequestError, match="response_format"):
        transcribe(client, jfk_wav, response_format="docx")
    bad = tmp_path / "notes.wav"
    bad.write_bytes(b"not audio" * 1000)
    with pytest.raises(openai.BadRequestError, match="could not decode") as refused:
        transcribe(client, bad)
    assert refused.value.body["param"] == "file" and "notes.wav" in refused.value.body["message"]


def test_upload_limit_and_time_limit(server, client, webm_engine, jfk_wav, monkeypatch) -> None:
    monkeypatch.setattr(webm_engine, "config", webm_engine.config.replace(max_upload_mb=0.1))
    with pytest.raises(openai.APIStatusError, match="--max-upload-mb") as refused:
        transcribe(client, jfk_wav)  # 352 KB
    assert refused.value.status_code == 413
    # A chunked upload declares no length: the limit still holds once the form is read.
    boundary = "wlk-test-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="jfk.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    )
    body = head.encode() + jfk_wav.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    chunked = httpx.post(
        f"{server.http}/v1/audio/transcriptions",
        content=iter([body[:1000], body[1000:]]),
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert chunked.status_code == 413 and chunked.json()["error"]["code"] == "file_too_large"
    monkeypatch.setattr(
        webm_engine, "config", webm_engine.config.replace(max_upload_mb=100, file_time_limit=0)
    )
    monkeypatch.setattr(openai_api, "BASE_TIME_LIMIT", 0.05)
    with pytest.raises(openai.APIStatusError, match="--file-time-limit") as late:
        transcribe(client, jfk_wav)
    assert late.value.status_code == 504


def test_a_long_file_leaves_the_server_responsive(server, client, tmp_path) -> None:
    from whisperlivekit.bench.dataset import load_set

    stream = load_set("en/hifitts_6097", max_duration_s=60.0)
    path = tmp_path / "long.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(to_pcm16(stream.samples))
    results: dict = {}
    worker = threading.Thread(target=lambda: results.update(r=transcribe(client, path)))
    worker.start()
    time.sleep(0.5)
    health = httpx.get(f"{server.http}/health", timeout=30)
    answered_during = worker.is_alive()
    worker.join(timeout=300)
    assert health.status_code == 200 and answered_during
    assert wer(stream.reference, results["r"].text) <= 0.15


@pytest.fixture(scope="module")
def base_client():
    """Whisper base (multilingual): detection and Whisper's translate task."""
    from whisperlivekit import TranscriptionEngine
    from whisperlivekit.server.app import create_app

    engine = TranscriptionEngine(model="base")
    with LiveServer(create_app(engine)) as live:
        yield openai.OpenAI(base_url=f"{live.http}/v1", api_key="x", max_retries=0, timeout=300)
    engine.close()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_base_detects_german_and_translates_it_to_english(base_client, eval_root) -> None:
    clip = eval_root / "multi" / "fleurs_de" / "fleurs-de-001.ogg"
    german = transcribe(base_client, clip, response_format="verbose_json")
    assert german.language == "german"
    reference = (
        "er griff auch alles an was ins wasser kam selbst ein großer dinosaurier wie der t rex war ihm "
        "nicht gewachsen"
    )
    assert wer(reference, german.text) <= 0.5, german.text
    with open(clip, "rb") as audio:
        english = base_client.audio.translations.create(
            model="whisper-1", file=audio, response_format="verbose_json"
        )
    assert english.language == "english"
    words = set(english.text.lower().replace(",", " ").replace(".", " ").split())
    assert {"water", "dinosaur"} & words, english.text
    assert len(words & {"the", "a", "in", "was", "he", "of"}) >= 2 and "wasser" not in words, english.text


def test_diarized_json_with_a_diarizing_server(eval_root) -> None:
    """With --diarization, diarized_json labels each segment with the speaker heard (a generated
    dialogue with exact turns: A, B, A, C, B, A)."""
    from whisperlivekit import TranscriptionEngine
    from whisperlivekit.server.app import create_app

    engine = TranscriptionEngine(diarization=True)
    try:
        with LiveServer(create_app(engine)) as live:
            client = openai.OpenAI(base_url=f"{live.http}/v1", api_key="x", max_retries=0, timeout=300)
            dialogue = eval_root / "diar" / "synthetic_tts" / "dialogue_espeak.wav"
            result = transcribe(client, dialogue, response_format="diarized_json")
    finally:
        engine.close()
    rttm = dialogue.with_suffix(".rttm").read_text().splitlines()
    turns = [(float(f[3]), float(f[3]) + float(f[4]), f[7]) for f in (line.split() for line in rttm) if f]

    def heard(start: float, end: float) -> str:
        """The label of the segment that overlaps the reference turn most."""
        return max(result.segments, key=lambda s: min(end, s.end) - max(start, s.start)).speaker

    by_turn = [(name, heard(start, end)) for start, end, name in turns]
    a = {speaker for name, speaker in by_turn if name == "spkA"}
    b = {speaker for name, speaker in by_turn if name == "spkB"}
    assert len(a) == 1 and len(b) == 1 and a != b, by_turn


def test_stream_true_sends_text_deltas_then_done(client, jfk_wav) -> None:
    with open(jfk_wav, "rb") as audio:
        events = list(client.audio.transcriptions.create(model="whisper-1", file=audio, stream=True))
    deltas = [e.delta for e in events if e.type == "transcript.text.delta"]
    assert len(deltas) >= 2 and events[-1].type == "transcript.text.done"
    assert "".join(deltas) == events[-1].text
    assert wer(JFK, events[-1].text) <= 0.1, events[-1].text
    with open(jfk_wav, "rb") as audio, pytest.raises(openai.BadRequestError, match="stream"):
        client.audio.transcriptions.create(model="whisper-1", file=audio, stream=True, response_format="srt")
