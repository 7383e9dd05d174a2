"""Rollout collection: seeded episodes of a policy through tau-sim's episode loop, with success labels and optional
expert takeovers (written as LeRobot v3.0 by tau_policy.record_episodes with tau_rl.returns.recap_columns).

An intervention is an expert (the scripted tabletop expert, standing in for a human operator) taking over an episode
from a random step to its end; every frame it controls is marked `intervention=True` (tau-sim's takeover hook).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Optional

from tau_sim import Episode, LoopConfig, Policy, TakeoverConfig, collect_episodes

ROBOT_TYPE = "tau_sim_tabletop"


@dataclass(frozen=True)
class CollectConfig:
    """How many episodes to roll out per task, on which seeds, and with how many expert takeovers."""

    episodes_per_task: int = 20
    seed: int = 1000  # episode i of a task uses env seed seed + i
    num_envs: int = 8
    action_steps: Optional[int] = None  # actions executed per policy call; None: the whole chunk
    intervention_rate: float = 0.0  # probability that the expert takes over an episode
    intervention_window: tuple[float, float] = (0.2, 0.6)  # takeover step, as a fraction of the step limit
    state_key: str = "state"  # observation entry recorded as observation.state (tabletop: "privileged" for positions)

    def __post_init__(self) -> None:
        if self.episodes_per_task < 1:
            raise ValueError("CollectConfig.episodes_per_task must be >= 1")
        try:
            self.loop()
        except ValueError as error:
            raise ValueError(f"CollectConfig: {error}") from error

    def loop(self, env_kwargs: dict[str, Any] | None = None) -> LoopConfig:
        """tau-sim's episode-loop settings: record every episode, takeovers when intervention_rate > 0."""
        takeover = TakeoverConfig(rate=self.intervention_rate, window=self.intervention_window)
        return LoopConfig(num_envs=self.num_envs, action_steps=self.action_steps, env_kwargs=dict(env_kwargs or {}),
                          record=True, state_key=self.state_key, takeover=takeover if takeover.rate > 0 else None)


def collect_rollouts(policy: Policy, tasks: Sequence[str], config: CollectConfig,
                     env_kwargs: dict[str, Any] | None = None) -> Iterator[Episode]:
    """Yield `episodes_per_task` seeded episodes of `policy` per task id (env seed `config.seed + i`);
    `env_kwargs` go to tau-sim's make_env."""
    yield from collect_episodes(policy, tasks, config.episodes_per_task, config.seed, config.loop(env_kwargs),
                                desc="collect")
