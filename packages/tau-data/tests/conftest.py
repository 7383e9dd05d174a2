"""Shared test helpers: the shared fixtures folder and small datasets written into tmp dirs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(1)


def shared_dir() -> Path:
    """The repo's shared/ folder: $TAU_SHARED_DIR, else found by walking up to the dir holding pants.toml."""
    env = os.environ.get("TAU_SHARED_DIR")
    if env:
        return Path(env)
    for parent in Path(__file__).resolve().parents:
        if (parent / "pants.toml").is_file():
            return parent.parent / "shared"
    raise RuntimeError("shared/ not found: set TAU_SHARED_DIR or run from inside the repository (pants.toml)")


def subprocess_env() -> dict[str, str]:
    """This process's environment with its sys.path as PYTHONPATH, so a child interpreter imports the same code."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}


@pytest.fixture(scope="session")
def lerobot_written() -> Path:
    path = shared_dir() / "datasets" / "lerobot-written"
    if not path.is_dir():
        raise RuntimeError(f"shared LeRobot fixtures missing at {path}")
    return path


def write_synthetic(root: Path, *, fps: int, episodes: list[int], cameras: dict[str, tuple[int, int]],
                    state_dim: int, action_dim: int, robot_type: str, camera_dtype: str = "video",
                    extras: bool = False, noise: int = 0, seed: int = 0) -> Path:
    """A small LeRobot v3.0 dataset written with tau's writer: moving-bar images, ramp state/actions."""
    from tau_data import DatasetWriter

    rng = np.random.default_rng(seed)
    features = {k: {"dtype": camera_dtype, "shape": (h, w, 3)} for k, (h, w) in cameras.items()}
    features["observation.state"] = {"dtype": "float32", "shape": (state_dim,)}
    features["action"] = {"dtype": "float32", "shape": (action_dim,)}
    if extras:
        features["reward"] = {"dtype": "float32", "shape": (1,)}
        features["success"] = {"dtype": "bool", "shape": (1,)}
    writer = DatasetWriter(root, fps=fps, features=features, robot_type=robot_type)
    for ep, length in enumerate(episodes):
        for t in range(length):
            frame = {}
            for k, (h, w) in cameras.items():
                img = np.full((h, w, 3), 40 + 3 * ep, dtype=np.uint8)
                img[:, (t * 2) % w: (t * 2) % w + 6] = (220, 60 + 5 * ep, 120)
                if noise:
                    img = np.clip(img + rng.integers(-noise, noise + 1, img.shape), 0, 255).astype(np.uint8)
                frame[k] = img
            frame["observation.state"] = np.sin(np.arange(state_dim) + 0.1 * t + ep) + rng.normal(0, 0.01, state_dim)
            frame["action"] = np.cos(np.arange(action_dim) * 0.5 + 0.1 * t + ep) * (1 + np.arange(action_dim))
            if extras:
                frame["reward"] = float(t == length - 1)
                frame["success"] = t == length - 1
            writer.add_frame(frame)
        writer.save_episode(task=f"{robot_type} task {ep % 2}", outcome=f"ep{ep}")
    return writer.finalize()


@pytest.fixture(scope="session")
def robot_a(tmp_path_factory) -> Path:
    """2 cameras 64x64 AV1, state 8 / action 7, 30 fps, 4 episodes."""
    return write_synthetic(tmp_path_factory.mktemp("a") / "robot_a", fps=30, episodes=[30, 25, 40, 20],
                           cameras={"observation.images.front": (64, 64), "observation.images.wrist": (64, 64)},
                           state_dim=8, action_dim=7, robot_type="arm_a", extras=True)


@pytest.fixture(scope="session")
def robot_b(tmp_path_factory) -> Path:
    """1 camera 48x80 stored as PNG in the parquet, state 14 / action 14, 50 fps, 3 episodes."""
    return write_synthetic(tmp_path_factory.mktemp("b") / "robot_b", fps=50, episodes=[60, 45, 50],
                           cameras={"observation.images.top": (48, 80)}, state_dim=14, action_dim=14,
                           robot_type="bimanual_b", camera_dtype="image", seed=1)
