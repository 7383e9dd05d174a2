"""The one recorded-episode type of tau: what evaluation, demonstrations and RECAP rollouts record.

Row t holds the observation before action t and the action then executed; per-frame extras (the reward and
success flag returned after action t, ...) are arrays of the same length. Recorders (tau-policy's
`record_episodes`) duck-type this class, so keep the field names stable.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Episode:
    """One episode of one task; `intervention[t]` says an expert (the takeover hook), not the policy, chose action t."""

    task: str  # task id, e.g. "tabletop/push_red_to_target"
    instruction: str  # the language instruction
    seed: int
    success: bool
    images: np.ndarray  # uint8 (T, N_cam, H, W, 3)
    state: np.ndarray  # float32 (T, D): the observation entry named by the loop's state_key
    actions: np.ndarray  # float32 (T, A): as executed, i.e. after clipping to the action space
    camera_names: tuple[str, ...]
    fps: int
    intervention: np.ndarray  # bool (T,)
    extras: dict[str, np.ndarray] = field(default_factory=dict)  # per-frame (T, ...): "reward", "is_success"

    def __len__(self) -> int:
        return len(self.actions)
