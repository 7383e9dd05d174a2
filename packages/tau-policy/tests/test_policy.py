"""Policy.act / SimPolicy: the acting path builds the same samples as training, and returns robot-unit actions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import ROBOT_A, make_episode, mixture, tiny_model
from tau_policy import Policy, PolicyBundle, Provenance, SimPolicy

PROMPTS = ["push block 0", "push block 1"]


@pytest.fixture(scope="module")
def bundle(two_robots) -> PolicyBundle:
    return PolicyBundle.from_mixture(tiny_model(advantage_conditioning=True), mixture(two_robots[0]),
                                     provenance=Provenance(), sim_state_key="privileged")


def _observation(b: int = 2, seed: int = 0, size: tuple[int, int] = (20, 30)) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"observation.images.top": rng.integers(0, 256, (b, *size, 3), dtype=np.uint8),
            "observation.images.wrist": rng.integers(0, 256, (b, *size, 3), dtype=np.uint8),
            "observation.state": rng.normal(size=(b, 3)).astype(np.float32)}


def test_live_observation_and_recorded_frame_give_bit_identical_samples(two_robots):
    """A frame recorded to a dataset (lossless PNG cameras) and read back through the training path (MixtureDataset)
    gives exactly the image and state tensors the acting path builds from the live observation."""
    mix = mixture(two_robots[0])
    policy = Policy(PolicyBundle.from_mixture(tiny_model(), mix, provenance=Provenance()))
    episode = make_episode(1, ("top", "wrist"), 3, 2)  # the second episode recorded into robot_a (20x30 frames)
    start = int(mix.members[0].episode_starts[1])
    for t in (0, 4):
        live = {"observation.images.top": episode.images[t : t + 1, 0],
                "observation.images.wrist": episode.images[t : t + 1, 1],
                "observation.state": episode.state[t : t + 1]}
        acting = policy.batch(live, [episode.instruction])
        training = mix[(0, start + t, None)]
        assert torch.equal(acting["images"][0], training["images"])
        assert torch.equal(acting["state"][0], training["state"])
        assert torch.equal(acting["image_mask"][0], training["image_mask"])
        assert int(acting["state_dim"][0]) == int(training["state_dim"]) and acting["prompt"] == [training["prompt"]]
        assert acting["images"].shape == (1, 2, 3, 16, 16)


def test_actions_are_seeded_unnormalised_and_sliced(bundle):
    obs = _observation()
    a, b = Policy(bundle, seed=3).act(obs, PROMPTS), Policy(bundle, seed=3).act(obs, PROMPTS)
    assert a.shape == (2, 3, 2) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, Policy(bundle, seed=4).act(obs, PROMPTS))
    policy = Policy(bundle)
    noise = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(9))
    by_hand = policy.model.sample_actions(policy.batch(obs, PROMPTS), noise=noise)[:, :, :2].numpy()
    expected = bundle.normalizer.unnormalize(by_hand, bundle.layout().head, "actions")
    np.testing.assert_allclose(policy.act(obs, PROMPTS, noise), expected, atol=1e-6)
    with pytest.raises(ValueError, match=r"noise must be \(B, chunk, max_action_dim\) = \(2, 3, 4\)"):
        policy.act(obs, PROMPTS, torch.zeros(2, 3, 2))


def test_any_camera_resolution_is_resized_to_the_trained_size(bundle):
    batch = Policy(bundle).batch(_observation(size=(48, 24)), PROMPTS)
    assert batch["images"].shape == (2, 2, 3, 16, 16)
    assert batch["images"][:, :, :, :, :4].abs().sum() == 0 and batch["images"][:, :, :, :, 12:].abs().sum() == 0


def test_guidance_weight_changes_the_actions(bundle):
    obs, noise = _observation(), torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(5))
    policy = Policy(bundle)
    plain = policy.act(obs, PROMPTS, noise)
    assert not np.allclose(policy.act(obs, PROMPTS, noise, guidance_weight=2.5), plain, atol=1e-4)
    unconditioned = Policy(PolicyBundle(tiny_model(), bundle.normalizer, bundle.layouts, bundle.provenance))
    with pytest.raises(ValueError, match="needs a policy trained with advantage conditioning"):
        unconditioned.act(obs, PROMPTS, guidance_weight=2.0)


def test_metadata_describes_layout_heads_and_provenance(bundle):
    meta = Policy(bundle, num_inference_steps=3).metadata
    assert meta["layout"]["cameras"] == ["observation.images.top", "observation.images.wrist"]
    assert meta["heads"] == [f"{ROBOT_A}/default"] and meta["model"]["num_inference_steps"] == 3
    assert meta["model"]["advantage_conditioning"] is True and meta["provenance"]["weights"] == "raw"
    import json

    json.dumps(meta)


def test_bad_observations_are_named(bundle):
    policy, obs = Policy(bundle), _observation()
    with pytest.raises(KeyError, match=r"lacks \['observation.images.wrist'\]"):
        policy.act({k: v for k, v in obs.items() if k != "observation.images.wrist"}, PROMPTS)
    with pytest.raises(ValueError, match=r"observation\['observation.images.top'\] must be uint8 \(B=2, H, W, 3\)"):
        policy.act({**obs, "observation.images.top": obs["observation.images.top"].astype(np.float32)}, PROMPTS)
    with pytest.raises(ValueError, match=r"must be \(B=2, 3\), got \(2, 4\)"):
        policy.act({**obs, "observation.state": np.zeros((2, 4), np.float32)}, PROMPTS)


def _sim_observation(b: int = 2) -> dict[str, np.ndarray]:
    obs = _observation(b)
    return {"images": np.stack([obs["observation.images.top"], obs["observation.images.wrist"]], axis=1),
            "state": np.zeros((b, 2), np.float32), "privileged": obs["observation.state"]}


def test_sim_policy_maps_tau_sim_observations_and_is_reproducible(bundle):
    sim_obs, obs = _sim_observation(), _observation()
    features = SimPolicy(Policy(bundle)).features(sim_obs)  # state from "privileged": the layout's sim_state_key
    assert sorted(features) == sorted(obs)
    assert all(np.array_equal(features[k], obs[k]) for k in obs)
    a = SimPolicy(Policy(bundle), seed=11).act(sim_obs, PROMPTS)
    b = SimPolicy(Policy(bundle), seed=11).act(sim_obs, PROMPTS)
    np.testing.assert_array_equal(a, b)
    noise = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(11))
    np.testing.assert_array_equal(a, Policy(bundle).act(obs, PROMPTS, noise))
    guided = SimPolicy(Policy(bundle), seed=11, guidance_weight=2.5).act(sim_obs, PROMPTS)
    np.testing.assert_array_equal(guided, Policy(bundle).act(obs, PROMPTS, noise, guidance_weight=2.5))


def test_sim_policy_maps_cameras_by_name_and_checks_counts(bundle):
    sim_obs = _sim_observation()
    swapped = {**sim_obs, "images": sim_obs["images"][:, ::-1]}
    features = SimPolicy(Policy(bundle), camera_names=["wrist", "top"]).features(swapped)
    assert np.array_equal(features["observation.images.top"], sim_obs["images"][:, 0])
    with pytest.raises(ValueError, match=r"observation has 1 cameras, the policy has 2 camera slots"):
        SimPolicy(Policy(bundle)).act({**sim_obs, "images": sim_obs["images"][:, :1]}, PROMPTS)
    with pytest.raises(KeyError, match="no 'privileged' entry"):
        SimPolicy(Policy(bundle)).act({k: v for k, v in sim_obs.items() if k != "privileged"}, PROMPTS)
    state_obs = {**sim_obs, "state": sim_obs["privileged"]}
    assert SimPolicy(Policy(bundle), state_key="state").act(state_obs, PROMPTS).shape == (2, 3, 2)
    unconditioned = Policy(PolicyBundle(tiny_model(), bundle.normalizer, bundle.layouts, bundle.provenance))
    with pytest.raises(ValueError, match="advantage conditioning"):
        SimPolicy(unconditioned, guidance_weight=2.0)
