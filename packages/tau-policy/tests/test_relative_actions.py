"""Relative actions at acting time: the bundle records the mask and the policy adds the observed state back."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from conftest import CAMERAS_A, record_robot_a, tiny_model
from tau_data import DatasetSpec, MixtureConfig, MixtureDataset, NormMode
from tau_policy import Policy, PolicyBundle, Provenance, load_policy
from tau_policy.layout import PolicyLayout


def test_acting_adds_the_state_back_on_the_relative_dims(tmp_path):
    spec = DatasetSpec(path=str(record_robot_a(tmp_path / "robot_a")), cameras=CAMERAS_A,
                       relative_actions=[True, False])
    mix = MixtureDataset(MixtureConfig(datasets=[spec], num_cameras=2, image_size=(16, 16), max_state_dim=4,
                                       max_action_dim=4, chunk_size=3,
                                       norm_modes={"state": NormMode.MEAN_STD, "actions": NormMode.MEAN_STD}))
    bundle = PolicyBundle.from_mixture(tiny_model(), mix, provenance=Provenance(source="test"))
    bundle.save(tmp_path / "policy")
    relative = load_policy(tmp_path / "policy")
    assert relative.layout.relative_actions == (True, False)
    absolute = Policy(dataclasses.replace(relative.bundle, layouts=(
        dataclasses.replace(relative.layout, relative_actions=None),)))
    rng = np.random.default_rng(0)
    observation = {c: rng.integers(0, 256, (2, 20, 30, 3), dtype=np.uint8) for c in CAMERAS_A}
    observation["observation.state"] = rng.normal(size=(2, 3)).astype(np.float32) * 5
    noise = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(1))
    difference = relative.act(observation, ["push"] * 2, noise=noise) - absolute.act(observation, ["push"] * 2,
                                                                                       noise=noise)
    np.testing.assert_allclose(difference[..., 0], np.repeat(observation["observation.state"][:, None, 0], 3, 1),
                               rtol=0, atol=1e-5)
    np.testing.assert_array_equal(difference[..., 1], 0)


def test_a_relative_mask_must_match_the_action_dims():
    with pytest.raises(ValueError, match="relative_actions"):
        PolicyLayout(head="a", cameras=("top",), image_size=(8, 8), state_dim=1, action_dim=2, chunk_size=3,
                     max_state_dim=4, max_action_dim=4, relative_actions=(False, True))
