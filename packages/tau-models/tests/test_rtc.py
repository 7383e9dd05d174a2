"""Real-time chunking: soft-mask weights, inpainting guidance, prefix-conditioned sampling and RTC training."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import make_batch, tokenize
from tau_models import ActionPrefix, PiModel, inpaint_velocity, soft_mask_weights, tiny_pi05_config
from tau_models.rtc import position_time


def gaussian_velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The exact flow velocity E[noise - A | x_t] for data A ~ N(0, I) (x_t = t noise + (1 - t) A)."""
    tt = t.reshape(-1, 1, 1)
    var = tt**2 + (1 - tt) ** 2
    return (tt - (1 - tt)) / var * x


def euler(x: torch.Tensor, velocity, steps: int = 10) -> torch.Tensor:
    for k in range(steps):
        t = torch.full((x.shape[0],), 1.0 - k / steps)
        x = x - velocity(x, t) / steps
    return x


def test_soft_mask_weights():
    w = soft_mask_weights(10, frozen=2, overlap=6)
    assert w[:2].tolist() == [1.0, 1.0] and w[6:].abs().sum() == 0
    assert all(w[i] > w[i + 1] > 0 for i in range(2, 5))
    c = (6 - 2) / (6 - 2 + 1)
    assert math.isclose(w[2].item(), c * (math.exp(c) - 1) / (math.e - 1), rel_tol=1e-6)
    assert soft_mask_weights(10, frozen=3, overlap=3).tolist() == [1.0] * 3 + [0.0] * 7
    with pytest.raises(ValueError, match="frozen"):
        soft_mask_weights(10, frozen=4, overlap=3)


def test_inpainting_pulls_the_frozen_actions_to_the_prefix():
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(64, 10, 4, generator=g)
    target = torch.randn(64, 10, 4, generator=g)
    weights = soft_mask_weights(10, frozen=3, overlap=3)[None, :, None].expand(64, 10, 4)
    naive = euler(noise, gaussian_velocity)
    guided = euler(noise, lambda x, t: inpaint_velocity(gaussian_velocity, x, t, target, weights))
    err_naive = (naive[:, :3] - target[:, :3]).pow(2).mean()
    err_guided = (guided[:, :3] - target[:, :3]).pow(2).mean()
    assert err_guided < 0.05 * err_naive
    torch.testing.assert_close(guided[:, 3:], naive[:, 3:])  # independent coordinates: the rest is untouched
    weak = euler(noise, lambda x, t: inpaint_velocity(gaussian_velocity, x, t, target, weights, max_guidance=0.5))
    assert (weak[:, :3] - target[:, :3]).pow(2).mean() > err_guided  # beta clips the guidance weight


@pytest.fixture
def model(tokenizer_dir):
    return PiModel(tiny_pi05_config(tokenizer_name=tokenizer_dir, dropout=0.0, rtc_max_delay=3)).eval()


def rtc_prefix(mode: str, frozen: int = 3) -> ActionPrefix:
    actions = torch.zeros(2, 10, 32)
    actions[:, :, :7] = torch.linspace(-0.8, 0.8, 10)[None, :, None]
    weights = torch.zeros(2, 10, 32)
    weights[:, :, :7] = soft_mask_weights(10, frozen, frozen)[None, :, None]
    return ActionPrefix(actions=actions, frozen=frozen, weights=weights, mode=mode)


def test_sample_actions_inpaint_and_prefix(model):
    batch, noise = tokenize(make_batch(2), model), torch.randn(2, 10, 32)
    naive = model.sample_actions(batch, noise=noise)
    inpaint = rtc_prefix("inpaint")
    guided = model.sample_actions(batch, noise=noise, action_prefix=inpaint)
    err = [(a[:, :3, :7] - inpaint.actions[:, :3, :7]).pow(2).mean() for a in (naive, guided)]
    assert err[1] < 0.1 * err[0]
    prefix = rtc_prefix("prefix")
    conditioned = model.sample_actions(batch, noise=noise, action_prefix=prefix)
    assert torch.equal(conditioned[:, :3], prefix.actions[:, :3])
    assert not torch.allclose(conditioned[:, 3:], naive[:, 3:])  # the rest is sampled given the clean prefix
    with pytest.raises(ValueError, match="rtc_max_delay >= 4"):
        model.sample_actions(batch, noise=noise, action_prefix=rtc_prefix("prefix", frozen=4))


def test_per_position_time_equals_per_sample_time(model):
    batch = tokenize(make_batch(2), model)
    prefix = model.prefix_from_batch(batch)
    _, kv = model.backbone.run_prefix(prefix.embs, prefix.pad, prefix.flags, kv_only=True)
    x, t = torch.randn(2, 10, 32), torch.tensor([0.3, 0.8])
    with torch.no_grad():
        per_sample = model.velocity(kv, prefix.visible, x, t, batch["state"])
        per_position = model.velocity(kv, prefix.visible, x, position_time(t, 0, 10), batch["state"])
    torch.testing.assert_close(per_position, per_sample)


def test_rtc_training_feeds_a_clean_prefix_and_leaves_it_out_of_the_loss(model):
    model.train()
    batch = tokenize(make_batch(4), model)
    seen, outputs = {}, {}
    model.action_in_proj.register_forward_hook(lambda m, args, out: seen.update(x=args[0].detach()))

    def keep(m, args, out):
        out.retain_grad()
        outputs["v"] = out

    model.action_out_proj.register_forward_hook(keep)
    torch.manual_seed(5)
    delay = torch.randint(0, 4, (4,))  # what forward draws first after the same seed (noise and time are given)
    assert delay.max() > 0
    noise = torch.randn(4, 10, 32)
    torch.manual_seed(5)
    model(batch, noise=noise, time=torch.full((4,), 0.9))["loss"].backward()
    grad = outputs["v"].grad
    for i, d in enumerate(delay.tolist()):
        torch.testing.assert_close(seen["x"][i, :d], batch["actions"][i, :d])  # clean actions at time 0
        assert grad[i, :d].abs().sum() == 0 and grad[i, d:, :7].abs().sum() > 0


def test_rtc_max_delay_is_checked(tokenizer_dir):
    with pytest.raises(ValueError, match="rtc_max_delay"):
        tiny_pi05_config(tokenizer_name=tokenizer_dir, rtc_max_delay=10)
