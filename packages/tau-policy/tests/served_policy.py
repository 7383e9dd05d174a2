"""The serving tests' policy: a tiny bundle of robot A shaped like tau-sim's tabletop (cameras top + wrist, state 2,
action 2; conftest.robot_a_bundle), saved once per process and loaded with tau_policy.load_policy, plus robot
frames and openpi requests for it."""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from conftest import robot_a_bundle

from tau_policy import Policy, load_policy

PROMPTS = ("push block 0", "push block 1", "push the red block to the target")
STATE_DIM, ACTION_DIM, CHUNK = 2, 2, 3  # the tabletop's state and action sizes; the tiny model's chunk


@functools.cache
def bundle_folder() -> Path:
    """The bundle folder, written once per process."""
    return robot_a_bundle(Path(tempfile.mkdtemp(prefix="tau-serving-")), STATE_DIM, ACTION_DIM)


def served_policy(seed: int = 0) -> Policy:
    """A fresh load of the bundle: two loads with the same seed draw the same flow noise."""
    return load_policy(bundle_folder(), seed=seed)


class RecordingPolicy:
    """Wraps a policy and keeps every call's observation and actions, in the order the server made them."""

    def __init__(self, policy: Policy) -> None:
        self.policy, self.layout, self.metadata = policy, policy.layout, policy.metadata
        self.calls: list[tuple[dict[str, np.ndarray], list[str], np.ndarray]] = []

    def act(self, observation: Mapping[str, np.ndarray], prompts: Sequence[str],
            noise: torch.Tensor | None = None) -> np.ndarray:
        actions = self.policy.act(observation, prompts, noise)
        self.calls.append(({k: np.array(v) for k, v in observation.items()}, list(prompts), actions.copy()))
        return actions


def sample_frames(n: int, seed: int = 0) -> dict[str, Any]:
    """n distinct robot frames: a 32x40 main and a 16x16 wrist image, a 2-D state, a prompt each."""
    rng = np.random.default_rng(seed)
    return {"image": rng.integers(0, 256, (n, 32, 40, 3), dtype=np.uint8),
            "wrist_image": rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8),
            "state": rng.uniform(0.0, 1.0, (n, STATE_DIM)).astype(np.float32),
            "prompts": [PROMPTS[i % len(PROMPTS)] for i in range(n)]}


def libero_request(frames: dict[str, Any], i: int) -> dict[str, Any]:
    """Frame i as an openpi LIBERO client sends it."""
    return {"observation/image": frames["image"][i], "observation/wrist_image": frames["wrist_image"][i],
            "observation/state": frames["state"][i], "prompt": frames["prompts"][i]}


def reference_actions(policy: Policy, frames: dict[str, Any], order: Sequence[int]) -> np.ndarray:
    """The in-process policy's (chunk, A) actions for frames `order`, one call each, in that order."""
    top, wrist = policy.layout.cameras
    return np.stack([policy.act({top: frames["image"][i][None], wrist: frames["wrist_image"][i][None],
                                 policy.layout.state_feature: frames["state"][i][None]}, [frames["prompts"][i]])[0]
                     for i in order])
