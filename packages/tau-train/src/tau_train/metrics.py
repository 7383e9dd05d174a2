"""Metric sinks for the main process: a JSONL file (always), TensorBoard events and wandb (optional)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from .config import LoggingConfig

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"


class MetricsLogger:
    """Writes `{"step": s, **metrics}` lines to `<output_dir>/metrics.jsonl` and mirrors them to TensorBoard/wandb.

    A resumed run appends; readers keep the last record of each step (see `read_metrics`).
    """

    def __init__(self, output_dir: str | Path, config: LoggingConfig, run_config: dict[str, Any]):
        self.output_dir = Path(output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        _drop_torn_last_line(self.output_dir / METRICS_FILE)
        self._jsonl = open(self.output_dir / METRICS_FILE, "a", encoding="utf-8")
        self._tensorboard = None
        if config.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tensorboard = SummaryWriter(log_dir=str(self.output_dir / "tensorboard"))
        self._wandb = None
        if config.wandb.enabled:
            self._wandb = _start_wandb(self.output_dir, config, run_config)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        """Record scalar metrics for optimizer step `step`."""
        self._jsonl.write(json.dumps({"step": step, **metrics}) + "\n")
        self._jsonl.flush()
        if self._tensorboard is not None:
            for key, value in metrics.items():
                self._tensorboard.add_scalar(key, value, step)
        if self._wandb is not None:
            self._wandb.log(metrics, step=step)

    def __enter__(self) -> "MetricsLogger":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Flush and close every sink."""
        self._jsonl.close()
        if self._tensorboard is not None:
            self._tensorboard.close()
        if self._wandb is not None:
            self._wandb.finish()


def read_metrics(path: str | Path) -> dict[int, dict[str, float]]:
    """Metrics per step from a JSONL file; when a resumed run re-logged a step, its later record wins."""
    by_step: dict[int, dict[str, float]] = {}
    path = Path(path)
    if not path.is_file():
        return by_step
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")[:-1]  # a last line without "\n" is still being written (or was torn by a crash)
    for number, line in enumerate(lines, start=1):
        if line.strip():
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not a JSON metrics record: {error}") from error
            step = record.pop("step")
            by_step.setdefault(step, {}).update(record)
    return dict(sorted(by_step.items()))


def _drop_torn_last_line(path: Path) -> None:
    """Cut a trailing partial record left by a crash mid-write, so appended records start on their own line."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        log.warning("%s: dropping a partial last record left by an interrupted run", path)
        with open(path, "r+b") as handle:
            handle.truncate(data.rfind(b"\n") + 1)


def _start_wandb(output_dir: Path, config: LoggingConfig, run_config: dict[str, Any]):
    try:
        import wandb
    except ImportError as error:
        raise ImportError(
            "logging.wandb.enabled=true needs the `wandb` package: pip install wandb"
        ) from error
    id_file = output_dir / "wandb_run_id.txt"
    run_id = id_file.read_text().strip() if id_file.is_file() else wandb.util.generate_id()
    id_file.write_text(run_id)
    settings = config.wandb
    return wandb.init(
        project=settings.project,
        entity=settings.entity,
        name=settings.name,
        mode=settings.mode,
        id=run_id,
        resume="allow",
        dir=str(output_dir),
        config=run_config,
    )
