"""The takeover hook: a scripted expert (standing in for a human operator) taking over an episode from a seeded
random step to its end. The episode loop marks every frame it controls `intervention=True`.

The expert acts from the "privileged" observation entry (object positions), so envs are built with
`privileged_obs=True` when a takeover is configured. Each episode's draw (whether, and from which step) and the
expert's own randomness come from one generator seeded by (episode seed, task id): reproducible whatever the
batching.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from tau_sim.libero_expert import LiberoExpert
from tau_sim.registry import split_task_id
from tau_sim.tabletop_expert import ExpertConfig, TabletopExpert
from tau_sim.tabletop_tasks import TABLETOP_SUITES, get_tabletop_task


@dataclass(frozen=True)
class TakeoverConfig:
    """How often the expert takes over an episode, from which step (a fraction of the step limit), acting how."""

    rate: float = 1.0  # probability that the expert takes over an episode
    window: tuple[float, float] = (0.2, 0.6)  # takeover step, uniform in [lo, hi) x the step limit
    expert: ExpertConfig = field(default_factory=ExpertConfig)

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"TakeoverConfig.rate must be in [0, 1], got {self.rate}")
        lo, hi = self.window
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"TakeoverConfig.window must satisfy 0 <= lo <= hi <= 1, got {(lo, hi)}")


class Takeover:
    """The expert of one episode, which takes over at step `start` (never, when start is None)."""

    def __init__(
        self, config: TakeoverConfig, task: str, instruction: str, seed: int, max_episode_steps: int
    ) -> None:
        self.config, self.task, self.instruction = config, task, instruction
        self.rng = np.random.default_rng([seed, zlib.crc32(task.encode())])
        self.start: int | None = None
        if self.rng.random() < config.rate:
            lo, hi = (int(f * max_episode_steps) for f in config.window)
            self.start = int(self.rng.integers(lo, max(hi, lo + 1)))
        self.expert: TabletopExpert | LiberoExpert | None = None

    def action(self, step: int, privileged: np.ndarray) -> np.ndarray | None:
        """The expert's action at `step` of the episode, or None while the policy is in control."""
        if self.start is None or step < self.start:
            return None
        if self.expert is None:
            self.expert = episode_expert(self.task, self.instruction, self.config.expert, self.rng)
        return self.expert.act(privileged)


def episode_expert(
    task: str, instruction: str, config: ExpertConfig, rng: np.random.Generator
) -> TabletopExpert | LiberoExpert:
    """A fresh scripted expert for one episode of `task`: `act(privileged)` gives its next action."""
    suite, name = split_task_id(task)
    if suite in TABLETOP_SUITES:
        tabletop = TabletopExpert(config)
        tabletop.reset(get_tabletop_task(name), rng)
        return tabletop
    libero = LiberoExpert(config)
    libero.reset(instruction, rng)
    return libero
