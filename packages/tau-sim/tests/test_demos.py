import numpy as np
import pytest

from tau_sim import ExpertConfig, generate_demos, suite_tasks


def test_demos_hold_consistent_frames_and_per_episode_success():
    tasks = suite_tasks("tabletop")[::3]
    episodes = list(
        generate_demos(
            tasks,
            episodes_per_task=6,
            seed=10,
            expert=ExpertConfig(action_noise=0.2, mistake_rate=0.5),
            env_kwargs={"image_size": 24},
        )
    )
    assert len(episodes) == 18
    assert any(e.success for e in episodes) and not all(e.success for e in episodes)
    for e in episodes:
        t = len(e)
        assert e.images.shape == (t, 2, 24, 24, 3) and e.images.dtype == np.uint8
        assert e.state.shape == (t, 2) and e.actions.shape == (t, 2) and e.rewards.shape == (t,)
        assert e.camera_names == ("top", "wrist")
        assert e.success == bool(e.successes[-1]) and not e.successes[:-1].any()
        assert e.success or t == 100
        frames = list(e.frames())
        assert len(frames) == t and frames[0]["task"] == e.instruction
        assert set(frames[0]) == {"images", "state", "action", "reward", "success", "task"}
    again = list(
        generate_demos(
            tasks[:1],
            episodes_per_task=2,
            seed=10,
            expert=ExpertConfig(action_noise=0.2, mistake_rate=0.5),
            env_kwargs={"image_size": 24},
        )
    )
    np.testing.assert_array_equal(again[1].actions, episodes[1].actions)


def test_state_key_records_another_observation_entry():
    task = ["tabletop/push_red_to_target"]
    (episode,) = generate_demos(task, 1, env_kwargs={"image_size": 16, "privileged_obs": True}, state_key="privileged")
    assert episode.state.shape[1] == 10
    with pytest.raises(KeyError, match="privileged_obs=True"):
        next(generate_demos(task, 1, env_kwargs={"image_size": 16}, state_key="privileged"))
