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
from tau_models import respect_umask

EPS = 1e-8


class NormMode(str, Enum):
    """MEAN_STD: (x-mean)/std. MIN_MAX and QUANTILES (q01/q99): affine map of [lo, hi] onto [-1, 1]. IDENTITY."""

    MEAN_STD = "MEAN_STD"
    MIN_MAX = "MIN_MAX"
    QUANTILES = "QUANTILES"
    IDENTITY = "IDENTITY"


# How eps guards the formulas (each library's own, so foreign checkpoints act on the values they were trained on):
# lerobot: (x-mean)/(std+eps); ranges 2(x-lo)/d-1 with d = hi-lo, d := eps where hi == lo (LeRobot, tau)
# opentau: std := 1 where |std| < eps, then (x-mean)/(std+eps); ranges with d = 1 where |hi-lo| < eps, centred:
#          (x - lo + (d-r)/2) / (d+eps) * 2 - 1 (OpenTau config_version 1)
# openpi:  (x-mean)/(std+eps); ranges (x-lo)/(hi-lo+eps) * 2 - 1 (openpi's transforms.Normalize)
CONVENTIONS = ("lerobot", "opentau", "openpi")

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
    convention: str = "lerobot"   # how eps guards the formulas, see CONVENTIONS
    eps: float = EPS
    source: str | None = field(default=None, compare=False)  # the file the stats came from (named in errors)
    heads: list[str] = field(init=False)

    def __post_init__(self) -> None:
        if self.convention not in CONVENTIONS:
            raise DatasetError(f"normalisation convention {self.convention!r} is not one of {CONVENTIONS}",
                               file=self.source, field="convention")
        if not (np.isfinite(self.eps) and self.eps > 0):
            raise DatasetError(f"eps must be a positive number, got {self.eps!r}", file=self.source, field="eps")
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
                        raise DatasetError(f"{mode.value} needs stat {name!r}", dataset=head, file=self.source,
                                           field=feature)
                    if not np.all(np.isfinite(value)):
                        raise DatasetError("NaN or infinite value in stats", dataset=head, file=self.source,
                                           field=f"{feature}.{name}")
                if mode == NormMode.MEAN_STD and self.convention != "opentau" and np.any(feats[feature]["std"] == 0):
                    dims = np.flatnonzero(feats[feature]["std"] == 0).tolist()
                    raise DatasetError(f"zero std in dims {dims}: MEAN_STD would divide by eps={self.eps:g}",
                                       dataset=head, file=self.source, field=f"{feature}.std")

    def _terms(self, head: str, feature: str, dim: int, dtype: Any) -> tuple[np.ndarray, ...] | None:
        """The first `dim` dims of (mean, std + eps) for MEAN_STD, or (lo, shift, span) for the ranges, computed in
        `dtype` (the values' precision, as the libraries compute them); None for IDENTITY."""
        mode = self.modes.get(feature, NormMode.IDENTITY)
        if mode == NormMode.IDENTITY:
            return None
        if head not in self.stats:
            raise DatasetError(f"no stats for norm head {head!r} (known: {self.heads})", dataset=head, field=feature)
        s, eps = {k: v.astype(dtype) for k, v in self.stats[head][feature].items()}, dtype(self.eps)
        if mode == NormMode.MEAN_STD:
            std = np.where(np.abs(s["std"]) < eps, dtype(1), s["std"]) if self.convention == "opentau" else s["std"]
            terms: tuple[np.ndarray, ...] = (s["mean"], std + eps)
        else:
            lo, hi = (s["min"], s["max"]) if mode == NormMode.MIN_MAX else (s["q01"], s["q99"])
            r = hi - lo
            if self.convention == "lerobot":
                terms = (lo, np.zeros_like(lo), np.where(r == 0, eps, r))
            elif self.convention == "openpi":
                terms = (lo, np.zeros_like(lo), r + eps)
            else:  # opentau: a degenerate range is widened to 1 around its centre
                d = np.where(np.abs(r) < eps, dtype(1), r)
                terms = (lo, (d - r) * dtype(0.5), d + eps)
        if dim > len(terms[0]):
            raise DatasetError(f"value has {dim} dims but the stats have {len(terms[0])}", dataset=head, field=feature)
        return tuple(t[:dim] for t in terms)

    def normalize(self, x: Any, head: str, feature: str) -> Any:
        """Raw values (..., D) -> model units, with the convention's formula (see CONVENTIONS)."""
        terms = self._terms(head, feature, x.shape[-1], _dtype(x))
        if terms is None:
            return x
        if len(terms) == 2:
            return (x - _like(terms[0], x)) / _like(terms[1], x)
        lo, shift, span = (_like(t, x) for t in terms)
        return (x - lo + shift) / span * 2 - 1

    def unnormalize(self, x: Any, head: str, feature: str) -> Any:
        """Model units (..., D) -> raw values (robot units): the inverse of normalize."""
        terms = self._terms(head, feature, x.shape[-1], _dtype(x))
        if terms is None:
            return x
        if len(terms) == 2:
            return x * _like(terms[1], x) + _like(terms[0], x)
        lo, shift, span = (_like(t, x) for t in terms)
        return (x + 1) / 2 * span + lo - shift

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (lists of floats)."""
        return {"modes": {k: v.value for k, v in self.modes.items()}, "dataset_heads": list(self.dataset_heads),
                "convention": self.convention, "eps": self.eps,
                "stats": {h: {f: {s: v.tolist() for s, v in e.items()} for f, e in feats.items()}
                          for h, feats in self.stats.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | None = None) -> Normalizer:
        return cls(stats=data["stats"], modes=data["modes"], dataset_heads=data.get("dataset_heads", []),
                   convention=data.get("convention", "lerobot"), eps=float(data.get("eps", EPS)), source=source)

    def save(self, path: str | Path) -> Path:
        """Write to .json or .safetensors (tensors named head/feature/stat, modes in the metadata)."""
        path = Path(path)
        if path.suffix == ".safetensors":
            from safetensors.numpy import save_file

            tensors = {f"{h}/{f}/{s}": v for h, feats in self.stats.items() for f, e in feats.items()
                       for s, v in e.items()}
            save_file(tensors, str(path), metadata={"modes": json.dumps(self.to_dict()["modes"]),
                                                    "dataset_heads": json.dumps(self.dataset_heads),
                                                    "convention": self.convention, "eps": repr(self.eps)})
            respect_umask(path)  # safetensors writes 0600
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
                meta = f.metadata()
                modes = json.loads(meta["modes"])
                dataset_heads = json.loads(meta.get("dataset_heads", "[]"))
                for name in f.keys():
                    head, feature, stat = name.rsplit("/", 2)
                    stats.setdefault(head, {}).setdefault(feature, {})[stat] = f.get_tensor(name)
            return cls(stats=stats, modes=modes, dataset_heads=dataset_heads, source=str(path),
                       convention=meta.get("convention", "lerobot"), eps=float(meta.get("eps", EPS)))
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise DatasetError(f"not valid JSON ({error})", file=path) from error
        return cls.from_dict(data, source=str(path))


def _dtype(x: Any) -> Any:
    """float64 for float64 values, else float32 (torch half types too)."""
    return np.float64 if str(getattr(x, "dtype", "")) in ("float64", "torch.float64") else np.float32


def _like(values: np.ndarray, x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return torch.as_tensor(values, dtype=x.dtype, device=x.device)
    return values.astype(np.asarray(x).dtype, copy=False)
