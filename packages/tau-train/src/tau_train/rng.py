"""Capture and restore every random number generator a training process uses (python, numpy, torch, CUDA).

Each process saves its own states; on GPU that is the RNG of the device the process trains on."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def rng_state() -> dict[str, Any]:
    """This process's RNG states as plain Python values and tensors (loadable with torch.load(weights_only=True))."""
    kind, keys, pos, has_gauss, cached_gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": keys.tolist(),
            "pos": pos,
            "has_gauss": has_gauss,
            "cached_gauss": cached_gauss,
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():  # this process's device only: touching every GPU would allocate on each
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore states captured by `rng_state`."""
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["kind"],
            np.asarray(numpy_state["keys"], dtype=np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gauss"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
