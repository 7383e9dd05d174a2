"""Sampling weights of RECAP's policy fine-tuning: how often the demonstrations and the positive frames are drawn."""

from __future__ import annotations

import numpy as np


def group_weights(frames: list[int], demo: list[bool], positive: list[bool], demo_fraction: float | None,
                  positive_fraction: float | None) -> list[float]:
    """Sampling weights of groups of frames (the positive and the negative frames of each source): demonstrations
    get `demo_fraction` of the samples and, within the demonstrations and within the rollouts alike, positive frames
    get `positive_fraction`; each share is spread over its frames (None, or an empty side: by frames)."""
    demo, positive = np.asarray(demo, dtype=bool), np.asarray(positive, dtype=bool)
    weights = _share(np.asarray(frames, dtype=np.float64), demo, demo_fraction)
    for part in (demo, ~demo):
        total = weights[part].sum()
        if total > 0:
            weights[part] = total * _share(weights[part], positive[part], positive_fraction)
    return weights.tolist()


def _share(weights: np.ndarray, inside: np.ndarray, fraction: float | None) -> np.ndarray:
    """`weights` rescaled to sum to 1 with `fraction` of it on the `inside` entries (unchanged when no fraction is
    set or one side has no weight)."""
    inner, outer = weights[inside].sum(), weights[~inside].sum()
    if fraction is None or inner == 0 or outer == 0:
        return weights / max(inner + outer, 1e-300)
    return np.where(inside, weights * fraction / inner, weights * (1.0 - fraction) / outer)
