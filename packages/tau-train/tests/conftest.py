"""Shared test helpers for tau-train."""

import os
from pathlib import Path

import pytest


def shared_dir() -> Path:
    """The repo's shared/ folder: $TAU_SHARED_DIR, else found by walking up to the directory holding pants.toml."""
    if os.environ.get("TAU_SHARED_DIR"):
        return Path(os.environ["TAU_SHARED_DIR"])
    for parent in Path(__file__).resolve().parents:
        if (parent / "pants.toml").is_file():
            return parent.parent / "shared"
    raise RuntimeError("cannot locate shared/: set TAU_SHARED_DIR or run inside the repository")


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
