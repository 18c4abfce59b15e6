"""A whole Whisper in about a page, for streaming policies that need more than CTranslate2 gives.

Why our own model: AlignAtt needs the decoder's cross-attention of the alignment heads at every step,
and streaming wants to encode only the audio it has. The encoder takes any mel length up to
``2 * n_audio_ctx`` frames (the positional embedding is sliced); the decoder keeps a ``KVCache``
(self-attention K/V appended per step, cross-attention K/V computed once per encoding).
Attention uses SDPA unless weights are asked for; then the explicit softmax path runs, only in the
layers that hold alignment heads.

The state-dict layout is openai-whisper's (``encoder.blocks.0.attn.query.weight``, ...).

Measured here (tiny.en, float32, CPU, ``torch.set_num_threads(2)``, shared 2-core machine, best
of 3): encoder ~175 ms for 30 s of audio (3000 frames) vs ~42 ms for 10 s (1000 frames);
decoder ~6 ms/token with the KV cache (1500 audio frames; ~5.7 ms with 500), ~6.5-7 ms/token when
the alignment heads' weights are returned; ``new_cache`` (cross K/V for 1500 frames) ~12 ms.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160
N_FRAMES = 3000  # mel frames in a 30 s window


@dataclass
class ModelDimensions:
    n_mels: int
    n_audio_ctx: int
    n_audio_state: int
    n_audio_head: int
    n_audio_layer: int
    n_vocab: int
    n_text_ctx: int
    n_text_state: int
    n_text_head: int
    n_text_layer: int


class LayerNorm(nn.LayerNorm):
    def forward(self, x: Tensor) -> Tensor:
        # Normalise in float32 so float16 models stay stable.
        w = None if self.weight is None else self.weight.float()
        b = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps).to(x.dtype)


class Linear(nn.Linear):
    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight.to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> Tensor:
    """Whisper's encoder positional embedding (used when a checkpoint does not store it)."""
    inc = np.log(max_timescale) / (channels // 2 - 1)
    inv = torch.exp(-inc * torch.arange(channels // 2, dtype=torch.float32))
    t = torch.arange(length, dtype=torch.float32)[:, None] * inv[None, :]
    return torch.cat([torch.sin(t), torch.cos(t)], dim=1)


class KVCache:
    """Decoder K/V per layer, shaped [batch, heads, time, head_dim].

    Cross-attention K/V come from one audio encoding; a cache whose audio batch is 1 serves any
    number of hypotheses (broadcast, no copy). ``reorder(indices)`` selects/duplicates rows for
    beam search: ``reorder(torch.arange(B).repeat_interleave(beam))`` expands a batch into beams.
    """

    def __init__(self, cross_k: list[Tensor], cross_v: list[Tensor]) -> None:
        self.cross_k, self.cross_v = cross_k, cross_v
        self.self_k: list[Tensor | None] = [None] * len(cross_k)
        self.self_v: list[Tensor | None] = [None] * len(cross_k)

    @property
    def length(self) -> int:
        """Number of tokens already in the self-attention cache."""
        k = self.self_k[0]
        return 0 if k is None else k.shape[2]

    def append(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        pk, pv = self.self_k[layer], self.self_v[layer]
        if pk is not None:
            k, v = torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2)
        self.self_k[layer], self.self_v[layer] = k, v
        return k, v

    def reorder(self, indices: Tensor | Sequence[int]) -> None:
        idx = torch.as_tensor(indices, dtype=torch.long, device=self.cross_k[0].device)
        self.self_k = [None if k is None else k.index_select(0, idx) for k in self.self_k]
        self.self_v = [None if v is None else v.index_select(0, idx) for v in self.self_v]
        if self.cross_k[0].shape[0] > 1:  # a shared (batch 1) audio needs no copy
            self.cross_k = [k.index_select(0, idx) for k in self.cross_k]
            self.cross_v = [v.index_select(0, idx) for v in self.cross_v]

    def truncate(self, length: int) -> None:
        """Forget tokens after ``length`` (e.g. to re-decode an unconfirmed tail)."""
        self.self_k = [None if k is None or length == 0 else k[:, :, :length] for k in self.self_k]
        self.self_v = [None if v is None or length == 0 else v[:, :, :length] for v in self.self_v]


class MultiHeadAttention(nn.Module):
    def __init__(self, n_state: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.query = Linear(n_state, n_state)
        self.key = Linear(n_state, n_state, bias=False)
        self.value = Linear(n_state, n_state)
        self.out = Linear(n_state, n_state)

    def _heads(self, x: Tensor) -> Tensor:  # [B, T, D] -> [B, H, T, D/H]
        return x.view(*x.shape[:2], self.n_head, -1).transpose(1, 2)

    def project_kv(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._heads(self.key(x)), self._heads(self.value(x))

    def forward(
        self, x: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, need_weights: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        q = self._heads(self.query(x))
        if k.shape[0] != q.shape[0]:  # shared audio for several hypotheses
            k, v = k.expand(q.shape[0], -1, -1, -1), v.expand(q.shape[0], -1, -1, -1)
        if need_weights:  # explicit path: SDPA cannot return the weights
            scores = (q @ k.transpose(-1, -2)).float() * q.shape[-1] ** -0.5
            if mask is not None:
                scores = scores + mask
            w = scores.softmax(dim=-1)
            o = w.to(q.dtype) @ v
        else:
            w, o = None, F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out(o.transpose(1, 2).flatten(2)), w


class ResidualAttentionBlock(nn.Module):
    def __init__(self, n_state: int, n_head: int, cross_attention: bool = False) -> None:
        super().__init__()
        self.attn = MultiHeadAttention(n_state, n_head)
        self.attn_ln = LayerNorm(n_state)
        self.cross_attn = MultiHeadAttention(n_state, n_head) if cross_attention else None
        self.cross_attn_ln = LayerNorm(n_state) if cross_attention else None
        self.mlp = nn.Sequential(Linear(n_state, 4 * n_state), nn.GELU(), Linear(4 * n_state, n_state))
        self.mlp_ln = LayerNorm(n_state)

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        cache: KVCache | None = None,
        layer: int = 0,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        h = self.attn_ln(x)
        k, v = self.attn.project_kv(h)
        if cache is not None:
            k, v = cache.append(layer, k, v)
        x = x + self.attn(h, k, v, mask)[0]
        w = None
        if self.cross_attn is not None and cache is not None:
            h, w = self.cross_attn(self.cross_attn_ln(x), cache.cross_k[layer], cache.cross_v[layer],
                                   need_weights=need_weights)
            x = x + h
        return x + self.mlp(self.mlp_ln(x)), w


class AudioEncoder(nn.Module):
    def __init__(self, n_mels: int, n_ctx: int, n_state: int, n_head: int, n_layer: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(n_mels, n_state, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(n_state, n_state, kernel_size=3, stride=2, padding=1)
        self.register_buffer("positional_embedding", sinusoids(n_ctx, n_state))
        self.blocks = nn.ModuleList(ResidualAttentionBlock(n_state, n_head) for _ in range(n_layer))
        self.ln_post = LayerNorm(n_state)

    def forward(self, mel: Tensor) -> Tensor:
        """mel [B, n_mels, T] with T <= 2·n_ctx (even T: T/2 output frames) -> [B, ceil(T/2), D]."""
        n_ctx = self.positional_embedding.shape[0]
        if mel.shape[-1] > 2 * n_ctx:
            raise ValueError(f"mel has {mel.shape[-1]} frames; at most {2 * n_ctx} fit the encoder")
        x = F.gelu(self.conv1(mel))
        x = F.gelu(self.conv2(x)).transpose(1, 2)
        # Slicing the positional embedding is what lets us encode only the audio we have.
        x = x + self.positional_embedding[: x.shape[1]].to(x.dtype)
        for block in self.blocks:
            x = block(x)[0]
        return self.ln_post(x)


class TextDecoder(nn.Module):
    def __init__(self, n_vocab: int, n_ctx: int, n_state: int, n_head: int, n_layer: int) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(n_vocab, n_state)
        self.positional_embedding = nn.Parameter(torch.empty(n_ctx, n_state))
        self.blocks = nn.ModuleList(
            ResidualAttentionBlock(n_state, n_head, cross_attention=True) for _ in range(n_layer)
        )
        self.ln = LayerNorm(n_state)

    def new_cache(self, audio_features: Tensor) -> KVCache:
        kv = [b.cross_attn.project_kv(audio_features) for b in self.blocks]
        return KVCache([k for k, _ in kv], [v for _, v in kv])

    def forward(
        self, tokens: Tensor, cache: KVCache, weight_layers: frozenset[int] = frozenset()
    ) -> tuple[Tensor, dict[int, Tensor]]:
        """tokens [B, T] (the new ones) -> float32 logits [B, T, V] and {layer: cross weights}."""
        offset, n = cache.length, tokens.shape[1]
        if offset + n > self.positional_embedding.shape[0]:
            raise ValueError(f"{offset + n} tokens exceed the decoder context")
        x = self.token_embedding(tokens) + self.positional_embedding[offset : offset + n]
        mask = None
        if n > 1:  # causal over the new tokens; every cached token is visible
            mask = torch.full((n, offset + n), float("-inf"), device=x.device).triu_(offset + 1)
            mask = mask.to(x.dtype)
        weights: dict[int, Tensor] = {}
        for i, block in enumerate(self.blocks):
            x, w = block(x, mask, cache, i, need_weights=i in weight_layers)
            if w is not None:
                weights[i] = w
        x = self.ln(x)
        return (x @ self.token_embedding.weight.to(x.dtype).T).float(), weights


class Whisper(nn.Module):
    def __init__(self, dims: ModelDimensions, alignment_heads: Sequence[tuple[int, int]] | None = None):
        super().__init__()
        self.dims = dims
        self.encoder = AudioEncoder(
            dims.n_mels, dims.n_audio_ctx, dims.n_audio_state, dims.n_audio_head, dims.n_audio_layer
        )
        self.decoder = TextDecoder(
            dims.n_vocab, dims.n_text_ctx, dims.n_text_state, dims.n_text_head, dims.n_text_layer
        )
        half = dims.n_text_layer // 2  # openai's default: every head of the last half of layers
        self.set_alignment_heads(
            alignment_heads
            or [(layer, h) for layer in range(half, dims.n_text_layer) for h in range(dims.n_text_head)]
        )

    def set_alignment_heads(self, heads: Sequence[tuple[int, int]]) -> None:
        self.alignment_heads = [(int(layer), int(h)) for layer, h in heads]
        bad = [(la, h) for la, h in self.alignment_heads
               if not (0 <= la < self.dims.n_text_layer and 0 <= h < self.dims.n_text_head)]
        if bad:
            raise ValueError(f"alignment heads {bad} do not exist in this model")
        self._alignment_layers = frozenset(layer for layer, _ in self.alignment_heads)

    @property
    def device(self) -> torch.device:
        return self.decoder.positional_embedding.device

    @property
    def dtype(self) -> torch.dtype:
        return self.decoder.positional_embedding.dtype

    @property
    def is_multilingual(self) -> bool:
        return self.dims.n_vocab >= 51865

    @property
    def num_languages(self) -> int:
        return self.dims.n_vocab - 51765 - int(self.is_multilingual)

    def embed_audio(self, mel: Tensor) -> Tensor:
        """mel [B, n_mels, T] or [n_mels, T] -> audio features [B, T/2, D]."""
        mel = mel.to(self.device, self.dtype)
        return self.encoder(mel if mel.dim() == 3 else mel[None])

    def new_cache(self, audio_features: Tensor) -> KVCache:
        return self.decoder.new_cache(audio_features)

    def logits(self, tokens: Tensor, cache: KVCache) -> Tensor:
        """Feed new tokens [B, T] (appended to the cache); float32 logits [B, T, V]."""
        return self.decoder(tokens.to(self.device), cache)[0]

    def logits_and_alignment(self, tokens: Tensor, cache: KVCache) -> tuple[Tensor, Tensor]:
        """Like ``logits``, plus the alignment heads' cross-attention [B, heads, T, audio_frames]."""
        logits, w = self.decoder(tokens.to(self.device), cache, self._alignment_layers)
        return logits, torch.stack([w[layer][:, h] for layer, h in self.alignment_heads], dim=1)

    def forward(self, mel: Tensor, tokens: Tensor) -> Tensor:
        """Uncached reference: encode, then decode all tokens at once."""
        return self.logits(tokens, self.new_cache(self.embed_audio(mel)))


@torch.inference_mode()
def greedy_decode(
    model: Whisper,
    audio_features: Tensor,
    prompt: Sequence[int],
    eot: int,
    suppress_ids: Sequence[int] = (),
    suppress_ids_begin: Sequence[int] = (),
    max_new_tokens: int | None = None,
) -> list[list[int]]:
    """Greedy search as CTranslate2 does it (``suppress_blank``: the begin list on the first step only)."""
    n_ctx = model.dims.n_text_ctx
    max_new = min(n_ctx // 2, n_ctx - len(prompt)) if max_new_tokens is None else max_new_tokens
    batch = audio_features.shape[0]
    cache = model.new_cache(audio_features)
    tokens = torch.tensor([list(prompt)] * batch, device=model.device)
    suppress = torch.tensor(list(suppress_ids), dtype=torch.long, device=model.device)
    begin = torch.tensor(list(suppress_ids_begin), dtype=torch.long, device=model.device)
    out: list[list[int]] = [[] for _ in range(batch)]
    done = torch.zeros(batch, dtype=torch.bool, device=model.device)
    for step in range(max_new):
        logits = model.logits(tokens, cache)[:, -1]
        logits[:, suppress] = float("-inf")
        if step == 0:
            logits[:, begin] = float("-inf")
        nxt = logits.argmax(dim=-1).masked_fill_(done, eot)
        for ids, t in zip(out, nxt.tolist(), strict=True):  # one device sync per step
            if t != eot:
                ids.append(t)
        done |= nxt == eot
        if bool(done.all()):
            break
        tokens = nxt[:, None]
    return out


@functools.lru_cache
def mel_filters_np(n_mels: int, sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT) -> np.ndarray:
    """Slaney-style mel filterbank (librosa's default, htk=False, norm='slaney'): [n_mels, n_fft/2+1]."""
    f_sp, min_log_hz = 200.0 / 3, 1000.0  # linear below 1 kHz, logarithmic above
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0

    def hz_to_mel(f: np.ndarray) -> np.ndarray:
        f = np.asarray(f, dtype=np.float64)
        return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep,
                        f / f_sp)

    def mel_to_hz(m: np.ndarray) -> np.ndarray:
        return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)

    fft_hz = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    hz = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sample_rate / 2), n_mels + 2))
    rising = (fft_hz[None, :] - hz[:-2, None]) / (hz[1:-1] - hz[:-2])[:, None]
    falling = (hz[2:, None] - fft_hz[None, :]) / (hz[2:] - hz[1:-1])[:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    return (weights * (2.0 / (hz[2:] - hz[:-2]))[:, None]).astype(np.float32)  # equal area per band


@functools.lru_cache
def _torch_filters(n_mels: int, device: torch.device) -> tuple[Tensor, Tensor]:
    return torch.from_numpy(mel_filters_np(n_mels)).to(device), torch.hann_window(N_FFT, device=device)


def log_mel_spectrogram(
    audio: np.ndarray | Tensor, n_mels: int = 80, padding: int = 0, device: str | torch.device | None = None
) -> Tensor:
    """Whisper's log-mel of [..., samples] float audio at 16 kHz -> [..., n_mels, frames].

    Works on any chunk (no 30 s padding): frames = (samples + padding) // 160. ``padding=160``
    reproduces faster-whisper's ``FeatureExtractor`` (what CTranslate2 is fed). Normalisation
    (max - 8 dB floor) is over the chunk given, as in Whisper.
    """
    x = torch.as_tensor(audio, dtype=torch.float32)
    if device is not None:
        x = x.to(device)
    if padding:
        x = F.pad(x, (0, padding))
    filters, window = _torch_filters(n_mels, x.device)
    shape = x.shape[:-1]
    stft = torch.stft(x.reshape(-1, x.shape[-1]), N_FFT, HOP_LENGTH, window=window, return_complex=True)
    power = stft[..., :-1].abs() ** 2  # the last frame is dropped, as in Whisper
    log_spec = torch.clamp(filters @ power, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.amax(dim=(-2, -1), keepdim=True) - 8.0)
    return ((log_spec + 4.0) / 4.0).reshape(*shape, n_mels, -1)


def pad_or_trim(mel: Tensor, length: int = N_FRAMES) -> Tensor:
    """Pad (with zeros, as faster-whisper does for CTranslate2) or cut the last axis to ``length``."""
    if mel.shape[-1] >= length:
        return mel[..., :length]
    return F.pad(mel, (0, length - mel.shape[-1]))
