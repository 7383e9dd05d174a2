"""Task ids, suites and environment construction for every simulator tau-sim wraps.

A task id is "<suite>/<task>": "tabletop/push_red_to_target" (any tabletop suite name works as the prefix) or
"libero_spatial/3" (task index within the LIBERO suite). `make_env` builds the gymnasium env for a task id.
"""

from __future__ import annotations

import re
from typing import Any

import gymnasium as gym

from tau_sim.tabletop_tasks import TABLETOP_SUITES, TABLETOP_TASKS

LIBERO_SUITE_SIZES: dict[str, int] = {
    "libero_spatial": 10,
    "libero_object": 10,
    "libero_goal": 10,
    "libero_10": 10,
    "libero_90": 90,
}


def list_suites() -> list[str]:
    """Every suite name accepted in task ids."""
    return [*TABLETOP_SUITES, *LIBERO_SUITE_SIZES]


def suite_tasks(suite: str) -> list[str]:
    """The task ids of a suite, in order."""
    if suite in TABLETOP_SUITES:
        return [f"{suite}/{name}" for name in TABLETOP_SUITES[suite]]
    if suite in LIBERO_SUITE_SIZES:
        return [f"{suite}/{i}" for i in range(LIBERO_SUITE_SIZES[suite])]
    raise KeyError(f"unknown suite {suite!r}; known suites: {list_suites()}")


def split_task_id(task_id: str) -> tuple[str, str]:
    """("suite", "task") from "suite/task", with a clear error for anything else."""
    suite, sep, task = task_id.partition("/")
    if not sep or not task or suite not in list_suites():
        raise ValueError(
            f"task id must look like '<suite>/<task>' with a suite in {list_suites()}, got {task_id!r}"
        )
    return suite, task


def suite_of(task_id: str) -> str:
    return split_task_id(task_id)[0]


def make_env(task_id: str, **kwargs: Any) -> gym.Env:
    """Build the environment of one task id; `kwargs` go to the env class (TabletopEnv or LiberoEnv)."""
    suite, task = split_task_id(task_id)
    if suite in TABLETOP_SUITES:
        if task not in TABLETOP_SUITES[suite]:
            raise ValueError(f"task {task!r} is not in suite {suite!r}: {TABLETOP_SUITES[suite]}")
        from tau_sim.tabletop_env import TabletopEnv

        return TabletopEnv(task, **kwargs)
    if not task.isdigit() or int(task) >= LIBERO_SUITE_SIZES[suite]:
        raise ValueError(f"LIBERO task must be an index below {LIBERO_SUITE_SIZES[suite]}, got {task_id!r}")
    from tau_sim.libero_env import LiberoEnv

    return LiberoEnv(suite, int(task), **kwargs)


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"_", name))


def register_envs() -> None:
    """Register gymnasium ids: tau_sim/Tabletop-v0 (task=...), tau_sim/Tabletop<Task>-v0, tau_sim/Libero-v0."""
    if "tau_sim/Tabletop-v0" in gym.registry:
        return
    gym.register(id="tau_sim/Tabletop-v0", entry_point="tau_sim.tabletop_env:TabletopEnv")
    for name in TABLETOP_TASKS:
        gym.register(
            id=f"tau_sim/Tabletop{_camel(name)}-v0",
            entry_point="tau_sim.tabletop_env:TabletopEnv",
            kwargs={"task": name},
        )
    gym.register(id="tau_sim/Libero-v0", entry_point="tau_sim.libero_env:LiberoEnv")
