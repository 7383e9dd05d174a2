"""Shared test helpers for tau-policy: the shared tiny tokenizer, tiny pi0.5 models, duck-typed episodes,
small two-robot datasets recorded with record_episodes, and a saved single-robot bundle."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from tau_data import DatasetSpec, MixtureConfig, MixtureDataset, NormMode
from tau_models import PiModel, tiny_pi05_config
from tau_policy import PolicyBundle, Provenance, episode_labels, record_episodes

torch.set_num_threads(1)

ROBOT_A, ROBOT_B = "arm_a", "arm_b"
CAMERAS_A = ["observation.images.top", "observation.images.wrist"]
CAMERAS_B = ["observation.images.front"]


def shared_dir() -> Path:
    """The repo's shared/ folder: $TAU_SHARED_DIR, else found by walking up to the dir holding pants.toml."""
    env = os.environ.get("TAU_SHARED_DIR")
    if env:
        return Path(env)
    for parent in Path(__file__).resolve().parents:
        if (parent / "pants.toml").is_file():
            return parent.parent / "shared"
    raise RuntimeError("shared/ not found: set TAU_SHARED_DIR or run from inside the repository (pants.toml)")


def tiny_model(**overrides) -> PiModel:
    """A tiny pi0.5 (chunk 3, padded dims 4) with weights large enough that its outputs depend on the inputs."""
    tokenizer = shared_dir() / "parity" / "pi05_tiny_a" / "tokenizer"
    if not tokenizer.is_dir():
        raise RuntimeError(f"shared tiny tokenizer missing at {tokenizer}")
    torch.manual_seed(0)
    config = tiny_pi05_config(**{"tokenizer_name": str(tokenizer), "tokenizer_max_length": 64, "max_state_dim": 4,
                                 "max_action_dim": 4, "chunk_size": 3, "num_inference_steps": 2,
                                 "state_mode": "continuous", **overrides})
    model = PiModel(config)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.1)
    return model.eval()


@dataclass
class Episode:
    """A duck-typed tau_sim.Episode (tau-policy does not import tau-sim)."""

    task: str
    instruction: str
    seed: int
    success: bool
    images: np.ndarray
    state: np.ndarray
    actions: np.ndarray
    camera_names: tuple[str, ...]
    fps: int = 10
    intervention: np.ndarray | None = None
    extras: dict[str, np.ndarray] = field(default_factory=dict)


def make_episode(seed: int, cameras: tuple[str, ...], state_dim: int, action_dim: int, length: int = 6,
                 size: tuple[int, int] = (20, 30), success: bool = True) -> Episode:
    rng = np.random.default_rng(seed)
    return Episode(task="tabletop/push", instruction=f"push block {seed % 2}", seed=seed, success=success,
                   images=rng.integers(0, 256, (length, len(cameras), *size, 3), dtype=np.uint8),
                   state=rng.normal(size=(length, state_dim)).astype(np.float32),
                   actions=rng.uniform(-2, 2, size=(length, action_dim)).astype(np.float32),
                   camera_names=cameras, intervention=np.arange(length) >= length - 2)


def record_robot_a(root: Path, state_dim: int = 3, action_dim: int = 2) -> Path:
    """Robot A's dataset (3 episodes: cameras top + wrist at 20x30, state 3, action 2 by default) at `root`."""
    record_episodes([make_episode(s, ("top", "wrist"), state_dim, action_dim) for s in range(3)], root,
                    robot_type=ROBOT_A, extras=episode_labels)
    return root


def robot_a_bundle(root: Path, state_dim: int = 3, action_dim: int = 2) -> Path:
    """A freshly initialised tiny pi0.5 with the layout and statistics of robot A (of these state / action sizes),
    saved as a bundle in root/policy; root/robot_a holds its dataset."""
    mix = mixture(record_robot_a(root / "robot_a", state_dim, action_dim))
    bundle = PolicyBundle.from_mixture(tiny_model(), mix, provenance=Provenance(source=str(root / "robot_a")))
    return bundle.save(root / "policy")


@pytest.fixture(scope="session")
def two_robots(tmp_path_factory) -> tuple[Path, Path]:
    """Robot A: cameras top + wrist (20x30), state 3, action 2. Robot B: camera front (24x24), state 2, action 3."""
    root = tmp_path_factory.mktemp("robots")
    a, b = record_robot_a(root / "robot_a"), root / "robot_b"
    record_episodes([make_episode(10 + s, ("front",), 2, 3, size=(24, 24)) for s in range(2)], b, robot_type=ROBOT_B)
    return a, b


def mixture(*roots: Path, image_size: int = 16) -> MixtureDataset:
    """The mixture of robot A (and B) at the tiny model's sizes, mean/std normalised."""
    cameras = {"robot_a": CAMERAS_A, "robot_b": CAMERAS_B}
    specs = [DatasetSpec(path=str(r), cameras=cameras[r.name]) for r in roots]
    return MixtureDataset(MixtureConfig(datasets=specs, num_cameras=2, image_size=(image_size, image_size),
                                        max_state_dim=4, max_action_dim=4, chunk_size=3,
                                        norm_modes={"state": NormMode.MEAN_STD, "actions": NormMode.MEAN_STD}))
