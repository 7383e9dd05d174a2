import numpy as np
import pytest
import torch
from conftest import shared_dir
from tau_data.normalize import Normalizer
from tau_models.config import tiny_pi05_config
from tau_models.pi0 import PiModel

from tau_rl.conditioning import model_conditioning
from tau_rl.models import PolicyBundle
from tau_rl.policy_adapter import PiPolicy

HEAD = "tau_sim_tabletop/default"
BUNDLE = PolicyBundle(norm_head=HEAD, state_dim=2, action_dim=2, image_size=28, num_cameras=2)


@pytest.fixture(scope="module")
def model() -> PiModel:
    tokenizer = shared_dir() / "parity" / "pi05_tiny_a" / "tokenizer"
    if not tokenizer.is_dir():
        raise RuntimeError(f"shared tiny tokenizer missing at {tokenizer}")
    torch.manual_seed(0)
    config = tiny_pi05_config(tokenizer_name=str(tokenizer), tokenizer_max_length=64, max_state_dim=4,
                              max_action_dim=4, chunk_size=3, num_inference_steps=2,
                              **model_conditioning("conditioned"))
    policy = PiModel(config)
    with torch.no_grad():  # a fresh init barely reads the prompt; larger weights make the indicator matter
        for param in policy.parameters():
            param.normal_(0.0, 0.1)
    return policy


def _normalizer() -> Normalizer:
    stats = {HEAD: {"state": {"q01": [0.0, 0.0], "q99": [1.0, 1.0]}, "actions": {"q01": [-0.5, -0.5], "q99": [0.5, 0.5]}}}
    return Normalizer(stats=stats, modes={"state": "QUANTILES", "actions": "QUANTILES"})


def _observation(b: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"images": rng.integers(0, 255, size=(b, 2, 16, 16, 3), dtype=np.uint8),
            "state": rng.uniform(0, 1, size=(b, 2)).astype(np.float32)}


def test_observation_becomes_a_standard_batch(model):
    policy = PiPolicy(model, _normalizer(), BUNDLE)
    batch = policy.batch(_observation(), ["push the red block to the right edge of the table"] * 2)
    assert batch["images"].shape == (2, 2, 3, 28, 28) and batch["images"].max() <= 1.0
    assert batch["state"].shape == (2, 4) and torch.all(batch["state"][:, 2:] == 0)
    np.testing.assert_allclose(batch["state"][:, :2].numpy(), _observation()["state"] * 2 - 1, atol=1e-6)


def test_actions_are_unnormalised_clipped_and_seeded(model):
    obs, prompts = _observation(), ["push the red block to the right edge of the table"] * 2
    a = PiPolicy(model, _normalizer(), BUNDLE, seed=3).act(obs, prompts)
    b = PiPolicy(model, _normalizer(), BUNDLE, seed=3).act(obs, prompts)
    assert a.shape == (2, 3, 2) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert np.abs(a).max() <= 1.0


def test_guidance_weight_one_is_the_conditioned_policy(model):
    obs, prompts = _observation(), ["push the red block to the right edge of the table"] * 2
    plain = PiPolicy(model, _normalizer(), BUNDLE, seed=5, action_clip=None).act(obs, prompts)
    batch = PiPolicy(model, _normalizer(), BUNDLE).batch(obs, prompts)
    noise = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(5))
    guided_one = model.sample_actions(batch, noise=noise, guidance_weight=1.0)[:, :, :2].numpy()
    np.testing.assert_allclose(plain, _normalizer().unnormalize(guided_one, HEAD, "actions"), atol=1e-5)
    guided = PiPolicy(model, _normalizer(), BUNDLE, guidance_weight=2.5, seed=5, action_clip=None).act(obs, prompts)
    assert not np.allclose(guided, plain, atol=1e-4)


def test_bad_observations_raise(model):
    policy = PiPolicy(model, _normalizer(), BUNDLE)
    obs = _observation()
    with pytest.raises(ValueError, match="cameras"):
        policy.act({**obs, "images": obs["images"][:, :1]}, ["x", "y"])
    with pytest.raises(ValueError, match="uint8"):
        policy.act({**obs, "images": obs["images"].astype(np.float32)}, ["x", "y"])
    with pytest.raises(ValueError, match="state has 3 dims"):
        policy.act({**obs, "state": np.zeros((2, 3), np.float32)}, ["x", "y"])
    privileged = PiPolicy(model, _normalizer(), PolicyBundle(**{**BUNDLE.__dict__, "state_key": "privileged"}))
    with pytest.raises(KeyError, match="privileged"):
        privileged.act(obs, ["x", "y"])
