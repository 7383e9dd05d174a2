"""tau's LIBERO env against the conventions of openpi's LIBERO client and the published LeRobot-format LIBERO
datasets (packages/tau-sim/LIBERO.md lists each one with its source). Tiny renders (32 px) keep these fast; the
conventions do not depend on the resolution."""

from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from tau_sim import make_env
from tau_sim.libero_env import MAX_EPISODE_STEPS, NOOP_ACTION, NUM_STEPS_WAIT, quat_to_axis_angle
from tau_sim.libero_reference import (
    LIBERO_DUMMY_ACTION,
    make_reference_task,
    openpi_observation,
    openpi_quat2axisangle,
    reference_episode_start,
)

pytestmark = pytest.mark.libero
SIZE = 32
OPENPI_MAX_STEPS = {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300, "libero_10": 520,
                    "libero_90": 400}  # fmt: skip


@pytest.fixture(scope="module")
def env():
    """libero_object task 0 ("pick up the alphabet soup ..."), default rendering, reused across episodes."""
    env = make_env("libero_object/0", image_size=SIZE)
    yield env
    env.close()


class StepSpy:
    """Records the actions the LIBERO simulator receives."""

    def __init__(self, env) -> None:
        self.env, self.step, self.actions = env, env._env.step, []

    def __call__(self, action):
        self.actions.append(np.asarray(action, dtype=np.float64))
        return self.step(action)

    def __enter__(self) -> "StepSpy":
        self.env._env.step = self
        return self

    def __exit__(self, *exc) -> None:
        self.env._env.step = self.step


def test_episode_start_is_openpis_after_a_soft_reset(env):
    """After an episode on another init state, a soft reset gives bit for bit the observation openpi's client sees
    from a freshly built env with LIBERO's default hard reset: the rotated renders and the 8-D state."""
    env.reset(seed=5)
    rng = np.random.default_rng(0)
    for _ in range(15):
        env.step(rng.uniform(-1, 1, 7))  # moves the arm and closes the gripper part-way
    obs, info = env.reset(seed=3)
    reference = make_reference_task("libero_object", 0, resolution=SIZE)
    try:
        assert reference.env.env.hard_reset and info["task"] == reference.instruction
        expected = openpi_observation(reference_episode_start(reference, 3))
    finally:
        reference.close()
    np.testing.assert_array_equal(obs["images"][0], expected["observation/image"])
    np.testing.assert_array_equal(obs["images"][1], expected["observation/wrist_image"])
    np.testing.assert_array_equal(obs["state"], expected["observation/state"].astype(np.float32))


def test_images_are_the_renders_rotated_180_degrees(env):
    obs, _ = env.reset(seed=0)
    assert obs["images"].shape == (2, SIZE, SIZE, 3) and obs["images"].dtype == np.uint8
    for slot, camera in enumerate(("agentview", "robot0_eye_in_hand")):
        render = env.raw_obs[f"{camera}_image"]
        np.testing.assert_array_equal(obs["images"][slot], np.rot90(render, 2))
        assert not np.array_equal(obs["images"][slot], render)  # the render itself is upside down


def test_state_layout_and_units(env):
    obs, _ = env.reset(seed=1)
    raw, state = env.raw_obs, obs["state"]
    assert state.shape == (8,) and state.dtype == np.float32
    np.testing.assert_array_equal(state[:3], raw["robot0_eef_pos"].astype(np.float32))
    np.testing.assert_allclose(state[3:6], openpi_quat2axisangle(raw["robot0_eef_quat"]), atol=1e-6)
    np.testing.assert_array_equal(state[6:], raw["robot0_gripper_qpos"].astype(np.float32))
    # axis-angle of the (x, y, z, w) quaternion: the same rotation as scipy reads it
    np.testing.assert_allclose(Rotation.from_rotvec(state[3:6]).as_matrix(),
                               Rotation.from_quat(raw["robot0_eef_quat"]).as_matrix(), atol=1e-5)  # fmt: skip
    # gripper: two finger joints in metres, about +-0.039 when open (the settle steps open it)
    assert 0.03 < state[6] < 0.041 and abs(state[6] + state[7]) < 1e-3
    start = state.copy()
    for _ in range(5):
        obs, *_ = env.step(np.array([1.0, 0, 0, 0, 0, 0, -1]))  # full +x: at most 5 cm per step
    moved = obs["state"][:3] - start[:3]
    assert 0.01 < moved[0] < 0.25 and np.abs(moved[1:]).max() < 0.02
    for _ in range(15):
        obs, *_ = env.step(np.array([0, 0, 0, 0, 0, 0, 1.0]))  # +1 closes
    assert obs["state"][6] < 0.01 and obs["state"][7] > -0.01


def test_quat_to_axis_angle_is_openpis():
    rng = np.random.default_rng(0)
    for quat in [*Rotation.random(20, random_state=1).as_quat(), [0, 0, 0, 1.0], [1.0, 0, 0, 0]]:
        quat = np.asarray(quat) * (1 if rng.random() < 0.5 else -1)  # both signs of w
        np.testing.assert_allclose(quat_to_axis_angle(quat), openpi_quat2axisangle(quat), atol=1e-12)


def test_actions_are_osc_pose_deltas_with_gripper_minus_one_open(env):
    env.reset(seed=2)
    robot = env._env.robots[0]
    controller = robot.controller
    assert controller.name == "OSC_POSE" and controller.use_delta and env._env.env.control_freq == 20
    np.testing.assert_allclose(controller.output_max, [0.05] * 3 + [0.5] * 3)
    np.testing.assert_allclose(controller.output_min, [-0.05] * 3 + [-0.5] * 3)
    assert (
        env.action_space.shape == (7,)
        and env.action_space.low.min() == -1
        and env.action_space.high.max() == 1
    )
    before = Rotation.from_quat(env.raw_obs["robot0_eef_quat"])
    for _ in range(4):
        env.step(np.array([0, 0, 0, 0, 0, 0.4, -1]))  # rotate about world +z
    turn = (Rotation.from_quat(env.raw_obs["robot0_eef_quat"]) * before.inv()).as_rotvec()
    assert turn[2] > 0.05 and np.abs(turn[:2]).max() < 0.5 * turn[2]


def test_settle_steps_are_ten_dummy_actions(env):
    env.reset(seed=0)
    np.testing.assert_array_equal(NOOP_ACTION, LIBERO_DUMMY_ACTION)
    with StepSpy(env) as spy:
        env.reset(seed=4)
    assert len(spy.actions) == NUM_STEPS_WAIT == 10 and env.elapsed_steps == 0
    np.testing.assert_array_equal(np.stack(spy.actions), np.tile(LIBERO_DUMMY_ACTION, (10, 1)))


def test_settle_steps_and_step_limit_overrides_take_effect():
    env = make_env("libero_object/0", image_size=SIZE, num_steps_wait=2, max_episode_steps=3)
    try:
        env.reset(seed=0)
        with StepSpy(env) as spy:
            env.reset(seed=1)
            flags = [env.step(np.zeros(7))[2:4] for _ in range(3)]
        assert len(spy.actions) == 2 + 3  # two settle steps, then the policy's
        assert flags == [(False, False), (False, False), (False, True)]
    finally:
        env.close()


@pytest.mark.parametrize("suite", sorted(OPENPI_MAX_STEPS))
def test_step_limits_per_suite_are_openpis(suite):
    assert MAX_EPISODE_STEPS[suite] == OPENPI_MAX_STEPS[suite]
    assert make_env(f"{suite}/0").max_episode_steps == OPENPI_MAX_STEPS[suite]  # no simulator is built


@pytest.mark.slow
def test_an_episode_is_truncated_after_the_suites_limit_of_policy_steps():
    """libero_object: 280 policy steps after the 10 settle steps (openpi: t < max_steps + num_steps_wait)."""
    env = make_env("libero_object/0", image_size=16, fast_render=True)
    try:
        env.reset(seed=0)
        with StepSpy(env) as spy:
            env.reset(seed=7)
            steps, truncated = 0, False
            while not truncated:
                _, _, terminated, truncated, _ = env.step(np.array([0, 0, 0.3, 0, 0, 0, -1]))
                assert not terminated
                steps += 1
        assert steps == 280 and len(spy.actions) == 10 + 280
    finally:
        env.close()


def test_init_states_are_the_benchmarks(env):
    """The installed benchmark's own init-state file, one state per episode index (seed % 50), restored exactly."""
    from libero.libero import benchmark, get_libero_path

    task = benchmark.get_benchmark_dict()["libero_object"]().get_task(0)
    path = Path(get_libero_path("init_states")) / task.problem_folder / f"{task.init_states_file}.npz"
    with np.load(path) as stored:
        states = stored["states"]
    assert states.shape == (50, 110)
    np.testing.assert_array_equal(env.init_states, states)
    restored = []
    set_init_state = env._env.set_init_state

    def spy(state):  # the state set_init_state leaves, before the settle steps
        obs = set_init_state(state)
        restored.append(env._env.get_sim_state().copy())
        return obs

    env._env.set_init_state = spy
    try:
        _, info = env.reset(seed=1049)
    finally:
        env._env.set_init_state = set_init_state
    assert info["init_state_index"] == 49
    np.testing.assert_array_equal(restored[0], states[49])


def test_fast_rendering_changes_pixels_only_slightly(env):
    """The affordable settings (no MSAA, no reflections) leave the physics and the state alone. A second LIBERO env
    in the same process (its own GL context, then closed) does not change what the first one renders."""
    default, _ = env.reset(seed=6)
    fast_env = make_env("libero_object/0", image_size=SIZE, fast_render=True)
    try:
        fast, _ = fast_env.reset(seed=6)
        np.testing.assert_array_equal(env.reset(seed=6)[0]["images"], default["images"])
    finally:
        fast_env.close()
    np.testing.assert_array_equal(env.reset(seed=6)[0]["images"], default["images"])
    np.testing.assert_array_equal(fast["state"], default["state"])
    difference = np.abs(fast["images"].astype(np.int16) - default["images"]).mean()
    assert 0 < difference < 8
