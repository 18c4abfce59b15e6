"""WhisperLiveKit: self-hosted real-time speech-to-text.

engine = TranscriptionEngine(model="tiny.en")      # models, shared by all sessions
processor = AudioProcessor(engine=engine)          # one per live stream
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from whisperlivekit.config import Config
    from whisperlivekit.engine import TranscriptionEngine
    from whisperlivekit.session import AudioProcessor

__all__ = ["AudioProcessor", "Config", "TranscriptionEngine"]


def __getattr__(name: str) -> Any:
    # Lazy: `import whisperlivekit` must not pull in numpy, PyAV or the model runtimes.
    if name == "TranscriptionEngine":
        from whisperlivekit.engine import TranscriptionEngine

        return TranscriptionEngine
    if name == "AudioProcessor":
        from whisperlivekit.session import AudioProcessor

        return AudioProcessor
    if name == "Config":
        from whisperlivekit.config import Config

        return Config
    raise AttributeError(name)
