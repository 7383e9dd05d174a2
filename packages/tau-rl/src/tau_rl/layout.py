"""The on-disk layout of a RECAP run and its atomic stage markers.

    <run_dir>/
      config.json                  the RecapConfig the run was started with
      init/                        the starting policy (trained on the demonstrations) and its evaluation
      iter_001/, iter_002/, ...    one folder per iteration, never rewritten once its stages are complete:
        rollouts/                  LeRobot v3.0 dataset of this iteration's episodes (tau-data writer)
        advantages/<source>.parquet  per-frame value, return, advantage and label of every training source
        advantages/threshold.json  the automatically chosen threshold and the positive fraction reached
        value/                     value model checkpoint (and its training run)
        policy/                    advantage-conditioned policy checkpoint (and its training run)
        eval/                      tau-sim evaluation of the new policy
        value_calibration.png, advantage_histogram.png, summary.json
        stages/<stage>.json        written last, atomically: the stage finished (with a small record)

A crashed run resumes at the first stage of the first iteration without a marker; that stage's partial outputs
are discarded (training stages keep their trainer checkpoints and resume inside the stage).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ITERATION_STAGES: tuple[str, ...] = ("collect", "value", "advantages", "policy", "evaluate", "summary")
INIT_STAGES: tuple[str, ...] = ("policy", "evaluate")


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temporary file beside `path`, fsync it, then rename: readers see the old file or the new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@dataclass(frozen=True)
class StageFolder:
    """A folder of stages (the init folder or one iteration) with its markers."""

    root: Path
    stages: tuple[str, ...]

    def marker(self, stage: str) -> Path:
        if stage not in self.stages:
            raise ValueError(f"unknown stage {stage!r}; stages of {self.root.name}: {self.stages}")
        return self.root / "stages" / f"{stage}.json"

    def is_done(self, stage: str) -> bool:
        return self.marker(stage).is_file()

    def mark_done(self, stage: str, record: dict[str, Any] | None = None) -> None:
        """Record that `stage` finished; refuse to mark it before the stages it depends on."""
        earlier = self.stages[: self.stages.index(stage)]
        missing = [s for s in earlier if not self.is_done(s)]
        if missing:
            raise RuntimeError(f"{self.root}: cannot mark {stage!r} done before {missing}")
        write_json_atomic(self.marker(stage), {"stage": stage, "finished_at": time.time(), **(record or {})})

    def record(self, stage: str) -> dict[str, Any]:
        """The record written when `stage` was marked done."""
        path = self.marker(stage)
        if not path.is_file():
            raise FileNotFoundError(f"stage {stage!r} of {self.root} is not complete ({path} missing)")
        return json.loads(path.read_text())

    def first_incomplete(self) -> str | None:
        return next((s for s in self.stages if not self.is_done(s)), None)

    def is_complete(self) -> bool:
        return self.first_incomplete() is None


def discard(path: Path) -> None:
    """Remove the partial output of an unfinished stage (a file or a folder), if any."""
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


@dataclass(frozen=True)
class IterationFolder(StageFolder):
    """Paths of one RECAP iteration."""

    index: int = 0

    @property
    def rollouts(self) -> Path:
        return self.root / "rollouts"

    @property
    def advantages(self) -> Path:
        return self.root / "advantages"

    @property
    def threshold(self) -> Path:
        return self.advantages / "threshold.json"

    @property
    def value(self) -> Path:
        return self.root / "value"

    @property
    def policy(self) -> Path:
        return self.root / "policy"

    @property
    def eval(self) -> Path:
        return self.root / "eval"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def calibration_png(self) -> Path:
        return self.root / "value_calibration.png"

    @property
    def histogram_png(self) -> Path:
        return self.root / "advantage_histogram.png"


@dataclass(frozen=True)
class RunLayout:
    """A RECAP run directory."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def init(self) -> IterationFolder:
        return IterationFolder(self.root / "init", INIT_STAGES, index=0)

    def iteration(self, index: int) -> IterationFolder:
        if index < 1:
            raise ValueError(f"iterations are numbered from 1, got {index}")
        return IterationFolder(self.root / f"iter_{index:03d}", ITERATION_STAGES, index=index)
