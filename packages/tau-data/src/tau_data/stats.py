"""Exact dataset statistics: true quantiles over all frames (not averages of per-episode ones), stored as JSON."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from tau_data.errors import DatasetError
from tau_data.metadata import INDEX_COLUMNS, parse_stats

QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}
EXACT_STATS_FILE = "tau_stats.json"

Stats = dict[str, dict[str, np.ndarray]]


def vector_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """min/max/mean/std/count and true q01..q99 over axis 0 of a (frames, ...) array."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if len(x) == 0:
        raise ValueError("cannot compute stats of zero frames")
    out = {"min": x.min(0), "max": x.max(0), "mean": x.mean(0), "std": x.std(0), "count": np.array([len(x)])}
    qs = np.quantile(x, list(QUANTILES.values()), axis=0)
    out.update({name: q for name, q in zip(QUANTILES, qs)})
    return out


def image_histogram(frames: np.ndarray) -> np.ndarray:
    """Per-channel counts (3, 256) of uint8 (T, H, W, 3) frames; summing histograms pools frames exactly."""
    flat = np.asarray(frames, dtype=np.uint8).reshape(-1, frames.shape[-1])
    return np.stack([np.bincount(flat[:, c], minlength=256) for c in range(flat.shape[1])]).astype(np.int64)


def histogram_stats(hist: np.ndarray, frames: int) -> dict[str, np.ndarray]:
    """Per-channel stats in [0, 1] shaped (C, 1, 1) from uint8 histograms, with exact (inverted-CDF) quantiles."""
    values = np.arange(256, dtype=np.float64) / 255.0
    total = hist.sum(1, keepdims=True).astype(np.float64)
    mean = (hist * values).sum(1) / total[:, 0]
    std = np.sqrt(np.maximum((hist * values**2).sum(1) / total[:, 0] - mean**2, 0.0))
    cdf = np.cumsum(hist, 1) / total
    nonzero = hist > 0
    out = {"min": values[nonzero.argmax(1)], "max": values[255 - nonzero[:, ::-1].argmax(1)], "mean": mean,
           "std": std}
    for name, q in QUANTILES.items():
        out[name] = values[(cdf < q).sum(1).clip(max=255)]
    out = {k: v.reshape(-1, 1, 1) for k, v in out.items()}
    out["count"] = np.array([frames])
    return out


def stats_to_json(stats: Stats) -> dict[str, dict[str, Any]]:
    """Nested lists, the layout of LeRobot's meta/stats.json."""
    return {feat: {name: np.asarray(v).tolist() for name, v in entry.items()} for feat, entry in stats.items()}


def write_stats(stats: Stats, path: str | Path) -> Path:
    """Write stats as JSON atomically (temp file + rename), refusing NaN/inf."""
    path = Path(path)
    for feat, entry in stats.items():
        for name, value in entry.items():
            if not np.all(np.isfinite(value)):
                raise DatasetError("NaN or infinite value in stats", file=path, field=f"{feat}.{name}")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(stats_to_json(stats), indent=2))
    os.replace(tmp, path)
    return path


def read_stats(path: str | Path, dataset: str | None = None) -> Stats:
    """Read a stats JSON file, refusing NaN/inf."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError("missing stats file", dataset=dataset, file=path)
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetError(f"invalid JSON ({err}); expected a stats file as written by tau or LeRobot",
                           dataset=dataset, file=path) from err
    if not isinstance(raw, dict):
        raise DatasetError(f"holds a JSON {type(raw).__name__}; expected a mapping of feature to stats",
                           dataset=dataset, file=path)
    return parse_stats(raw, dataset=dataset or path.parent.parent.name, file=path)


def dataset_stats(dataset, features: list[str] | None = None) -> Stats:
    """Exact stats of the numeric (non-camera, non-index) features of a LeRobotDataset, over all its frames."""
    meta = dataset.meta
    keys = features or [k for k, f in meta.features.items()
                        if f.get("dtype") not in ("video", "image", "string") and k not in INDEX_COLUMNS]
    out = {}
    for key in keys:
        values = dataset.columns[key]
        if not isinstance(values, np.ndarray) or values.dtype.kind not in "biuf":
            continue
        dataset.check_finite(key)
        out[key] = vector_stats(values.reshape(len(values), -1))
    return out


def write_dataset_stats(root: str | Path, filename: str = EXACT_STATS_FILE) -> Path:
    """Compute exact stats of a dataset's vector features and write them to <root>/meta/<filename>."""
    from tau_data.dataset import LeRobotDataset

    dataset = LeRobotDataset(root)
    return write_stats(dataset_stats(dataset), Path(root) / "meta" / filename)
