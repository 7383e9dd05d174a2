"""The policy interface tau-sim runs: batched observations and prompts in, action chunks out."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Policy(Protocol):
    """Anything with these two methods can be run (an adapter in tau-policy or tau-rl wraps a tau-models model).

    `act` gets the vector env's batched observation ({"images": uint8 (B, N_cam, H, W, 3), "state": float32 (B, D),
    ...}) and the B task instructions, and returns float (B, chunk, action_dim) actions in env units; the loop
    executes them open-loop (`action_steps`, `latency_steps`) before asking again. `reset()` is called at the start
    of every wave of episodes.

    Optional keyword: a policy whose `act` accepts `action_prefix` (or **kwargs) is also given a float32
    (B, k, action_dim) array: the actions the envs will execute while this call "computes" (k = latency_steps;
    k = 0, an empty array, at a wave's first call or without latency). Index j of the returned chunk is aligned with
    prefix[:, j] (both are the action at the same future step), and the loop executes the new chunk from index k on
    (a wave's first chunk from index 0); real-time-chunking policies condition on the prefix so the two chunks join
    smoothly.
    """

    def reset(self) -> None: ...

    def act(self, observation: dict[str, np.ndarray], prompts: list[str]) -> np.ndarray: ...
