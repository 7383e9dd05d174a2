"""The normalised action chunks a mixture trains on, gathered as one array (e.g. to fit a FAST tokenizer on)."""

from __future__ import annotations

import numpy as np

from tau_data.mixture import MixtureDataset


def normalized_action_chunks(mixture: MixtureDataset, max_chunks: int | None = None, seed: int = 0) -> np.ndarray:
    """float32 (N, chunk_size, max_action_dim): the normalised, zero-padded action chunk of N frames (all of them,
    or `max_chunks` drawn without replacement by `seed`), exactly the `actions` of the mixture's samples."""
    total = len(mixture)
    frames = np.arange(total)
    if max_chunks is not None and max_chunks < total:
        frames = np.sort(np.random.default_rng(seed).choice(total, size=max_chunks, replace=False))
    members = np.searchsorted(mixture.offsets, frames, side="right") - 1
    rows = frames - mixture.offsets[members]
    return np.stack([mixture[(int(d), int(r), None)]["actions"].numpy() for d, r in zip(members, rows)])
