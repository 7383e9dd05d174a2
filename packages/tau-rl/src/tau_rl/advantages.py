"""N-step advantages from the value model: A_t = sum_{k<N} r_{t+k} + V(o_{t+N}) - V(o_t), all normalised.

Past the end of an episode the value is 0 (nothing more to collect), so frames within N steps of the end use the
whole remaining return: A_t = G_t - V(o_t).
"""

from __future__ import annotations

import numpy as np

from tau_rl.returns import episode_bounds


def n_step_advantages(values: np.ndarray, rewards: np.ndarray, episode_index: np.ndarray, n: int) -> np.ndarray:
    """Per-frame N-step advantages (float64) of a flat frame table whose episodes are contiguous, in frame order.

    `values` are the value model's expected (normalised) values, `rewards` the per-step rewards already divided by
    the return normaliser, so the advantages live on the same scale as the values.
    """
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    rewards = np.asarray(rewards, dtype=np.float64).reshape(-1)
    episode_index = np.asarray(episode_index).reshape(-1)
    if n < 1:
        raise ValueError(f"the advantage look-ahead N must be >= 1, got {n}")
    if not (len(values) == len(rewards) == len(episode_index)):
        raise ValueError(f"values ({len(values)}), rewards ({len(rewards)}) and episode_index ({len(episode_index)}) "
                         "must have one entry per frame")
    for name, arr in (("values", values), ("rewards", rewards)):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contain NaN or inf (first at frame {int(np.flatnonzero(~np.isfinite(arr))[0])})")
    out = np.empty_like(values)
    for start, stop in episode_bounds(episode_index):
        v, r = values[start:stop], rewards[start:stop]
        length = stop - start
        csum = np.concatenate([[0.0], np.cumsum(r)])
        t = np.arange(length)
        ahead = np.minimum(t + n, length)
        bootstrap = np.where(t + n < length, v[np.minimum(t + n, length - 1)], 0.0)
        out[start:stop] = csum[ahead] - csum[t] + bootstrap - v
    return out
