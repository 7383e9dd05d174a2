"""What the server needs of a policy: tau_policy.Policy's `act`, `layout` and `metadata` (CONTRACTS.md), as a Protocol."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np


class PolicyLayout(Protocol):
    """The inputs and outputs of a policy: camera feature names in slot order, the state feature, sizes."""

    cameras: Sequence[str]  # e.g. ("observation.images.top", "observation.images.wrist")
    state_feature: str  # e.g. "observation.state"
    state_dim: int
    action_dim: int
    chunk_size: int


class ServablePolicy(Protocol):
    """Acts on a batch of observations keyed by the policy's own feature names; actions in robot units."""

    layout: PolicyLayout
    metadata: Mapping[str, Any]  # JSON-able: layout and provenance, sent to every client on connect

    def act(self, observation: Mapping[str, np.ndarray], prompts: Sequence[str], noise: Any = None) -> np.ndarray:
        """uint8 (B, H, W, 3) per camera feature and float (B, D) state -> float32 (B, chunk, action_dim)."""
        ...
