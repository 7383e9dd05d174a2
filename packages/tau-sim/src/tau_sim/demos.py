"""Scripted demonstrations: the expert policy run through the episode loop on seeded episodes, successes and
failures alike. `apps/data generate` and `apps/train`'s first run both make their demonstrations here.

tau-sim does not write datasets (it imports no other tau package): apps pass these episodes to the recorder.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import gymnasium as gym

from tau_sim.episode import Episode
from tau_sim.episode_loop import LoopConfig, collect_episodes
from tau_sim.expert_policy import ExpertConfig, ExpertPolicy
from tau_sim.libero_expert import LiberoExpertPolicy
from tau_sim.registry import make_env, split_task_id
from tau_sim.tabletop_expert import TabletopExpertPolicy
from tau_sim.tabletop_tasks import TABLETOP_SUITES


def expert_policy(tasks: Sequence[str], expert: ExpertConfig, seed: int) -> ExpertPolicy:
    """The scripted expert policy of the tasks' simulator (tabletop or LIBERO; one simulator per call)."""
    tabletop = {split_task_id(task)[0] in TABLETOP_SUITES for task in tasks}
    if len(tabletop) != 1:
        raise ValueError(f"demonstrations come from one simulator at a time; got tabletop and LIBERO tasks {tasks}")
    return TabletopExpertPolicy(expert, seed) if tabletop.pop() else LiberoExpertPolicy(expert, seed)


def generate_demos(
    tasks: Sequence[str],
    episodes_per_task: int,
    seed: int = 0,
    expert: ExpertConfig = ExpertConfig(),
    env_kwargs: dict[str, Any] | None = None,
    state_key: str = "state",
    num_envs: int = 8,
    env_factory: Callable[..., gym.Env] = make_env,
    execution_noise: Sequence[float] = (),
) -> Iterator[Episode]:
    """Yield `episodes_per_task` expert episodes per task id (episode i uses env seed seed + i, the expert's noise
    and mistakes are seeded from `seed` and the episode's layout), with `state_key` as the recorded state. The
    envs are built with privileged_obs=True (the expert needs the object positions). `execution_noise` (std, one or
    per action dim) perturbs the executed actions only: the expert corrects from where it lands and its clean
    actions are recorded (DART), unlike `expert.action_noise`, whose noisy actions are recorded."""
    env_kwargs = {**(env_kwargs or {}), "privileged_obs": True}
    config = LoopConfig(num_envs=num_envs, env_kwargs=env_kwargs, record=True, state_key=state_key,
                        execution_noise=tuple(execution_noise))
    policy = expert_policy(tasks, expert, seed)
    yield from collect_episodes(policy, tasks, episodes_per_task, seed, config, env_factory, desc="demos")


def run_expert_episode(
    task: str, seed: int, config: ExpertConfig = ExpertConfig(), env_kwargs: dict[str, Any] | None = None
) -> Episode:
    """One scripted episode of `task` with env seed `seed` (its randomness seeded from `seed` and the layout)."""
    (episode,) = generate_demos([task], 1, seed=seed, expert=config, env_kwargs=env_kwargs, num_envs=1)
    return episode

