"""Rewards and normalised returns of RECAP: -1 per step until success, a large penalty on failure, scaled to [-1, 0].

The value model predicts the normalised return-to-go of every frame, so success in fewer steps reads as a higher
value and any failure reads as a value close to -1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from tau_policy import episode_labels


@dataclass(frozen=True)
class ReturnConfig:
    """`failure_penalty` is added (negated) on the last step of a failed episode; returns are divided by
    `max_episode_steps + failure_penalty`, the most negative return possible, so they lie in [-1, 0]."""

    max_episode_steps: int = 100
    failure_penalty: float = 1000.0

    def __post_init__(self) -> None:
        if self.max_episode_steps < 1:
            raise ValueError(f"ReturnConfig.max_episode_steps must be >= 1, got {self.max_episode_steps}")
        if not self.failure_penalty >= 0:
            raise ValueError(f"ReturnConfig.failure_penalty must be >= 0, got {self.failure_penalty}")

    @property
    def normaliser(self) -> float:
        return float(self.max_episode_steps + self.failure_penalty)


def episode_rewards(length: int, success: bool, failure_penalty: float) -> np.ndarray:
    """Per-step rewards (float64, (length,)): -1 each step, plus -failure_penalty on the last step of a failure."""
    if length < 1:
        raise ValueError(f"an episode needs at least one step, got length {length}")
    rewards = np.full(length, -1.0)
    if not success:
        rewards[-1] -= failure_penalty
    return rewards


def recap_columns(episode: Any, failure_penalty: float) -> dict[str, np.ndarray]:
    """The per-frame columns RECAP reads from a recorded episode (tau_policy.record_episodes' `extras`):
    `reward`, `success` (the episode's label) and `intervention`."""
    rewards = episode_rewards(len(episode.actions), bool(episode.success), failure_penalty).astype(np.float32)
    return {"reward": rewards, **episode_labels(episode)}


def frame_rewards(episode_index: np.ndarray, success: np.ndarray, config: ReturnConfig) -> np.ndarray:
    """Normalised per-step reward of every frame of a flat frame table (`success` per frame, the episode's label):
    the rewards whose n-step sums the advantages use, on the scale of `frame_returns`."""
    success = np.asarray(success, dtype=bool).reshape(-1)
    rewards = [episode_rewards(stop - start, bool(success[start]), config.failure_penalty)
               for start, stop in episode_bounds(episode_index)]
    return (np.concatenate(rewards) if rewards else np.zeros(0)) / config.normaliser


def returns_to_go(rewards: np.ndarray) -> np.ndarray:
    """Undiscounted return from each step to the end of the episode: G_t = sum_{k>=t} r_k."""
    return np.cumsum(np.asarray(rewards, dtype=np.float64)[::-1])[::-1].copy()


def normalised_returns(length: int, success: bool, config: ReturnConfig) -> np.ndarray:
    """Return-to-go of each step of one episode divided by the normaliser, in [-1, 0] (float64, (length,))."""
    if length > config.max_episode_steps:
        raise ValueError(f"episode of {length} steps is longer than ReturnConfig.max_episode_steps="
                         f"{config.max_episode_steps}; raise max_episode_steps so returns stay in [-1, 0]")
    return returns_to_go(episode_rewards(length, success, config.failure_penalty)) / config.normaliser


def frame_returns(episode_index: np.ndarray, success: np.ndarray, config: ReturnConfig) -> np.ndarray:
    """Normalised return of every frame of a flat frame table whose episodes are contiguous runs of `episode_index`;
    `success` is per frame (the episode's label repeated) or per episode in order of appearance."""
    bounds = episode_bounds(episode_index)
    success = np.asarray(success, dtype=bool).reshape(-1)
    if len(success) == len(episode_index):
        success = success[[start for start, _ in bounds]]
    elif len(success) != len(bounds):
        raise ValueError(f"success has {len(success)} entries; expected one per frame ({len(episode_index)}) or per "
                         f"episode ({len(bounds)})")
    out = np.empty(len(episode_index))
    for (start, stop), ok in zip(bounds, success):
        out[start:stop] = normalised_returns(stop - start, bool(ok), config)
    return out


def episode_bounds(episode_index: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) of each episode in a flat frame table; each episode must be one contiguous run of rows."""
    episode_index = np.asarray(episode_index).reshape(-1)
    if len(episode_index) == 0:
        return []
    starts = np.flatnonzero(np.diff(episode_index) != 0) + 1
    starts = np.concatenate([[0], starts])
    stops = np.concatenate([starts[1:], [len(episode_index)]])
    values, counts = np.unique(episode_index[starts], return_counts=True)
    if np.any(counts > 1):
        raise ValueError("episode_index must hold each episode as one contiguous run of frames; episode(s) "
                         f"{values[counts > 1].tolist()} appear in several runs")
    return [(int(a), int(b)) for a, b in zip(starts, stops)]
