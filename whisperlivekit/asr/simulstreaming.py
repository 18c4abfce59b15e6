"""SimulStreaming: AlignAtt simultaneous decoding on our PyTorch Whisper.

AlignAtt (Papi et al., 2023, arXiv 2305.11408) as SimulStreaming uses it (Macháček et al., 2025,
arXiv 2506.17077): at every update the whole audio buffer is encoded once and the decoder continues
from the tokens already committed in this buffer (a forced prefix, run in one forward call). While
predicting each new token, the alignment heads' cross-attention says where in the audio the model is
looking; once that is within ``frame_threshold`` encoder frames (20 ms each) of the end of the real
audio, the token is not emitted and decoding waits for more audio. Whatever was emitted is committed
at once: there is no second pass to agree with, which is where the latency gain over LocalAgreement
comes from.

The attended frame: each alignment head's cross-attention row is standardised along time, median-
filtered (width 7, as whisper's timing code) and averaged over heads; its argmax is the frame. It runs
over the whole encoded input, the 1 s zero tail included (a token that looks into the padding is past
the audio too), and the threshold counts from the end of the *real* audio. The original z-scores each
frame over the tokens decoded so far instead; with few tokens that statistic drifts peaks late. On
three 60 s streams (hifitts, LJSpeech, FLEURS: 466 words, 0.5 s chunks, tiny.en) the two gave WERs
within three words of each other per set, ours with ~0.1 s less latency, word times ~0.2 s closer to
a forced alignment, and no per-hypothesis state.

The last-word rule (``never_fire``, ``cif_ckpt_path``) as in the original: after a non-final update
the chunk boundary may have cut the last decoded word. An end-of-word CIF model (Simul-Whisper's,
a ``Linear(n_audio_state, 1)`` over encoder states) says whether the boundary is at a word end; if it
does not "fire", the tokens of the last word are withheld (shown as tentative, re-decoded at the next
update). Without a CIF checkpoint, ``never_fire=False`` (the default) means "always fire": every
emitted token is committed; ``never_fire=True`` means the detector never fires: the last word is
always withheld, which costs about one word of latency and avoids committing a half-heard word.
Either way a word is *output* as committed only once the next word has started (or at ``finish``);
the incomplete last word is ``PolicyOutput.tentative``.

Three rules of ours on top (the original commits whatever the stop rule lets through):
- mid-word stop: when the token the stop held back continues the last word (no leading space), that
  word is cut in two and withheld whatever the fire rule says: forced into later decodes, half a word
  ("tee" of "the killed") becomes a wrong word that cannot be taken back.
- unsure words: a word under ``COMMIT_MIN_PROBABILITY`` within the last ``UNSURE_WAIT_SECONDS`` of
  the audio is withheld, with what follows: a fresh buffer's first word, decoded from a fraction of a
  second, is the usual case ("Thank" for "What", which then derails the whole utterance).
- preview: past the stop, up to ``preview_tokens`` greedy tokens are decoded while attention moves
  forward inside the real audio, and shown as tentative text only. A word then appears ~0.3 s after
  it is spoken instead of ``frame_threshold`` + a chunk later; what is committed does not change.

Buffer and context: past ``audio_max_len`` the audio of the words already output is cut (at the
start of the first word still pending) and their tokens move to the text context, which is given to
the decoder after <|startofprev|> (static prompt first, then the most recent ``max_context_tokens``).
``finish`` decodes to EOT without the stop rule, outputs everything and keeps the context.
Guards: a no-speech probability at <|startoftranscript|> above 0.6 with a mean log-probability under
-1 drops a fresh buffer's tokens (Whisper's silence rule); an n-gram repeated 3 times at the end is cut
to one copy; a word attended 40+ frames before the previous one (re-reading audio) stops the update;
more than 15 tokens per second of buffer discards it. A decoder that keeps stopping on a loop or a
rewind without a new token, 2 s of audio past its last one, lets the prefix go (output, made context,
its audio dropped) and starts afresh; ``finish`` does the same for anything past the tail, so a wrong
prefix cannot swallow the rest of the stream. A fresh buffer whose first words repeat the last ones
output (its audio began inside them) drops them and their audio.
Speed: the prompt and the committed prefix go through the decoder in one call, projecting only the
two positions whose logits are read (half the cost of a 250-token prompt). Nothing else survives an
update: every decoder state depends on the audio through cross-attention, and the encoder is
bidirectional, so each update re-encodes the buffer (only the buffer and a 1 s zero tail: no padding to
30 s; padding to 15 s was tried, see ``TAIL_SECONDS``).
Memory: every update has new tensor shapes, and oneDNN keeps a compiled primitive per shape; the engine
turns that cache off (``ONEDNN_PRIMITIVE_CACHE_CAPACITY=0``: RSS 650 -> 1370 MB in a minute of audio
with it, flat without, ~9% more CPU).

Measured on this project's 2-core shared CPU, tiny.en float32, ``torch.set_num_threads(2)``, medians:
- one update after 0.5 s of new speech: 5 s buffer ~55 ms (encoder 30 + decoder 21), 10 s ~80 ms,
  15 s ~125 ms (78 + 47), 25 s ~180 ms. The encoder is ~60% and grows with the buffer:
  ``audio_max_len=15`` makes a long stream 35% cheaper (WER 12.7% instead of 10.5% below).
- offline simulation (``pytest -m slow tests/test_simulstreaming.py``): 0.5 s chunks of 60 s of
  hifitts_6097 (manifest order, 0.3 s pauses), processing time taken as zero: WER 10.5% (tiny.en
  offline on the same audio, whole file, greedy: 8.8%); commit latency (stream time when committed
  minus the word's end in an offline faster-whisper base alignment) p50 1.06 s, p90 1.44 s. All
  5.5 min of hifitts_6097: WER 7.2%, p50 1.08 s. jfk.wav: WER 0%, p50 1.17 s. Variants on the 60 s:
  never_fire 11.0% / 1.32 s; beams=3 9.4% / 1.06 s; frame_threshold 15: 11.0% / 0.86 s, 40: 8.3% /
  1.36 s.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from whisperlivekit.asr.base import AudioBacklog, AudioBuffer, StreamingPolicy
from whisperlivekit.messages import PolicyOutput, Word

if TYPE_CHECKING:
    import torch
    from faster_whisper.tokenizer import Tokenizer
    from torch import Tensor

    from whisperlivekit.whisper.loading import WhisperMeta
    from whisperlivekit.whisper.model import KVCache, Whisper

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
SAMPLES_PER_FRAME = 320  # one encoder frame = 2 mel frames = 20 ms
FRAME_SECONDS = SAMPLES_PER_FRAME / SAMPLE_RATE
MAX_ENCODER_FRAMES = 1500  # 30 s
# An unpadded buffer makes Whisper loop on its last words; 1 s of zeros fixed it (faster_whisper.py).
# More zeros, up to a 15 s window as LocalAgreement pads, took LJSpeech from 7.5 to 7.2 % WER (random
# updates, six seeds) but turned jfk's opening "my fellow" into "am I fellow", lost the end of jfk in a
# browser upload, and added 0.15 s of latency in real time (benchmarks/README.md, session 6): not kept.
TAIL_SECONDS = 1.0
MAX_BUFFER_SECONDS = 30.0 - TAIL_SECONDS  # the buffer and its tail must fit the 30 s encoder
LANGUAGE_DETECTION_SECONDS = 1.0
LANGUAGE_CONFIDENCE = 0.8  # FLEURS clips open with 1-3 s of near-silence, read as "en" at p 0.4-0.7
LANGUAGE_MAX_WAIT = 10.0
MEDIAN_FILTER_WIDTH = 7
# Whisper's silence rule: both a likely <|nospeech|> and an unsure transcript.
NO_SPEECH_THRESHOLD = 0.6
LOGPROB_THRESHOLD = -1.0
# Token bound per buffer: speech is ~3-8 tokens/s in any language; more is a runaway loop.
TOKENS_PER_SECOND = 15
MIN_TOKEN_BOUND = 20
REPETITIONS = 3  # the same n-gram this many times at the end is a loop
# ...and a phrase of this many tokens twice in a row: a decode of a whole utterance at once (a browser
# upload, a server behind) read jfk's "for your country" on into "you can do for your country you can".
LONG_REPEAT_TOKENS = 5
MAX_NGRAM = 64  # a repeated sentence is a long n-gram
# A word attended this far before the previous word is a loop re-reading the audio (the original's
# rewind_threshold is 200; legit steps back seen here are < 25 frames, punctuation aside; a loop
# that re-read a sentence came back 45).
REWIND_FRAMES = 40
PREVIEW_BACKTRACK_FRAMES = 10
# Audio past the last committed token that a decoder stopping at once on a loop or rewind leaves
# untranscribed before the prefix is let go (see _stalled); at finish, anything past the tail.
STALL_SECONDS = 2.0
MAX_FINISH_RESTARTS = 4
# The most audio one update takes in: a backlog (a fast upload, a server behind) is decoded in steps of
# this much, leaving room in the 30 s window for the audio before it. LJSpeech / hifitts in 30 s bursts
# (benchmarks/simulate.py --chunk 30): one decode 35.3 / 10.3 %, 10 s steps 6.6 / 6.3 % WER.
MAX_STEP_SECONDS = 10.0
TEXT_ROOM = 64  # decoder positions kept free for new tokens when the context is long
# A word below this token probability is not committed while it lies in the last UNSURE_WAIT_SECONDS
# of the audio: more audio may change it; further back, waiting would only add latency. Simulation,
# random updates (benchmarks/README.md, session 7): p 0.3 / 0.5 / 0.6 / 0.7 gave LJSpeech 7.5 / 7.3 /
# 6.8 / 6.9 % WER, hifitts 8.2 / 8.0 / 7.3 / 6.9 %, at ~0.05 s more commit latency per step up.
COMMIT_MIN_PROBABILITY = 0.6
UNSURE_WAIT_SECONDS = 1.5
# Word times from attention peaks, which sit late in a token's audio: calibrated against a forced
# alignment (faster-whisper base, DTW) of 60 s hifitts/LJSpeech streams, median error < 0.1 s.
WORD_START_PAD = 0.3
WORD_END_PAD = 0.0
_NO_SPACE_LANGUAGES = frozenset({"zh", "ja", "th", "lo", "my", "yue"})


@dataclass
class SimulStreamingOptions:
    frame_threshold: int = 25  # encoder frames (20 ms) from the end of the audio where decoding stops
    beams: int = 1
    audio_max_len: float = 30.0  # s of audio kept; past it the committed part is cut (capped at 29 s)
    audio_min_len: float = 0.0  # s of audio before the first update does anything
    init_prompt: str | None = None  # text "said before"; scrolls out of the context as text comes
    static_init_prompt: str | None = None  # always kept at the start of the context (terms, names)
    max_context_tokens: int | None = None  # None: Whisper's prompt cap, n_text_ctx // 2 - 1 (223)
    never_fire: bool = False  # withhold the last word of every update (see the module doc)
    preview_tokens: int = 8  # greedy tokens past the stop point shown as tentative (0: none)
    cif_ckpt_path: str | None = None  # end-of-word CIF checkpoint; absent: the attention rule alone
    language: str | None = None  # None or "auto": detected once from the first second
    task: str = "transcribe"
    device: str = "auto"  # for load_simulstreaming_model
    dtype: str = "float32"  # for load_simulstreaming_model
    threads: int | None = None  # torch.set_num_threads (process-wide!) when given

    def __post_init__(self) -> None:
        if self.beams < 1:
            raise ValueError("beams must be >= 1")
        if self.frame_threshold < 0:
            raise ValueError("frame_threshold must be >= 0")
        if self.audio_max_len <= 1.0:
            raise ValueError("audio_max_len must be > 1 s")


# ------------------------------------------------------------------------------------- shared model
@dataclass
class SimulStreamingModel:
    """What every session shares: the model (never mutated per session) and tokenizers."""

    model: Whisper
    meta: WhisperMeta
    tokenizer_path: Path
    _tokenizers: dict[tuple[str, str], Tokenizer] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def multilingual(self) -> bool:
        return self.model.is_multilingual

    def tokenizer(self, language: str = "en", task: str = "transcribe") -> Tokenizer:
        """faster-whisper's Tokenizer for a language and task, made once and kept."""
        from whisperlivekit.whisper.loading import load_tokenizer

        key = (language, task) if self.multilingual else ("en", "transcribe")
        with self._lock:
            if key not in self._tokenizers:
                self._tokenizers[key] = load_tokenizer(self.tokenizer_path, self.multilingual, *key[::-1])
            return self._tokenizers[key]


def load_simulstreaming_model(
    path: str | Path,
    device: str = "auto",
    dtype: str | torch.dtype | None = "float32",
    alignment_heads: Sequence[tuple[int, int]] | None = None,
) -> SimulStreamingModel:
    """Load once per engine; give the result to every ``SimulStreamingPolicy``.

    ``path``: a CTranslate2 dir, an openai ``.pt`` (with a ``tokenizer.json`` beside it) or a
    transformers dir. ``alignment_heads`` overrides the heads the files give.
    """
    import torch

    from whisperlivekit.whisper.loading import load_model

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = getattr(torch, dtype, None) if isinstance(dtype, str) else dtype
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype {dtype!r}: use float32, float16 or bfloat16")
    path = Path(path)
    tokenizer_path = next(
        (p for p in (path / "tokenizer.json", path.parent / "tokenizer.json") if p.exists()), None
    )
    if tokenizer_path is None:
        raise FileNotFoundError(f"no tokenizer.json in {path} or beside it: Whisper needs its tokenizer")
    model, meta = load_model(path, device=device, dtype=dtype,
                             alignment_heads=list(alignment_heads) if alignment_heads else None)
    return SimulStreamingModel(model, meta, tokenizer_path)


# ---------------------------------------------------------------------------------- pure helpers
def most_attended_frame(attention_row: np.ndarray | Tensor) -> int:
    """Index of the frame a (head-averaged, normalised) attention row peaks on."""
    return int(attention_row.argmax())


def should_stop(attention_row: np.ndarray | Tensor, audio_frames: int, frame_threshold: int) -> bool:
    """AlignAtt's rule: stop when the peak is within ``frame_threshold`` frames of the audio's end.

    ``attention_row`` may cover padding after the ``audio_frames`` real ones: a peak there stops too.
    """
    return most_attended_frame(attention_row) >= audio_frames - frame_threshold


def repetition_cut(
    tokens: Sequence[int], repeats: int = REPETITIONS, max_ngram: int = MAX_NGRAM,
    long_ngram: int = LONG_REPEAT_TOKENS,
) -> int | None:
    """If ``tokens`` end with one n-gram ``repeats`` or more times in a row (twice, for an n-gram of
    ``long_ngram`` tokens or more), the length keeping one copy."""
    tokens = list(tokens)
    for n in range(1, min(max_ngram, len(tokens) // 2) + 1):
        tail, count = tokens[-n:], 1
        while len(tokens) >= (count + 1) * n and tokens[-(count + 1) * n : -count * n] == tail:
            count += 1
        if count >= (2 if n >= long_ngram else repeats):
            return len(tokens) - (count - 1) * n
    return None


def median_filter(x: Tensor, width: int = MEDIAN_FILTER_WIDTH) -> Tensor:
    """Median along the last axis of [..., T] (reflect padding), as whisper.timing does."""
    import torch.nn.functional as F

    if x.shape[-1] <= width // 2:
        return x
    shape = x.shape
    y = F.pad(x.reshape(-1, 1, shape[-1]), (width // 2, width // 2), mode="reflect")
    return y.unfold(-1, width, 1).median(-1).values.reshape(shape)


def attention_rows(weights: Tensor) -> Tensor:
    """Alignment heads' cross-attention [B, heads, frames] -> one row per hypothesis [B, frames].

    Each head is standardised along time (so each weighs the same), median-filtered, then averaged.
    """
    import torch

    weights = weights.float()
    std, mean = torch.std_mean(weights, dim=-1, keepdim=True)
    return median_filter((weights - mean) / std.clamp_min(1e-10)).mean(1)


def decoder_forward(model: Whisper, tokens: Tensor, cache: KVCache, rows: Sequence[int] | None = None
                    ) -> tuple[Tensor, Tensor]:
    """``Whisper.logits_and_alignment`` that projects only ``rows`` (default: the last) on the vocabulary.

    A 250-token prompt spends half its forward in the 51k-way projection of positions whose logits
    nobody reads; this keeps the rest of the decoder as ``TextDecoder.forward`` runs it.
    """
    import torch

    dec = model.decoder
    offset, n = cache.length, tokens.shape[1]
    x = dec.token_embedding(tokens) + dec.positional_embedding[offset : offset + n]
    mask = None
    if n > 1:
        mask = torch.full((n, offset + n), float("-inf"), device=x.device).triu_(offset + 1).to(x.dtype)
    layers = {layer for layer, _ in model.alignment_heads}
    weights: dict[int, Tensor] = {}
    for i, block in enumerate(dec.blocks):
        x, w = block(x, mask, cache, i, need_weights=i in layers)
        if w is not None:
            weights[i] = w
    x = dec.ln(x[:, list(rows) if rows is not None else [-1]])
    logits = (x @ dec.token_embedding.weight.to(x.dtype).T).float()
    return logits, torch.stack([weights[layer][:, h] for layer, h in model.alignment_heads], dim=1)


# ----------------------------------------------------------------------------- end-of-word (CIF)
@functools.lru_cache(maxsize=8)
def load_cif(path: str | None, n_audio_state: int, device: str) -> torch.nn.Linear | None:
    """Simul-Whisper's CIF end-of-word model, or None (logged once per path) if absent or unreadable."""
    import torch

    if not path:
        return None
    if not Path(path).is_file():
        logger.warning("CIF checkpoint %s not found: using the attention rule alone", path)
        return None
    try:
        linear = torch.nn.Linear(n_audio_state, 1)
        linear.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as e:  # a wrong-size or foreign checkpoint must not take the server down
        logger.warning("CIF checkpoint %s unusable (%s): using the attention rule alone", path, e)
        return None
    return linear.to(device).eval()


def fire_at_boundary(features: Tensor, cif: torch.nn.Linear) -> bool:
    """True when CIF integrates to a word end at the last frames of ``features`` [1, T, D].

    Simul-Whisper's rule: weights scaled to sum to the (rounded) number of tokens, damped where one
    frame would hold a whole token; the boundary fires if the last integer crossing is within the
    last two frames.
    """
    import torch

    alphas = torch.sigmoid(cif(features.to(cif.weight.dtype)).squeeze(-1))[0]  # [T]
    if alphas.numel() < 2:
        return False
    alphas = alphas * (torch.round(alphas.sum()) / alphas.sum())
    for _ in range(10):
        if not bool((alphas > 0.999).any()):
            break
        alphas = alphas * 0.5 + 0.5 * alphas.sum() / (alphas != 0).sum() * (alphas != 0)
    integrate = torch.cumsum(alphas[:-1], 0)  # the last frame peaks at any chunk end: ignore it
    integrate = integrate - torch.div(integrate[-1], 0.999, rounding_mode="floor")
    past = (integrate >= 0).nonzero()
    return bool(past.numel()) and int(past[0]) >= features.shape[1] - 2


# --------------------------------------------------------------------------------------- decoding
@dataclass
class _Token:
    id: int
    frame: int  # attended encoder frame, relative to the buffer start
    logprob: float


@dataclass
class _Hypothesis:
    tokens: list[_Token] = field(default_factory=list)
    score: float = 0.0  # sum of log-probabilities
    ended: bool = False  # closed by EOT (whose log-probability is in the score)

    def extend(self, token: _Token) -> _Hypothesis:
        return _Hypothesis([*self.tokens, token], self.score + token.logprob)


class SimulStreamingPolicy(StreamingPolicy):
    """AlignAtt over one session's audio buffer (see the module doc).

    All per-session state (audio, context, committed tokens, caches) lives here; ``shared`` is only
    read. ``options.threads`` calls ``torch.set_num_threads``, which is process-wide: leave it None
    when an engine manages threads.
    """

    def __init__(self, shared: SimulStreamingModel, options: SimulStreamingOptions | None = None) -> None:
        import torch

        self.shared, self.model = shared, shared.model
        self.options = opts = options or SimulStreamingOptions()
        if opts.threads:
            torch.set_num_threads(opts.threads)
        language = None if opts.language in (None, "", "auto") else opts.language
        if not shared.multilingual:
            language = "en"
        self.detected_language: str | None = None  # only what `auto` detected, as the protocol says
        self.tokenizer: Tokenizer | None = shared.tokenizer(language, opts.task) if language else None
        n_ctx = self.model.dims.n_text_ctx
        self.max_context = opts.max_context_tokens if opts.max_context_tokens is not None else n_ctx // 2 - 1
        self.max_seconds = min(opts.audio_max_len, MAX_BUFFER_SECONDS)
        self.cif = load_cif(opts.cif_ckpt_path, self.model.dims.n_audio_state, str(self.model.device))
        self.buffer = AudioBuffer()
        self.backlog = AudioBacklog()  # inserted, not yet in the buffer
        self.static_context: list[int] = []
        self.context: list[int] = []  # committed text tokens that left the buffer (+ init_prompt)
        if self.tokenizer is not None:
            self._init_context()
        self.prefix: list[_Token] = []  # committed tokens of the audio in the buffer
        self.emitted = 0  # prefix tokens already output as words
        self.withheld: list[_Token] = []  # decoded, not committed (last-word rule)
        self.preview: list[_Token] = []  # decoded past the stop point, shown only
        self.tentative: tuple[Word, ...] = ()
        self.last_end = 0.0  # end of the last word output: times never go back
        self._complete = False  # the last decode reached EOT: finish() has nothing to add
        self._stopped_mid_word = False  # the last update stopped inside a word
        self._pieces: dict[int, str] = {}
        self._suppress: tuple[Tensor, Tensor] | None = None

    # -- StreamingPolicy --------------------------------------------------------------------------
    @property
    def pending_seconds(self) -> float:
        return self.buffer.pending_seconds + self.backlog.seconds

    @property
    def buffered_seconds(self) -> float:
        return self.buffer.seconds + self.backlog.seconds

    def insert_audio(self, samples: np.ndarray, start: float) -> None:
        self.backlog.append(samples, start)
        self._complete = False

    def process(self) -> PolicyOutput:
        """Decode the audio inserted since the last call: a backlog longer than ``MAX_STEP_SECONDS``
        (a fast upload, a server behind) goes in steps, as it would have in real time, since one
        decode sees at most 30 s."""
        committed: list[Word] = []
        while True:
            self._take_backlog(MAX_STEP_SECONDS)
            output = self._process_step()
            committed += output.committed
            if not self.backlog:
                return PolicyOutput(tuple(committed), output.tentative)

    def _process_step(self) -> PolicyOutput:
        if not self.buffer.take_pending():
            return PolicyOutput((), self.tentative)
        committed = self._trim()
        if self.buffer.seconds < max(self.options.audio_min_len, FRAME_SECONDS):
            return PolicyOutput(tuple(committed), self.tentative)
        features, audio_frames = self._encode()
        if self.tokenizer is None and not self._detect_language(features, final=False):
            return PolicyOutput(tuple(committed), self.tentative)
        self.preview, self._stopped_mid_word = [], False
        tokens, reason = self._decode(features, audio_frames, final=False)
        tokens = self._drop_repeated_context(tokens)
        if not tokens and self._stalled(reason, audio_frames, STALL_SECONDS):
            return PolicyOutput(tuple(committed + self._restart()), ())
        # A word the stop cut in two would be forced, half-heard, into every later decode.
        if self._stopped_mid_word or not self._boundary_fires(features, audio_frames):
            tokens, self.withheld = self._split_last_word(tokens)
        else:
            self.withheld = []
        tokens, unsure = self._split_unsure(tokens, audio_frames)
        self.withheld = unsure + self.withheld
        self.prefix += tokens
        self._complete = reason == "eot" and not self.withheld
        committed += self._emit(final=False)
        self.tentative = self._tentative_words()
        return PolicyOutput(tuple(committed), self.tentative)

    def finish(self) -> PolicyOutput:
        committed: list[Word] = []
        # The last step is decoded whole (no AlignAtt stop), if it fits the window with the buffer.
        while self.backlog and (self.backlog.seconds > MAX_STEP_SECONDS
                                or self.buffer.seconds + self.backlog.seconds > self.max_seconds):
            self._take_backlog(MAX_STEP_SECONDS)
            committed += self._process_step().committed
        self._take_backlog()
        for _ in range(MAX_FINISH_RESTARTS):
            if len(self.buffer) < SAMPLES_PER_FRAME or self._complete:
                break
            features, audio_frames = self._encode()
            if self.tokenizer is None and not self._detect_language(features, final=True):
                break
            tokens, reason = self._decode(features, audio_frames, final=True)
            self.prefix += self._drop_repeated_context(tokens)
            if not self._stalled(reason, audio_frames, TAIL_SECONDS):
                break
            committed += self._restart()
        committed += self._emit(final=True)
        self._to_context(self.prefix)
        self.prefix, self.emitted, self.withheld, self.preview, self.tentative = [], 0, [], [], ()
        self.buffer.clear()
        self._complete = False
        return PolicyOutput(tuple(committed), ())

    def _stalled(self, reason: str, audio_frames: int, seconds: float) -> bool:
        """The decoder stopped on a loop or a rewind with ``seconds`` of audio after its last token.

        A wrong committed prefix (a loop cut to one copy) can make every later decode re-read it and
        stop at once: without a restart the rest of the stream would never be transcribed.
        """
        if reason not in ("loop", "rewind") or not self.prefix:
            return False
        return (audio_frames - 1 - self._heard_until()) * FRAME_SECONDS > seconds

    def _drop_repeated_context(self, tokens: list[_Token]) -> list[_Token]:
        """A fresh buffer's decode that opens with the last words already output (audio cut inside
        them: a restart, a client reconnecting mid-word) repeats them: drop them and their audio."""
        if self.prefix or not tokens:
            return tokens
        ids = [t.id for t in tokens]
        for n in range(min(len(ids), len(self.context), MAX_NGRAM), 1, -1):
            if self.context[-n:] == ids[:n] and any(self._is_word(i) for i in ids[:n]):
                repeated, rest = tokens[:n], tokens[n:]
                logger.debug("%r repeats the text before it: dropped", self.tokenizer.decode(ids[:n]))
                self._drop_frames(max(t.frame for t in repeated) + 1, rest)
                return rest
        return tokens

    def _heard_until(self) -> int:
        """The last frame the prefix's words were attended at (punctuation peaks wander: not those)."""
        return max((t.frame for t in self.prefix if self._is_word(t.id)), default=self.prefix[-1].frame)

    def _restart(self) -> list[Word]:
        """Output the whole prefix, make it context and drop its audio: decode the rest afresh."""
        assert self.tokenizer is not None
        logger.debug("no progress past %r: restarting", self.tokenizer.decode([t.id for t in self.prefix]))
        cut = self._heard_until() + 1
        words = self._emit(final=True)
        self._to_context(self.prefix)
        self.prefix, self.emitted, self.withheld, self.preview = [], 0, [], []
        self._drop_frames(cut)
        return words

    # -- audio ------------------------------------------------------------------------------------
    def _take_backlog(self, seconds: float = math.inf) -> None:
        """Move up to ``seconds`` of inserted audio into the decoder's buffer."""
        for samples, start in self.backlog.take(seconds):
            if not len(self.buffer):
                self.last_end = max(self.last_end, start)  # a new utterance: no word before its start
            self.buffer.append(samples, start)

    def _encode(self) -> tuple[Tensor, int]:
        """Encoder states of the buffer plus its zero tail, and how many frames hold real audio."""
        import torch

        from whisperlivekit.whisper.model import log_mel_spectrogram

        model = self.model
        with torch.inference_mode():
            audio = self.buffer.samples
            tail = int(TAIL_SECONDS * SAMPLE_RATE)
            mel = log_mel_spectrogram(audio, model.dims.n_mels, padding=tail, device=model.device)
            mel = mel[:, : min(mel.shape[-1] & ~1, 2 * MAX_ENCODER_FRAMES)]  # the conv halves: even
            features = model.embed_audio(mel)
        return features, min(len(self.buffer) // SAMPLES_PER_FRAME, features.shape[1])

    def _trim(self) -> list[Word]:
        """Past ``audio_max_len``, cut the audio of words already output; their tokens become context."""
        if self.buffer.seconds <= self.max_seconds:
            return []
        words: list[Word] = []
        if self.emitted:
            # Cut where the first pending word starts; its tokens stay forced, so a cut a little
            # into it loses nothing, while the output words' audio is gone for good.
            cut = self.prefix[self.emitted - 1].frame + 1
            if self.emitted < len(self.prefix):
                cut = max(cut, self.prefix[self.emitted].frame - round(WORD_START_PAD / FRAME_SECONDS))
            self._to_context(self.prefix[: self.emitted])
            self.prefix, self.emitted = self.prefix[self.emitted :], 0
        elif self.buffer.seconds > MAX_BUFFER_SECONDS:
            # No word boundary in 29 s: output what there is and keep the most recent audio.
            words = self._emit(final=True)
            last = max((t.frame for t in self.prefix), default=-1)
            keep = round(self.max_seconds / 2 / FRAME_SECONDS)
            cut = max(last + 1, len(self.buffer) // SAMPLES_PER_FRAME - keep)
            self._to_context(self.prefix)
            self.prefix, self.emitted = [], 0
        else:
            return []
        cut = self._drop_frames(cut, self.prefix)
        self.withheld = []
        logger.debug("trimmed %.2f s of audio; %d context tokens", cut * FRAME_SECONDS, len(self.context))
        return words

    def _drop_frames(self, cut: int, tokens: Sequence[_Token] = ()) -> int:
        """Drop the buffer's first ``cut`` encoder frames (at most all of it); ``tokens`` keep frames
        relative to the new start. Returns the frames dropped."""
        cut = max(0, min(cut, len(self.buffer) // SAMPLES_PER_FRAME))
        self.buffer.drop_first(cut * SAMPLES_PER_FRAME)
        for t in tokens:
            t.frame = max(0, t.frame - cut)
        return cut

    # -- language and prompt ----------------------------------------------------------------------
    def _detect_language(self, features: Tensor, final: bool) -> bool:
        """Detect once from the language-token logits after <|startoftranscript|>; False: wait.

        From 1 s of audio on, as soon as one language is likely enough (silence before speech gives
        a guess of nothing; a FLEURS clip opens with 4.3 s of it); at the latest after 10 s or at
        ``finish``.
        """
        import torch

        if not final and self.buffer.seconds < LANGUAGE_DETECTION_SECONDS:
            return False
        first = self.shared.tokenizer("en", self.options.task)
        # Whisper's vocabulary puts the language tokens right after <|startoftranscript|>.
        n_languages = self.model.num_languages
        lang_ids = self.shared.meta.lang_ids or list(range(first.sot + 1, first.sot + 1 + n_languages))
        with torch.inference_mode():
            logits = self.model.logits(torch.tensor([[first.sot]]), self.model.new_cache(features))[0, -1]
        probability, best = logits[lang_ids].softmax(-1).max(-1)
        if not final and probability < LANGUAGE_CONFIDENCE and self.buffer.seconds < LANGUAGE_MAX_WAIT:
            return False
        self.detected_language = first.tokenizer.id_to_token(lang_ids[int(best)])[2:-2]
        logger.info("detected language: %s (p=%.2f)", self.detected_language, probability)
        self.tokenizer = self.shared.tokenizer(self.detected_language, self.options.task)
        self._init_context()
        return True

    def _init_context(self) -> None:
        assert self.tokenizer is not None
        encode = self.tokenizer.encode
        opts = self.options
        self.static_context = encode(" " + opts.static_init_prompt.strip()) if opts.static_init_prompt else []
        self.context = encode(" " + opts.init_prompt.strip()) if opts.init_prompt else []

    def _to_context(self, tokens: Sequence[_Token]) -> None:
        self.context += [t.id for t in tokens]
        self.context = self.context[len(self.context) - max(0, self.max_context - len(self.static_context)) :]

    def _prompt(self) -> tuple[list[int], int]:
        """[<|startofprev|> static + context] + sot sequence + <|notimestamps|> + committed prefix,
        and the index of <|startoftranscript|>."""
        tok = self.tokenizer
        assert tok is not None
        head = [*tok.sot_sequence, tok.no_timestamps]
        room = self.model.dims.n_text_ctx - len(head) - len(self.prefix) - TEXT_ROOM - 1
        room = max(0, min(room, self.max_context) - len(self.static_context))
        previous = self.static_context + (self.context[-room:] if room else [])
        previous = [tok.sot_prev, *previous] if previous else []
        return previous + head + [t.id for t in self.prefix], len(previous)

    # -- decoding ---------------------------------------------------------------------------------
    def _suppressed(self) -> tuple[Tensor, Tensor]:
        import torch

        from whisperlivekit.whisper.loading import default_suppress_ids

        if self._suppress is None:
            meta, tok = self.shared.meta, self.tokenizer
            assert tok is not None
            always = meta.suppress_ids or default_suppress_ids(tok)
            begin = meta.suppress_ids_begin or [*tok.encode(" "), tok.eot]
            # Special tokens (sot, languages, timestamps...) are never text; eot stays allowed.
            special = range(tok.eot + 1, self.model.dims.n_vocab)
            device = self.model.device
            self._suppress = (torch.tensor(sorted({*always, *special}), device=device),
                              torch.tensor(sorted(begin), device=device))
        return self._suppress

    def _decode(self, features: Tensor, audio_frames: int, final: bool) -> tuple[list[_Token], str]:
        """Continue the committed prefix on the current audio: the new tokens and why decoding ended
        (``eot``, ``fired``: the AlignAtt stop, ``rewind``, ``loop``, ``limit``).

        Beam search (``beams`` hypotheses) with the AlignAtt stop: decoding ends when ``beams``
        hypotheses have ended with EOT, or (unless ``final``) when the best live hypothesis' next
        token is attended within ``frame_threshold`` of the audio's end; the result is the best
        finished or stopped hypothesis by mean log-probability. ``beams=1`` is greedy search.
        """
        import torch

        model, tok, opts = self.model, self.tokenizer, self.options
        assert tok is not None
        n_beams = opts.beams
        prompt, sot_index = self._prompt()
        bound = MIN_TOKEN_BOUND + int(TOKENS_PER_SECOND * self.buffer.seconds) - len(self.prefix)
        limit = min(bound, model.dims.n_text_ctx - len(prompt))
        suppress, suppress_begin = self._suppressed()
        with torch.inference_mode():
            cache = model.new_cache(features)
            # The whole prompt and the committed tokens in one forward call.
            logits, attn = decoder_forward(model, torch.tensor([prompt], device=model.device), cache,
                                           rows=[sot_index, len(prompt) - 1])
            no_speech = (logits[0, 0].softmax(-1)[tok.no_speech].item()
                         if tok.no_speech is not None and not self.prefix else 0.0)
            logits, rows = logits[:, -1], attn[:, :, -1]
            live, finished = [_Hypothesis()], []
            stopped: _Hypothesis | None = None
            stop_state: tuple[int, Tensor, Tensor] | None = None
            reason = "limit"
            for step in range(max(0, limit)):
                # Where each hypothesis looks while predicting its next token.
                attention = attention_rows(rows)
                frames = [most_attended_frame(row) for row in attention]
                logits[:, suppress] = float("-inf")
                if step == 0 and not self.prefix:
                    logits[:, suppress_begin] = float("-inf")
                logprobs = logits.log_softmax(-1)
                top_lp, top_id = logprobs.topk(n_beams + 1, dim=-1)
                candidates = sorted(
                    ((h.score + lp, i, t, lp) for i, h in enumerate(live)
                     for lp, t in zip(top_lp[i].tolist(), top_id[i].tolist(), strict=True)),
                    key=lambda c: -c[0],
                )
                chosen: list[tuple[int, _Token]] = []
                for score, i, t, lp in candidates:
                    if t == tok.eot:
                        if len(finished) < n_beams:  # EOT counts as a token in the mean log-prob
                            finished.append(_Hypothesis(live[i].tokens, score, ended=True))
                    else:
                        chosen.append((i, _Token(t, min(frames[i], max(audio_frames - 1, 0)), lp)))
                        if len(chosen) == n_beams:
                            break
                if len(finished) >= n_beams or not chosen:
                    reason = "eot"
                    break
                i = chosen[0][0]
                if not final and should_stop(attention[i], audio_frames, opts.frame_threshold):
                    stopped, reason = live[i], "fired"  # the next token lies at the edge: wait
                    stop_state = (i, logits[i], attention[i])
                    self._stopped_mid_word = self._continues_word(chosen[0][1].id)
                    break
                if self._rewinds(live[i], chosen[0][1]):
                    stopped, reason = live[i], "rewind"
                    break
                live = [live[i].extend(token) for i, token in chosen]
                ids = [t.id for t in self.prefix] + [t.id for t in live[0].tokens]
                if (keep := repetition_cut(ids)) is not None:
                    logger.debug("repetition loop cut: %r", tok.decode(ids[keep:]))
                    kept = live[0].tokens[: max(0, keep - len(self.prefix))]
                    stopped, reason = _Hypothesis(kept, sum(t.logprob for t in kept)), "loop"
                    break
                if n_beams > 1:
                    index = torch.tensor([i for i, _ in chosen], device=model.device)
                    cache.reorder(index)
                new = torch.tensor([[token.id] for _, token in chosen], device=model.device)
                logits, attn = decoder_forward(model, new, cache)
                logits, rows = logits[:, -1], attn[:, :, -1]
        if reason == "limit":
            logger.debug("token bound reached: the update is discarded as a runaway loop")
            return [], reason
        pool = finished + ([stopped] if stopped is not None else [])
        result = max(pool, key=lambda h: h.score / max(1, len(h.tokens) + h.ended), default=_Hypothesis())
        tokens = result.tokens
        if tokens and no_speech > NO_SPEECH_THRESHOLD and result.score / len(tokens) < LOGPROB_THRESHOLD:
            logger.debug("no speech (p=%.2f): %r dropped", no_speech, tok.decode([t.id for t in tokens]))
            return [], "eot" if result.ended else reason
        if result is stopped and reason in ("rewind", "loop"):
            tokens = self._drop_unsure_tail(tokens)
        if result is stopped and stop_state is not None and opts.preview_tokens:
            self.preview = self._preview(cache, stop_state, result, audio_frames)
        return tokens, "eot" if result.ended else reason

    def _preview(
        self, cache: KVCache, stop_state: tuple[int, Tensor, Tensor], hypothesis: _Hypothesis,
        audio_frames: int,
    ) -> list[_Token]:
        """Greedy tokens past the AlignAtt stop, up to the end of the real audio: shown as tentative
        text, never committed. Without them a word appears only once it is ``frame_threshold`` old."""
        import torch

        row, logits, attention = stop_state
        model, tok = self.model, self.tokenizer
        assert tok is not None
        suppress = self._suppressed()[0]
        if cache.self_k[0] is not None and cache.self_k[0].shape[0] > 1:
            cache.reorder([row])
        ids = [t.id for t in self.prefix] + [t.id for t in hypothesis.tokens]
        # The audio past the stop is the last ``frame_threshold`` frames: attention that leaves it
        # backwards is the decoder re-reading what it already wrote (a loop), not new words.
        floor = most_attended_frame(attention) - PREVIEW_BACKTRACK_FRAMES
        preview: list[_Token] = []
        with torch.inference_mode():
            for _ in range(self.options.preview_tokens):
                frame = most_attended_frame(attention)
                if frame >= audio_frames:  # looking into the zero tail: past what was heard
                    break
                logits = logits.clone()
                logits[suppress] = float("-inf")
                logprobs = logits.log_softmax(-1)
                token = int(logprobs.argmax())
                if token == tok.eot or (frame < floor and self._is_word(token)):
                    break
                if self._is_word(token):  # and each word after the one before
                    floor = max(floor, frame - PREVIEW_BACKTRACK_FRAMES)
                preview.append(_Token(token, frame, float(logprobs[token])))
                ids.append(token)
                if repetition_cut(ids) is not None:
                    return []
                out, attn = decoder_forward(model, torch.tensor([[token]], device=model.device), cache)
                logits, attention = out[0, -1], attention_rows(attn[:, :, -1])[0]
        return preview

    def _rewinds(self, hypothesis: _Hypothesis, token: _Token) -> bool:
        """Attention jumping far back means re-reading audio already transcribed: a loop."""
        if not self._is_word(token.id):
            return False  # punctuation peaks wander; words do not
        for t in itertools.chain(reversed(hypothesis.tokens), reversed(self.prefix)):
            if self._is_word(t.id):
                if token.frame < t.frame - REWIND_FRAMES:
                    logger.debug("attention went back %d frames: stop", t.frame - token.frame)
                    return True
                return False
        return False

    def _boundary_fires(self, features: Tensor, audio_frames: int) -> bool:
        """Does the chunk end at a word boundary? (the original's always/never/CIF fire)."""
        import torch

        if self.options.never_fire:
            return False
        if self.cif is None:
            return True
        with torch.inference_mode():
            return fire_at_boundary(features[:, :audio_frames], self.cif)

    # -- words ------------------------------------------------------------------------------------
    def _piece(self, token: int) -> str:
        if (piece := self._pieces.get(token)) is None:
            assert self.tokenizer is not None
            piece = self._pieces[token] = self.tokenizer.decode([token])
        return piece

    def _continues_word(self, token: int) -> bool:
        """The token extends the word before it (no leading space, not punctuation)."""
        piece = self._piece(token)
        return self._spaced and not piece.startswith(" ") and any(c.isalnum() for c in piece)

    def _is_word(self, token: int) -> bool:
        """Not punctuation: its attention peak means something."""
        return any(c.isalnum() for c in self._piece(token))

    @property
    def _spaced(self) -> bool:
        return self.tokenizer is None or self.tokenizer.language_code not in _NO_SPACE_LANGUAGES

    def _words(self, tokens: Sequence[_Token]) -> list[list[_Token]]:
        """Group tokens into words: a leading space starts one (no-space scripts: each complete
        character run is one)."""
        words: list[list[_Token]] = []
        spaced = self._spaced
        for t in tokens:
            if not words or (self._piece(t.id).startswith(" ") if spaced else self._complete_text(words[-1])):
                words.append([t])
            else:
                words[-1].append(t)
        return words

    def _complete_text(self, tokens: Sequence[_Token]) -> bool:
        assert self.tokenizer is not None
        return "\ufffd" not in self.tokenizer.decode([t.id for t in tokens])

    def _split_last_word(self, tokens: list[_Token]) -> tuple[list[_Token], list[_Token]]:
        """(committed, withheld): the last word of the new tokens is held back."""
        words = self._words(tokens)
        if len(words) <= 1:
            return [], tokens
        return tokens[: len(tokens) - len(words[-1])], words[-1]

    def _split_unsure(self, tokens: list[_Token], audio_frames: int) -> tuple[list[_Token], list[_Token]]:
        """(committed, withheld): a word the model is unsure of, near enough to the audio's end that
        more audio can change it, is not committed yet, nor is anything after it.

        A fresh buffer's first word, decoded from a fraction of a second, is the usual case: a wrong
        one ("Thank" for "What") is forced into every later decode and can derail the utterance.
        """
        recent = audio_frames - round(UNSURE_WAIT_SECONDS / FRAME_SECONDS)
        kept = 0
        for word in self._words(tokens):
            if self._unsure(word) and max(t.frame for t in word) >= recent:
                break
            kept += len(word)
        return tokens[:kept], tokens[kept:]

    def _drop_unsure_tail(self, tokens: list[_Token]) -> list[_Token]:
        """A decode stopped on a loop or a rewind had begun to re-read: unsure words at its end are
        where the loop began (jfk decoded whole ended "for your country you", p 0.15)."""
        words = self._words(tokens)
        while words and self._unsure(words[-1]):
            tokens = tokens[: len(tokens) - len(words.pop())]
        return tokens

    def _unsure(self, word: Sequence[_Token]) -> bool:
        """A token of the word is below ``COMMIT_MIN_PROBABILITY``; punctuation does not count (an
        unsure comma or full stop changes no word)."""
        lowest = min((t.logprob for t in word if self._is_word(t.id)), default=0.0)
        return lowest < math.log(COMMIT_MIN_PROBABILITY)

    def _emit(self, final: bool) -> list[Word]:
        """Output the committed words that are complete (the next word has begun, or ``final``)."""
        words = self._words(self.prefix[self.emitted :])
        if not final and words and (self._spaced or not self._complete_text(words[-1])):
            words = words[:-1]
        out = []
        for word in words:
            self.emitted += len(word)
            following = self.prefix[self.emitted] if self.emitted < len(self.prefix) else None
            if (w := self._word(word, following)) is not None:
                out.append(w)
                self.last_end = w.end
        return out

    def _word(
        self, tokens: Sequence[_Token], following: _Token | None, floor: float | None = None
    ) -> Word | None:
        assert self.tokenizer is not None
        text = self.tokenizer.decode([t.id for t in tokens]).replace("\ufffd", "")
        if not text.strip():
            return None
        audio_end = self.buffer.end
        floor = self.last_end if floor is None else floor
        frames = [t.frame for t in tokens if self._is_word(t.id)] or [t.frame for t in tokens]
        start = self.buffer.start + min(frames) * FRAME_SECONDS - WORD_START_PAD
        end = self.buffer.start + max(frames) * FRAME_SECONDS + WORD_END_PAD
        if following is not None:  # a word ends before the next begins
            end = min(end, self.buffer.start + following.frame * FRAME_SECONDS)
        start = min(max(start, floor), audio_end)
        end = min(max(end, start), audio_end)
        probability = math.exp(sum(t.logprob for t in tokens) / len(tokens))
        return Word(text, round(start, 3), round(end, 3), round(probability, 4))

    def _tentative_words(self) -> tuple[Word, ...]:
        words, floor = [], self.last_end
        groups = self._words(self.prefix[self.emitted :] + self.withheld + self.preview)
        for i, tokens in enumerate(groups):
            following = groups[i + 1][0] if i + 1 < len(groups) else None
            if (w := self._word(tokens, following, floor)) is not None:
                words.append(w)
                floor = w.end
        return tuple(words)
