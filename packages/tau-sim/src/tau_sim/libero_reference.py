"""openpi's LIBERO client loop (examples/libero/main.py), transcribed: the reference LiberoEnv is checked against
(tests/test_libero_conventions.py) and benchmarked against (benchmarks/tau_sim_libero_speed.py).

A plain per-episode loop around `OffScreenRenderEnv` with LIBERO's default settings (MSAA, reflections,
hard_reset=True), as openpi and LeRobot step it: one env per task seeded with 7, then per episode reset,
set_init_state(initial_states[episode]), `num_steps_wait` dummy actions, and action chunks executed open-loop
`replan_steps` at a time until `done` (success) or `max_steps` policy steps.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from tau_sim.libero_env import require_libero

LIBERO_DUMMY_ACTION = [0.0] * 6 + [-1.0]
LIBERO_ENV_RESOLUTION = 256  # openpi: "resolution used to render training data"
OPENPI_SEED = 7


def openpi_quat2axisangle(quat: np.ndarray) -> np.ndarray:
    """openpi's `_quat2axisangle` (copied from robosuite): (x, y, z, w) quaternion -> axis-angle."""
    quat = np.array(quat, dtype=np.float64)
    if quat[3] > 1.0:
        quat[3] = 1.0
    elif quat[3] < -1.0:
        quat[3] = -1.0
    den = np.sqrt(1.0 - quat[3] * quat[3])
    if math.isclose(den, 0.0):
        return np.zeros(3)
    return (quat[:3] * 2.0 * math.acos(quat[3])) / den


def openpi_observation(obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The images and state openpi's client sends (before its resize_with_pad to 224): both renders rotated 180
    degrees "to match train preprocessing", and eef position + eef axis-angle + gripper joint positions."""
    return {
        "observation/image": np.ascontiguousarray(obs["agentview_image"][::-1, ::-1]),
        "observation/wrist_image": np.ascontiguousarray(obs["robot0_eye_in_hand_image"][::-1, ::-1]),
        "observation/state": np.concatenate(
            (obs["robot0_eef_pos"], openpi_quat2axisangle(obs["robot0_eef_quat"]), obs["robot0_gripper_qpos"])
        ),
    }


@dataclass
class ReferenceTask:
    """One task's `OffScreenRenderEnv` built as openpi's `_get_libero_env` builds it, with its init states."""

    env: Any
    instruction: str
    initial_states: np.ndarray

    def close(self) -> None:
        self.env.close()


def make_reference_task(
    suite: str,
    task_index: int,
    resolution: int = LIBERO_ENV_RESOLUTION,
    seed: int = OPENPI_SEED,
    **env_args: Any,
) -> ReferenceTask:
    """openpi's env for one task: `OffScreenRenderEnv(bddl_file_name, camera_heights, camera_widths)` (LIBERO's
    defaults otherwise, unless `env_args` says), `env.seed(seed)`."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
    require_libero()
    from libero.libero import benchmark, get_libero_path  # pants: no-infer-dep
    from libero.libero.envs import OffScreenRenderEnv  # pants: no-infer-dep

    task_suite = benchmark.get_benchmark_dict()[suite]()
    task = task_suite.get_task(task_index)
    bddl = os.path.join(get_libero_path("bddl_files"), task.problem_folder, task.bddl_file)
    env = OffScreenRenderEnv(
        bddl_file_name=bddl, camera_heights=resolution, camera_widths=resolution, **env_args
    )
    env.seed(seed)
    return ReferenceTask(env, task.language, np.asarray(task_suite.get_task_init_states(task_index)))


def reference_episode_start(task: ReferenceTask, episode_index: int, num_steps_wait: int = 10) -> dict:
    """The raw observation the policy first sees in episode `episode_index` (init state `episode_index`)."""
    task.env.reset()
    obs = task.env.set_init_state(task.initial_states[episode_index])
    for _ in range(num_steps_wait):
        obs, _, _, _ = task.env.step(LIBERO_DUMMY_ACTION)
    return obs


ChunkPolicy = Callable[[dict[str, Any]], np.ndarray]  # openpi request element -> (chunk, 7) actions


def run_reference_episode(
    task: ReferenceTask,
    episode_index: int,
    policy: ChunkPolicy,
    max_steps: int,
    num_steps_wait: int = 10,
    replan_steps: int = 5,
) -> tuple[bool, int]:
    """openpi's episode loop: (success, policy steps taken). `t` counts the settle steps too, as in main.py."""
    obs = reference_episode_start(task, episode_index, num_steps_wait)
    t, plan = num_steps_wait, []
    while t < max_steps + num_steps_wait:
        if not plan:
            element = {**openpi_observation(obs), "prompt": str(task.instruction)}
            plan = list(np.asarray(policy(element))[:replan_steps])
        obs, _, done, _ = task.env.step(plan.pop(0).tolist())
        if done:
            return True, t - num_steps_wait + 1
        t += 1
    return False, max_steps
