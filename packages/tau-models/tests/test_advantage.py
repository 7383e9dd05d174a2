"""Advantage-conditioned prompts and classifier-free guidance in sample_actions."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import make_batch
from tau_models import PiModel, format_prompt, guided_velocity, tiny_pi05_config


def test_prompt_formatting():
    assert format_prompt(" pick_up it\n", [0, 255]) == "Task: pick up it, State: 0 255;\nAction: "
    assert format_prompt("go", [1], advantage=True) == "Task: go, State: 1;\nAdvantage: positive;\nAction: "
    assert format_prompt("go", None, advantage=False) == "Task: go;\nAdvantage: negative;\nAction: "
    assert format_prompt("go", advantage=True, variant="pi0") == "go\nAdvantage: positive;\n"


def test_guided_velocity():
    v_u, v_c = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    torch.testing.assert_close(guided_velocity(v_u, v_c, 1.0), v_c)
    torch.testing.assert_close(guided_velocity(v_u, v_c, 0.0), v_u)
    torch.testing.assert_close(guided_velocity(v_u, v_c, 2.0), 2 * v_c - v_u)


@pytest.fixture
def model(tokenizer_dir):
    cfg = tiny_pi05_config(
        tokenizer_name=tokenizer_dir, advantage_conditioning=True, advantage_dropout=0.0, dropout=0.0
    )
    return PiModel(cfg)


def test_training_prompts_carry_the_label(model):
    batch = make_batch(2)
    batch["advantage_positive"] = torch.tensor([True, False])
    prompts = model.build_prompts(batch, model.training_advantages(batch))
    assert "Advantage: positive;" in prompts[0] and "Advantage: negative;" in prompts[1]
    model(batch)["loss"].backward()
    with pytest.raises(ValueError, match="advantage_positive"):
        model(make_batch(2))


def test_advantage_dropout(model):
    model.config.advantage_dropout = 1.0
    batch = make_batch(2)
    batch["advantage_positive"] = torch.tensor([True, False])
    assert model.train().training_advantages(batch) == [None, None]
    assert model.eval().training_advantages(batch) == [True, False]


def test_cfg_weight_one_equals_conditioned_and_zero_unconditioned(model):
    model.eval()
    batch, noise = make_batch(2), torch.randn(2, 10, 32)
    conditioned = model.sample_actions(batch, noise=noise, advantage=True)
    torch.testing.assert_close(
        model.sample_actions(batch, noise=noise, guidance_weight=1.0), conditioned, rtol=1e-5, atol=1e-5
    )
    plain = PiModel(
        dataclasses.replace(model.config, advantage_conditioning=False),
        prompt_tokenizer=model.prompt_tokenizer,
    )
    plain.load_state_dict(model.state_dict())
    unconditioned = plain.eval().sample_actions(batch, noise=noise)
    torch.testing.assert_close(
        model.sample_actions(batch, noise=noise, guidance_weight=0.0), unconditioned, rtol=1e-5, atol=1e-5
    )
    guided = model.sample_actions(batch, noise=noise, guidance_weight=3.0)
    assert not torch.allclose(guided, conditioned, atol=1e-4)


def test_guidance_needs_conditioning(tokenizer_dir):
    model = PiModel(tiny_pi05_config(tokenizer_name=tokenizer_dir))
    with pytest.raises(ValueError, match="advantage_conditioning"):
        model.sample_actions(make_batch(1), guidance_weight=2.0)
