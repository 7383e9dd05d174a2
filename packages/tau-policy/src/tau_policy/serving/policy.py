"""What the server needs of a policy: tau_policy.Policy's `act`, `layout` and `metadata` (CONTRACTS.md), as a Protocol
(so tests and wrappers around a Policy can be served too)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from tau_policy.layout import PolicyLayout


def camera_features(layout: PolicyLayout) -> list[str]:
    """The camera features the policy reads, in slot order (slots the robot lacks, None, are left out)."""
    return [camera for camera in layout.cameras if camera is not None]


class ServablePolicy(Protocol):
    """Acts on a batch of observations keyed by the policy's own feature names; actions in robot units."""

    layout: PolicyLayout
    metadata: Mapping[str, Any]  # JSON-able: layout and provenance, sent to every client on connect

    def act(self, observation: Mapping[str, np.ndarray], prompts: Sequence[str], noise: Any = None) -> np.ndarray:
        """uint8 (B, H, W, 3) per camera feature and float (B, D) state -> float32 (B, chunk, action_dim)."""
        ...
