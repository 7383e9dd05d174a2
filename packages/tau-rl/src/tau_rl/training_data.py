"""Training samples for the value model and the policy: tau-data's mixture of demonstrations and rollouts, with
per-frame RL labels (return, advantage, advantage_positive, ...) attached from arrays kept outside the datasets."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tau_data.dataset import LeRobotDataset
from tau_data.mixture import MixtureDataset


def frame_labels(member: LeRobotDataset, assume_success: bool | None = None) -> dict[str, np.ndarray]:
    """episode_index, frame_index, success and intervention of every row of a dataset, in reader order.

    `success` comes from the dataset's per-frame "success" column (the episode label, as rollouts are written);
    a dataset without one needs `assume_success` (e.g. True for curated demonstrations).
    """
    episode = np.asarray(member.columns["episode_index"]).reshape(-1).astype(np.int64)
    if "success" in member.columns:
        success = np.asarray(member.columns["success"]).reshape(-1).astype(bool)
        for start, length in zip(member.episode_starts, member.episode_lengths):
            # the label of an episode is the success flag of its last frame
            success[start : start + length] = success[start + length - 1]
    elif assume_success is not None:
        success = np.full(len(episode), bool(assume_success))
    else:
        raise ValueError(f"dataset {member.name!r} has no 'success' column; set assume_success for it "
                         f"(root {member.meta.root})")
    intervention = (np.asarray(member.columns["intervention"]).reshape(-1).astype(bool)
                    if "intervention" in member.columns else np.zeros(len(episode), bool))
    return {"episode_index": episode, "frame_index": np.asarray(member.columns["frame_index"]).reshape(-1),
            "success": success, "intervention": intervention}


class LabelledMixture(torch.utils.data.Dataset):
    """A MixtureDataset whose samples also carry per-frame labels: labels[name][d] is an array over member d's rows.

    Indices are those of the mixture (ints, or (dataset_index, row, seed) triples from tau-data's sampler).
    """

    def __init__(self, mixture: MixtureDataset, labels: dict[str, Sequence[np.ndarray]]) -> None:
        self.mixture = mixture
        for name, per_member in labels.items():
            if len(per_member) != len(mixture.members):
                raise ValueError(f"label {name!r} has arrays for {len(per_member)} datasets, the mixture has "
                                 f"{len(mixture.members)}")
            for member, values in zip(mixture.members, per_member):
                if len(values) != len(member):
                    raise ValueError(f"label {name!r} has {len(values)} entries for dataset {member.name!r} of "
                                     f"{len(member)} frames")
        self.labels = {name: [torch.as_tensor(np.asarray(v)) for v in arrays] for name, arrays in labels.items()}

    def __len__(self) -> int:
        return len(self.mixture)

    @property
    def lengths(self) -> np.ndarray:
        return self.mixture.lengths

    @property
    def weights(self) -> np.ndarray:
        return self.mixture.weights

    def locate(self, key: Any) -> tuple[int, int]:
        """(dataset_index, row) of a mixture index."""
        if isinstance(key, (tuple, list)):
            return int(key[0]), int(key[1])
        d = int(np.searchsorted(self.mixture.offsets, int(key), side="right") - 1)
        return d, int(key) - int(self.mixture.offsets[d])

    def __getitem__(self, key: Any) -> dict[str, Any]:
        sample = self.mixture[key]
        d, row = self.locate(key)
        for name, arrays in self.labels.items():
            sample[name] = arrays[d][row]
        return sample


class FrameGroups(torch.utils.data.Dataset):
    """Groups of rows of a LabelledMixture, each sampled with its own weight (e.g. the positive and the negative
    frames of every source), in the shape tau-data's sampler draws from: group g's row r is row groups[g][1][r] of
    mixture member groups[g][0]. Empty groups are left out."""

    def __init__(self, dataset: LabelledMixture, groups: Sequence[tuple[int, np.ndarray]],
                 weights: Sequence[float]) -> None:
        if len(groups) != len(weights):
            raise ValueError(f"{len(groups)} frame groups but {len(weights)} weights")
        kept = [(g, w) for g, w in zip(groups, weights) if len(g[1])]
        if not kept or sum(w for _, w in kept) <= 0:
            raise ValueError("every frame group is empty or has weight 0: nothing to sample")
        self.dataset = dataset
        self.groups = [(int(d), np.asarray(rows, dtype=np.int64)) for (d, rows), _ in kept]
        self.lengths = np.array([len(rows) for _, rows in self.groups])
        self.weights = np.array([w for _, w in kept], dtype=np.float64) / sum(w for _, w in kept)

    def __len__(self) -> int:
        return int(self.lengths.sum())

    def __getitem__(self, key: Any) -> dict[str, Any]:
        if not isinstance(key, (tuple, list)):
            raise TypeError(f"FrameGroups is indexed by (group, row[, seed]) from the mixture sampler, got {key!r}")
        d, rows = self.groups[int(key[0])]
        return self.dataset[(d, int(rows[int(key[1])]), *key[2:])]
