"""Advantage conditioning of the policy: which frames are labelled "positive", and how the model is configured.

The prompt text ("Advantage: positive/negative"), the training-time conditioning dropout and classifier-free
guidance at inference live in tau-models' PiModel (`advantage_conditioning`, `advantage_dropout`,
`sample_actions(guidance_weight=...)`); tau-rl decides the labels and the settings.

Modes:
- "conditioned": a frame is positive when its advantage is above the iteration's threshold (frames an expert
  controlled count as positive when `interventions_positive`); a `dropout` fraction of training samples drops the
  indicator, so one network is both the conditioned and the unconditioned policy (needed for guidance).
- "positive": every frame is labelled positive and nothing is dropped (OpenTau's "advantage: on" fine-tuning).
At inference the policy is always asked for "positive" (with guidance weight w; w = 1 is the conditioned model).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

ConditioningMode = Literal["conditioned", "positive"]
CONDITIONING_MODES: tuple[str, ...] = ("conditioned", "positive")


def check_mode(mode: str) -> None:
    if mode not in CONDITIONING_MODES:
        raise ValueError(f"advantage conditioning mode must be one of {CONDITIONING_MODES}, got {mode!r}")


def advantage_labels(advantages: np.ndarray, threshold: float, intervention: np.ndarray, mode: ConditioningMode,
                     interventions_positive: bool = True) -> np.ndarray:
    """Per-frame "advantage_positive" labels (bool) for training the policy."""
    check_mode(mode)
    advantages = np.asarray(advantages, dtype=np.float64)
    if mode == "positive":
        return np.ones(len(advantages), dtype=bool)
    labels = advantages > threshold
    if interventions_positive:
        labels |= np.asarray(intervention, dtype=bool)
    return labels


def model_conditioning(mode: ConditioningMode, dropout: float = 0.3) -> dict[str, Any]:
    """PiConfig fields for a policy trained in `mode`: conditioning on, dropout only in "conditioned" mode."""
    check_mode(mode)
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"conditioning dropout must lie in [0, 1), got {dropout}")
    return {"advantage_conditioning": True, "advantage_dropout": dropout if mode == "conditioned" else 0.0}
