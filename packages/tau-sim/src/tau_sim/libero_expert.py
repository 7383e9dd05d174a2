"""Scripted pick-and-place expert for LIBERO from privileged object positions (no IK, no planning).

A phase machine over OSC_POSE delta actions with a proportional controller on the end-effector position and the
orientation held: above the object, descend, close, lift, carry over the target, lower, open, retreat. It solves most
LIBERO-Object and LIBERO-Spatial tasks (sim.md: 83/100 and 78/100); drawers, stoves and two-object tasks are out of
its reach. `ExpertConfig.action_noise` jitters the translation; `mistake_rate` makes an episode let go of the object
somewhere on the way to the target.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

import numpy as np

from tau_sim.expert_policy import ExpertConfig, ExpertPolicy

GAIN = 1.5 / 0.05  # action per metre of position error (actions are scaled to 5 cm per step)
OPEN, CLOSED = -1.0, 1.0


@dataclass(frozen=True)
class GraspParams:
    """Where to grasp (offset from the object's origin) and how high above the target to release."""

    grasp_xy: tuple[float, float] = (0.0, 0.0)
    grasp_dz: float = 0.0
    place_dz: float = 0.12


# Bowls (LIBERO-Spatial) are wider than the gripper opening: grasp the rim. The fingers close along world y.
BOWL_GRASP = GraspParams(grasp_xy=(0.0, 0.045), grasp_dz=0.035, place_dz=0.08)


def grasp_params_for(text: str) -> GraspParams:
    """Grasp parameters for an object name or an instruction: in "put the cream cheese in the bowl" the grasped
    object is the one named before the first " in " / " on " / " into " / " onto "."""
    grasped = re.split(r" (?:in|on|into|onto) ", text.lower(), maxsplit=1)[0]
    return BOWL_GRASP if "bowl" in grasped else GraspParams()


@dataclass
class _Phase:
    name: str
    grip: float
    tolerance: float = 0.01
    limit: int = 80  # steps before the phase gives up and moves on
    hold: int = 0  # >0: a fixed number of still steps (gripper closing/opening) instead of a move


PHASES = (
    _Phase("above_object", OPEN),
    _Phase("descend", OPEN, tolerance=0.006),
    _Phase("close", CLOSED, hold=12),
    _Phase("lift", CLOSED),
    _Phase("carry", CLOSED, tolerance=0.015),
    _Phase("lower", CLOSED, tolerance=0.015),
    _Phase("open", OPEN, hold=10),
    _Phase("retreat", OPEN),
)


class LiberoExpert:
    """`reset(object_name, rng)` at episode start, then `act(privileged)` every step, where privileged is
    LiberoEnv.privileged_state(): end-effector, object and target positions, float (9,)."""

    def __init__(self, config: ExpertConfig = ExpertConfig()) -> None:
        self.config = config
        self.rng = np.random.default_rng(0)
        self.params = GraspParams()
        self.phase_index = 0
        self.phase_steps = 0
        self.goal: np.ndarray | None = None
        self.drop_after: int | None = None

    def reset(self, object_name: str, rng: np.random.Generator) -> None:
        """`object_name` (or the instruction) picks the grasp: bowls are grasped by the rim."""
        self.params = grasp_params_for(object_name)
        self.rng = rng
        self.phase_index = 0
        self.phase_steps = 0
        self.goal = None
        # a mistake opens the gripper this many steps into the carry
        self.drop_after = int(rng.integers(0, 30)) if rng.random() < self.config.mistake_rate else None

    def _phase_goal(self, phase: str, eef: np.ndarray, obj: np.ndarray, target: np.ndarray) -> np.ndarray:
        p = self.params
        grasp = obj + np.array([*p.grasp_xy, 0.0])
        if phase == "above_object":
            return grasp + np.array([0.0, 0.0, 0.10])
        if phase == "descend":
            return grasp + np.array([0.0, 0.0, p.grasp_dz])
        if phase == "lift":
            return eef + np.array([0.0, 0.0, 0.15])
        if phase in ("carry", "lower"):
            offset = (eef - obj)[:2]  # keep the held object centred over the target
            height = eef[2] if phase == "carry" else target[2] + p.place_dz
            return np.array([*(target[:2] + offset), height])
        if phase == "retreat":
            return eef + np.array([0.0, 0.0, 0.08])
        return eef

    def act(self, privileged: np.ndarray) -> np.ndarray:
        privileged = np.asarray(privileged, dtype=np.float64)
        eef, obj, target = privileged[0:3], privileged[3:6], privileged[6:9]
        action = np.zeros(7)
        action[6] = OPEN
        while self.phase_index < len(PHASES):
            phase = PHASES[self.phase_index]
            if self.goal is None:
                self.goal = self._phase_goal(phase.name, eef, obj, target)
            finished = (
                self.phase_steps >= phase.hold
                if phase.hold
                else self.phase_steps >= phase.limit or np.linalg.norm(self.goal - eef) < phase.tolerance
            )
            if finished:
                self.phase_index, self.phase_steps, self.goal = self.phase_index + 1, 0, None
                continue
            self.phase_steps += 1
            if not phase.hold:
                action[:3] = np.clip((self.goal - eef) * GAIN, -1.0, 1.0)
            action[6] = phase.grip
            if phase.name == "carry" and self.drop_after is not None and self.phase_steps > self.drop_after:
                action[6] = OPEN
            break
        if self.config.action_noise > 0:
            action[:3] = np.clip(
                action[:3] + self.rng.normal(0.0, self.config.action_noise, size=3), -1.0, 1.0
            )
        return action.astype(np.float32)


class LiberoExpertPolicy(ExpertPolicy):
    """The LIBERO expert behind the Policy interface; needs envs built with `privileged_obs=True`."""

    def new_expert(self, prompt: str, rng: np.random.Generator) -> LiberoExpert:
        expert = LiberoExpert(self.config)
        expert.reset(prompt, rng)
        return expert

    def layout_key(self, start: np.ndarray) -> int:
        return zlib.crc32(np.round(np.asarray(start, dtype=np.float64), 4).tobytes())
