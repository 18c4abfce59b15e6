"""Live diarization: clustering on real speaker embeddings, words to speakers on crafted timelines,
the default backend on a generated dialogue, and the whole server over a real WebSocket."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from whisperlivekit.bench.diarization import Turn, der, read_rttm
from whisperlivekit.diarization.base import DiarizationUnavailable, SpeakerSegment
from whisperlivekit.diarization.clustering import ClusteringOptions, OnlineClustering
from whisperlivekit.messages import Word
from whisperlivekit.output.transcript import SILENCE_SPEAKER, Transcript

SR = 16000
CUT = (11.067, 13.634)  # spkC's turn of dialogue_mixed, with 0.2 s either side: what is left is two speakers


@pytest.fixture(scope="module")
def dialogue(eval_root: Path) -> tuple[np.ndarray, list[Turn]]:
    """dialogue_mixed without its third speaker: A and B, four exact turns, 18.6 s."""
    from whisperlivekit.audio.decoder import load_audio

    folder = eval_root / "diar" / "synthetic_tts"
    audio = load_audio(str(folder / "dialogue_mixed.wav"))
    lo, hi = round(CUT[0] * SR), round(CUT[1] * SR)
    shift = (hi - lo) / SR
    turns = []
    for t in read_rttm(folder / "dialogue_mixed.rttm"):
        if t.end <= CUT[0]:
            turns.append(t)
        elif t.start >= CUT[1]:
            turns.append(Turn(t.speaker, t.start - shift, t.end - shift))
    return np.concatenate([audio[:lo], audio[hi:]]), turns


@pytest.fixture(scope="module")
def local_model():
    from whisperlivekit.diarization.local import LocalDiarizationModel

    return LocalDiarizationModel()


# -- clustering --------------------------------------------------------------------------------


def test_clustering_keeps_known_speakers_apart_and_stable(local_model, eval_root: Path) -> None:
    """1.5 s pieces of three generated voices, in dialogue order: ids 1, 2, 3 by first appearance."""
    from whisperlivekit.audio.decoder import load_audio

    folder = eval_root / "diar" / "synthetic_tts"
    audio = load_audio(str(folder / "dialogue_mixed.wav"))
    clustering = OnlineClustering(ClusteringOptions())
    seen: dict[str, set[int]] = {}
    order: list[str] = []
    for turn in read_rttm(folder / "dialogue_mixed.rttm"):
        order += [turn.speaker] if turn.speaker not in order else []
        for start in np.arange(turn.start, turn.end - 1.5, 0.75):
            piece = audio[round(start * SR) : round((start + 1.5) * SR)]
            mask = np.ones(1 + (len(piece) - 400) // 160, dtype=bool)
            (speaker,) = clustering.assign(local_model.embed(piece, [mask]), [1.5])
            seen.setdefault(turn.speaker, set()).add(speaker)
    assert {name: sorted(ids) for name, ids in seen.items()} == {
        name: [order.index(name) + 1] for name in order
    }
    assert clustering.num_speakers == 3


def test_one_window_never_maps_two_local_speakers_to_one() -> None:
    clustering = OnlineClustering(ClusteringOptions(max_speakers=2))
    a, b = np.eye(4)[0], np.eye(4)[1]
    assert clustering.assign(np.stack([a, b]), [2.0, 2.0]) == [1, 2]
    # Both close to speaker 1: the weaker match takes the other speaker rather than sharing.
    assert clustering.assign(np.stack([a, a + 0.1 * b]), [2.0, 2.0]) == [1, 2]
    # A third voice with no room left goes to the nearest speaker.
    assert clustering.assign(np.eye(4)[2:3] + 0.5 * b, [2.0]) == [2]
    assert clustering.num_speakers == 2


def test_short_speech_does_not_create_a_speaker() -> None:
    clustering = OnlineClustering(ClusteringOptions(min_new_speaker_seconds=1.0))
    a, b = np.eye(3)[0], np.eye(3)[1]
    assert clustering.assign(a[None], [2.0]) == [1]
    assert clustering.assign(b[None], [0.4]) == [1]  # too short to be trusted as someone new
    assert clustering.assign(b[None], [1.5]) == [2]
    assert clustering.assign(a[None], [0.3]) == [1]


# -- words to speakers ---------------------------------------------------------------------------


def words(text: str, start: float, step: float = 0.4) -> list[Word]:
    return [Word(" " + w, start + i * step, start + (i + 0.8) * step) for i, w in enumerate(text.split())]


def test_words_wait_for_the_timeline_then_take_its_speaker() -> None:
    transcript = Transcript()
    transcript.add_words(words("Hello there. How are", 0.0), speaker=None)
    assert transcript.lines == [] and transcript.pending_text == "Hello there. How are"
    transcript.add_speakers([SpeakerSegment(1, 0.0, 0.8)], until=0.8)
    assert [ln.text for ln in transcript.lines] == ["Hello there."]
    assert transcript.pending_text == "How are"
    # Speaker 2 takes over mid-sentence: the line breaks there, it never mixes speakers.
    transcript.add_speakers([SpeakerSegment(1, 0.8, 1.2), SpeakerSegment(2, 1.2, 3.0)], until=3.0)
    transcript.add_words(words("you doing", 1.6), speaker=None)
    lines = [(ln.speaker, ln.text) for ln in transcript.lines]
    assert lines == [(1, "Hello there."), (1, "How"), (2, "are you doing")]
    assert transcript.pending_text == ""


def test_each_word_takes_the_speaker_who_talks_most_during_it() -> None:
    transcript = Transcript()
    transcript.add_speakers(
        [SpeakerSegment(1, 0.0, 1.05), SpeakerSegment(2, 0.9, 2.0), SpeakerSegment(1, 3.0, 4.0)], until=5.0
    )
    transcript.add_words(
        [Word(" a", 0.1, 0.5), Word(" b", 0.7, 1.3), Word(" c", 1.4, 1.8), Word(" d", 2.2, 2.4),
         Word(" e", 2.8, 3.5), Word(" f", 4.6, 4.9)],
        speaker=None,
    )
    # b overlaps 1 by 0.35 s and 2 by 0.4 s; d is in a gap, nearest to 2; f is 0.6 s after speaker 1's end.
    assert [(ln.speaker, ln.text) for ln in transcript.lines] == [(1, "a"), (2, "b c d"), (1, "e f")]


def test_silence_lines_stay_in_time_order_with_waiting_words() -> None:
    transcript = Transcript()
    transcript.add_words(words("one two", 0.0), speaker=None)
    transcript.add_silence(1.0, 4.0)
    transcript.add_words(words("three", 4.0), speaker=None)
    transcript.add_speakers([SpeakerSegment(2, 0.0, 1.0)], until=2.0)
    assert [(ln.speaker, ln.text) for ln in transcript.lines] == [(2, "one two"), (SILENCE_SPEAKER, "")]
    transcript.add_speakers([SpeakerSegment(1, 4.0, 4.5)], until=5.0)
    assert [ln.speaker for ln in transcript.lines] == [2, SILENCE_SPEAKER, 1]


def test_without_diarization_words_go_straight_to_lines() -> None:
    transcript = Transcript()
    transcript.add_words(words("Hi. Bye", 0.0))
    assert [(ln.speaker, ln.text) for ln in transcript.lines] == [(1, "Hi."), (1, "Bye")]


# -- the default backend -----------------------------------------------------------------------


def test_local_backend_on_a_two_speaker_dialogue(local_model, dialogue) -> None:
    from whisperlivekit.bench.diarization import diarize_direct

    audio, reference = dialogue
    hypothesis, _ = diarize_direct(local_model, audio)
    assert {t.speaker for t in hypothesis} == {"1", "2"}
    assert hypothesis[0].speaker == "1" and hypothesis[0].start < 1.0  # A speaks first
    scores = der(reference, hypothesis, [(0.0, len(audio) / SR)])
    assert (scores["missed"] + scores["false_alarm"] + scores["confusion"]) / scores["total"] < 0.15


def test_segments_are_final_in_order_and_on_time(local_model, dialogue) -> None:
    audio, _ = dialogue
    session = local_model.new_session()
    until = 0.0
    for i in range(0, 10 * SR, 1600):
        session.insert_audio(audio[i : i + 1600], i / SR)
        for segment in session.process():  # only new time: nothing before is ever revised
            assert until - 1e-6 <= segment.start < segment.end <= session.diarized_until + 1e-6
        # The label of a moment is final at most `latency` + one step after its audio arrived.
        assert session.diarized_until >= (i + 1600) / SR - local_model.options.latency - 1.0
        until = session.diarized_until
    assert session.diarized_until <= 10.0


def test_missing_backends_say_what_to_install() -> None:
    from whisperlivekit.config import Config
    from whisperlivekit.diarization import load_diarization

    with pytest.raises(DiarizationUnavailable, match="nemo_toolkit"):
        load_diarization(Config(diarization=True, diarization_backend="sortformer"))
    with pytest.raises(DiarizationUnavailable, match="does not exist"):
        load_diarization(Config(diarization=True, diarization_backend="sortformer",
                                diarization_model="/nowhere/model.nemo"))
    with pytest.raises(DiarizationUnavailable, match="pip install diart"):
        load_diarization(Config(diarization=True, diarization_backend="diart"))
    with pytest.raises(ValueError, match="needs diarization"):
        Config(no_transcription=True)


# -- through the server -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def diarization_server():
    from conftest import LiveServer

    from whisperlivekit import TranscriptionEngine
    from whisperlivekit.server.app import create_app

    engine = TranscriptionEngine(pcm_input=True, diarization=True)
    with LiveServer(create_app(engine)) as server:
        yield server
    engine.close()


def reference_speaker(turns: list[Turn], start: float, end: float) -> str | None:
    overlap: dict[str, float] = {}
    for t in turns:
        overlap[t.speaker] = overlap.get(t.speaker, 0.0) + max(0.0, min(end, t.end) - max(start, t.start))
    best = max(overlap, key=overlap.get)
    return best if overlap[best] > 0 else None


def test_two_speaker_dialogue_over_websocket(diarization_server, dialogue) -> None:
    from whisperlivekit.client import stream_audio

    audio, turns = dialogue
    result = asyncio.run(stream_audio(diarization_server.ws, audio, speed=1.0))
    assert result.error is None
    updates = [m.data for m in result.updates]
    lines = [ln for ln in updates[-1]["lines"] if ln["speaker"] > 0]
    assert {ln["speaker"] for ln in lines} == {1, 2}
    assert updates[-1]["buffer_diarization"] == ""
    # Words waited for their speaker at some point, and the diarization kept up with the audio.
    assert any(u["buffer_diarization"] for u in updates)
    assert max(u["remaining_time_diarization"] for u in updates) < 5.0
    # Speaker 1 is A (who speaks first); count the words of each line against the reference turns.
    names = {"spkA": 1, "spkB": 2}
    right = total = 0
    for line in lines:
        count = len(line["text"].split())
        total += count
        right += count * (names.get(reference_speaker(turns, line["start"], line["end"])) == line["speaker"])
    assert total >= 40
    assert right / total >= 0.85, [(ln["speaker"], ln["start"], ln["end"], ln["text"]) for ln in lines]


def test_diarization_alone_over_websocket(dialogue) -> None:
    from conftest import LiveServer

    from whisperlivekit import TranscriptionEngine
    from whisperlivekit.bench.diarization import turns_from_lines
    from whisperlivekit.client import stream_audio
    from whisperlivekit.server.app import create_app

    audio, turns = dialogue
    engine = TranscriptionEngine(pcm_input=True, diarization=True, no_transcription=True)
    try:
        with LiveServer(create_app(engine)) as server:
            result = asyncio.run(stream_audio(server.ws, audio, speed=2.0))
    finally:
        engine.close()
    assert result.error is None
    lines = result.updates[-1].data["lines"]
    assert all(ln["text"] == "" for ln in lines)
    hypothesis = turns_from_lines(lines)
    scores = der(turns, hypothesis, [(0.0, len(audio) / SR)])
    assert (scores["missed"] + scores["false_alarm"] + scores["confusion"]) / scores["total"] < 0.15
