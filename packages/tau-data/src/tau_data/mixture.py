"""Weighted mixtures of heterogeneous LeRobot datasets, each mapped onto the standard training sample of tau.

Every frame goes through `tau_data.sample.build_sample` (the function acting uses too): images (N_cam, 3, H, W)
float in [0, 1] resized with padding, image_mask (N_cam,), state (max_state_dim,) and actions (chunk,
max_action_dim) normalised then zero-padded, state_dim, action_dim, action_is_pad (chunk,), prompt (str); the
mixture adds dataset_index and the configured extra columns (reward, advantage, ...), augments the images of
seeded draws. Per-sample transforms such as tokenization run in the loader (`make_loader(transform=...)`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tau_data.dataset import LeRobotDataset
from tau_data.errors import DatasetError
from tau_data.normalize import NormMode, Normalizer
from tau_data.sample import build_sample
from tau_data.stats import vector_stats
from tau_data.transforms import AugmentConfig, augment

log = logging.getLogger(__name__)


@dataclass
class DatasetSpec:
    """One mixture member and how its columns map onto the standard sample."""

    path: str                                   # local dataset root, or a hub repo id (downloaded with huggingface_hub)
    cameras: list[str | None] = field(default_factory=list)  # dataset camera key per camera slot; None = missing
    state: str = "observation.state"
    actions: str = "action"
    prompt: str = "task"                        # "task" (the episode's task string) or a string column
    extras: dict[str, str] = field(default_factory=dict)  # sample key -> per-frame column (reward, advantage, ...)
    weight: float | None = None                 # None everywhere: proportional to the number of frames
    episodes: list[int] | None = None           # None: all episodes
    robot_type: str | None = None               # defaults to info.json's robot_type
    control_mode: str | None = None
    name: str | None = None                     # defaults to the folder / repo name
    revision: str | None = None
    # Relative actions (openpi DeltaActions, LeRobot use_relative_actions): per action dimension, True trains on
    # action - state of the same dimension at the chunk's first frame (statistics on those deltas); acting adds
    # the state back. None: absolute actions.
    relative_actions: list[bool] | None = None


@dataclass
class MixtureConfig:
    """A weighted mixture and the standard sample it produces."""

    datasets: list[DatasetSpec]
    num_cameras: int = 2
    image_size: tuple[int, int] = (224, 224)
    max_state_dim: int = 32
    max_action_dim: int = 32
    chunk_size: int = 50
    action_fps: float | None = None             # resample actions to this rate (linear interpolation); None: native
    norm_modes: dict[str, NormMode] = field(default_factory=lambda: {"state": NormMode.QUANTILES,
                                                                     "actions": NormMode.QUANTILES})
    stats_per: str = "head"                     # "head": pooled per robot_type+control_mode; "dataset": per dataset
    extras: list[str] = field(default_factory=list)  # extra sample keys every member provides (0 when unmapped)
    augment: AugmentConfig | None = None
    tolerance_s: float = 1e-4

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MixtureConfig:
        """Build from plain data (a parsed YAML/JSON file); unknown keys are an error naming them."""
        data = dict(data)
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise DatasetError(f"unknown mixture config keys {unknown}", field=unknown[0])
        spec_fields = set(DatasetSpec.__dataclass_fields__)
        specs = []
        for i, spec in enumerate(data.pop("datasets", [])):
            bad = sorted(set(spec) - spec_fields)
            if bad:
                raise DatasetError(f"unknown dataset keys {bad}", dataset=str(spec.get("path", i)), field=bad[0])
            specs.append(DatasetSpec(**spec))
        if "image_size" in data:
            data["image_size"] = tuple(data["image_size"])
        if "norm_modes" in data:
            data["norm_modes"] = {k: NormMode(v) for k, v in data["norm_modes"].items()}
        if isinstance(data.get("augment"), dict):
            data["augment"] = AugmentConfig(**data["augment"])
        return cls(datasets=specs, **data)


class MixtureDataset(torch.utils.data.Dataset):
    """Map-style dataset over all members; an index is either an int (concatenated order) or a
    (dataset_index, row, augmentation_seed) triple as drawn by `MixtureSampler`. Images are augmented (when
    `config.augment` is set) only for triples with a seed, so the same draw always gives the same sample.

    Per-sample transforms (tokenization) are the loader's job: `make_loader(..., transform=...)`."""

    def __init__(self, config: MixtureConfig, normalizer: Normalizer | None = None) -> None:
        if not config.datasets:
            raise DatasetError("mixture has no datasets", field="datasets")
        if config.stats_per not in ("head", "dataset"):
            raise DatasetError(f"stats_per must be 'head' or 'dataset', got {config.stats_per!r}", field="stats_per")
        self.config = config
        self.members: list[LeRobotDataset] = []
        self.heads: list[str] = []
        for i, spec in enumerate(config.datasets):
            name = spec.name or Path(spec.path).name or f"dataset{i}"
            if name in [m.name for m in self.members]:
                name = f"{name}#{i}"  # members must differ by name: names key the per-dataset norm heads
            ds = LeRobotDataset(spec.path, revision=spec.revision, episodes=spec.episodes,
                                tolerance_s=config.tolerance_s, name=name)
            self._check_mapping(spec, ds)
            self.members.append(ds)
            self.heads.append(self._head(spec, ds))
        self.state_dims = [self._dim(ds, spec.state, config.max_state_dim, "state")
                           for ds, spec in zip(self.members, config.datasets)]
        self.action_dims = [self._dim(ds, spec.actions, config.max_action_dim, "actions")
                            for ds, spec in zip(self.members, config.datasets)]
        self.relative_masks = [self._relative_mask(spec, ds, a) for spec, ds, a in
                               zip(config.datasets, self.members, self.action_dims)]
        self.lengths = np.array([len(ds) for ds in self.members], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)[:-1]])
        self.weights = self._weights()
        self.chunk_offsets = [self._chunk_positions(ds.fps) for ds in self.members]
        self.normalizer = normalizer or self.compute_normalizer()
        missing = sorted(set(self.heads) - set(self.normalizer.stats))
        if missing:
            raise DatasetError(f"normaliser has no stats for norm heads {missing}", field="normalizer")

    def _check_mapping(self, spec: DatasetSpec, ds: LeRobotDataset) -> None:
        info = ds.meta.root / "meta" / "info.json"
        if len(spec.cameras) > self.config.num_cameras:
            raise DatasetError(f"{len(spec.cameras)} cameras mapped but num_cameras={self.config.num_cameras}",
                               dataset=ds.name, field="cameras")
        named = [("cameras", c) for c in spec.cameras if c is not None]
        named += [("state", spec.state), ("actions", spec.actions)]
        named += [(f"extras[{k!r}]", c) for k, c in spec.extras.items()]
        if spec.prompt != "task":
            named.append(("prompt", spec.prompt))
        for slot, column in named:
            if column not in ds.meta.features:
                raise DatasetError(f"mixture maps {slot} to column {column!r}, which the dataset does not have "
                                   f"(it has {sorted(ds.meta.features)})", dataset=ds.name, file=info, field=column)
        for camera in spec.cameras:
            if camera is not None and ds.meta.features[camera].get("dtype") not in ("video", "image"):
                raise DatasetError("camera slot mapped to a non-image column", dataset=ds.name, file=info,
                                   field=camera)
        unknown = [k for k in spec.extras if k not in self.config.extras]
        if unknown:
            raise DatasetError(f"extras {unknown} are not listed in MixtureConfig.extras", dataset=ds.name,
                               field="extras")

    def _head(self, spec: DatasetSpec, ds: LeRobotDataset) -> str:
        robot = spec.robot_type or ds.meta.robot_type
        if self.config.stats_per == "dataset" or not robot or robot == "unknown":
            return ds.name
        return f"{robot}/{spec.control_mode or 'default'}"

    @staticmethod
    def _dim(ds: LeRobotDataset, key: str, max_dim: int, what: str) -> int:
        dim = int(np.prod(ds.columns[key].shape[1:]))
        if dim > max_dim:
            raise DatasetError(f"{what} has {dim} dims, more than max_{what.rstrip('s')}_dim={max_dim}",
                               dataset=ds.name, field=key)
        return dim

    def _weights(self) -> np.ndarray:
        given = [spec.weight for spec in self.config.datasets]
        if all(w is None for w in given):
            weights = self.lengths.astype(np.float64)
        elif any(w is None for w in given):
            raise DatasetError("give a weight for every dataset or for none", field="weight")
        else:
            weights = np.array(given, dtype=np.float64)
        if np.any(weights < 0) or weights.sum() <= 0 or not np.all(np.isfinite(weights)):
            raise DatasetError(f"weights must be finite, non-negative and not all zero, got {weights.tolist()}",
                               field="weight")
        return weights / weights.sum()

    def _chunk_positions(self, fps: float) -> np.ndarray:
        """Frame offsets (possibly fractional) of the action chunk in a dataset recorded at `fps`."""
        rate = self.config.action_fps or fps
        offsets = np.arange(self.config.chunk_size) * (fps / rate)
        rounded = np.round(offsets)
        return rounded.astype(np.int64) if np.allclose(offsets, rounded, atol=1e-9) else offsets

    def _relative_mask(self, spec: DatasetSpec, ds: LeRobotDataset, action_dim: int) -> np.ndarray | None:
        """The boolean mask of the action dims trained relative to the state, checked against both dims."""
        if spec.relative_actions is None:
            return None
        mask = np.asarray(spec.relative_actions, dtype=bool)
        state_dim = int(np.prod(ds.columns[spec.state].shape[1:]))
        if mask.shape != (action_dim,) or (mask.any() and np.flatnonzero(mask).max() >= state_dim):
            raise DatasetError(f"relative_actions needs one flag per action dimension ({action_dim}), the relative "
                               f"ones within the state's {state_dim} dims; got {spec.relative_actions}",
                               dataset=ds.name, field="relative_actions")
        return mask

    def relative_chunk(self, d: int, row: int, chunk: np.ndarray) -> np.ndarray:
        """The action chunk of member `d` at `row` with its relative dims made relative to that frame's state."""
        mask = self.relative_masks[d]
        if mask is None:
            return chunk
        state = self.members[d].columns[self.config.datasets[d].state][row].reshape(-1)
        out = np.array(chunk, dtype=np.float32, copy=True)
        out[:, mask] -= state[: len(mask)][mask]
        return out

    def _action_rows(self, d: int) -> np.ndarray:
        """The action values statistics are computed on: the frames' actions, or with relative actions every
        frame's whole relative chunk (the values the model is trained on)."""
        ds = self.members[d]
        if self.relative_masks[d] is None:
            return ds.columns[self.config.datasets[d].actions].reshape(len(ds), -1)
        return np.concatenate([self.relative_chunk(d, row, self._action_chunk(d, row)[0]) for row in range(len(ds))])

    def compute_normalizer(self) -> Normalizer:
        """Exact stats (true quantiles) per norm head, pooled over the selected frames of the head's datasets."""
        pooled: dict[str, dict[str, list[np.ndarray]]] = {}
        dims: dict[str, tuple[int, int, str]] = {}
        relative: dict[str, tuple | None] = {}
        for d, (ds, spec, head) in enumerate(zip(self.members, self.config.datasets, self.heads)):
            mask = None if self.relative_masks[d] is None else tuple(self.relative_masks[d].tolist())
            if relative.setdefault(head, mask) != mask:
                raise DatasetError(f"norm head {head!r} mixes relative_actions {mask} with {relative[head]}; give "
                                   "its datasets the same mask or set stats_per='dataset'", dataset=ds.name,
                                   field="relative_actions")
            sd, ad = int(np.prod(ds.columns[spec.state].shape[1:])), int(np.prod(ds.columns[spec.actions].shape[1:]))
            if dims.setdefault(head, (sd, ad, ds.name))[:2] != (sd, ad):
                raise DatasetError(f"norm head {head!r} mixes state/action dims {(sd, ad)} with {dims[head][:2]} of "
                                   f"{dims[head][2]!r}; set control_mode or stats_per='dataset'", dataset=ds.name,
                                   field="robot_type")
            entry = pooled.setdefault(head, {"state": [], "actions": []})
            entry["state"].append(ds.columns[spec.state].reshape(len(ds), -1))
            entry["actions"].append(self._action_rows(d))
        stats = {}
        for head, feats in pooled.items():
            stats[head] = {}
            for feat, parts in feats.items():
                values = vector_stats(np.concatenate(parts))
                bad = [k for k, v in values.items() if not np.all(np.isfinite(v))]
                if bad:
                    raise DatasetError("NaN or infinite values in the data", dataset=head, field=f"{feat}.{bad[0]}")
                stats[head][feat] = values
        return Normalizer(stats=stats, modes=dict(self.config.norm_modes), dataset_heads=list(self.heads))

    def __len__(self) -> int:
        return int(self.lengths.sum())

    def _resolve(self, key: Any) -> tuple[int, int, int | None]:
        if isinstance(key, (tuple, list)):
            seed = key[2] if len(key) > 2 else None
            return int(key[0]), int(key[1]), None if seed is None else int(seed)
        key = int(key)
        d = int(np.searchsorted(self.offsets, key, side="right") - 1)
        return d, key - int(self.offsets[d]), None

    def _action_chunk(self, d: int, row: int) -> tuple[np.ndarray, np.ndarray]:
        ds, column = self.members[d], self.members[d].columns[self.config.datasets[d].actions]
        offsets = self.chunk_offsets[d]
        values = column.reshape(len(ds), -1)
        if offsets.dtype.kind == "i":
            rows, pad = ds.query_rows(row, offsets)
            return values[rows], pad
        pos, frame = ds.locate(row)
        start, length = int(ds.episode_starts[pos]), int(ds.episode_lengths[pos])
        where = np.clip(frame + offsets, 0, length - 1)
        lo = np.floor(where).astype(np.int64)
        hi = np.minimum(lo + 1, length - 1)
        frac = (where - lo)[:, None]
        chunk = values[start + lo] * (1 - frac) + values[start + hi] * frac
        return chunk.astype(np.float32), frame + offsets > length - 1 + 1e-6

    def __getitem__(self, key: Any) -> dict[str, Any]:
        cfg = self.config
        d, row, seed = self._resolve(key)
        ds, spec, head = self.members[d], cfg.datasets[d], self.heads[d]
        slots = [*spec.cameras, *[None] * (cfg.num_cameras - len(spec.cameras))]
        images = [None if camera is None else ds.camera_frames(camera, np.array([row]))[0] for camera in slots]
        if spec.prompt == "task":
            prompt = ds.meta.tasks.get(int(ds.columns["task_index"][row]), "")
        else:
            prompt = str(ds.columns[spec.prompt][row])
        chunk, pad = self._action_chunk(d, row)
        chunk = self.relative_chunk(d, row, chunk)
        sample = build_sample(images, ds.columns[spec.state][row], prompt, normalizer=self.normalizer, head=head,
                              image_size=cfg.image_size, max_state_dim=cfg.max_state_dim, actions=chunk,
                              action_is_pad=pad, max_action_dim=cfg.max_action_dim)
        mask = sample["image_mask"]
        if cfg.augment is not None and seed is not None and mask.any():
            gen = torch.Generator().manual_seed(seed)
            sample["images"][mask] = augment(sample["images"][mask], gen, cfg.augment)
        sample["dataset_index"] = torch.tensor(d)
        for name in cfg.extras:
            column = spec.extras.get(name)
            value = ds.columns[column][row] if column is not None else 0.0
            sample[name] = torch.tensor(np.asarray(value, dtype=np.float32).reshape(()).item())
        return sample
