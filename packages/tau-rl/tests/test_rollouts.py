import functools

import numpy as np
import pytest
from tau_data import LeRobotDataset
from tau_policy import record_episodes
from tau_sim import ExpertConfig, TabletopExpertPolicy

from tau_rl.returns import recap_columns
from tau_rl.rollouts import ROBOT_TYPE, CollectConfig, collect_rollouts

TASK = "tabletop/push_red_to_target"


class RandomPolicy:
    """Uniform random actions in chunks of 4 (a policy that almost never succeeds)."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)

    def reset(self) -> None:
        pass

    def act(self, observation, prompts):
        assert observation["images"].dtype == np.uint8 and len(prompts) == len(observation["state"])
        return self.rng.uniform(-1, 1, size=(len(prompts), 4, 2))


def test_expert_rollouts_succeed_and_round_trip_through_the_writer(tmp_path):
    config = CollectConfig(episodes_per_task=3, seed=5, num_envs=2)
    env_kwargs = {"privileged_obs": True, "image_size": 16}
    episodes = list(collect_rollouts(TabletopExpertPolicy(ExpertConfig()), [TASK], config, env_kwargs))
    assert [e.seed for e in episodes] == [5, 6, 7]
    assert all(e.success for e in episodes) and not any(e.intervention.any() for e in episodes)
    record = record_episodes(episodes, tmp_path / "ds", robot_type=ROBOT_TYPE,
                             extras=functools.partial(recap_columns, failure_penalty=100.0))
    assert record["episodes"] == 3 and record["success_rate"] == 1.0
    ds = LeRobotDataset(tmp_path / "ds")
    assert len(ds) == sum(len(e) for e in episodes)
    np.testing.assert_allclose(ds.columns["action"][: len(episodes[0])], episodes[0].actions)
    assert ds.columns["success"].all()
    item = ds[0]
    assert item["observation.images.top"].shape == (3, 16, 16)
    assert item["task"] == "push the red block onto the green target"


def test_interventions_are_marked_from_the_takeover_step(tmp_path):
    config = CollectConfig(episodes_per_task=4, num_envs=4, intervention_rate=1.0, intervention_window=(0.1, 0.2))
    episodes = list(collect_rollouts(RandomPolicy(), [TASK], config, {"image_size": 16}))
    for episode in episodes:
        start = int(np.argmax(episode.intervention))
        assert 10 <= start < 20
        assert episode.intervention[start:].all() and not episode.intervention[:start].any()
    assert sum(e.success for e in episodes) >= 2  # the expert rescues most episodes
    record_episodes(episodes, tmp_path / "ds", robot_type=ROBOT_TYPE,
                    extras=functools.partial(recap_columns, failure_penalty=100.0))
    ds = LeRobotDataset(tmp_path / "ds")
    assert ds.columns["intervention"].sum() == sum(e.intervention.sum() for e in episodes)
    rewards = ds.columns["reward"].reshape(-1)
    assert set(np.unique(rewards).tolist()) <= {-1.0, -101.0}


def test_bad_policy_output_raises():
    class Broken(RandomPolicy):
        def act(self, observation, prompts):
            return np.full((len(prompts), 2, 2), np.nan)

    config = CollectConfig(episodes_per_task=1, num_envs=1)
    with pytest.raises(ValueError, match="NaN"):
        list(collect_rollouts(Broken(), [TASK], config, {"image_size": 16}))


def test_state_key_records_another_observation_entry():
    config = CollectConfig(episodes_per_task=1, num_envs=1, state_key="privileged")
    episode = next(collect_rollouts(RandomPolicy(), [TASK], config, {"image_size": 16, "privileged_obs": True}))
    assert episode.state.shape[1] == 10
    with pytest.raises(KeyError, match="privileged_obs=True"):
        next(collect_rollouts(RandomPolicy(), [TASK], config, {"image_size": 16}))
