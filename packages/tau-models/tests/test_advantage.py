"""Advantage-conditioned prompts and classifier-free guidance in sample_actions."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import numpy as np
from conftest import make_batch, tokenize
from tau_models import PiModel, SampleTokenizer, format_prompt, guided_velocity, tiny_pi05_config


def test_prompt_formatting():
    assert format_prompt(" pick_up it\n", [0, 255]) == "Task: pick up it, State: 0 255;\nAction: "
    assert format_prompt("go", [1], advantage=True) == "Task: go, State: 1;\nAdvantage: positive;\nAction: "
    assert format_prompt("go", None, advantage=False) == "Task: go;\nAdvantage: negative;\nAction: "
    assert format_prompt("go", advantage=True, variant="pi0") == "go\nAdvantage: positive;\n"
    # pi0 keeps the task as LeRobot's Pi0NewLineProcessor does: no cleaning, one trailing newline
    assert format_prompt("open_the drawer\n", variant="pi0") == "open_the drawer\n"


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
    tokenizer = SampleTokenizer(model.config)
    batch = make_batch(2)
    batch["advantage_positive"] = torch.tensor([True, False])
    tokenized = tokenizer.tokenize_batch(batch)
    texts = [tokenizer.prompt_tokenizer.decode(ids[pad]) for ids, pad in zip(tokenized["tokens"], tokenized["token_pad"])]
    assert "Advantage: positive;" in texts[0] and "Advantage: negative;" in texts[1]
    model(tokenized)["loss"].backward()
    with pytest.raises(KeyError, match="advantage_positive"):
        tokenizer.tokenize_batch(make_batch(2))


def test_advantage_dropout_is_seeded(model):
    """Each sample's draw comes from its own seed: the same seed gives the same tokens (exact resume), and
    about advantage_dropout of the samples lose the line."""
    tokenizer = SampleTokenizer(dataclasses.replace(model.config, advantage_dropout=0.3))
    sample = {"prompt": "go", "state": torch.zeros(32), "advantage_positive": torch.tensor(True)}
    with_line = tokenizer(sample, advantage=True)["tokens"]
    without = tokenizer(sample, advantage=None)["tokens"]
    drawn = [tokenizer(sample, rng=seed)["tokens"] for seed in range(400)]
    assert all(torch.equal(t, with_line) or torch.equal(t, without) for t in drawn)
    dropped = sum(torch.equal(t, without) for t in drawn)
    assert 80 < dropped < 160  # 0.3 of 400 = 120
    again = [tokenizer(sample, rng=seed)["tokens"] for seed in range(400)]
    assert all(torch.equal(a, b) for a, b in zip(drawn, again))
    generator = np.random.default_rng(5)
    first = [tokenizer(sample, rng=generator)["tokens"] for _ in range(20)]
    generator = np.random.default_rng(5)
    assert all(torch.equal(a, tokenizer(sample, rng=generator)["tokens"]) for a in first)
    with pytest.raises(ValueError, match="needs rng"):
        tokenizer(sample)
    always = SampleTokenizer(dataclasses.replace(model.config, advantage_dropout=1.0))
    assert torch.equal(always(sample, rng=0)["tokens"], without)
    assert torch.equal(SampleTokenizer(model.config)(sample)["tokens"], with_line)  # dropout 0: no rng needed


def test_cfg_weight_one_equals_conditioned_and_zero_unconditioned(model):
    model.eval()
    tokenizer = SampleTokenizer(model.config)
    raw, noise = make_batch(2), torch.randn(2, 10, 32)
    batch = tokenizer.tokenize_batch(raw, advantage=True, guidance=True)
    conditioned = model.sample_actions(batch, noise=noise)
    torch.testing.assert_close(
        model.sample_actions(batch, noise=noise, guidance_weight=1.0), conditioned, rtol=1e-5, atol=1e-5
    )
    unconditioned = model.sample_actions(tokenizer.tokenize_batch(raw, advantage=None), noise=noise)
    torch.testing.assert_close(
        model.sample_actions(batch, noise=noise, guidance_weight=0.0), unconditioned, rtol=1e-5, atol=1e-5
    )
    guided = model.sample_actions(batch, noise=noise, guidance_weight=3.0)
    assert not torch.allclose(guided, conditioned, atol=1e-4)
    with pytest.raises(KeyError, match=r"uncond_tokens.*guidance=True"):
        model.sample_actions(tokenizer.tokenize_batch(raw, advantage=True), guidance_weight=2.0)


def test_guidance_needs_conditioning(tokenizer_dir):
    config = tiny_pi05_config(tokenizer_name=tokenizer_dir)
    model = PiModel(config)
    with pytest.raises(ValueError, match="advantage_conditioning"):
        model.sample_actions(tokenize(make_batch(1), model), guidance_weight=2.0)
    with pytest.raises(ValueError, match="advantage_conditioning"):
        tokenize(make_batch(1), model, guidance=True)
    with pytest.raises(ValueError, match="advantage_conditioning"):
        tokenize(make_batch(1), model, advantage=True)
