import numpy as np
import pytest

from tau_sim import ExpertConfig, generate_demos, run_expert_episode, suite_tasks


def test_demos_hold_consistent_frames_and_per_episode_success():
    tasks = suite_tasks("tabletop")[::3]
    expert = ExpertConfig(action_noise=0.2, mistake_rate=0.5)
    episodes = list(generate_demos(tasks, episodes_per_task=6, seed=10, expert=expert, env_kwargs={"image_size": 24},
                                   num_envs=4))
    assert len(episodes) == 18
    assert [e.seed for e in episodes[:6]] == list(range(10, 16))
    assert any(e.success for e in episodes) and not all(e.success for e in episodes)
    for e in episodes:
        t = len(e)
        assert e.images.shape == (t, 2, 24, 24, 3) and e.images.dtype == np.uint8
        assert e.state.shape == (t, 2) and e.actions.shape == (t, 2) and e.actions.dtype == np.float32
        assert e.extras["reward"].shape == (t,) and e.extras["is_success"].shape == (t,)
        assert e.camera_names == ("top", "wrist") and e.fps == 10
        assert e.success == bool(e.extras["is_success"][-1]) and not e.extras["is_success"][:-1].any()
        assert e.success or t == 100
        assert not e.intervention.any() and e.intervention.shape == (t,)
        assert e.instruction.startswith("push the")
    # the same episodes whatever the batching
    again = list(generate_demos(tasks[:1], episodes_per_task=2, seed=10, expert=expert, env_kwargs={"image_size": 24},
                                num_envs=1))
    for one, other in zip(again, episodes[:2], strict=True):
        np.testing.assert_array_equal(one.actions, other.actions)
        np.testing.assert_array_equal(one.images, other.images)


def test_state_key_records_the_privileged_positions():
    (episode,) = generate_demos(["tabletop/push_blue_to_target"], 1, seed=3, env_kwargs={"image_size": 16},
                                state_key="privileged")
    assert episode.state.shape == (len(episode), 10) and episode.success
    # row t is the observation before action t: the end-effector moves by the clipped action x MAX_STEP
    np.testing.assert_allclose(episode.state[1, :2] - episode.state[0, :2], episode.actions[0] * 0.03, atol=1e-6)
    with pytest.raises(KeyError, match="no 'nothing' entry"):
        next(generate_demos(["tabletop/push_blue_to_target"], 1, env_kwargs={"image_size": 16}, state_key="nothing"))


def test_demos_come_from_one_simulator():
    with pytest.raises(ValueError, match="one simulator"):
        next(generate_demos(["tabletop/push_red_to_target", "libero_object/0"], 1))


def test_run_expert_episode_is_one_demo():
    episode = run_expert_episode("tabletop/push_red_left", seed=4, env_kwargs={"image_size": 16})
    (demo,) = generate_demos(["tabletop/push_red_left"], 1, seed=4, env_kwargs={"image_size": 16})
    assert episode.success and episode.seed == 4
    np.testing.assert_array_equal(episode.actions, demo.actions)
