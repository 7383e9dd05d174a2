"""RECAP value model: return <-> bin helpers, cross-entropy training, initialisation from the policy's VLM."""

from __future__ import annotations

import pytest
import torch
from conftest import make_batch, tokenize
from tau_models import (
    PiModel,
    ValueModel,
    bin_centers,
    expected_value,
    returns_to_bins,
    tiny_pi05_config,
    tiny_value_config,
)


def test_bins_and_expected_value():
    centers = bin_centers(201)
    assert centers[0] == -1.0 and centers[-1] == 0.0 and len(centers) == 201
    assert torch.equal(returns_to_bins(centers), torch.arange(201))
    assert returns_to_bins(torch.tensor([-1.0, -0.5, 0.0, -0.0026])).tolist() == [0, 100, 200, 199]
    one_hot = torch.full((3, 201), -1e4)
    one_hot[torch.arange(3), torch.tensor([0, 100, 200])] = 0.0
    torch.testing.assert_close(expected_value(one_hot), torch.tensor([-1.0, -0.5, 0.0]))
    with pytest.raises(ValueError, match=r"\[-1, 0\]"):
        returns_to_bins(torch.tensor([0.5]))


def test_value_training_reduces_loss(tokenizer_dir):
    model = ValueModel(tiny_value_config(tokenizer_name=tokenizer_dir, dropout=0.0))
    batch = tokenize(make_batch(2), model)
    batch["return"] = torch.tensor([-0.8, -0.1])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    first = None
    for _ in range(15):
        loss = model(batch)["loss"]
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first * 0.5
    values = model.predict_value(batch)
    assert values.shape == (2,) and values[0] < values[1]
    with pytest.raises(ValueError, match="return"):
        model({k: v for k, v in batch.items() if k != "return"})


def test_init_from_policy_and_save_load(tmp_path, tokenizer_dir):
    policy = PiModel(tiny_pi05_config(tokenizer_name=tokenizer_dir))
    value = ValueModel.from_policy(policy)
    for (k, a), (_, b) in zip(policy.backbone.state_dict().items(), value.backbone.state_dict().items()):
        assert torch.equal(a, b), k
    value.save_pretrained(tmp_path)
    again = ValueModel.from_pretrained(tmp_path)
    batch = tokenize(make_batch(1), value)
    value.eval(), again.eval()
    torch.testing.assert_close(value.predict_value(batch), again.predict_value(batch))


def test_state_token_lets_the_value_read_the_state(tmp_path, tokenizer_dir):
    """Two samples identical but for the state get different values once trained with state_dim > 0."""
    model = ValueModel(tiny_value_config(tokenizer_name=tokenizer_dir, dropout=0.0, state_dim=4))
    batch = make_batch(2)
    batch["images"][1] = batch["images"][0]
    batch["prompt"] = [batch["prompt"][0]] * 2
    batch["return"] = torch.tensor([-0.9, -0.1])
    batch = tokenize(batch, model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(30):
        loss = model(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    values = model.predict_value(batch)
    assert values[0] < values[1] - 0.3
    model.save_pretrained(tmp_path)
    torch.testing.assert_close(ValueModel.from_pretrained(tmp_path).eval().predict_value(batch), values)
    with pytest.raises(ValueError, match=r"state_dim=4 needs batch\['state'\]"):
        model.predict_value({k: v for k, v in batch.items() if k != "state"})


def test_state_token_starts_from_a_continuous_state_policy(tokenizer_dir):
    policy = PiModel(tiny_pi05_config(tokenizer_name=tokenizer_dir, state_mode="continuous", max_state_dim=12))
    value = ValueModel.from_policy(policy, tiny_value_config(tokenizer_name=tokenizer_dir, state_dim=10))
    torch.testing.assert_close(value.state_proj.weight, policy.state_proj.weight[:, :10])
    torch.testing.assert_close(value.state_proj.bias, policy.state_proj.bias)
    with pytest.raises(ValueError, match="state_dim"):
        tiny_value_config(state_dim=-1)


def test_module_groups_cover_the_value_model(tokenizer_dir):
    model = ValueModel(tiny_value_config(tokenizer_name=tokenizer_dir, state_dim=4))
    groups = model.module_groups()
    names = {n for n, _ in model.named_parameters()}

    def members(group: str) -> set[str]:
        return {n for n in names if n.startswith(tuple(groups[group]))}

    assert members("vlm") | members("head") == names and not members("vlm") & members("head")
    assert members("vision") | members("language_model") == members("vlm")
    assert {"value_query", "value_head.weight", "state_proj.weight"} <= members("head")
