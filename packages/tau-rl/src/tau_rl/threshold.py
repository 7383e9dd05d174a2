"""The advantage threshold picked automatically so that a target fraction of frames count as "positive".

OpenTau prints percentiles and leaves the choice to the user; RECAP here takes the (1 - fraction) quantile and
records the threshold and the fraction actually reached next to the advantages.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class AdvantageThreshold:
    """A frame is positive when its advantage is strictly above `threshold`."""

    threshold: float
    target_positive_fraction: float
    positive_fraction: float
    num_frames: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def choose_threshold(advantages: np.ndarray, positive_fraction: float = 0.3) -> AdvantageThreshold:
    """The threshold leaving the top `positive_fraction` of advantages above it (fewer when values tie)."""
    adv = np.sort(np.asarray(advantages, dtype=np.float64).reshape(-1))
    if not 0.0 < positive_fraction < 1.0:
        raise ValueError(f"positive_fraction must lie strictly between 0 and 1, got {positive_fraction}")
    if len(adv) == 0:
        raise ValueError("cannot choose an advantage threshold from zero frames")
    if not np.all(np.isfinite(adv)):
        raise ValueError("advantages contain NaN or inf")
    num_positive = int(round(positive_fraction * len(adv)))
    threshold = float(adv[len(adv) - num_positive - 1]) if num_positive < len(adv) else float(adv[0]) - 1.0
    reached = float(np.mean(adv > threshold))
    return AdvantageThreshold(threshold=threshold, target_positive_fraction=float(positive_fraction),
                              positive_fraction=reached, num_frames=len(adv))


def is_positive(advantages: np.ndarray, threshold: float) -> np.ndarray:
    """Boolean per frame: advantage strictly above the threshold."""
    return np.asarray(advantages, dtype=np.float64) > threshold
