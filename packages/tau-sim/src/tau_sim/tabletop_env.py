"""The built-in tabletop environment: language-conditioned planar pushing with two rendered cameras.

Observation (the tau simulator convention): "images" uint8 (2, H, W, 3) from the "top" camera (whole table) and the
"wrist" camera (a window centred on the end-effector), "state" float32 (2,) = end-effector (x, y) in table units.
Block and target positions are not in the state: the policy has to find them in the images. Layouts, from easiest
to hardest: "fixed" (the default: each colour in its own slot, the target in one of two slots, the end-effector near
a home position, all with jitter, so the instruction decides where to push and a tiny policy learns it in CPU
minutes), "slots" (the colours also shuffled over the slots, so the policy must find the named block) and "uniform"
(everything anywhere). With `privileged_obs=True` the observation also holds "privileged" float32 (10,) = [ee, red, blue, yellow, target] (x, y),
which the scripted expert uses. Action: float32 (2,) end-effector velocity in [-1, 1] (times MAX_STEP per step).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from tau_sim.tabletop_physics import step_physics
from tau_sim.tabletop_render import render_view
from tau_sim.tabletop_tasks import (
    BLOCK_COLORS,
    BLOCK_RADIUS,
    EE_RADIUS,
    TABLE_SIZE,
    TabletopTask,
    failure_mode,
    get_tabletop_task,
    is_goal_reached,
)

CAMERA_NAMES: tuple[str, ...] = ("top", "wrist")
LAYOUTS: tuple[str, ...] = ("fixed", "slots", "uniform")
BLOCK_SLOTS = np.array([[0.35, 0.3], [0.65, 0.3], [0.5, 0.58]])
TARGET_SLOTS = np.array([[0.2, 0.82], [0.8, 0.82]])
EE_HOME = np.array([0.5, 0.1])
SLOT_JITTER = 0.04
PRIVILEGED_DIM = 2 + 2 * len(BLOCK_COLORS) + 2


class TabletopEnv(gym.Env):
    """One tabletop task with a random layout per seed; terminates on success, truncates at the step limit."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        task: str = "push_red_to_target",
        image_size: int = 64,
        wrist_extent: float = 0.45,
        max_episode_steps: int | None = None,
        privileged_obs: bool = False,
        layout: str = "fixed",
        render_mode: str | None = "rgb_array",
    ) -> None:
        if image_size < 8:
            raise ValueError(f"image_size must be at least 8 pixels, got {image_size}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        self.task: TabletopTask = get_tabletop_task(task)
        self.layout = layout
        self.image_size = image_size
        self.wrist_extent = wrist_extent
        self.max_episode_steps = max_episode_steps or self.task.max_episode_steps
        self.privileged_obs = privileged_obs
        self.render_mode = render_mode
        self.camera_names = CAMERA_NAMES
        spaces: dict[str, gym.spaces.Space] = {
            "images": gym.spaces.Box(0, 255, (len(CAMERA_NAMES), image_size, image_size, 3), np.uint8),
            "state": gym.spaces.Box(0.0, TABLE_SIZE, (2,), np.float32),
        }
        if privileged_obs:
            spaces["privileged"] = gym.spaces.Box(0.0, TABLE_SIZE, (PRIVILEGED_DIM,), np.float32)
        self.observation_space = gym.spaces.Dict(spaces)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.ee = np.zeros(2)
        self.blocks = np.zeros((len(BLOCK_COLORS), 2))
        self.blocks_at_reset = self.blocks.copy()
        self.target = np.zeros(2)
        self.elapsed_steps = 0

    @property
    def task_description(self) -> str:
        return self.task.instruction

    def privileged_state(self) -> np.ndarray:
        """[ee, red, blue, yellow, target] positions, float32 (10,): what the scripted expert needs."""
        return np.concatenate([self.ee, self.blocks.ravel(), self.target]).astype(np.float32)

    def is_success(self) -> bool:
        return is_goal_reached(self.task.goal, self.blocks[BLOCK_COLORS.index(self.task.block)], self.target)

    def _sample_layout(self) -> None:
        """Random layout: "fixed" puts each colour in its slot and the target in one of 2 slots, "slots" also
        shuffles the colours over the slots; both start the end-effector near its home, all with jitter. "uniform"
        places everything anywhere (hardest to learn)."""
        rng = self.np_random
        while True:
            if self.layout in ("fixed", "slots"):
                order = np.arange(3) if self.layout == "fixed" else rng.permutation(3)
                blocks = BLOCK_SLOTS[order] + rng.uniform(-SLOT_JITTER, SLOT_JITTER, (3, 2))
                target = TARGET_SLOTS[rng.integers(len(TARGET_SLOTS))] + rng.uniform(
                    -SLOT_JITTER, SLOT_JITTER, 2
                )
                ee = EE_HOME + rng.uniform(-SLOT_JITTER, SLOT_JITTER, 2)
            else:
                blocks = rng.uniform(0.15, TABLE_SIZE - 0.15, size=(len(BLOCK_COLORS), 2))
                target = rng.uniform(0.15, TABLE_SIZE - 0.15, size=2)
                ee = rng.uniform(0.1, TABLE_SIZE - 0.1, size=2)
            pair_dists = [np.linalg.norm(blocks[i] - blocks[j]) for i in range(3) for j in range(i + 1, 3)]
            if min(pair_dists) < 4 * BLOCK_RADIUS:
                continue
            if np.min(np.linalg.norm(blocks - target, axis=1)) < 0.15:
                continue
            if np.min(np.linalg.norm(blocks - ee, axis=1)) < BLOCK_RADIUS + EE_RADIUS + 0.05:
                continue
            self.ee, self.blocks, self.target = ee, blocks, target
            block_x = self.blocks[BLOCK_COLORS.index(self.task.block)][0]
            if self.task.goal != "target" and abs(block_x - TABLE_SIZE / 2) > 0.2:
                continue  # side tasks start with the block away from both edges
            if not self.is_success():
                return

    def _observation(self) -> dict[str, np.ndarray]:
        size = self.image_size
        top = render_view(
            np.array([0.5, 0.5]) * TABLE_SIZE, TABLE_SIZE, size, self.ee, self.blocks, self.target
        )
        wrist = render_view(self.ee, self.wrist_extent, size, self.ee, self.blocks, self.target)
        obs = {"images": np.stack([top, wrist]), "state": self.ee.astype(np.float32)}
        if self.privileged_obs:
            obs["privileged"] = self.privileged_state()
        return obs

    def _info(self, success: bool, truncated: bool = False) -> dict[str, Any]:
        """The instruction, the success flag and, once an episode is truncated, why it failed (one of FAILURE_MODES;
        "" otherwise, so that every step's info has the same keys)."""
        mode = failure_mode(self.task, self.blocks_at_reset, self.blocks, self.target) if truncated else ""
        return {"task": self.task.instruction, "is_success": success, "failure_mode": mode}

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        self._sample_layout()
        self.blocks_at_reset = self.blocks.copy()
        self.elapsed_steps = 0
        return self._observation(), self._info(False)

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        if action.shape != (2,) or not np.all(np.isfinite(action)):
            raise ValueError(f"TabletopEnv action must be 2 finite numbers, got {action!r}")
        step_physics(self.ee, self.blocks, action)
        self.elapsed_steps += 1
        success = self.is_success()
        truncated = not success and self.elapsed_steps >= self.max_episode_steps
        return self._observation(), float(success), success, truncated, self._info(success, truncated)

    def render(self) -> np.ndarray | None:
        """Both cameras side by side (H, 2W, 3)."""
        if self.render_mode is None:
            return None
        images = self._observation()["images"]
        return np.concatenate(list(images), axis=1)
