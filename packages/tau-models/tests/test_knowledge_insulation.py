"""Knowledge insulation: with KI the flow loss leaves every VLM parameter with exactly zero gradient."""

from __future__ import annotations

import pytest
import torch
from conftest import make_batch, tokenize
from tau_models import PiModel, tiny_pi05_config


def vlm_grads(model):
    return {
        n: (p.grad.abs().sum().item() if p.grad is not None else 0.0)
        for n, p in model.backbone.named_parameters()
    }


@pytest.mark.parametrize("ki", [True, False])
def test_flow_loss_gradient_reaches_vlm_only_without_ki(ki, fast_dir, tokenizer_dir):
    cfg = tiny_pi05_config(
        tokenizer_name=tokenizer_dir,
        knowledge_insulation=ki,
        dropout=0.0,
        fast_tokenizer_path=str(fast_dir),
        fast_loss_weight=1.0,
    )
    model = PiModel(cfg).train()
    out = model(tokenize(make_batch(2), model))
    out["flow_loss"].backward(retain_graph=True)
    grads = vlm_grads(model)
    if ki:
        assert all(g == 0.0 for g in grads.values())
    else:
        assert grads["language_model.layers.0.self_attn.k_proj.weight"] > 0
        assert grads["vision_tower.embeddings.patch_embedding.weight"] > 0
        assert grads["projector.weight"] > 0
    assert model.expert.layers[0].mlp.up_proj.weight.grad.abs().sum() > 0
    assert model.action_in_proj.weight.grad.abs().sum() > 0
    # the FAST cross-entropy trains the VLM, never the expert
    model.zero_grad(set_to_none=True)
    out["fast_loss"].backward()
    assert vlm_grads(model)["language_model.layers.0.mlp.up_proj.weight"] > 0
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.expert.parameters())


def test_expert_never_sees_fast_tokens(fast_dir, tokenizer_dir):
    """Velocity is unchanged when the FAST tokens in the prefix change (they are hidden from the expert)."""
    cfg = tiny_pi05_config(
        tokenizer_name=tokenizer_dir, dropout=0.0, fast_tokenizer_path=str(fast_dir), fast_loss_weight=1.0
    )
    model = PiModel(cfg).eval()
    batch = make_batch(2)
    noise, t = torch.randn(2, 10, 32), torch.rand(2)
    with torch.no_grad():
        losses = []
        for actions in (batch["actions"], batch["actions"] * 0.3):
            tokenized = tokenize({**batch, "actions": actions}, model)
            prefix = model.prefix_from_batch(tokenized)
            losses.append(model.flow_loss_per_element(prefix, batch["actions"], noise, t))
        assert not torch.equal(tokenized["tokens"], tokenize(batch, model)["tokens"])
        no_fast = tokenize({k: v for k, v in batch.items() if k != "actions"}, model)
        plain = model.flow_loss_per_element(model.prefix_from_batch(no_fast), batch["actions"], noise, t)
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(losses[0], plain, rtol=1e-5, atol=1e-5)
