"""Normalisation of state/action vectors per norm head, invertible for inference and serialisable with a checkpoint."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tau_data.errors import DatasetError

EPS = 1e-8


class NormMode(str, Enum):
    """MEAN_STD: (x-mean)/std. MIN_MAX and QUANTILES (q01/q99): affine map of [lo, hi] onto [-1, 1]. IDENTITY."""

    MEAN_STD = "MEAN_STD"
    MIN_MAX = "MIN_MAX"
    QUANTILES = "QUANTILES"
    IDENTITY = "IDENTITY"


_NEEDED = {NormMode.MEAN_STD: ("mean", "std"), NormMode.MIN_MAX: ("min", "max"), NormMode.QUANTILES: ("q01", "q99"),
           NormMode.IDENTITY: ()}


@dataclass
class Normalizer:
    """Stats per head (a robot_type+control_mode pair or a dataset name) and feature, and one mode per feature.

    `normalize(x, head, feature)` maps raw values to model units; `unnormalize` maps model outputs back to robot
    units, e.g. at inference `unnormalize(pred[..., :action_dim], normalizer.dataset_heads[dataset_index], "actions")`.
    Works on numpy arrays and torch tensors of shape (..., D) with D <= the stats' dims.
    """

    stats: dict[str, dict[str, dict[str, np.ndarray]]]
    modes: dict[str, NormMode]
    dataset_heads: list[str] = field(default_factory=list)  # norm head of each mixture member (by dataset_index)
    heads: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.modes = {k: NormMode(v) for k, v in self.modes.items()}
        self.stats = {h: {f: {s: np.asarray(v, dtype=np.float64).reshape(-1) for s, v in entry.items()}
                          for f, entry in feats.items()} for h, feats in self.stats.items()}
        self.heads = sorted(self.stats)
        unknown = sorted(set(self.dataset_heads) - set(self.stats))
        if unknown:
            raise DatasetError(f"dataset_heads names heads without stats: {unknown}", field="dataset_heads")
        for head, feats in self.stats.items():
            for feature, mode in self.modes.items():
                for name in _NEEDED[mode]:
                    value = feats.get(feature, {}).get(name)
                    if value is None:
                        raise DatasetError(f"{mode.value} needs stat {name!r}", dataset=head, field=feature)
                    if not np.all(np.isfinite(value)):
                        raise DatasetError("NaN or infinite value in stats", dataset=head, field=f"{feature}.{name}")

    def _affine(self, head: str, feature: str, dim: int) -> tuple[np.ndarray, np.ndarray]:
        """(offset, scale) with normalized = (x - offset) / scale, over the first `dim` dims."""
        mode = self.modes.get(feature, NormMode.IDENTITY)
        if mode == NormMode.IDENTITY:
            return np.zeros(dim), np.ones(dim)
        if head not in self.stats:
            raise DatasetError(f"no stats for norm head {head!r} (known: {self.heads})", dataset=head, field=feature)
        s = self.stats[head][feature]
        if mode == NormMode.MEAN_STD:
            offset, scale = s["mean"], s["std"] + EPS
        else:
            lo, hi = (s["min"], s["max"]) if mode == NormMode.MIN_MAX else (s["q01"], s["q99"])
            span = np.where(hi - lo == 0, EPS, hi - lo)
            offset, scale = lo + span / 2, span / 2
        if dim > len(offset):
            raise DatasetError(f"value has {dim} dims but the stats have {len(offset)}", dataset=head, field=feature)
        return offset[:dim], scale[:dim]

    def normalize(self, x: Any, head: str, feature: str) -> Any:
        offset, scale = self._affine(head, feature, x.shape[-1])
        return (x - _like(offset, x)) / _like(scale, x)

    def unnormalize(self, x: Any, head: str, feature: str) -> Any:
        offset, scale = self._affine(head, feature, x.shape[-1])
        return x * _like(scale, x) + _like(offset, x)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (lists of floats)."""
        return {"modes": {k: v.value for k, v in self.modes.items()}, "dataset_heads": list(self.dataset_heads),
                "stats": {h: {f: {s: v.tolist() for s, v in e.items()} for f, e in feats.items()}
                          for h, feats in self.stats.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Normalizer:
        return cls(stats=data["stats"], modes=data["modes"], dataset_heads=data.get("dataset_heads", []))

    def save(self, path: str | Path) -> Path:
        """Write to .json or .safetensors (tensors named head/feature/stat, modes in the metadata)."""
        path = Path(path)
        if path.suffix == ".safetensors":
            from safetensors.numpy import save_file

            tensors = {f"{h}/{f}/{s}": v for h, feats in self.stats.items() for f, e in feats.items()
                       for s, v in e.items()}
            save_file(tensors, str(path), metadata={"modes": json.dumps(self.to_dict()["modes"]),
                                                    "dataset_heads": json.dumps(self.dataset_heads)})
        else:
            path.write_text(json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Normalizer:
        path = Path(path)
        if not path.is_file():
            raise DatasetError("missing normaliser file", file=path)
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            stats: dict[str, dict[str, dict[str, np.ndarray]]] = {}
            with safe_open(str(path), framework="np") as f:
                modes = json.loads(f.metadata()["modes"])
                dataset_heads = json.loads(f.metadata().get("dataset_heads", "[]"))
                for name in f.keys():
                    head, feature, stat = name.rsplit("/", 2)
                    stats.setdefault(head, {}).setdefault(feature, {})[stat] = f.get_tensor(name)
            return cls(stats=stats, modes=modes, dataset_heads=dataset_heads)
        return cls.from_dict(json.loads(path.read_text()))


def _like(values: np.ndarray, x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return torch.as_tensor(values, dtype=x.dtype, device=x.device)
    return values.astype(np.asarray(x).dtype, copy=False)
