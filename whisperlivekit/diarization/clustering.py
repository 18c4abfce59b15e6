"""Incremental speaker clustering: each window's local speakers are matched to global speakers.

A global speaker is the running mean of the embeddings attributed to it. In one window, two local
speakers can never map to the same global speaker (a constrained assignment, as in diart), and a
new global speaker is only created from a long enough stretch of clean speech, so a short noisy
embedding cannot invent a speaker. Ids are 1, 2, ... in order of creation, and never change.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClusteringOptions:
    max_speakers: int = 8
    new_speaker_distance: float = 0.5  # cosine distance past which a local speaker is someone new
    min_new_speaker_seconds: float = 1.0  # clean speech needed to create a speaker
    min_update_seconds: float = 1.0  # clean speech needed to move a centroid
    # Only a confident match moves a centroid: a window whose local speaker mixes two voices would
    # otherwise drag one speaker towards the other until they swap.
    max_update_distance: float = 0.5


class OnlineClustering:
    def __init__(self, options: ClusteringOptions | None = None) -> None:
        self.options = options or ClusteringOptions()
        self._sums: list[np.ndarray] = []  # per global speaker: sum of unit embeddings

    @property
    def num_speakers(self) -> int:
        return len(self._sums)

    def centroids(self) -> np.ndarray:
        if not self._sums:
            return np.zeros((0, 0), dtype=np.float32)
        return _unit(np.stack(self._sums))

    def assign(self, embeddings: np.ndarray, seconds: list[float]) -> list[int]:
        """Global ids (1-based) for the local speakers of one window, in the order given.

        `embeddings`: (local speakers, dim); `seconds`: the clean speech each embedding comes from.
        Local speakers should be ordered by first activity, so that new ids follow the timeline.
        """
        from scipy.optimize import linear_sum_assignment

        opts = self.options
        count = len(embeddings)
        if count == 0:
            return []
        unit = _unit(np.asarray(embeddings, dtype=np.float64))
        ids: list[int | None] = [None] * count
        created: set[int] = set()
        if self._sums:
            distance = 1.0 - unit @ self.centroids().T
            rows, cols = linear_sum_assignment(distance)
            for row, col in zip(rows, cols, strict=True):
                if distance[row, col] < opts.new_speaker_distance:
                    ids[row] = int(col) + 1
        for local in range(count):
            if ids[local] is not None:
                continue
            room = self.num_speakers < opts.max_speakers
            if room and (not self._sums or seconds[local] >= opts.min_new_speaker_seconds):
                self._sums.append(np.zeros(unit.shape[1]))
                self._sums[-1] += unit[local]  # a new speaker starts from this embedding whatever its length
                ids[local] = self.num_speakers
                created.add(local)
                continue
            # Too short to be trusted as someone new (or no room): the nearest speaker not yet taken.
            distance = 1.0 - self.centroids() @ unit[local]
            taken = {i for i in ids if i is not None}
            order = [int(i) + 1 for i in np.argsort(distance)]
            ids[local] = next((i for i in order if i not in taken), order[0])
        final = [int(i) for i in ids if i is not None]
        for local, speaker in enumerate(final):
            close = 1.0 - float(unit[local] @ self.centroids()[speaker - 1]) <= opts.max_update_distance
            if local not in created and seconds[local] >= opts.min_update_seconds and close:
                self._sums[speaker - 1] += unit[local]
        return final


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-9)
