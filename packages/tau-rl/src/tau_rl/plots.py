"""The per-iteration figures: value calibration (predicted vs. actual return) and the advantage histogram."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def calibration_table(predicted: np.ndarray, actual: np.ndarray, num_groups: int = 10) -> list[dict[str, float]]:
    """Frames grouped by predicted value (equal-count groups): mean predicted vs. mean actual return per group."""
    order = np.argsort(predicted, kind="stable")
    rows = []
    for group in np.array_split(order, min(num_groups, len(order))):
        if len(group):
            rows.append({"predicted": float(np.mean(predicted[group])), "actual": float(np.mean(actual[group])),
                         "frames": int(len(group))})
    return rows


def plot_value_calibration(predicted: np.ndarray, actual: np.ndarray, success: np.ndarray, path: Path,
                           title: str = "") -> list[dict[str, float]]:
    """Scatter of predicted value vs. the frame's true normalised return (coloured by episode outcome), with the
    group means and the diagonal; returns the calibration table drawn."""
    predicted, actual = np.asarray(predicted, float), np.asarray(actual, float)
    success = np.asarray(success, bool)
    table = calibration_table(predicted, actual)
    fig, ax = plt.subplots(figsize=(5, 5))
    for mask, colour, label in ((success, "tab:green", "success episodes"), (~success, "tab:red", "failed episodes")):
        if mask.any():
            ax.scatter(actual[mask], predicted[mask], s=4, alpha=0.3, c=colour, label=label)
    ax.plot([row["actual"] for row in table], [row["predicted"] for row in table], "k-o", ms=3, label="group means")
    ax.plot([-1, 0], [-1, 0], "--", c="grey", lw=1, label="perfect calibration")
    ax.set_xlim(-1.02, 0.02)
    ax.set_ylim(-1.02, 0.02)
    ax.set_xlabel("actual normalised return")
    ax.set_ylabel("predicted value (expectation over bins)")
    ax.set_title(title or "value calibration")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return table


def plot_advantage_histogram(advantages: np.ndarray, threshold: float, success: np.ndarray, path: Path,
                             title: str = "") -> None:
    """Histogram of advantages of frames from successful and failed episodes, with the chosen threshold."""
    advantages, success = np.asarray(advantages, float), np.asarray(success, bool)
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.histogram_bin_edges(advantages, bins=60)
    for mask, colour, label in ((success, "tab:green", "success episodes"), (~success, "tab:red", "failed episodes")):
        if mask.any():
            ax.hist(advantages[mask], bins=bins, alpha=0.6, color=colour, label=label)
    ax.axvline(threshold, color="k", ls="--", label=f"threshold {threshold:.4g} "
                                                      f"({np.mean(advantages > threshold):.0%} positive)")
    ax.set_xlabel("N-step advantage (normalised)")
    ax.set_ylabel("frames")
    ax.set_title(title or "advantages")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
