import numpy as np
import pytest
import torch
from conftest import shared_dir
from tau_models import SampleTokenizer
from tau_models.config import tiny_pi05_config
from tau_models.flow import guided_velocity
from tau_models.pi0 import PiModel

from tau_rl.conditioning import advantage_labels, model_conditioning


def _tiny_policy(mode: str, dropout: float = 0.3) -> PiModel:
    tokenizer = shared_dir() / "parity" / "pi05_tiny_a" / "tokenizer"
    if not tokenizer.is_dir():
        raise RuntimeError(f"shared tiny tokenizer missing at {tokenizer}")
    torch.manual_seed(0)
    config = tiny_pi05_config(tokenizer_name=str(tokenizer), tokenizer_max_length=64, max_state_dim=8,
                              max_action_dim=4, chunk_size=4, **model_conditioning(mode, dropout))
    return PiModel(config)


def _batch(n: int, positive: list[bool]) -> dict:
    return {"images": torch.rand(n, 2, 3, 32, 32), "image_mask": torch.ones(n, 2, dtype=torch.bool),
            "state": torch.rand(n, 8) * 2 - 1, "state_dim": torch.full((n,), 2),
            "prompt": ["push the red block onto the green target"] * n,
            "advantage_positive": torch.tensor(positive)}


def test_labels_from_threshold_and_interventions():
    adv = np.array([-0.2, 0.1, 0.3, -0.5])
    intervention = np.array([False, False, False, True])
    assert advantage_labels(adv, 0.05, intervention, "conditioned").tolist() == [False, True, True, True]
    assert advantage_labels(adv, 0.05, intervention, "conditioned", interventions_positive=False).tolist() == [
        False, True, True, False]
    assert advantage_labels(adv, 0.05, intervention, "positive").all()
    with pytest.raises(ValueError, match="mode"):
        advantage_labels(adv, 0.0, intervention, "sometimes")


def test_model_settings_per_mode():
    assert model_conditioning("conditioned") == {"advantage_conditioning": True, "advantage_dropout": 0.3}
    assert model_conditioning("positive", 0.3) == {"advantage_conditioning": True, "advantage_dropout": 0.0}
    with pytest.raises(ValueError, match="dropout"):
        model_conditioning("conditioned", 1.0)


def test_conditioning_dropout_rate_is_thirty_percent_in_training_and_none_when_acting():
    tokenize = SampleTokenizer(_tiny_policy("conditioned").config)
    rng = np.random.default_rng(0)
    labels = [bool(x) for x in rng.random(4000) < 0.3]
    drawn = [tokenize.advantage_line({"advantage_positive": torch.tensor(label)}, "label", int(seed))
             for label, seed in zip(labels, rng.integers(0, 2**62, size=len(labels)))]
    dropped = sum(a is None for a in drawn) / len(drawn)
    assert dropped == pytest.approx(0.3, abs=0.025)
    assert all(a == label for a, label in zip(drawn, labels) if a is not None)
    # acting asks for a line explicitly: no dropout
    assert all(tokenize.advantage_line({}, True, None) is True for _ in range(20))


def test_prompts_carry_the_indicator_and_positive_mode_never_drops():
    tokenize = SampleTokenizer(_tiny_policy("positive").config)
    sample = {k: v[0] for k, v in _batch(1, [True]).items()}
    assert all(tokenize.advantage_line(sample, "label", seed) is True for seed in range(50))
    prompts = [tokenize.prompt_text(sample, a) for a in (True, False, None)]
    assert "Advantage: positive" in prompts[0] and "Advantage: negative" in prompts[1]
    assert "Advantage" not in prompts[2]
    assert all(len(tokenize.prompt_tokenizer.token_ids(p)) <= 64 for p in prompts)


def test_cfg_math():
    v_c, v_u = torch.randn(2, 4, 3), torch.randn(2, 4, 3)
    assert torch.allclose(guided_velocity(v_u, v_c, 1.0), v_c)
    assert torch.allclose(guided_velocity(v_u, v_c, 0.0), v_u)
    assert torch.allclose(guided_velocity(v_u, v_c, 2.0), 2 * v_c - v_u)
