"""`TranscriptionEngine`: the models, loaded once and shared by every session.

No module-level state: two engines with different models can live in one process.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import numpy as np

from whisperlivekit.config import Config

if TYPE_CHECKING:
    from whisperlivekit.asr.base import ASRBackend, StreamingPolicy
    from whisperlivekit.asr.batching import BatchScheduler
    from whisperlivekit.asr.model_files import ModelFiles
    from whisperlivekit.audio.vad import SileroVADModel, StreamingVAD
    from whisperlivekit.diarization.base import DiarizationBackend, DiarizationModel

logger = logging.getLogger(__name__)
T = TypeVar("T")


class TranscriptionEngine:
    def __init__(self, config: Config | None = None, **options: Any) -> None:
        base = config or Config()
        self.config = base.replace(**options) if options else base
        from whisperlivekit.server.metrics import Metrics

        self.metrics = Metrics()  # this engine's own registry (GET /metrics); the scheduler reports here
        self.model_files: ModelFiles | None = None
        self.backend: ASRBackend | None = None  # CTranslate2: files, LocalAgreement
        self._backend_lock = threading.Lock()
        self.policy_model: Any = None  # what the policy's sessions share (its kind's `load`)
        self.vad_model: SileroVADModel | None = None
        # One worker: on a CPU, concurrent model calls only fight over the same cores.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wlk-model")
        # Gathers concurrent sessions' model calls into batches on that thread (policies that can).
        self.batcher: BatchScheduler | None = None
        # Diarization: its own model and thread, so that it never queues behind (or delays) the ASR.
        self.diarization_model: DiarizationModel | None = None
        self._diarization_executor: ThreadPoolExecutor | None = None
        # Translation: its backend is loaded on the first session that asks, and runs on its own thread.
        from whisperlivekit.translation.service import TranslationService

        self.translation = TranslationService(self.config)
        self._load()
        if self.config.target_language:  # a server that translates by default loads it with the models
            self.translation.backend()

    def _load(self) -> None:
        from whisperlivekit.asr.model_files import resolve_model

        cfg = self.config
        if cfg.diarization:
            from whisperlivekit.diarization import load_diarization

            self.diarization_model = load_diarization(cfg)
            self._diarization_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wlk-diar")
            if cfg.no_transcription:
                return
        self.model_files = resolve_model(cfg.model, cfg.model_path, cache_dir=cfg.model_cache_dir)
        logger.info("model %s from %s (%s)", cfg.model, self.model_files.path, self.model_files.source)
        self.policy_model = _POLICIES[cfg.backend_policy].load(self)
        if cfg.vac:
            from whisperlivekit.audio.vad import SileroVADModel

            self.vad_model = SileroVADModel()

    def _load_backend(self) -> ASRBackend:
        from whisperlivekit.asr.faster_whisper import FasterWhisperBackend

        files = self.model_files
        assert files is not None
        if files.format != "ctranslate2":
            raise ValueError(
                f"{self.config.backend_policy} streaming and file transcription run on CTranslate2 weights; "
                f"{files.path} is an {files.format} checkpoint (convert it with ct2-transformers-converter)"
            )

        cfg = self.config
        return FasterWhisperBackend(
            files.path,
            device=cfg.device,
            compute_type=cfg.compute_type,
            cpu_threads=cfg.threads,
            beams=cfg.beams,
            task=cfg.task,
        )

    @property
    def ready(self) -> bool:
        if self.config.no_transcription:
            return self.diarization_model is not None
        return self.policy_model is not None

    def file_backend(self) -> ASRBackend:
        """The backend for whole recordings (`wlk transcribe`, REST), loaded on first use if the
        streaming policy does not run on it."""
        with self._backend_lock:
            if self.backend is None:
                self.backend = self._load_backend()
            return self.backend

    def new_policy(self, language: str | None = None, context: str = "") -> StreamingPolicy:
        """A policy for one session; raises ValueError for a language the model cannot do.

        `context`: text said before this stream (a resumed session's transcript), given to the
        decoder after `--init-prompt` as if the model had transcribed it.
        """
        language = self.check_language(language or self.config.language)
        return _POLICIES[self.config.backend_policy].new(self, language, context)

    def check_language(self, language: str) -> str:
        from faster_whisper.tokenizer import _LANGUAGE_CODES

        if language == "auto" or language == "en":
            return language
        if language not in _LANGUAGE_CODES:
            raise ValueError(
                f"unknown language {language!r}: use a Whisper language code (en, de, ...) or auto"
            )
        if self.model_files is not None and not self.model_files.multilingual:
            raise ValueError(f"model {self.config.model} is English-only: it cannot transcribe {language!r}")
        return language

    def new_vad(self) -> StreamingVAD | None:
        if self.vad_model is None:
            return None
        from whisperlivekit.audio.vad import StreamingVAD

        return StreamingVAD(
            self.vad_model,
            min_silence_duration_ms=int(self.config.min_silence_duration * 1000),
            prefix_pad_ms=self.config.vad_prefix_padding * 1000,
        )

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking model call off the event loop; a batchable policy update (`process`,
        `finish` of LocalAgreement) goes through the batch scheduler, batched with other sessions'."""
        from whisperlivekit.asr.batching import steps_of

        if self.batcher is not None and (steps := steps_of(fn, *args)) is not None:
            return await self.batcher.run(steps, owner=getattr(fn, "__self__", None))
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def new_diarization(self) -> DiarizationBackend | None:
        return self.diarization_model.new_session() if self.diarization_model is not None else None

    async def run_diarization(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking diarization call on the diarization thread."""
        assert self._diarization_executor is not None, "diarization is off"
        return await asyncio.get_running_loop().run_in_executor(self._diarization_executor, fn, *args)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self.batcher is not None:
            self.batcher.close()
        self.translation.close()
        if self._diarization_executor is not None:
            self._diarization_executor.shutdown(wait=False, cancel_futures=True)


class PolicyKind(NamedTuple):
    """A streaming policy as the engine sees it: one module in whisperlivekit/asr/ and these two calls."""

    load: Callable[[TranscriptionEngine], Any]  # the model its sessions share, loaded once
    new: Callable[[TranscriptionEngine, str, str], StreamingPolicy]  # one session's state (language, context)


def _load_local_agreement(engine: TranscriptionEngine) -> Any:
    backend = engine.file_backend()  # LocalAgreement runs on the same CTranslate2 model as files
    backend.warmup()
    cfg = engine.config
    if cfg.batch_max_size > 1:
        from whisperlivekit.asr.batching import BatchScheduler

        engine.batcher = BatchScheduler(
            backend,
            engine._executor,
            max_size=cfg.batch_max_size,
            max_wait=cfg.batch_max_wait,
            on_batch=getattr(getattr(engine, "metrics", None), "observe_batch", None),
        )
    return backend


def _prompt(init_prompt: str | None, context: str) -> str | None:
    """`--init-prompt` then the text said before; the policies keep the most recent part that fits."""
    return " ".join(p.strip() for p in (init_prompt, context) if p and p.strip()) or None


def _local_agreement(engine: TranscriptionEngine, language: str, context: str = "") -> StreamingPolicy:
    from whisperlivekit.asr.local_agreement import LocalAgreementPolicy

    cfg = engine.config
    return LocalAgreementPolicy(
        engine.policy_model,
        language=language,
        init_prompt=_prompt(cfg.init_prompt, context),
        buffer_trimming=cfg.buffer_trimming,
        buffer_trimming_sec=cfg.buffer_trimming_sec,
    )


def _load_simulstreaming(engine: TranscriptionEngine) -> Any:
    # oneDNN keeps a compiled primitive per input shape, and a growing buffer is a new shape at every
    # update: its cache grew RSS 650 -> 1370 MB in a minute of audio for a ~9% CPU saving. Read at
    # oneDNN's first use, so it only applies if nothing in this process ran torch before.
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "0")
    import torch

    from whisperlivekit.asr.simulstreaming import load_simulstreaming_model

    cfg, files = engine.config, engine.model_files
    assert files is not None
    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = "float16" if device.startswith("cuda") else "float32"
    shared = load_simulstreaming_model(files.path, device=device, dtype=dtype,
                                       alignment_heads=cfg.alignment_heads)

    def warm_up() -> None:
        # OpenMP thread counts belong to the calling thread: set it on the model thread itself.
        torch.set_num_threads(cfg.cpu_threads)
        # The first forward pays for lazy initialisation; do it before the first session does.
        warm = _simulstreaming(engine, "en", shared=shared)
        warm.insert_audio(np.zeros(16000, dtype=np.float32), 0.0)
        warm.process()
        warm.finish()

    engine._executor.submit(warm_up).result()
    return shared


def _simulstreaming(
    engine: TranscriptionEngine, language: str, context: str = "", shared: Any = None
) -> StreamingPolicy:
    from whisperlivekit.asr.simulstreaming import SimulStreamingOptions, SimulStreamingPolicy

    cfg = engine.config
    options = SimulStreamingOptions(
        frame_threshold=cfg.frame_threshold,
        beams=cfg.beams,
        audio_max_len=cfg.audio_max_len,
        audio_min_len=cfg.audio_min_len,
        init_prompt=_prompt(cfg.init_prompt, context),
        static_init_prompt=cfg.static_init_prompt,
        max_context_tokens=cfg.max_context_tokens,
        never_fire=cfg.never_fire,
        cif_ckpt_path=cfg.cif_ckpt_path,
        language=language,
        task=cfg.task,
    )
    return SimulStreamingPolicy(shared or engine.policy_model, options)


# A policy is one entry here and one module in whisperlivekit/asr/.
_POLICIES: dict[str, PolicyKind] = {
    "localagreement": PolicyKind(_load_local_agreement, _local_agreement),
    "simulstreaming": PolicyKind(_load_simulstreaming, _simulstreaming),
}
