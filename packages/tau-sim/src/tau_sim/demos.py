"""Scripted demonstrations: run an expert on seeded episodes and yield them frame by frame, successes and failures.

tau-sim does not write datasets (it imports no other tau package): apps pass these episodes to tau-data's writer.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
from tqdm import tqdm

from tau_sim.eval_report import package_versions
from tau_sim.registry import make_env, suite_of
from tau_sim.tabletop_env import TabletopEnv
from tau_sim.tabletop_expert import ExpertConfig, TabletopExpert

log = logging.getLogger(__name__)


@dataclass
class DemoEpisode:
    """One scripted episode. Row t holds the observation before action t, and the reward and success after it."""

    task: str
    instruction: str
    seed: int
    success: bool
    images: np.ndarray  # uint8 (T, N_cam, H, W, 3)
    state: np.ndarray  # float32 (T, D)
    actions: np.ndarray  # float32 (T, A)
    rewards: np.ndarray  # float32 (T,)
    successes: np.ndarray  # bool (T,)
    camera_names: tuple[str, ...]
    fps: int
    versions: dict[str, str | None] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.actions)

    def frames(self) -> Iterator[dict[str, Any]]:
        """Frames as dicts: images, state, action, reward, success, task (the instruction string)."""
        for t in range(len(self)):
            yield {
                "images": self.images[t],
                "state": self.state[t],
                "action": self.actions[t],
                "reward": float(self.rewards[t]),
                "success": bool(self.successes[t]),
                "task": self.instruction,
            }


ExpertStep = Callable[[], np.ndarray]


def _expert_for(env: gym.Env, config: ExpertConfig, rng: np.random.Generator) -> ExpertStep:
    """A zero-argument function giving the expert's next action for the episode `env` just started."""
    base = env.unwrapped
    if isinstance(base, TabletopEnv):
        expert = TabletopExpert(config)
        expert.reset(base.task, rng)
        return lambda: expert.act(base.privileged_state())
    from tau_sim.libero_expert import LiberoExpert

    libero_expert = LiberoExpert(config)
    libero_expert.reset(base.objects_of_interest[0], rng)
    return lambda: libero_expert.act(base.privileged_state())


def generate_demos(
    tasks: Sequence[str],
    episodes_per_task: int,
    seed: int = 0,
    expert: ExpertConfig = ExpertConfig(),
    env_kwargs: dict[str, Any] | None = None,
    state_key: str = "state",
    env_factory: Callable[..., gym.Env] = make_env,
) -> Iterator[DemoEpisode]:
    """Yield episodes_per_task scripted episodes per task id; episode i uses env seed seed + i; the observation
    entry `state_key` is recorded as the state (tabletop: "privileged" needs env_kwargs privileged_obs=True)."""
    total = len(tasks) * episodes_per_task
    versions = package_versions()
    with tqdm(total=total, desc="demos", unit="ep") as progress:
        for task in tasks:
            env = env_factory(task, **(env_kwargs or {}))
            successes = 0
            try:
                for i in range(episodes_per_task):
                    episode = _run_episode(env, task, seed + i, expert, versions, state_key)
                    successes += episode.success
                    log.info(
                        "demo %s seed %d: success=%s length=%d", task, seed + i, episode.success, len(episode)
                    )
                    progress.update(1)
                    progress.set_postfix(task=suite_of(task), success=f"{successes}/{i + 1}")
                    yield episode
            finally:
                env.close()


def _run_episode(
    env: gym.Env, task: str, seed: int, config: ExpertConfig, versions: dict[str, str | None], state_key: str
) -> DemoEpisode:
    obs, info = env.reset(seed=seed)
    if state_key not in obs:
        raise KeyError(f"observation has no {state_key!r} entry (it has {sorted(obs)}); tabletop needs "
                       "privileged_obs=True for 'privileged'")
    next_action = _expert_for(env, config, np.random.default_rng([seed, zlib.crc32(task.encode())]))
    images, states, actions, rewards, successes = [], [], [], [], []
    while True:
        action = np.asarray(next_action(), dtype=np.float32)
        images.append(obs["images"])
        states.append(obs[state_key])
        actions.append(action)
        obs, reward, terminated, truncated, info = env.step(action)
        rewards.append(reward)
        successes.append(bool(info.get("is_success", terminated)))
        if terminated or truncated:
            break
    base = env.unwrapped
    return DemoEpisode(
        task=task,
        instruction=str(info["task"]),
        seed=seed,
        success=successes[-1],
        images=np.stack(images),
        state=np.stack(states).astype(np.float32),
        actions=np.stack(actions),
        rewards=np.asarray(rewards, dtype=np.float32),
        successes=np.asarray(successes),
        camera_names=tuple(base.camera_names),
        fps=int(base.metadata.get("render_fps", 10)),
        versions=versions,
    )
