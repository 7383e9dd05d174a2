"""Rollout collection: seeded episodes of a policy in tau-sim, with success labels and optional expert takeovers
(written as LeRobot v3.0 by tau_policy.record_episodes with tau_rl.returns.recap_columns).

Episodes of one task run in lockstep waves of `num_envs` envs so the policy sees batches. An intervention is an
expert (the scripted tabletop expert, standing in for a human operator) taking over an episode from a random step
to its end; every frame it controls is marked `intervention=True`.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
from tau_sim import ExpertConfig, Policy, TabletopExpert, make_env
from tqdm import tqdm

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
        if self.episodes_per_task < 1 or self.num_envs < 1:
            raise ValueError("CollectConfig.episodes_per_task and num_envs must be >= 1")
        if self.action_steps is not None and self.action_steps < 1:
            raise ValueError(f"CollectConfig.action_steps must be >= 1 or None, got {self.action_steps}")
        if not 0.0 <= self.intervention_rate <= 1.0:
            raise ValueError(f"CollectConfig.intervention_rate must be in [0, 1], got {self.intervention_rate}")
        lo, hi = self.intervention_window
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"CollectConfig.intervention_window must satisfy 0 <= lo <= hi <= 1, got {(lo, hi)}")


@dataclass
class RolloutEpisode:
    """One episode; row t holds the observation before action t."""

    task: str
    instruction: str
    seed: int
    success: bool
    images: np.ndarray  # uint8 (T, N_cam, H, W, 3)
    state: np.ndarray  # float32 (T, D)
    actions: np.ndarray  # float32 (T, A)
    intervention: np.ndarray  # bool (T,)
    camera_names: tuple[str, ...]
    fps: int

    def __len__(self) -> int:
        return len(self.actions)


class _Takeover:
    """The expert of one episode, which takes over at `start` (or never, when start is None)."""

    def __init__(self, env: Any, start: int | None, rng: np.random.Generator) -> None:
        self.env, self.start, self.rng = env.unwrapped, start, rng
        self.expert: TabletopExpert | None = None
        if start is not None and not hasattr(self.env, "privileged_state"):
            raise ValueError(f"expert interventions need the tabletop expert; {type(self.env).__name__} has none")

    def action(self, step: int) -> np.ndarray | None:
        if self.start is None or step < self.start:
            return None
        if self.expert is None:
            self.expert = TabletopExpert(ExpertConfig())
            self.expert.reset(self.env.task, self.rng)
        return self.expert.act(self.env.privileged_state())


def _run_wave(policy: Policy, envs: list[Any], task: str, seeds: Sequence[int], config: CollectConfig,
              ) -> list[RolloutEpisode]:
    """Run len(seeds) episodes in lockstep; envs past the wave size are not used."""
    envs = envs[: len(seeds)]
    observations, instructions, takeovers = [], [], []
    for env, seed in zip(envs, seeds):
        obs, info = env.reset(seed=seed)
        if config.state_key not in obs:
            raise KeyError(f"observation has no {config.state_key!r} entry (it has {sorted(obs)}); check state_key "
                           "and env_kwargs (tabletop needs privileged_obs=True for 'privileged')")
        observations.append(obs)
        instructions.append(str(info["task"]))
        rng = np.random.default_rng([seed, zlib.crc32(task.encode())])
        start = None
        if rng.random() < config.intervention_rate:
            limit = env.unwrapped.max_episode_steps
            lo, hi = config.intervention_window
            start = int(rng.integers(int(lo * limit), max(int(hi * limit), int(lo * limit) + 1)))
        takeovers.append(_Takeover(env, start, rng))
    policy.reset()
    n = len(envs)
    frames: list[dict[str, list]] = [{"images": [], "state": [], "actions": [], "intervention": []} for _ in envs]
    done, success, steps = np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, int)
    while not done.all():
        batch = {key: np.stack([o[key] for o in observations]) for key in observations[0]}
        chunk = np.asarray(policy.act(batch, instructions), dtype=np.float32)
        if chunk.ndim != 3 or chunk.shape[0] != n or not np.all(np.isfinite(chunk)):
            raise ValueError(f"policy.act must return finite (batch={n}, chunk, action_dim) actions, got "
                             f"{chunk.shape}{'' if np.all(np.isfinite(chunk)) else ' with NaN/inf'}")
        horizon = chunk.shape[1] if config.action_steps is None else min(config.action_steps, chunk.shape[1])
        for t in range(horizon):
            for i in np.flatnonzero(~done):
                expert_action = takeovers[i].action(int(steps[i]))
                action = chunk[i, t] if expert_action is None else expert_action.astype(np.float32)
                record = frames[i]
                record["images"].append(observations[i]["images"])
                record["state"].append(observations[i][config.state_key])
                record["actions"].append(np.clip(action, -1.0, 1.0))
                record["intervention"].append(expert_action is not None)
                observations[i], _, terminated, truncated, info = envs[i].step(record["actions"][-1])
                steps[i] += 1
                if terminated or truncated:
                    done[i] = True
                    success[i] = bool(info.get("is_success", terminated))
            if done.all():
                break
    fps = int(envs[0].unwrapped.metadata.get("render_fps", 10))
    cameras = tuple(getattr(envs[0].unwrapped, "camera_names", ()))
    return [
        RolloutEpisode(task=task, instruction=instructions[i], seed=int(seeds[i]), success=bool(success[i]),
                       images=np.stack(f["images"]), state=np.stack(f["state"]).astype(np.float32),
                       actions=np.stack(f["actions"]).astype(np.float32),
                       intervention=np.asarray(f["intervention"], bool), camera_names=cameras, fps=fps)
        for i, f in enumerate(frames)
    ]


def collect_rollouts(policy: Policy, tasks: Sequence[str], config: CollectConfig,
                     env_kwargs: dict[str, Any] | None = None) -> Iterator[RolloutEpisode]:
    """Yield `episodes_per_task` seeded episodes of `policy` per task id (env seed `config.seed + i`);
    `env_kwargs` go to tau-sim's make_env."""
    if not tasks:
        raise ValueError("collect_rollouts needs at least one task id")
    total = len(tasks) * config.episodes_per_task
    with tqdm(total=total, desc="collect", unit="ep") as progress:
        for task in tasks:
            envs = [make_env(task, **(env_kwargs or {})) for _ in range(min(config.num_envs, config.episodes_per_task))]
            try:
                seeds = [config.seed + i for i in range(config.episodes_per_task)]
                for start in range(0, len(seeds), len(envs)):
                    for episode in _run_wave(policy, envs, task, seeds[start : start + len(envs)], config):
                        progress.update(1)
                        yield episode
            finally:
                for env in envs:
                    env.close()
