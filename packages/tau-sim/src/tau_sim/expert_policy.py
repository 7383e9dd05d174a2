"""Scripted experts behind the Policy interface: one expert per sub-env, acting from the "privileged" observation.

Demonstrations are these policies run through the episode loop. Each episode's expert randomness (noise, mistakes)
is seeded from the policy's `seed`, the prompt and the episode's initial privileged state, so fixed episode seeds
give the same episodes whatever the batching.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class ExpertConfig:
    """Imperfection knobs of the scripted experts (tabletop and LIBERO)."""

    action_noise: float = 0.0
    mistake_rate: float = 0.0

    def __post_init__(self) -> None:
        if self.action_noise < 0:
            raise ValueError(f"ExpertConfig.action_noise must be >= 0, got {self.action_noise}")
        if not 0.0 <= self.mistake_rate <= 1.0:
            raise ValueError(f"ExpertConfig.mistake_rate must be in [0, 1], got {self.mistake_rate}")


class StepExpert(Protocol):
    """A per-episode expert: its next action from the privileged state."""

    def act(self, privileged: np.ndarray) -> np.ndarray: ...


class ExpertPolicy:
    """Base class: subclasses build one episode's expert (`new_expert`) and key its initial layout (`layout_key`)."""

    def __init__(self, config: ExpertConfig = ExpertConfig(), seed: int = 0) -> None:
        self.config = config
        self.seed = seed
        self.experts: list[StepExpert] = []

    def reset(self) -> None:
        self.experts = []

    def new_expert(self, prompt: str, rng: np.random.Generator) -> StepExpert:
        raise NotImplementedError

    def layout_key(self, start: np.ndarray) -> int:
        raise NotImplementedError

    def episode_rng(self, prompt: str, start: np.ndarray) -> np.random.Generator:
        """The expert randomness of one episode: from `seed`, the task (prompt) and the initial layout, so episodes
        of different tasks that share an env seed (hence often a layout) still make independent mistakes."""
        return np.random.default_rng([self.seed, self.layout_key(start), zlib.crc32(prompt.encode())])

    def act(self, observation: dict[str, np.ndarray], prompts: Sequence[str]) -> np.ndarray:
        if "privileged" not in observation:
            raise KeyError(
                f"{type(self).__name__} needs the 'privileged' observation: build envs with privileged_obs=True"
            )
        if not self.experts:
            self.experts = [
                self.new_expert(p, self.episode_rng(p, s))
                for p, s in zip(prompts, observation["privileged"], strict=True)
            ]
        actions = [expert.act(p) for expert, p in zip(self.experts, observation["privileged"], strict=True)]
        return np.stack(actions)[:, None, :]
