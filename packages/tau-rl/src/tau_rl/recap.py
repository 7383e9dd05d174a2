"""`run_recap(config)`: N iterations of collect -> fit value -> advantages -> fit policy -> evaluate, resumable.

Every stage ends by writing its completion marker atomically; a rerun of the same config skips complete stages
and restarts at the first incomplete one (see tau_rl.layout). A rerun with a different config is refused, except
for `iterations` (which may grow to extend a finished run) and `run_dir` (the folder may move).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tau_train import load_config

from tau_rl import stages
from tau_rl.config import RecapConfig
from tau_rl.layout import IterationFolder, RunLayout, write_json_atomic

log = logging.getLogger(__name__)

StageFn = Callable[[RecapConfig, RunLayout, IterationFolder], dict[str, Any]]

ITERATION_STAGE_FNS: dict[str, StageFn] = {
    "collect": stages.collect,
    "value": stages.fit_value,
    "advantages": stages.compute_advantages,
    "policy": stages.fit_policy,
    "evaluate": stages.evaluate_policy,
    "summary": stages.summarize,
}


def _init_stage(name: str) -> StageFn:
    if name == "policy":
        return lambda config, layout, folder: stages.init_policy(config, layout)
    return stages.evaluate_policy


def _check_config(config: RecapConfig, layout: RunLayout) -> None:
    """Write config.json on the first run; refuse to resume a run that was started with other settings (a setting
    the saved config lacks counts as its default)."""
    current = json.loads(json.dumps(dataclasses.asdict(config)))
    if layout.config.is_file():
        # through tau-train's config loader, which fills the settings the saved file lacks with their defaults
        saved = json.loads(json.dumps(dataclasses.asdict(load_config(layout.config, schema=RecapConfig))))
        changed = sorted(k for k in set(saved) | set(current)
                         if k not in ("iterations", "run_dir") and saved.get(k) != current.get(k))
        if changed:
            raise ValueError(f"{layout.config}: this run was started with different settings for {changed}; "
                             "use a new run_dir (only `iterations` may change when resuming)")
    write_json_atomic(layout.config, current)


def _run_stages(config: RecapConfig, layout: RunLayout, folder: IterationFolder,
                fns: Callable[[str], StageFn]) -> None:
    for name in folder.stages:
        if folder.is_done(name):
            continue
        log.info("%s: stage %s", folder.root.name, name)
        started = time.perf_counter()
        record = fns(name)(config, layout, folder)
        folder.mark_done(name, {**record, "seconds": round(time.perf_counter() - started, 2)})


def run_recap(config: RecapConfig) -> dict[str, Any]:
    """Run (or resume) the RECAP run described by `config`; return the run summary (also in <run_dir>/summary.json).

    The summary lists the initial policy's success and each iteration's success with 95% Wilson intervals over the
    seeded evaluation episodes.
    """
    config.validate()
    layout = RunLayout(Path(config.run_dir))
    layout.root.mkdir(parents=True, exist_ok=True)
    _check_config(config, layout)
    _run_stages(config, layout, layout.init, _init_stage)
    for index in range(1, config.iterations + 1):
        _run_stages(config, layout, layout.iteration(index), ITERATION_STAGE_FNS.__getitem__)
    return write_run_summary(config, layout)


def write_run_summary(config: RecapConfig, layout: RunLayout) -> dict[str, Any]:
    """summary.json and summary.md of the whole run from the iterations' summaries."""
    baseline = layout.init.record("evaluate")
    rows = [{"iteration": 0, "policy": "initial (demos)", "success_rate": baseline["success_rate"],
             "ci95": baseline["ci95"], "episodes": baseline["episodes"],
             "failure_modes": baseline.get("failure_modes", {})}]
    for index in range(1, config.iterations + 1):
        summary = json.loads(layout.iteration(index).summary.read_text())
        rows.append({"iteration": index, "policy": f"RECAP iteration {index}", "success_rate": summary["success_rate"],
                     "ci95": summary["ci95"], "episodes": summary["eval_episodes"],
                     "failure_modes": summary.get("failure_modes", {}),
                     "rollout_success_rate": summary["rollouts"]["success_rate"],
                     "threshold": summary["advantages"]["threshold"]})
    run = {"tasks": config.tasks, "iterations": rows}
    write_json_atomic(layout.root / "summary.json", run)
    (layout.root / "summary.md").write_text(markdown_table(rows) + "\n")
    return run


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """Success per iteration as a markdown table (rate, 95% Wilson interval, episodes)."""
    lines = ["| policy | success | 95% CI | episodes |", "|---|---|---|---|"]
    for row in rows:
        lo, hi = row["ci95"]
        lines.append(f"| {row['policy']} | {row['success_rate']:.1%} | [{lo:.1%}, {hi:.1%}] | {row['episodes']} |")
    return "\n".join(lines)
