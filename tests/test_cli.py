"""The command line, the README's promises, and the config object behind both."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from whisperlivekit.bench.metrics import normalize, wer
from whisperlivekit.cli import build_parser
from whisperlivekit.config import Config, config_from_args

REPO = Path(__file__).resolve().parents[1]
JFK_WORDS = (
    "and so my fellow americans ask not what your country can do for you ask what you can do for your country"
)


def readme_commands() -> list[str]:
    return re.findall(r"```bash\n(.+?)\n```", (REPO / "README.md").read_text())


def test_readme_starts_with_two_commands_and_ci_runs_the_second() -> None:
    serve, test = readme_commands()[:2]
    assert serve.endswith("wlk") and "pip install" in serve
    assert test.endswith("pytest") and "pip install" in test
    assert "torch==2.13.0" in serve and "torch==2.13.0" in test  # never a CUDA torch by accident
    ci = (REPO / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1] == test
    # Chromium for the browser tests: CI installs it the way the README tells a developer to.
    assert "bash scripts/install-test-deps.sh" in (REPO / "README.md").read_text()
    assert any(line.startswith("bash scripts/install-test-deps.sh") for line in ci)


def test_cli_is_generated_from_config() -> None:
    args = build_parser().parse_args(["serve", "--lan", "de", "--no-vac", "--min-chunk-size", "0.5"])
    config = config_from_args(args)
    assert config == Config(language="de", vac=False, min_chunk_size=0.5)
    assert config_from_args(build_parser().parse_args(["serve"])) == Config()
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--backend-policy", "nonsense"])


def test_simulstreaming_options_reach_the_config() -> None:
    args = build_parser().parse_args([
        "serve", "--backend-policy", "simulstreaming", "--frame-threshold", "15", "--never-fire",
        "--custom-alignment-heads", "2,3; 3,1", "--max-context-tokens", "100",
    ])
    config = config_from_args(args)
    assert config.backend_policy == "simulstreaming" and config.frame_threshold == 15
    assert config.never_fire and config.max_context_tokens == 100
    assert config.alignment_heads == [(2, 3), (3, 1)]
    assert config.chunk_seconds == 0.5  # the policy's own default when --min-chunk-size is not given
    assert Config(backend_policy="localagreement").chunk_seconds == 1.0
    assert Config(min_chunk_size=0.3).chunk_seconds == 0.3
    with pytest.raises(ValueError, match="layer,head"):
        Config(custom_alignment_heads="2:3")


def test_unknown_engine_option_is_a_clear_error() -> None:
    with pytest.raises(TypeError, match="unknown option"):
        Config.from_kwargs(modle="tiny.en")
    with pytest.raises(ValueError, match="min_chunk_size"):
        Config(min_chunk_size=0)


def test_wlk_transcribe_prints_jfk_word_for_word(jfk_wav: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "whisperlivekit.cli", "transcribe", str(jfk_wav)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert normalize(done.stdout) == JFK_WORDS


def test_wlk_transcribe_srt_and_bad_file(jfk_wav: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"this is not audio" * 100)
    out = tmp_path / "out"
    out.mkdir()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "whisperlivekit.cli",
            "transcribe",
            str(jfk_wav),
            str(bad),
            "--format",
            "srt",
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1 and "bad.wav" in done.stderr and "decode" in done.stderr
    srt = (out / "jfk.srt").read_text()
    blocks = srt.strip().split("\n\n")
    assert blocks[0].startswith("1\n00:00:0")
    assert all(re.match(r"\d+\n\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}\n\S", block) for block in blocks)


def test_readme_python_example_runs(tmp_path: Path, eval_root: Path) -> None:
    blocks = re.findall(r"```python\n(.+?)\n```", (REPO / "README.md").read_text(), re.S)
    example = blocks[0].replace("../shared/eval", str(eval_root))
    script = tmp_path / "example.py"
    script.write_text(example)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300, check=True
    )
    last = done.stdout.strip().splitlines()[-1]
    assert wer(JFK_WORDS, last) <= 0.15, last
