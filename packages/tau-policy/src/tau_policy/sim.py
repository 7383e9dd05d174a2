"""A Policy behind tau-sim's Policy protocol (reset(); act(observation, prompts)), duck-typed: no tau-sim import.

tau-sim observations are {"images": uint8 (B, N_cam, H, W, 3), "<state_key>": (B, D), ...}; they are mapped onto
the policy's feature names (camera i of the env -> camera slot i, or by name with `camera_names`) and the state
feature. Flow noise comes from the adapter's own seeded generator, so seeded episodes are reproducible.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from tau_policy.policy import Policy

CAMERA_PREFIX = "observation.images."


class SimPolicy:
    """Acts in tau-sim with `policy`. `state_key`: the env observation entry holding the state (default: the one
    the training data was recorded from); `camera_names`: the env's camera names, to feed the policy's
    observation.images.<name> features by name instead of by position; `guidance_weight` != 1: classifier-free
    guidance toward "Advantage: positive" (advantage-conditioned policies)."""

    def __init__(self, policy: Policy, *, state_key: str | None = None, camera_names: Sequence[str] | None = None,
                 guidance_weight: float = 1.0, seed: int = 0) -> None:
        if guidance_weight != 1.0 and not policy.model.config.advantage_conditioning:
            raise ValueError("guidance_weight != 1 needs a policy trained with advantage conditioning")
        self.policy = policy
        self.state_key = state_key or policy.layout.sim_state_key
        self.camera_names = None if camera_names is None else tuple(camera_names)
        self.guidance_weight = guidance_weight
        self.generator = torch.Generator().manual_seed(seed)

    def reset(self) -> None:
        """Nothing to clear: the policy acts on the current observation only."""

    def features(self, observation: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The tau-sim observation keyed by the policy's feature names."""
        layout = self.policy.layout
        images = np.asarray(observation["images"])
        if images.ndim != 5 or images.dtype != np.uint8 or images.shape[-1] != 3:
            raise ValueError(f"observation['images'] must be uint8 (B, N_cam, H, W, 3), got {images.dtype} "
                             f"{images.shape}")
        if self.state_key not in observation:
            raise KeyError(f"observation has no {self.state_key!r} entry (it has {sorted(observation)}); check "
                           "state_key (tabletop needs privileged_obs=True for 'privileged')")
        if self.camera_names is None:
            if images.shape[1] != len(layout.cameras):
                raise ValueError(f"observation has {images.shape[1]} cameras, the policy has {len(layout.cameras)} "
                                 f"camera slots {layout.cameras}")
            names = layout.cameras
        else:
            if images.shape[1] != len(self.camera_names):
                raise ValueError(f"observation has {images.shape[1]} cameras, camera_names lists "
                                 f"{len(self.camera_names)}: {self.camera_names}")
            names = tuple(CAMERA_PREFIX + name for name in self.camera_names)
        features = {name: images[:, i] for i, name in enumerate(names) if name is not None}
        features[layout.state_feature] = np.asarray(observation[self.state_key])
        return features

    def act(self, observation: Mapping[str, np.ndarray], prompts: Sequence[str],
            action_prefix: np.ndarray | None = None) -> np.ndarray:
        """(B, chunk, action_dim) actions in env units for a vector env's observation and instructions;
        `action_prefix` (B, k, action_dim): the actions tau-sim's latency mode executes meanwhile, all frozen, joined
        as the policy's `rtc` mode says."""
        layout = self.policy.layout
        noise = torch.randn(len(prompts), layout.chunk_size, layout.max_action_dim, generator=self.generator)
        return self.policy.act(self.features(observation), prompts, noise, guidance_weight=self.guidance_weight,
                               action_prefix=action_prefix)
