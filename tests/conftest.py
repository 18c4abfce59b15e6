"""Shared fixtures: the real embedded model, real servers on loopback, real recorded speech."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
JFK = (  # classic/jfk.wav, as the human reference has it
    "And so, my fellow Americans, ask not what your country can do for you, "
    "ask what you can do for your country."
)


def eval_dir() -> Path:
    for candidate in (REPO.parent / "shared" / "eval", REPO / "shared" / "eval"):
        if (candidate / "manifest.tsv").exists():
            return candidate
    pytest.skip("../shared/eval is not present")


@pytest.fixture(scope="session", autouse=True)
def _user_data_in_a_temp_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Servers store transcripts in the user data dir by default: the tests' go to a temp dir."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("xdg-data")))
        yield


@pytest.fixture(scope="session")
def eval_root() -> Path:
    return eval_dir()


@pytest.fixture(scope="session")
def jfk_wav(eval_root: Path) -> Path:
    return eval_root / "classic" / "jfk.wav"


class LiveServer:
    """uvicorn serving an app on 127.0.0.1 in a background thread."""

    def __init__(self, app) -> None:
        import uvicorn

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/asr"


@pytest.fixture(scope="session", params=["simulstreaming", "localagreement"])
def pcm_engine(request):
    """One engine per streaming policy: every raw-PCM server test runs on both."""
    from whisperlivekit import TranscriptionEngine

    engine = TranscriptionEngine(pcm_input=True, backend_policy=request.param)
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def webm_engine():
    """A second engine in the same process, for compressed input."""
    from whisperlivekit import TranscriptionEngine

    engine = TranscriptionEngine(pcm_input=False)
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def pcm_server(pcm_engine) -> Iterator[LiveServer]:
    from whisperlivekit.server.app import create_app

    with LiveServer(create_app(pcm_engine)) as server:
        yield server


@pytest.fixture(scope="session")
def webm_server(webm_engine) -> Iterator[LiveServer]:
    from whisperlivekit.server.app import create_app

    with LiveServer(create_app(webm_engine)) as server:
        yield server
