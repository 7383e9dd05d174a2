"""The built-in tabletop task family: task specifications, suites and the success check.

Every scene holds the same objects (a red, a blue and a yellow block and a green target on a square table), so the
instruction alone says which block to push where: images and language both matter to a policy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BLOCK_COLORS: tuple[str, ...] = ("red", "blue", "yellow")
GOALS: tuple[str, ...] = ("target", "left", "right")

TABLE_SIZE = (
    1.0  # the table is the square [0, 1] x [0, 1]; x points right, y points up (away from the viewer)
)
EE_RADIUS = 0.03
BLOCK_RADIUS = 0.045
TARGET_RADIUS = 0.07
ON_TARGET_TOLERANCE = TARGET_RADIUS  # block centre over the green target disc counts as "on the target"
SIDE_MARGIN = 0.15  # block centre within this distance of the left/right table edge counts as "at that edge"
MAX_STEP = 0.03  # end-effector displacement per step for an action of norm 1 per axis


@dataclass(frozen=True)
class TabletopTask:
    """One task: push `block` to `goal` ("target" = onto the green target, "left"/"right" = to that table edge)."""

    name: str
    block: str
    goal: str
    max_episode_steps: int = 100

    @property
    def instruction(self) -> str:
        if self.goal == "target":
            return f"push the {self.block} block onto the green target"
        return f"push the {self.block} block to the {self.goal} edge of the table"


def _make_tasks() -> dict[str, TabletopTask]:
    tasks = {}
    for goal in GOALS:
        for block in BLOCK_COLORS:
            name = f"push_{block}_to_target" if goal == "target" else f"push_{block}_{goal}"
            tasks[name] = TabletopTask(name=name, block=block, goal=goal)
    return tasks


TABLETOP_TASKS: dict[str, TabletopTask] = _make_tasks()

TABLETOP_SUITES: dict[str, tuple[str, ...]] = {
    "tabletop_target": tuple(n for n, t in TABLETOP_TASKS.items() if t.goal == "target"),
    "tabletop_side": tuple(n for n, t in TABLETOP_TASKS.items() if t.goal != "target"),
    "tabletop": tuple(TABLETOP_TASKS),
}


def get_tabletop_task(name: str) -> TabletopTask:
    """Look a task up by name, with a clear error listing the known names."""
    if name not in TABLETOP_TASKS:
        raise KeyError(f"unknown tabletop task {name!r}; known tasks: {sorted(TABLETOP_TASKS)}")
    return TABLETOP_TASKS[name]


def task_from_instruction(instruction: str) -> TabletopTask:
    """Find the task whose instruction is `instruction` (used by the scripted policy, which only sees prompts)."""
    for task in TABLETOP_TASKS.values():
        if task.instruction == instruction.strip():
            return task
    raise KeyError(f"no tabletop task has the instruction {instruction!r}")


def goal_point(goal: str, block_pos: np.ndarray, target_pos: np.ndarray) -> np.ndarray:
    """Where the block should end up: the target centre, or a point near the named edge at the block's height."""
    if goal == "target":
        return np.asarray(target_pos, dtype=np.float64)
    if goal == "left":
        return np.array([SIDE_MARGIN * 0.6, block_pos[1]])
    if goal == "right":
        return np.array([TABLE_SIZE - SIDE_MARGIN * 0.6, block_pos[1]])
    raise ValueError(f"unknown goal {goal!r}; expected one of {GOALS}")


def is_goal_reached(goal: str, block_pos: np.ndarray, target_pos: np.ndarray) -> bool:
    """The success check of every tabletop task."""
    if goal == "target":
        return bool(np.linalg.norm(block_pos - target_pos) < ON_TARGET_TOLERANCE)
    if goal == "left":
        return bool(block_pos[0] < SIDE_MARGIN)
    if goal == "right":
        return bool(block_pos[0] > TABLE_SIZE - SIDE_MARGIN)
    raise ValueError(f"unknown goal {goal!r}; expected one of {GOALS}")


# What a failed episode did, from the blocks at its start and end: the failure taxonomy the evaluation counts.
FAILURE_MODES: tuple[str, ...] = ("wrong_block", "no_push", "pushed_away", "short")
MOVED = BLOCK_RADIUS / 2  # a block displaced more than this was pushed


def failure_mode(task: TabletopTask, blocks_start: np.ndarray, blocks_end: np.ndarray, target: np.ndarray) -> str:
    """Why an episode of `task` failed: "wrong_block" (another block moved more than the instructed one),
    "no_push" (no block moved: the end-effector never pushed one), "pushed_away" (the instructed block moved but
    ended no nearer its goal) or "short" (it moved towards its goal and did not get there in time)."""
    blocks_start, blocks_end = np.asarray(blocks_start, np.float64), np.asarray(blocks_end, np.float64)
    moved = np.linalg.norm(blocks_end - blocks_start, axis=1)
    k = BLOCK_COLORS.index(task.block)
    others = float(np.max(np.delete(moved, k)))
    if others > MOVED and others > moved[k]:
        return "wrong_block"
    if moved[k] <= MOVED:
        return "no_push"
    start = np.linalg.norm(blocks_start[k] - goal_point(task.goal, blocks_start[k], target))
    end = np.linalg.norm(blocks_end[k] - goal_point(task.goal, blocks_end[k], target))
    return "short" if end < start else "pushed_away"
