"""Transcript stores: the same suite on SQLite and on a real PostgreSQL server started here; live
sessions recorded as they commit, read back as json/txt/srt/vtt, deleted, purged and resumed."""

from __future__ import annotations

import asyncio
import contextlib
import glob
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import LiveServer
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from whisperlivekit.client import decode_audio, stream_audio
from whisperlivekit.output.transcript import Line

KINDS = ["sqlite", "postgresql"]


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@dataclass
class PostgresServer:
    url: str
    restart: Callable[[], None]  # pg_ctl restart: every client connection is dropped


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL cluster on a free port, run as the postgres user when we are root."""
    pytest.importorskip("psycopg", reason="psycopg 3 missing: pip install 'whisperlivekit[postgres]'")
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found: scripts/install-test-deps.sh")
    root = Path(tempfile.mkdtemp(prefix="wlk-pg-"))
    data, sockets = root / "data", root / "sock"
    sockets.mkdir()
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sockets, "postgres")
        os.chmod(root, 0o755)
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    def pg(*args: str) -> None:
        subprocess.run([*as_user, *args], check=True, capture_output=True, text=True)

    pg(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
    pg_ctl = [str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-w", "-l", str(root / "log")]
    pg(*pg_ctl, "start")
    try:
        url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        yield PostgresServer(url, lambda: pg(*pg_ctl, "restart"))
    finally:
        subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=KINDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite://{tmp_path}/sessions.db"
        return
    url = request.getfixturevalue("postgres").url
    yield url
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:  # each test starts from empty tables
        conn.execute("DROP TABLE IF EXISTS wlk_lines, wlk_sessions")


@pytest.fixture
def store(store_url: str):
    from whisperlivekit.store import open_store

    opened = open_store(store_url)
    yield opened
    opened.close()


# -- the store itself ----------------------------------------------------------------------------


def test_lines_upsert_get_end_reopen(store) -> None:
    store.create("s1", 100.0, {"language": "en"})
    store.save_lines("s1", 0, [Line(1, "And so,", 0.5, 1.0)], 101.0)
    store.save_lines("s1", 0, [Line(1, "And so, my fellow", 0.5, 2.0), Line(-2, "", 2.0, 5.0)], 102.0)
    store.save_lines("s1", 2, [Line(1, "Americans.", 5.0, 6.0, "", "en")], 103.0)
    got = store.get("s1")
    assert [line.text for line in got.lines] == ["And so, my fellow", "", "Americans."]
    assert got.lines[2].detected_language == "en" and got.lines[0].end == 2.0
    assert got.meta == {"language": "en"} and got.updated == 103.0 and not got.ended
    assert got.stream_until == 6.0
    store.end("s1", 104.0)
    assert store.get("s1").ended
    store.reopen("s1", 105.0)
    assert not store.get("s1").ended
    assert store.get("missing") is None


def test_delete_and_purge(store) -> None:
    for i, updated in enumerate((10.0, 20.0, 30.0)):
        store.create(f"s{i}", updated, {})
        store.save_lines(f"s{i}", 0, [Line(1, f"line {i}", 0.0, 1.0)], updated)
    assert store.delete("s0") and not store.delete("s0")
    assert store.purge(25.0) == 1  # s1 (updated at 20) goes, s2 stays
    assert store.get("s1") is None and store.get("s2").lines[0].text == "line 2"


def test_writes_from_many_threads(store) -> None:
    def writer(n: int) -> None:
        store.create(f"t{n}", 1.0, {})
        for k in range(20):
            store.save_lines(f"t{n}", k, [Line(1, f"{n}-{k}", k, k + 1.0)], 2.0)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for n in range(6):
        assert [line.text for line in store.get(f"t{n}").lines] == [f"{n}-{k}" for k in range(20)]


def test_text_is_kept_exactly(store) -> None:
    text = "Ünïcödé — 'quotes' \"double\"; DROP TABLE wlk_lines; -- 日本語"
    store.create("u", 1.0, {"q": text})
    store.save_lines("u", 0, [Line(1, text, 0.0, 1.0)], 1.0)
    assert store.get("u").lines[0].text == text and store.get("u").meta["q"] == text


def test_sqlite_default_path_is_the_user_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from whisperlivekit.store import open_store

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    store = open_store("sqlite")
    try:
        assert store.path == tmp_path / "whisperlivekit" / "sessions.sqlite3"
        assert store.path.stat().st_mode & 0o077 == 0  # transcripts: owner only
    finally:
        store.close()
    assert open_store("none") is None


# -- live sessions -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine():
    from whisperlivekit import TranscriptionEngine

    engine = TranscriptionEngine(pcm_input=True)
    yield engine
    engine.close()


@pytest.fixture
def server(engine, store_url: str) -> Iterator[LiveServer]:
    from whisperlivekit.server.app import create_app

    config = engine.config.replace(store=store_url, resume_window=60.0)
    with LiveServer(create_app(engine, config)) as live:
        yield live


@pytest.fixture(scope="module")
def jfk(jfk_wav: Path) -> np.ndarray:
    return decode_audio(jfk_wav)


def _texts(lines: list[dict]) -> list[str]:
    return [line["text"] for line in lines if line["speaker"] != -2]


def _plain(lines: list[dict]) -> str:
    """Lower-case words only: punctuation varies from run to run, the words should not."""
    return " ".join(re.sub(r"[^a-z' ]", " ", " ".join(_texts(lines)).lower()).split())


async def test_live_session_is_stored_as_it_commits(server: LiveServer, jfk: np.ndarray) -> None:
    result = await stream_audio(server.ws, jfk, speed=3.0)
    assert result.error is None
    session_id = result.config["session_id"]
    final_lines = result.updates[-1].data["lines"]
    got = httpx.get(f"{server.http}/v1/sessions/{session_id}").json()
    assert got["ended"] and not got["live"]
    assert got["lines"] == final_lines  # exactly what the client was sent last
    assert "ask not what your country can do for you" in _plain(got["lines"])
    # Every update's committed lines were stored before it was sent: replay the update stream and
    # check each one is a prefix-consistent view of the store's final content.
    for update in result.updates:
        final = max(0, len(update.data["lines"]) - 1)  # every line but the last is final
        assert got["lines"][:final] == update.data["lines"][:final]
    txt = httpx.get(f"{server.http}/v1/sessions/{session_id}?format=txt")
    assert txt.headers["content-type"].startswith("text/plain") and txt.text.strip() == "\n".join(
        t for t in _texts(final_lines) if t
    )
    vtt = httpx.get(f"{server.http}/v1/sessions/{session_id}?format=vtt").text
    assert vtt.startswith("WEBVTT") and "-->" in vtt
    assert httpx.get(f"{server.http}/v1/sessions/{session_id}?format=doc").status_code == 400
    assert httpx.delete(f"{server.http}/v1/sessions/{session_id}").status_code == 204
    assert httpx.get(f"{server.http}/v1/sessions/{session_id}").status_code == 404
    assert httpx.delete(f"{server.http}/v1/sessions/{session_id}").status_code == 404


def _quietest_split(audio: np.ndarray, lo: float, hi: float) -> int:
    window = 1600  # 100 ms
    start, end = int(lo * 16000), int(hi * 16000)
    energy = [float(np.mean(audio[i : i + window] ** 2)) for i in range(start, end, 160)]
    return start + 160 * int(np.argmin(energy)) + window // 2


async def test_resume_gives_one_continuous_transcript(server: LiveServer, jfk: np.ndarray) -> None:
    split = _quietest_split(jfk, 2.5, 4.5)  # the pause after "my fellow Americans"
    first = await stream_audio(server.ws, jfk[:split], speed=3.0)
    session_id = first.config["session_id"]
    first_lines = first.updates[-1].data["lines"]
    assert first_lines and "americans" in _plain(first_lines)
    second = await stream_audio(f"{server.ws}?session_id={session_id}", jfk[split:], speed=3.0)
    assert second.error is None and second.config["session_id"] == session_id
    lines = second.updates[-1].data["lines"]
    assert lines[: len(first_lines) - 1] == first_lines[:-1]  # the first part, unchanged, first
    assert lines[len(first_lines) - 1]["text"].startswith(first_lines[-1]["text"])
    starts = [line["start"] for line in lines]
    assert starts == sorted(starts)  # one timeline: the second part continues after the first
    assert max(line["end"] for line in lines) > split / 16000 + 3
    text = _plain(lines)
    assert "fellow americans" in text and "ask not what your country can do for you" in text
    stored = httpx.get(f"{server.http}/v1/sessions/{session_id}").json()["lines"]
    assert stored == lines


def test_a_resumed_session_gives_the_model_what_was_said(engine) -> None:
    """The decoder continues from the stored text, as it would have within one stream."""
    from whisperlivekit.session import RESUME_CONTEXT_CHARS, AudioProcessor

    said = [Line(1, "And so, my fellow Americans,", 0.0, 2.5), Line(-2, "", 2.5, 3.0)]
    said += [Line(1, "word " * 400, 3.0, 60.0)]  # longer than the decoder's prompt
    def prompt(policy) -> str:  # LocalAgreement keeps the text, SimulStreaming its tokens
        context = policy.context
        return context if isinstance(context, str) else policy.tokenizer.decode(context).strip()

    processor = AudioProcessor(engine)
    assert prompt(processor.policy) == ""
    processor.resume(said[:2], 3.0)
    assert prompt(processor.policy) == "And so, my fellow Americans,"
    processor.resume(said, 60.0)
    assert 0 < len(prompt(processor.policy)) <= RESUME_CONTEXT_CHARS
    assert prompt(processor.policy).startswith("word ") and prompt(processor.policy).endswith("word")


async def _refusal(url: str) -> tuple[int | None, str]:
    messages: list[dict] = []
    async with connect(url) as ws:
        with contextlib.suppress(ConnectionClosed):
            async for frame in ws:
                messages.append(json.loads(frame))
    return ws.close_code, messages[0].get("error", "")


async def test_resume_refusals(server: LiveServer, engine, jfk: np.ndarray) -> None:
    code, error = await _refusal(f"{server.ws}?session_id=no-such-session")
    assert code == 4404 and "unknown session" in error
    async with connect(server.ws) as live:  # a session still live cannot be taken over
        session_id = json.loads(await live.recv())["session_id"]
        code, error = await _refusal(f"{server.ws}?session_id={session_id}")
        assert code == 4409 and "live" in error
        assert httpx.delete(f"{server.http}/v1/sessions/{session_id}").status_code == 409
        await live.send(b"")
        async for _ in live:
            pass
    server_sessions = server.server.config.app.state.sessions
    server_sessions.resume_window = 0.0  # past the window
    time.sleep(0.05)
    code, error = await _refusal(f"{server.ws}?session_id={session_id}")
    assert code == 4410 and "resume window" in error


async def test_store_none_keeps_nothing(engine, jfk: np.ndarray) -> None:
    from whisperlivekit.server.app import create_app

    with LiveServer(create_app(engine, engine.config.replace(store="none"))) as live:
        result = await stream_audio(live.ws, jfk[:48000], speed=4.0)
        assert result.error is None and result.config["session_id"]  # an id, but nothing kept
        assert httpx.get(f"{live.http}/v1/sessions/{result.config['session_id']}").status_code == 404
        code, error = await _refusal(f"{live.ws}?session_id={result.config['session_id']}")
        assert code == 4404 and "--store none" in error


async def test_retention_purges_old_sessions(store_url: str, engine) -> None:
    from whisperlivekit.server.app import create_app
    from whisperlivekit.store import open_store

    old = open_store(store_url)
    old.create("ancient", time.time() - 3 * 86400, {})
    old.close()
    with LiveServer(create_app(engine, engine.config.replace(store=store_url, retention_days=1))) as live:
        assert httpx.get(f"{live.http}/v1/sessions/ancient").status_code == 200
        async with connect(live.ws) as ws:  # the sweep runs as a session starts
            json.loads(await ws.recv())
        assert httpx.get(f"{live.http}/v1/sessions/ancient").status_code == 404


WRITER = """
import sys, time
from whisperlivekit.store.sqlite import SqliteStore
from whisperlivekit.output.transcript import Line
for i in range(25):
    store = SqliteStore(sys.argv[1])  # open/close churn, as servers and tests do
    store.create(f"{sys.argv[2]}-{i}", time.time(), {})
    for k in range(4):
        store.save_lines(f"{sys.argv[2]}-{i}", k, [Line(1, "w", k, k + 1.0)], time.time())
    assert len(store.get(f"{sys.argv[2]}-{i}").lines) == 4
    store.close()
"""


def test_sqlite_file_shared_by_several_processes(tmp_path: Path) -> None:
    """Several servers (or test runs) on the default file at once: no lock lost, no corruption."""
    import sys

    from whisperlivekit.store.sqlite import SqliteStore

    path = tmp_path / "shared.db"
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), f"p{n}"], stderr=subprocess.PIPE)
               for n in range(4)]  # fmt: skip
    for writer in writers:
        assert writer.wait(timeout=120) == 0, writer.stderr.read().decode()
    store = SqliteStore(path)
    try:
        assert store._fetch("PRAGMA integrity_check") == [("ok",)]
        assert store._fetch("SELECT COUNT(*) FROM wlk_lines") == [(4 * 25 * 4,)]
    finally:
        store.close()


async def test_failing_store_warns_and_transcription_goes_on(engine, tmp_path: Path, jfk: np.ndarray) -> None:
    import sqlite3

    from whisperlivekit.server.app import create_app

    path = tmp_path / "broken.db"
    with LiveServer(create_app(engine, engine.config.replace(store=f"sqlite://{path}"))) as live:
        with sqlite3.connect(path) as db:  # the lines table vanishes under the running server
            db.execute("DROP TABLE wlk_lines")
        result = await stream_audio(live.ws, jfk[: 16000 * 4], speed=4.0)
        assert result.error is None and "fellow" in result.final_text.lower()
        warnings = [m.data["warning"] for m in result.messages if m.type == "warning"]
        assert len(warnings) == 1 and "not being stored" in warnings[0]
        with sqlite3.connect(path) as db:  # sessions cannot even be created now
            db.execute("DROP TABLE wlk_sessions")
        result = await stream_audio(live.ws, jfk[: 16000 * 4], speed=4.0)
        assert result.error is None and "fellow" in result.final_text.lower()
        assert [m.type for m in result.messages][:2] == ["config", "warning"]
        code, error = await _refusal(f"{live.ws}?session_id={result.config['session_id']}")
        assert code == 1011 and "store is unavailable" in error


def test_postgres_store_survives_a_database_restart(postgres: PostgresServer) -> None:
    from whisperlivekit.store import open_store

    store = open_store(postgres.url)
    try:
        store.create("r", 1.0, {})
        store.save_lines("r", 0, [Line(1, "before", 0.0, 1.0)], 2.0)
        postgres.restart()  # the store's connection is gone
        store.save_lines("r", 1, [Line(1, "after", 1.0, 2.0)], 3.0)  # reconnects, commits
        assert [line.text for line in store.get("r").lines] == ["before", "after"]
    finally:
        store.delete("r")
        store.close()


async def test_late_cleanup_of_the_old_connection_keeps_a_resume_claimed(store) -> None:
    """CI saw two resumes both win: the first connection's cleanup ran after a resume had claimed
    the id and freed it, so the second resume found it free. Each connection frees only its own."""
    from whisperlivekit.store.live import LiveSessions, ResumeError

    class Processor:  # what LiveSessions asks of an AudioProcessor
        def resume(self, lines: list[Line], stream_until: float) -> None:
            self.resumed = lines

    sessions = LiveSessions(store)
    first, resumer, third = Processor(), Processor(), Processor()
    recorder = await sessions.begin(first, None, {})
    session_id = recorder.session_id
    sessions.finish(session_id, first)  # the first connection ends ...
    await sessions.begin(resumer, session_id, {})  # ... a resume claims the id ...
    sessions.finish(session_id, first)  # ... and the first connection's cleanup runs late
    assert sessions.processors[session_id] is resumer
    with pytest.raises(ResumeError) as refused:
        await sessions.begin(third, session_id, {})
    assert refused.value.code == 4409
    sessions.finish(session_id, resumer)
    assert session_id not in sessions.processors


async def test_two_resumes_at_once_one_wins(server: LiveServer, jfk: np.ndarray) -> None:
    first = await stream_audio(server.ws, jfk[:16000], speed=4.0)
    session_id = first.config["session_id"]

    answered = [asyncio.Event(), asyncio.Event()]

    async def resume(me: int) -> tuple[int | None, list[dict]]:
        messages: list[dict] = []
        try:
            async with connect(f"{server.ws}?session_id={session_id}") as ws:
                with contextlib.suppress(ConnectionClosed):
                    messages.append(json.loads(await ws.recv()))
                    if messages[0]["type"] == "config":
                        # Hold the session until the other attempt is answered: they overlap.
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(answered[1 - me].wait(), 10)
                        await ws.send(b"")
                    async for frame in ws:
                        messages.append(json.loads(frame))
        finally:
            answered[me].set()
        return ws.close_code, messages

    outcomes = sorted(await asyncio.gather(resume(0), resume(1)), key=lambda o: o[0] or 0)
    (won_code, won), (lost_code, lost) = outcomes
    assert won_code == 1000 and won[0]["session_id"] == session_id and won[-1]["type"] == "ready_to_stop"
    assert lost_code == 4409 and lost[0]["type"] == "error"
