"""PNG plots of a run's loss curves and learning rates, drawn from its metrics JSONL (Agg canvas, no pyplot)."""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .metrics import read_metrics


def _series(metrics: dict[int, dict[str, float]], key: str) -> tuple[list[int], list[float]]:
    steps = [s for s, m in metrics.items() if key in m]
    return steps, [metrics[s][key] for s in steps]


def _plot(
    metrics: dict[int, dict[str, float]], keys: list[str], title: str, ylabel: str, path: Path, log_y: bool
) -> None:
    figure = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for key in keys:
        steps, values = _series(metrics, key)
        axes.plot(steps, values, label=key, marker="o" if len(steps) < 30 else None, markersize=3)
    if log_y and all(v > 0 for k in keys for v in _series(metrics, k)[1]):
        axes.set_yscale("log")
    axes.set_title(title)
    axes.set_xlabel("optimizer step")
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)


def plot_metrics(metrics_file: str | Path, out_dir: str | Path) -> list[Path]:
    """Write loss.png (train and validation losses) and lr.png (LR per parameter group); return the paths."""
    metrics = read_metrics(metrics_file)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    keys = sorted({k for m in metrics.values() for k in m})
    written = []
    loss_keys = [k for k in keys if k.endswith("loss") or "/loss" in k]
    if loss_keys:
        written.append(out_dir / "loss.png")
        _plot(metrics, loss_keys, "loss", "loss", written[-1], log_y=True)
    lr_keys = [k for k in keys if k.startswith("lr/")]
    if lr_keys:
        written.append(out_dir / "lr.png")
        _plot(metrics, lr_keys, "learning rate", "lr", written[-1], log_y=False)
    return written
