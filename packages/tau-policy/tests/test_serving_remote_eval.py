"""Remote evaluation: tau-sim's evaluate acting through the policy server gives the local evaluation's episodes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from served_policy import served_policy
from tau_sim import EvalConfig, evaluate

from tau_policy import SimPolicy
from tau_policy.serving import PRESETS, PolicyServer, RemotePolicy, ServerThread

TASKS = ["tabletop/push_red_to_target", "tabletop/push_blue_to_target"]


class ChunkLog:
    """Passes a tau-sim policy through, keeping every action chunk it returned."""

    def __init__(self, policy: Any) -> None:
        self.policy, self.chunks = policy, []

    def reset(self) -> None:
        self.policy.reset()

    def act(self, observation: dict[str, np.ndarray], prompts: list[str]) -> np.ndarray:
        chunk = self.policy.act(observation, prompts)
        self.chunks.append(np.array(chunk))
        return chunk


def episodes(policy: Any, num_envs: int) -> tuple[list[tuple[str, int, bool, int]], list[np.ndarray]]:
    log = ChunkLog(policy)
    config = EvalConfig(episodes_per_task=2, seed=11, num_envs=num_envs, action_steps=2, videos_per_task=0,
                        env_kwargs={"max_episode_steps": 30})
    summary = evaluate(log, TASKS, config)
    return [(e["task"], e["seed"], e["success"], e["length"]) for e in summary["episodes"]], log.chunks


@pytest.mark.parametrize("keys", ["tau-sim", "libero"])
def test_remote_evaluation_matches_local_evaluation(keys: str) -> None:
    local, local_chunks = episodes(SimPolicy(served_policy(), seed=0), num_envs=1)
    server = PolicyServer(served_policy(), PRESETS[keys], port=0)
    with ServerThread(server), RemotePolicy(server.url) as remote:
        served, served_chunks = episodes(remote, num_envs=1)
    assert served == local and len(local) == 4
    assert len(served_chunks) == len(local_chunks)
    for got, expected in zip(served_chunks, local_chunks, strict=True):
        np.testing.assert_array_equal(got, expected)
