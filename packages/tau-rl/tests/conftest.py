"""Shared test helpers for tau-rl."""

from __future__ import annotations

import os
from pathlib import Path

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
