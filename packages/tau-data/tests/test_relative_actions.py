"""Relative actions: a per-dimension mask, the chunk made relative to the frame's state, statistics on the deltas,
and a round trip back to the absolute chunk."""

from __future__ import annotations

import numpy as np
import pytest

from tau_data import DatasetError, DatasetSpec, MixtureConfig, MixtureDataset, NormMode

MASK = [True, True, False, True, False, False, True]  # robot_a: state 8, action 7


def _mixture(robot_a, mask, modes=NormMode.MEAN_STD) -> MixtureDataset:
    spec = DatasetSpec(path=str(robot_a), cameras=["observation.images.front"], relative_actions=mask)
    return MixtureDataset(MixtureConfig(datasets=[spec], num_cameras=1, image_size=(16, 16), max_state_dim=8,
                                        max_action_dim=8, chunk_size=5,
                                        norm_modes={"state": modes, "actions": modes}))


def test_chunks_are_relative_on_masked_dims_and_round_trip(robot_a):
    absolute, relative = _mixture(robot_a, None), _mixture(robot_a, MASK)
    mask = np.array(MASK)
    ds = relative.members[0]
    for row in (0, 7, len(ds) - 1):  # the last row: a padded chunk
        raw, _ = relative._action_chunk(0, row)
        state = ds.columns["observation.state"][row]
        delta = relative.relative_chunk(0, row, raw)
        np.testing.assert_array_equal(delta[:, ~mask], raw[:, ~mask])
        np.testing.assert_array_equal(delta[:, mask], raw[:, mask] - state[:7][mask])
        # the sample holds the normalised deltas; unnormalising and adding the state gives the absolute chunk back
        sample = relative[(0, row, None)]["actions"].numpy()[:, :7]
        back = relative.normalizer.unnormalize(sample, relative.heads[0], "actions")
        back[:, mask] += state[:7][mask]
        np.testing.assert_allclose(back, raw, rtol=0, atol=1e-5)
        unchanged = absolute[(0, row, None)]["actions"].numpy()[:, :7]
        np.testing.assert_allclose(absolute.normalizer.unnormalize(unchanged, absolute.heads[0], "actions"), raw,
                                   rtol=0, atol=1e-5)


def test_statistics_are_computed_on_the_deltas(robot_a):
    relative = _mixture(robot_a, MASK)
    head = relative.heads[0]
    deltas = np.concatenate([relative.relative_chunk(0, r, relative._action_chunk(0, r)[0])
                             for r in range(len(relative.members[0]))])
    stats = relative.normalizer.stats[head]["actions"]
    np.testing.assert_allclose(stats["mean"], deltas.mean(0), rtol=1e-5, atol=1e-6)
    absolute = _mixture(robot_a, None).normalizer.stats[head]["actions"]
    assert not np.allclose(stats["mean"][np.array(MASK)], absolute["mean"][np.array(MASK)])


@pytest.mark.parametrize("mask", [[True] * 6, [True] * 8])
def test_a_mask_of_the_wrong_length_is_named(robot_a, mask):
    with pytest.raises(DatasetError, match="relative_actions needs one flag per action dimension"):
        _mixture(robot_a, mask)
