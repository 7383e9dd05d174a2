"""Scripted expert for the tabletop tasks, from privileged positions, with a controllable success rate.

It walks around the block to the side facing away from the goal, then pushes along the block->goal line; the
action is a pure function of the positions, so a learner sees one label per state. Two
knobs make it imperfect: `action_noise` (Gaussian jitter on every action, for diverse trajectories) and
`mistake_rate` (the probability that an episode pushes a wrong block, a plausible failure). The expected success
rate is about (1 - mistake_rate) x the success rate at that action noise (~1.0 for noise <= 0.3).
"""

from __future__ import annotations

import zlib

import numpy as np

from tau_sim.expert_policy import ExpertConfig, ExpertPolicy
from tau_sim.tabletop_tasks import (
    BLOCK_COLORS,
    BLOCK_RADIUS,
    EE_RADIUS,
    MAX_STEP,
    TabletopTask,
    goal_point,
    task_from_instruction,
)

CONTACT = BLOCK_RADIUS + EE_RADIUS
APPROACH_GAP = 0.04
DETOUR_GAP = 0.07
PUSH_ALONG = 0.6  # push when behind the block by more than this x CONTACT ...
PUSH_LATERAL = 0.4  # ... and off the block->goal line by less than this x CONTACT (inside the friction cone)


def _move_action(ee: np.ndarray, goal: np.ndarray) -> np.ndarray:
    """Velocity command that reaches `goal` as fast as the action limits allow, without overshoot."""
    action = (goal - ee) / MAX_STEP
    return action / max(1.0, float(np.max(np.abs(action))))


class TabletopExpert:
    """Stateful per-episode expert: `reset(task, rng)` at episode start, then `act(privileged)` every step."""

    def __init__(self, config: ExpertConfig = ExpertConfig()) -> None:
        self.config = config
        self.rng = np.random.default_rng(0)
        self.block_index = 0
        self.goal = "target"
        self.made_mistake = False

    def reset(self, task: TabletopTask, rng: np.random.Generator) -> None:
        self.rng = rng
        self.goal = task.goal
        self.block_index = BLOCK_COLORS.index(task.block)
        self.made_mistake = bool(rng.random() < self.config.mistake_rate)
        if self.made_mistake:
            others = [i for i in range(len(BLOCK_COLORS)) if i != self.block_index]
            self.block_index = int(rng.choice(others))

    def act(self, privileged: np.ndarray) -> np.ndarray:
        """One action from the privileged state [ee, red, blue, yellow, target] (see TabletopEnv.privileged_state)."""
        privileged = np.asarray(privileged, dtype=np.float64)
        ee = privileged[0:2]
        block = privileged[2 + 2 * self.block_index : 4 + 2 * self.block_index]
        target = privileged[-2:]
        action = self._clean_action(ee, block, goal_point(self.goal, block, target))
        if self.config.action_noise > 0:
            action = action + self.rng.normal(0.0, self.config.action_noise, size=2)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    def _clean_action(self, ee: np.ndarray, block: np.ndarray, goal: np.ndarray) -> np.ndarray:
        """A pure function of the positions (no hidden mode), so labels stay consistent on any visited state.

        Behind the block and close to the block->goal line, it moves along that line: the block sticks to the
        end-effector (tabletop_physics' friction cone), so it travels straight to the goal. Elsewhere it walks to
        the approach point behind the block, around the block when the direct path would hit it.
        """
        to_goal = goal - block
        distance = float(np.linalg.norm(to_goal))
        if distance < 1e-6:
            return np.zeros(2)
        u = to_goal / distance
        rel = ee - block
        along = float(rel @ u)
        lateral = rel - along * u
        if along < -PUSH_ALONG * CONTACT and np.linalg.norm(lateral) < PUSH_LATERAL * CONTACT:
            return _move_action(block, goal)
        approach = block - u * (CONTACT + APPROACH_GAP)
        if _segment_distance(block, ee, approach) < CONTACT + 0.01:
            perp = np.array([-u[1], u[0]])
            side = 1.0 if float(rel @ perp) >= 0 else -1.0
            return _move_action(ee, block + side * perp * (CONTACT + DETOUR_GAP))
        return _move_action(ee, approach)


def _segment_distance(point: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Distance from `point` to the segment a-b."""
    ab = b - a
    t = float(np.clip((point - a) @ ab / max(float(ab @ ab), 1e-12), 0.0, 1.0))
    return float(np.linalg.norm(point - (a + t * ab)))


class TabletopExpertPolicy(ExpertPolicy):
    """The tabletop expert behind the Policy interface; needs envs built with `privileged_obs=True`.

    It reads the task from each prompt, so one instance serves any mix of tabletop tasks.
    """

    def new_expert(self, prompt: str, rng: np.random.Generator) -> TabletopExpert:
        expert = TabletopExpert(self.config)
        expert.reset(task_from_instruction(prompt), rng)
        return expert

    def layout_key(self, start: np.ndarray) -> int:
        return zlib.crc32(np.asarray(start, dtype=np.float32).tobytes())
