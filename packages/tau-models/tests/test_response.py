"""Response / subtask text head: cross-entropy co-training, visibility to the expert, greedy decoding."""

from __future__ import annotations

import torch
from conftest import make_batch, tokenize
from tau_models import PiModel, SampleTokenizer, tiny_pi05_config


def model_with_responses(tokenizer_dir, **kw):
    return PiModel(
        tiny_pi05_config(tokenizer_name=tokenizer_dir, response_loss_weight=0.5, dropout=0.0, **kw)
    )


def test_response_loss_and_text_only_samples(tokenizer_dir):
    model = model_with_responses(tokenizer_dir)
    batch = make_batch(2)
    batch["response"] = ["grasp the block", ""]
    batch["action_is_pad"][1] = True  # a text-only (VQA-style) sample: no flow loss from it
    batch = tokenize(batch, model)
    out = model(batch)
    torch.testing.assert_close(out["loss"], out["flow_loss"] + 0.5 * out["response_loss"])
    assert out["response_loss"] > 0
    batch["action_is_pad"][:] = True
    out = model(batch)
    assert out["flow_loss"] == 0 and out["response_loss"] > 0
    out["loss"].backward()
    assert model.backbone.language_model.layers[0].mlp.up_proj.weight.grad.abs().sum() > 0


def test_expert_sees_the_response(tokenizer_dir):
    model = model_with_responses(tokenizer_dir).eval()
    batch = make_batch(2)
    noise, t = torch.randn(2, 10, 32), torch.rand(2)
    losses = []
    with torch.no_grad():
        for text in ("grasp the block", "open the drawer"):
            prefix = model.prefix_from_batch(tokenize({**batch, "response": [text] * 2}, model))
            losses.append(model.flow_loss_per_element(prefix, batch["actions"], noise, t))
    assert not torch.allclose(losses[0], losses[1])


def test_response_is_learned_and_decoded(tokenizer_dir):
    torch.manual_seed(0)
    model = model_with_responses(tokenizer_dir, flow_loss_weight=0.0)
    batch = make_batch(1)
    batch["response"] = ["grasp the block"]
    tokenizer = SampleTokenizer(model.config)
    acting = tokenizer.tokenize_batch({k: v for k, v in batch.items() if k != "response"})
    batch = tokenizer.tokenize_batch(batch)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(25):
        loss = model(batch)["response_loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    ids = model.generate_responses(acting)
    assert tokenizer.prompt_tokenizer.decode(ids[0]) == "grasp the block"
    actions = model.sample_actions(acting, predict_response=True)
    assert actions.shape == (1, 10, 32) and torch.isfinite(actions).all()
