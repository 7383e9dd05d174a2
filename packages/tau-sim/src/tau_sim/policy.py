"""The policy interface tau-sim evaluates: batched observations and prompts in, action chunks out."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Policy(Protocol):
    """Anything with these two methods can be evaluated (an adapter in apps/ or tau-rl wraps a tau-models model).

    `act` gets the vector env's batched observation ({"images": uint8 (B, N_cam, H, W, 3), "state": float32 (B, D),
    ...}) and the B task instructions, and returns float (B, chunk, action_dim) actions in env units; the evaluator
    executes the first `action_steps` of each chunk open-loop before asking again.
    """

    def reset(self) -> None: ...

    def act(self, observation: dict[str, np.ndarray], prompts: list[str]) -> np.ndarray: ...
