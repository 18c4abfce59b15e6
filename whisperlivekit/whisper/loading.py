"""Build our PyTorch ``Whisper`` from a CTranslate2 dir, an openai-whisper ``.pt`` or a transformers dir.

``load_model(path)`` picks the format from what it finds:
- a directory with ``model.bin`` (or that file itself): CTranslate2 (faster-whisper) conversion;
- a ``.pt``/``.pth`` file: openai-whisper checkpoint ``{"dims": ..., "model_state_dict": ...}``;
- a directory with ``model.safetensors`` or ``pytorch_model.bin``: Hugging Face transformers.
"""

from __future__ import annotations

import base64
import gzip
import json
import re
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from whisperlivekit.whisper.model import ModelDimensions, Whisper

if TYPE_CHECKING:
    from faster_whisper.tokenizer import Tokenizer

Heads = list[tuple[int, int]]


@dataclass
class WhisperMeta:
    alignment_heads: Heads
    suppress_ids: list[int] = field(default_factory=list)  # always suppressed (CT2 "suppress_tokens=[-1]")
    suppress_ids_begin: list[int] = field(default_factory=list)  # first step only ("suppress_blank")
    lang_ids: list[int] = field(default_factory=list)
    multilingual: bool = False
    source: str = ""  # "ctranslate2" | "openai" | "transformers"


# ---------------------------------------------------------------------------------------- CTranslate2
_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: np.uint16}  # 5: bf16


def read_ct2_model(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Variables of a CTranslate2 model.bin as read-only views into a memory map, plus the aliases."""
    buf = np.memmap(path, dtype=np.uint8, mode="r")
    pos = 0

    def unpack(fmt: str) -> tuple[int, ...]:
        nonlocal pos
        values = struct.unpack_from("<" + fmt, buf, pos)
        pos += struct.calcsize("<" + fmt)
        return values

    def string() -> str:
        nonlocal pos
        (n,) = unpack("H")
        s = bytes(buf[pos : pos + n - 1]).decode()  # n counts the trailing NUL
        pos += n
        return s

    (version,) = unpack("I")
    if version < 5:
        raise ValueError(f"{path}: CTranslate2 binary version {version} is not supported (need >= 5)")
    spec = string()
    unpack("I")  # spec revision
    if spec != "WhisperSpec":
        raise ValueError(f"{path}: a {spec!r} model, not Whisper")
    variables: dict[str, np.ndarray] = {}
    for _ in range(unpack("I")[0]):
        name = string()
        (rank,) = unpack("B")
        shape = unpack("I" * rank)
        (dtype_id,), (nbytes,) = unpack("B"), unpack("I")
        dtype = np.dtype(_CT2_DTYPES[dtype_id])
        variables[name] = np.frombuffer(buf, dtype, nbytes // dtype.itemsize, pos).reshape(shape)
        pos += nbytes
    aliases = {}
    for _ in range(unpack("I")[0]):
        alias = string()
        aliases[alias] = string()
    return variables, aliases


def _to_tensor(a: np.ndarray, dtype: torch.dtype) -> Tensor:
    if a.dtype == np.uint16:  # bfloat16 has no numpy type
        return torch.from_numpy(a.view(np.int16).copy()).view(torch.bfloat16).to(dtype)
    # One copy out of the memory map, straight into the final dtype where numpy has it.
    np_dtype = {torch.float32: np.float32, torch.float16: np.float16, torch.float64: np.float64}.get(dtype)
    if np_dtype is not None:
        return torch.from_numpy(a.astype(np_dtype))
    return torch.from_numpy(a.astype(np.float32)).to(dtype)


def _ct2_state_dict(path: Path, dtype: torch.dtype) -> tuple[ModelDimensions, dict[str, Tensor]]:
    v, _ = read_ct2_model(path)

    def get(name: str) -> Tensor:
        a = v[name]
        if (scale := v.get(name + "_scale")) is not None:  # int8 weights: per-row scale
            a = a.astype(np.float32) / scale.astype(np.float32).reshape(-1, 1)
        return _to_tensor(a, dtype)

    def n_layers(side: str) -> int:
        return len({m.group(1) for k in v if (m := re.match(rf"{side}/layer_(\d+)/", k))})

    def heads(side: str, state: int) -> int:
        return int(v[f"{side}/num_heads"]) if f"{side}/num_heads" in v else state // 64

    conv1, emb = v["encoder/conv1/weight"], v["decoder/embeddings/weight"]
    dims = ModelDimensions(
        n_mels=conv1.shape[1], n_audio_ctx=v["encoder/position_encodings/encodings"].shape[0],
        n_audio_state=conv1.shape[0], n_audio_head=heads("encoder", conv1.shape[0]),
        n_audio_layer=n_layers("encoder"), n_vocab=emb.shape[0],
        n_text_ctx=v["decoder/position_encodings/encodings"].shape[0], n_text_state=emb.shape[1],
        n_text_head=heads("decoder", emb.shape[1]), n_text_layer=n_layers("decoder"),
    )
    sd: dict[str, Tensor] = {}

    def ln(dst: str, src: str) -> None:
        sd[dst + ".weight"], sd[dst + ".bias"] = get(src + "/gamma"), get(src + "/beta")

    def lin(dst: str, src: str, bias: bool = True) -> None:
        sd[dst + ".weight"] = get(src + "/weight")
        if bias:
            sd[dst + ".bias"] = get(src + "/bias")

    def split(dsts: list[str], src: str) -> None:
        ws, bs = get(src + "/weight").chunk(len(dsts)), get(src + "/bias").chunk(len(dsts))
        for dst, w, b in zip(dsts, ws, bs, strict=True):
            sd[dst + ".weight"] = w.clone()
            if not dst.endswith(".key"):  # the key bias is stored as zeros; Whisper has none
                sd[dst + ".bias"] = b.clone()

    def block(dst: str, src: str, cross: bool) -> None:
        ln(f"{dst}.attn_ln", f"{src}/self_attention/layer_norm")
        split([f"{dst}.attn.query", f"{dst}.attn.key", f"{dst}.attn.value"], f"{src}/self_attention/linear_0")
        lin(f"{dst}.attn.out", f"{src}/self_attention/linear_1")
        if cross:
            ln(f"{dst}.cross_attn_ln", f"{src}/attention/layer_norm")
            lin(f"{dst}.cross_attn.query", f"{src}/attention/linear_0")
            split([f"{dst}.cross_attn.key", f"{dst}.cross_attn.value"], f"{src}/attention/linear_1")
            lin(f"{dst}.cross_attn.out", f"{src}/attention/linear_2")
        ln(f"{dst}.mlp_ln", f"{src}/ffn/layer_norm")
        lin(f"{dst}.mlp.0", f"{src}/ffn/linear_0")
        lin(f"{dst}.mlp.2", f"{src}/ffn/linear_1")

    lin("encoder.conv1", "encoder/conv1")
    lin("encoder.conv2", "encoder/conv2")
    sd["encoder.positional_embedding"] = get("encoder/position_encodings/encodings")
    for i in range(dims.n_audio_layer):
        block(f"encoder.blocks.{i}", f"encoder/layer_{i}", cross=False)
    ln("encoder.ln_post", "encoder/layer_norm")
    sd["decoder.token_embedding.weight"] = get("decoder/embeddings/weight")
    sd["decoder.positional_embedding"] = get("decoder/position_encodings/encodings")
    for i in range(dims.n_text_layer):
        block(f"decoder.blocks.{i}", f"decoder/layer_{i}", cross=True)
    ln("decoder.ln", "decoder/layer_norm")
    return dims, sd


def _load_ct2(directory: Path, dtype: torch.dtype) -> tuple[ModelDimensions, dict[str, Tensor], WhisperMeta]:
    dims, sd = _ct2_state_dict(directory / "model.bin", dtype)
    config_file = directory / "config.json"
    config = json.loads(config_file.read_text()) if config_file.exists() else {}
    meta = WhisperMeta(
        alignment_heads=[tuple(h) for h in config.get("alignment_heads", [])],
        suppress_ids=list(config.get("suppress_ids", [])),
        suppress_ids_begin=list(config.get("suppress_ids_begin", [])),
        lang_ids=list(config.get("lang_ids", [])),
        source="ctranslate2",
    )
    return dims, sd, meta


# --------------------------------------------------------------------------------------------- openai
# openai-whisper ships the alignment heads per model name (not in the .pt): base85 of a gzip'ed
# bool array [n_text_layer, n_text_head]. Values from openai-whisper (MIT).
_OPENAI_ALIGNMENT_HEADS = {
    "tiny.en": b"ABzY8J1N>@0{>%R00Bk>$p{7v037`oCl~+#00",
    "tiny": b"ABzY8bu8Lr0{>%RKn9Fp%m@SkK7Kt=7ytkO",
    "base.en": b"ABzY8;40c<0{>%RzzG;p*o+Vo09|#PsxSZm00",
    "base": b"ABzY8KQ!870{>%RzyTQH3`Q^yNP!>##QT-<FaQ7m",
    "small.en": b"ABzY8>?_)10{>%RpeA61k&I|OI3I$65C{;;pbCHh0B{qLQ;+}v00",
    "small": b"ABzY8DmU6=0{>%Rpa?J`kvJ6qF(V^F86#Xh7JUGMK}P<N0000",
    "medium.en": b"ABzY8usPae0{>%R7<zz_OvQ{)4kMa0BMw6u5rT}kRKX;$NfYBv00*Hl@qhsU00",
    "medium": b"ABzY8B0Jh+0{>%R7}kK1fFL7w6%<-Pf*t^=N)Qr&0RR9",
    "large-v1": b"ABzY8r9j$a0{>%R7#4sLmoOs{s)o3~84-RPdcFk!JR<kSfC2yj",
    "large-v2": b"ABzY8zd+h!0{>%R7=D0pU<_bnWW*tkYAhobTNnu$jnkEkXqp)j;w1Tzk)UH3X%SZd&fFZ2fC2yj",
    "large-v3": b"ABzY8gWO1E0{>%R7(9S+Kn!D~%ngiGaR?*L!iJG9p-nab0JQ=-{D1-g00",
    "large-v3-turbo": b"ABzY8j^C+e0{>%RARaKHP%t(lGR*)0g!tONPyhe`",
}
_OPENAI_ALIGNMENT_HEADS["large"] = _OPENAI_ALIGNMENT_HEADS["large-v3"]
_OPENAI_ALIGNMENT_HEADS["turbo"] = _OPENAI_ALIGNMENT_HEADS["large-v3-turbo"]


def openai_alignment_heads(name: str, dims: ModelDimensions) -> Heads | None:
    """openai's published heads for a model name (``tiny.en``...), if the shape fits ``dims``."""
    if (packed := _OPENAI_ALIGNMENT_HEADS.get(name)) is None:
        return None
    mask = np.frombuffer(gzip.decompress(base64.b85decode(packed)), dtype=bool)
    if mask.size != dims.n_text_layer * dims.n_text_head:
        return None
    return [(int(a), int(b)) for a, b in np.argwhere(mask.reshape(dims.n_text_layer, dims.n_text_head))]


def _load_openai(file: Path, dtype: torch.dtype) -> tuple[ModelDimensions, dict[str, Tensor], WhisperMeta]:
    ckpt = torch.load(file, map_location="cpu", weights_only=True)
    dims = ModelDimensions(**ckpt["dims"])
    sd = {k: t.to(dtype) for k, t in ckpt["model_state_dict"].items()}
    heads = openai_alignment_heads(file.stem, dims) or []
    return dims, sd, _default_meta(dims, heads, "openai")


def _default_meta(dims: ModelDimensions, heads: Heads, source: str) -> WhisperMeta:
    """Token ids by Whisper's fixed vocabulary layout, for checkpoints that do not list them."""
    multilingual = dims.n_vocab >= 51865
    eot = 50257 if multilingual else 50256
    n_lang = dims.n_vocab - 51765 - int(multilingual)
    return WhisperMeta(
        alignment_heads=heads, suppress_ids_begin=[220, eot], multilingual=multilingual, source=source,
        lang_ids=list(range(eot + 2, eot + 2 + n_lang)) if multilingual else [],
    )


# --------------------------------------------------------------------------------------- transformers
_HF_RENAMES = [  # applied in order to names without the leading "model."
    (r"^encoder\.layer_norm\.", "encoder.ln_post."),
    (r"^decoder\.layer_norm\.", "decoder.ln."),
    (r"^encoder\.embed_positions\.weight$", "encoder.positional_embedding"),
    (r"^decoder\.embed_positions\.weight$", "decoder.positional_embedding"),
    (r"^decoder\.embed_tokens\.", "decoder.token_embedding."),
    (r"\.layers\.", ".blocks."),
    (r"\.self_attn_layer_norm\.", ".attn_ln."),
    (r"\.encoder_attn_layer_norm\.", ".cross_attn_ln."),
    (r"\.final_layer_norm\.", ".mlp_ln."),
    (r"\.self_attn\.", ".attn."),
    (r"\.encoder_attn\.", ".cross_attn."),
    (r"\.q_proj\.", ".query."),
    (r"\.k_proj\.", ".key."),
    (r"\.v_proj\.", ".value."),
    (r"\.out_proj\.", ".out."),
    (r"\.fc1\.", ".mlp.0."),
    (r"\.fc2\.", ".mlp.2."),
]


def _hf_name(name: str) -> str | None:
    name = name.removeprefix("model.")
    if name.startswith("proj_out."):  # tied to the token embedding
        return None
    for pattern, repl in _HF_RENAMES:
        name = re.sub(pattern, repl, name)
    return name


def _load_hf(directory: Path, dtype: torch.dtype) -> tuple[ModelDimensions, dict[str, Tensor], WhisperMeta]:
    cfg = json.loads((directory / "config.json").read_text())
    dims = ModelDimensions(
        n_mels=cfg["num_mel_bins"], n_audio_ctx=cfg["max_source_positions"], n_audio_state=cfg["d_model"],
        n_audio_head=cfg["encoder_attention_heads"], n_audio_layer=cfg["encoder_layers"],
        n_vocab=cfg["vocab_size"], n_text_ctx=cfg["max_target_positions"], n_text_state=cfg["d_model"],
        n_text_head=cfg["decoder_attention_heads"], n_text_layer=cfg["decoder_layers"],
    )
    if (directory / "model.safetensors").exists():
        try:
            from safetensors.torch import load_file
        except ImportError as e:
            raise ImportError(
                f"{directory} holds model.safetensors: `pip install safetensors` to read it"
            ) from e
        raw = load_file(directory / "model.safetensors")
    else:
        raw = torch.load(directory / "pytorch_model.bin", map_location="cpu", weights_only=True)
    sd = {new: t.to(dtype) for k, t in raw.items() if (new := _hf_name(k)) is not None}
    gen_path = directory / "generation_config.json"
    gen: dict[str, Any] = json.loads(gen_path.read_text()) if gen_path.exists() else {}
    meta = _default_meta(dims, [tuple(h) for h in gen.get("alignment_heads") or []], "transformers")
    meta.suppress_ids = list(gen.get("suppress_tokens") or [])
    meta.suppress_ids_begin = list(gen.get("begin_suppress_tokens") or meta.suppress_ids_begin)
    if gen.get("lang_to_id"):
        meta.lang_ids = sorted(gen["lang_to_id"].values())
    return dims, sd, meta


# ------------------------------------------------------------------------------------------ front door
def load_model(
    path: str | Path,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    alignment_heads: Heads | None = None,
) -> tuple[Whisper, WhisperMeta]:
    """Load a Whisper from a CTranslate2 dir, an openai ``.pt`` or a transformers dir (see module doc).

    ``alignment_heads`` overrides what the files say; without either, every head of the last half
    of the decoder layers is used (openai's fallback).
    """
    path = Path(path)
    if path.is_file() and path.name == "model.bin":
        path = path.parent
    if path.is_dir() and (path / "model.bin").exists():
        dims, sd, meta = _load_ct2(path, dtype)
    elif path.is_file():
        dims, sd, meta = _load_openai(path, dtype)
    elif path.is_dir() and any((path / f).exists() for f in ("model.safetensors", "pytorch_model.bin")):
        dims, sd, meta = _load_hf(path, dtype)
    else:
        raise FileNotFoundError(f"no Whisper model at {path} (want model.bin, a .pt, or a transformers dir)")
    if alignment_heads is not None:
        meta.alignment_heads = [tuple(h) for h in alignment_heads]
    meta.multilingual = dims.n_vocab >= 51865
    with torch.device("meta"):  # no throw-away random init: the weights are assigned below
        model = Whisper(dims, meta.alignment_heads or None)
    model.load_state_dict(sd, strict=True, assign=True)
    meta.alignment_heads = list(model.alignment_heads)
    return model.to(device=device, dtype=dtype).eval(), meta


def save_openai_checkpoint(model: Whisper, file: str | Path) -> None:
    """Write ``{"dims", "model_state_dict"}`` as openai-whisper does (our layout is theirs)."""
    torch.save({"dims": asdict(model.dims), "model_state_dict": model.state_dict()}, file)


def load_tokenizer(
    path: str | Path, multilingual: bool | None = None, task: str = "transcribe", language: str | None = "en"
) -> Tokenizer:
    """faster-whisper's Tokenizer over the ``tokenizer.json`` in ``path`` (a dir or the file)."""
    import tokenizers
    from faster_whisper.tokenizer import Tokenizer

    path = Path(path)
    file = path / "tokenizer.json" if path.is_dir() else path
    hf = tokenizers.Tokenizer.from_file(str(file))
    if multilingual is None:
        multilingual = hf.get_vocab_size() >= 51865
    return Tokenizer(hf, multilingual, task=task, language=language)


def default_suppress_ids(tokenizer: Tokenizer) -> list[int]:
    """openai/faster-whisper's ``suppress_tokens=[-1]`` list, for checkpoints that do not carry one."""
    from faster_whisper.transcribe import get_suppressed_tokens

    return list(get_suppressed_tokens(tokenizer, [-1]))
