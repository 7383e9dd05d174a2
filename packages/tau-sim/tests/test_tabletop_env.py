import gymnasium as gym
from gymnasium.utils.env_checker import check_env
import numpy as np
import pytest

import tau_sim
from tau_sim.tabletop_env import TabletopEnv
from tau_sim.tabletop_render import BLOCK_RGB, EE_RGB, TARGET_RGB
from tau_sim.tabletop_tasks import BLOCK_COLORS, FAILURE_MODES, TABLETOP_TASKS, failure_mode, task_from_instruction


def test_observation_matches_space_and_convention():
    env = TabletopEnv("push_blue_left", image_size=48)
    obs, info = env.reset(seed=1)
    assert env.observation_space.contains(obs)
    assert obs["images"].shape == (2, 48, 48, 3) and obs["images"].dtype == np.uint8
    assert obs["state"].shape == (2,) and obs["state"].dtype == np.float32
    assert "privileged" not in obs
    assert info["task"] == env.task_description == "push the blue block to the left edge of the table"
    assert env.action_space.shape == (2,)


def test_same_seed_same_episode_and_different_seed_different_layout():
    a, b = TabletopEnv("push_red_to_target"), TabletopEnv("push_red_to_target")
    obs_a, _ = a.reset(seed=7)
    obs_b, _ = b.reset(seed=7)
    np.testing.assert_array_equal(obs_a["images"], obs_b["images"])
    actions = np.random.default_rng(0).uniform(-1, 1, size=(20, 2))
    for action in actions:
        obs_a, *_ = a.step(action)
        obs_b, *_ = b.step(action)
    np.testing.assert_array_equal(obs_a["images"], obs_b["images"])
    np.testing.assert_array_equal(obs_a["state"], obs_b["state"])
    first, _ = a.reset(seed=7)
    other, _ = b.reset(seed=8)
    assert not np.array_equal(first["images"], other["images"])


def test_top_camera_shows_objects_where_they_are():
    env = TabletopEnv("push_red_to_target", image_size=64)
    obs, _ = env.reset(seed=3)
    top, wrist = obs["images"]
    positions = list(env.blocks) + [env.target]
    colors = [BLOCK_RGB[c] for c in BLOCK_COLORS] + [TARGET_RGB]
    for (x, y), color in zip(positions, colors):
        row, col = int((1 - y) * 64), int(x * 64)
        assert np.abs(top[row, col].astype(float) - color).max() < 30, (x, y)
    # the wrist camera is centred on the end-effector
    assert (
        np.abs(wrist[32, 31].astype(float) - EE_RGB).max() < 30
        or np.abs(wrist[30, 30].astype(float) - EE_RGB).max() < 30
    )


def test_pushing_block_onto_target_terminates_with_success():
    env = TabletopEnv("push_yellow_to_target")
    env.reset(seed=0)
    index = BLOCK_COLORS.index("yellow")
    env.blocks[index] = env.target + np.array([0.1, 0.0])  # block just right of the target
    env.ee[:] = env.blocks[index] + np.array([0.1, 0.0])  # pusher right of the block
    for other in range(3):  # move other blocks out of the way
        if other != index:
            env.blocks[other] = np.array([0.05 + 0.1 * other, 0.05])
    for _ in range(20):
        obs, reward, terminated, truncated, info = env.step(np.array([-1.0, 0.0]))
        if terminated:
            break
    assert terminated and not truncated and reward == 1.0 and info["is_success"]


def test_step_limit_truncates():
    env = TabletopEnv("push_red_left", max_episode_steps=5)
    env.reset(seed=0)
    for t in range(5):
        _, _, terminated, truncated, _ = env.step(np.zeros(2))
    assert truncated and not terminated


def test_truncated_episodes_say_why_they_failed():
    env = TabletopEnv("push_red_left", max_episode_steps=5)
    _, info = env.reset(seed=0)
    assert info["failure_mode"] == ""
    for t in range(5):
        _, _, _, truncated, info = env.step(np.zeros(2))
        assert info["failure_mode"] == ("no_push" if truncated else "")
    assert truncated


def test_failure_modes_from_the_blocks_at_start_and_end():
    task = TABLETOP_TASKS["push_red_to_target"]  # red is block 0
    start = np.array([[0.3, 0.3], [0.7, 0.3], [0.5, 0.6]])
    target = np.array([0.3, 0.8])

    def moved(i, delta):
        end = start.copy()
        end[i] += delta
        return end

    assert failure_mode(task, start, start, target) == "no_push"
    assert failure_mode(task, start, moved(0, [0.0, 0.01]), target) == "no_push"  # under half a block: not pushed
    assert failure_mode(task, start, moved(1, [0.0, 0.2]), target) == "wrong_block"
    assert failure_mode(task, start, moved(0, [0.0, 0.3]), target) == "short"  # nearer the target, not on it
    assert failure_mode(task, start, moved(0, [0.0, -0.2]), target) == "pushed_away"
    both = moved(0, [0.0, 0.3])
    both[2] += [0.1, 0.0]  # red moved more than yellow: the red push counts
    assert failure_mode(task, start, both, target) == "short"
    side = TABLETOP_TASKS["push_red_left"]
    assert failure_mode(side, start, moved(0, [0.1, 0.0]), target) == "pushed_away"  # away from the left edge
    assert set(FAILURE_MODES) == {"wrong_block", "no_push", "pushed_away", "short"}


def test_bad_action_and_task_raise_clear_errors():
    env = TabletopEnv()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="2 finite numbers"):
        env.step(np.array([np.nan, 0.0]))
    with pytest.raises(KeyError, match="known tasks"):
        TabletopEnv("push_purple_block")
    with pytest.raises(ValueError, match="layout"):
        TabletopEnv(layout="grid")
    with pytest.raises(ValueError, match="suite"):
        tau_sim.make_env("nosuite/push_red_left")


def test_gymnasium_ids_and_registry():
    env = gym.make("tau_sim/TabletopPushBlueToTarget-v0", image_size=32)
    obs, info = env.reset(seed=0)
    assert obs["images"].shape == (2, 32, 32, 3)
    assert info["task"] == "push the blue block onto the green target"
    assert len(tau_sim.suite_tasks("tabletop")) == len(TABLETOP_TASKS) == 9
    assert tau_sim.make_env("tabletop_side/push_red_right").task_description.endswith(
        "right edge of the table"
    )
    for task in TABLETOP_TASKS.values():
        assert task_from_instruction(task.instruction) == task


def test_passes_gymnasium_env_checker():
    check_env(gym.make("tau_sim/Tabletop-v0", task="push_red_right", privileged_obs=True).unwrapped)


@pytest.mark.parametrize(("layout", "expected_red_slots"), [("fixed", {0}), ("slots", {0, 1, 2})])
def test_slot_layouts_place_colours_in_slots(layout, expected_red_slots):
    from tau_sim.tabletop_env import BLOCK_SLOTS, SLOT_JITTER

    env = TabletopEnv("push_red_to_target", layout=layout)
    red_slots = set()
    for seed in range(30):
        env.reset(seed=seed)
        slot = np.argmin(np.linalg.norm(BLOCK_SLOTS - env.blocks[0], axis=1))
        assert np.all(np.abs(env.blocks[0] - BLOCK_SLOTS[slot]) <= SLOT_JITTER + 1e-9)
        red_slots.add(int(slot))
    assert red_slots == expected_red_slots


def test_block_sticks_to_a_pusher_inside_the_friction_cone_and_slides_outside():
    from tau_sim.tabletop_physics import step_physics
    from tau_sim.tabletop_tasks import BLOCK_RADIUS, EE_RADIUS, MAX_STEP

    contact = BLOCK_RADIUS + EE_RADIUS
    off_axis = np.array([np.sin(0.5), np.cos(0.5)])  # block 29 degrees off the push direction (+y)
    ee = np.array([0.5, 0.3])
    blocks = np.array([ee + off_axis * contact, [0.1, 0.9], [0.9, 0.9]])
    start = blocks[0].copy()
    step_physics(ee, blocks, np.array([0.0, 1.0]))
    np.testing.assert_allclose(blocks[0] - start, [0.0, MAX_STEP], atol=1e-9)  # carried, no sideways slip
    sideways = np.array([np.sin(1.2), np.cos(1.2)])  # 69 degrees: outside the 45-degree cone
    ee = np.array([0.5, 0.3])
    blocks = np.array([ee + sideways * contact, [0.1, 0.9], [0.9, 0.9]])
    start = blocks[0].copy()
    step_physics(ee, blocks, np.array([0.0, 1.0]))
    moved = blocks[0] - start
    assert moved[0] > 0 and moved[1] < MAX_STEP - 1e-3  # pushed out along the normal: it slides sideways
