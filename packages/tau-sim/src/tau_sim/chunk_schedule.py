"""Which action of which policy chunk the envs execute at each step: open-loop horizon and inference latency.

The policy is asked for a new chunk once the current chunk's index reaches `action_steps` (None: the whole chunk),
and at the latest when only `latency_steps` actions are left. With `latency_steps = k > 0` the answer is not used at
once: the chunk requested at step s (from the observation at step s) takes over at step s + k, from its index k,
while the envs keep executing the old chunk's next k actions (the "action prefix" the policy is committed to;
real-time-chunking policies condition on it). So every chunk after the first runs indices k .. k + action_steps - 1,
and the policy is asked every `action_steps` steps whatever k is. The first chunk of a wave runs from index 0: the
envs wait for it. k = 0 is the usual synchronous execution.
"""

from __future__ import annotations

import numpy as np


class ChunkSchedule:
    """The chunk in execution, its next index, and the chunk that takes over after the latency."""

    def __init__(self, batch: int, action_dim: int, action_steps: int | None, latency_steps: int) -> None:
        self.batch, self.action_dim = batch, action_dim
        self.action_steps, self.latency = action_steps, latency_steps
        self.chunk: np.ndarray | None = None
        self.index = 0
        self.pending: np.ndarray | None = None
        self.wait = 0
        self.fresh = False  # the next action is the first one executed from a newly switched-to chunk

    def _horizon(self) -> int:
        length = self.chunk.shape[1]
        if length <= self.latency:
            raise ValueError(
                f"the policy returned chunks of {length} actions: too short for latency_steps={self.latency}"
            )
        return min(self.action_steps or length, length - self.latency)

    def wants_chunk(self) -> bool:
        """Whether the policy must be asked now (never while an answer is still being waited for)."""
        if self.chunk is None:
            return True
        return self.pending is None and self.index >= self._horizon()

    def prefix(self) -> np.ndarray:
        """(B, k, A): the actions that will run while the next chunk is computed (empty for the first chunk)."""
        if self.chunk is None or self.latency == 0:
            return np.zeros((self.batch, 0, self.action_dim), dtype=np.float32)
        end = self.index + self.latency
        if end > self.chunk.shape[1]:
            raise ValueError(
                f"chunks of {self.chunk.shape[1]} actions are too short to keep executing latency_steps="
                f"{self.latency} actions from index {self.index} while the next chunk is computed"
            )
        return self.chunk[:, self.index : end].copy()

    def receive(self, chunk: np.ndarray) -> None:
        """The policy's answer: executed now (first chunk, or no latency) or after the latency."""
        if self.chunk is None or self.latency == 0:
            self.chunk, self.index, self.fresh = chunk, 0, True
        else:
            self.pending, self.wait = chunk, self.latency

    def next_action(self) -> tuple[np.ndarray, bool]:
        """(B, A) actions for this step, and whether they open a newly switched-to chunk (a chunk boundary)."""
        action, first = self.chunk[:, self.index], self.fresh
        self.fresh = False
        self.index += 1
        if self.pending is not None:
            self.wait -= 1
            if self.wait == 0:
                if self.pending.shape[1] <= self.latency:
                    raise ValueError(
                        f"the policy returned chunks of {self.pending.shape[1]} actions: too short for "
                        f"latency_steps={self.latency}"
                    )
                self.chunk, self.index, self.pending, self.fresh = self.pending, self.latency, None, True
        return action, first
