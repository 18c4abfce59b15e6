"""Speaker diarization: one module per backend, chosen by `--diarization-backend`.

Nothing is imported until `load_diarization` is called (torch, NeMo and diart are heavy).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from whisperlivekit.config import Config
    from whisperlivekit.diarization.base import DiarizationModel


def load_diarization(config: Config) -> DiarizationModel:
    """The model `config.diarization_backend` names, loaded once; raises DiarizationUnavailable
    (saying what to install or pass) when its library or weights are missing."""
    name = config.diarization_backend
    if name == "local":
        from whisperlivekit.diarization.clustering import ClusteringOptions
        from whisperlivekit.diarization.local import LocalDiarizationModel, LocalOptions

        options = LocalOptions(
            latency=config.diarization_latency,
            clustering=ClusteringOptions(max_speakers=config.max_speakers),
        )
        return LocalDiarizationModel(options)
    if name == "sortformer":
        from whisperlivekit.diarization.sortformer import SortformerModel

        return SortformerModel(config.diarization_model, latency=config.diarization_latency,
                               max_speakers=config.max_speakers, device=config.device)
    if name == "diart":
        from whisperlivekit.diarization.diart_backend import DiartModel

        return DiartModel(config.diarization_model, latency=config.diarization_latency,
                          max_speakers=config.max_speakers)
    raise ValueError(f"unknown diarization backend {name!r}: use local, sortformer or diart")
