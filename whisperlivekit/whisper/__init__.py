"""A compact PyTorch Whisper for the SimulStreaming (AlignAtt) policy.

Import the submodules directly (they import torch):
``from whisperlivekit.whisper.loading import load_model`` and
``from whisperlivekit.whisper.model import Whisper, log_mel_spectrogram``.
"""
