"""Episode-level train / validation split of a mixture: whole episodes are held out, so no frame of a validation
episode is trained on, and the split depends only on the seed and the datasets (identical on every rank)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from tau_data.errors import DatasetError
from tau_data.metadata import load_meta, resolve_root
from tau_data.mixture import MixtureConfig


def split_episodes(config: MixtureConfig, fraction: float, seed: int = 0) -> tuple[MixtureConfig, MixtureConfig]:
    """(train, validation) mixture configs: from each member, round(fraction * episodes) episodes (at least one),
    drawn by a generator seeded with (seed, member index), go to validation; the rest stay in training. The
    validation config has no augmentation."""
    if not 0.0 < fraction < 1.0:
        raise DatasetError(f"validation fraction must be in (0, 1), got {fraction}", field="validation.fraction")
    train_specs, val_specs = [], []
    for i, spec in enumerate(config.datasets):
        episodes = spec.episodes
        if episodes is None:
            episodes = [e.index for e in load_meta(resolve_root(spec.path, revision=spec.revision)).episodes]
        episodes = sorted(int(e) for e in episodes)
        if len(episodes) < 2:
            raise DatasetError(f"a validation split needs at least 2 episodes, got {len(episodes)}",
                               dataset=spec.name or spec.path, field="episodes")
        count = min(max(1, round(fraction * len(episodes))), len(episodes) - 1)
        chosen = np.random.default_rng([seed, i]).permutation(len(episodes))[:count]
        held_out = sorted(episodes[j] for j in chosen)
        train_specs.append(replace(spec, episodes=[e for e in episodes if e not in set(held_out)]))
        val_specs.append(replace(spec, episodes=held_out))
    return replace(config, datasets=train_specs), replace(config, datasets=val_specs, augment=None)
