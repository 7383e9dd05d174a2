"""pi0.5 / pi0 behaviour on tiny configs: loss masking, time sampling, dropout, freezing, state modes, errors."""

from __future__ import annotations

import pytest
import torch
from conftest import layer_calls, make_batch, tokenize
from tau_models import PiModel, SampleTokenizer, resize_with_pad, tiny_pi0_config, tiny_pi05_config
from tau_models.flow import sample_time


@pytest.fixture
def model(tokenizer_dir):
    return PiModel(tiny_pi05_config(tokenizer_name=tokenizer_dir, dropout=0.0))


def fixed(b=2):
    g = torch.Generator().manual_seed(7)
    return torch.randn(b, 10, 32, generator=g), torch.rand(b, generator=g)


def test_forward_backward(model):
    out = model(tokenize(make_batch(2), model))
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    out["loss"].backward()
    assert model.action_out_proj.weight.grad.abs().sum() > 0


def test_loss_is_mean_over_real_steps_and_dims(model):
    batch = make_batch(2)
    batch["action_is_pad"][0, 6:] = True
    batch["action_dim"] = torch.tensor([7, 4])
    batch = tokenize(batch, model)
    noise, time = fixed()
    model.eval()
    with torch.no_grad():
        loss = model(batch, noise=noise, time=time)["loss"]
        per_element = model.flow_loss_per_element(
            model.prefix_from_batch(batch), batch["actions"], noise, time
        )
    real = torch.zeros(2, 10, 32, dtype=torch.bool)
    real[0, :6, :7] = True
    real[1, :, :4] = True
    torch.testing.assert_close(loss, per_element[real].mean())
    assert not torch.allclose(loss, per_element.mean())


def test_time_distribution():
    t = sample_time(20000, 1.5, 1.0, 0.999, 0.001)
    assert t.min() >= 0.001 and t.max() <= 1.0
    assert abs(t.mean().item() - (0.6 * 0.999 + 0.001)) < 0.01  # Beta(1.5, 1) mean 0.6


def test_sampling_shape_and_steps(model):
    model.eval()
    noise, batch = torch.randn(2, 10, 32), tokenize(make_batch(2), model)
    a10 = model.sample_actions(batch, noise=noise)
    a3 = model.sample_actions(batch, noise=noise, num_steps=3)
    assert a10.shape == (2, 10, 32) and not torch.allclose(a10, a3)


def test_dropout_train_only(tokenizer_dir):
    model = PiModel(tiny_pi05_config(tokenizer_name=tokenizer_dir, dropout=0.1))
    batch, (noise, time) = tokenize(make_batch(2), model), fixed()
    model.train()
    assert not torch.equal(
        model(batch, noise=noise, time=time)["loss"], model(batch, noise=noise, time=time)["loss"]
    )
    model.eval()
    torch.testing.assert_close(
        model(batch, noise=noise, time=time)["loss"],
        model(batch, noise=noise, time=time)["loss"],
        rtol=0,
        atol=0,
    )
    assert all(m.p == 0.1 for m in model.modules() if isinstance(m, torch.nn.Dropout))


@pytest.mark.parametrize("variant,state_mode", [("pi05", "discrete"), ("pi05", "continuous"), ("pi0", "discrete")])
def test_module_groups_cover_the_model(tokenizer_dir, variant, state_mode):
    model = PiModel(tiny_pi05_config(tokenizer_name=tokenizer_dir, variant=variant, state_mode=state_mode))
    groups = model.module_groups()
    assert set(groups) == {"vision", "vlm", "language_model", "expert"}
    names = {n for n, _ in model.named_parameters()}

    def members(group: str) -> set[str]:
        return {n for n in names if any(n.startswith(p) for p in groups[group])}

    assert all(any(n.startswith(p) for n in names) for g in groups.values() for p in g)  # no dead prefix
    assert members("vlm") | members("expert") == names and not members("vlm") & members("expert")
    assert members("vision") | members("language_model") == members("vlm")
    assert not members("vision") & members("language_model")
    assert "backbone.projector.weight" in members("vision") and "action_out_proj.bias" in members("expert")
    assert ("state_proj.weight" in members("expert")) == (variant == "pi0" or state_mode == "continuous")


def test_freezing_a_group_by_its_prefixes(model):
    """What tau-train's TrainConfig.freeze: [vision] does with the prefixes: no gradient reaches the tower."""
    vision = model.module_groups()["vision"]
    for name, param in model.named_parameters():
        param.requires_grad_(not name.startswith(tuple(vision)))
    model(tokenize(make_batch(2), model))["loss"].backward()
    assert all(p.grad is None for p in model.backbone.vision_tower.parameters())
    assert model.backbone.projector.weight.grad is None
    assert model.backbone.language_model.layers[0].mlp.up_proj.weight.grad.abs().sum() > 0
    assert model.expert.layers[0].mlp.up_proj.weight.grad.abs().sum() > 0


def test_discrete_state_reaches_the_prompt(model):
    batch = make_batch(1)
    batch["state"][0, :3] = torch.tensor([-1.0, 0.0, 0.999])
    sample = {"prompt": batch["prompt"][0], "state": batch["state"][0], "state_dim": torch.tensor(3)}
    prompt = SampleTokenizer(model.config).prompt_text(sample)
    assert prompt == "Task: pick up the red block, State: 0 128 255;\nAction: "


def test_continuous_state_token(tokenizer_dir):
    model = PiModel(
        tiny_pi05_config(tokenizer_name=tokenizer_dir, state_mode="continuous", dropout=0.0)
    ).eval()
    batch = tokenize(make_batch(1), model)
    assert "State" not in SampleTokenizer(model.config).prompt_text({"prompt": "go", "state": batch["state"][0]})
    noise = torch.randn(1, 10, 32)
    a = model.sample_actions(batch, noise=noise)
    batch["state"] = batch["state"] + 0.5
    assert not torch.allclose(a, model.sample_actions(batch, noise=noise))


def test_pi0_variant(tokenizer_dir):
    model = PiModel(tiny_pi0_config(tokenizer_name=tokenizer_dir, dropout=0.0))
    assert (
        hasattr(model, "state_proj")
        and hasattr(model, "action_time_mlp_in")
        and not hasattr(model, "time_mlp_in")
    )
    batch = tokenize(make_batch(2), model)
    assert SampleTokenizer(model.config).prompt_text({"prompt": batch["prompt"][0]}) == "pick up the red block\n"
    model(batch)["loss"].backward()
    assert (
        model.state_proj.weight.grad.abs().sum() > 0 and model.backbone.projector.weight.grad.abs().sum() > 0
    )
    model.eval()
    noise = torch.randn(2, 10, 32)
    a = model.sample_actions(batch, noise=noise)
    batch["state"] = batch["state"] + 0.5
    assert a.shape == (2, 10, 32) and not torch.allclose(a, model.sample_actions(batch, noise=noise))


def test_bad_inputs_raise(model):
    batch = tokenize(make_batch(2), model)
    batch["actions"] = batch["actions"][:, :, :7]
    with pytest.raises(ValueError, match="expected"):
        model(batch)
    batch = tokenize(make_batch(2), model)
    batch["actions"][0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        model(batch)
    with pytest.raises(ValueError, match="variant"):
        tiny_pi05_config(variant="pi1")
    batch = make_batch(2)
    batch["state"][1, 0] = float("nan")
    with pytest.raises(ValueError, match=r"sample\['state'\] contains NaN"):
        tokenize(batch, model)
    batch = make_batch(2)
    with pytest.raises(KeyError, match=r"\['tokens', 'token_pad'\].*SampleTokenizer"):
        model.sample_actions(batch)
    with pytest.raises(KeyError, match=r"\['tokens', 'token_pad'\].*SampleTokenizer"):
        model(batch)
    del batch["prompt"]
    with pytest.raises(KeyError, match="prompt"):
        SampleTokenizer(model.config)({k: v[0] for k, v in batch.items()})


def test_images_are_resized_with_pad(model):
    wide = torch.rand(1, 1, 3, 28, 56)
    out = resize_with_pad(wide, 56)
    assert out.shape == (1, 1, 3, 56, 56)
    assert out[..., :14, :].abs().max() == 0 and out[..., 42:, :].abs().max() == 0
    assert out[..., 14:42, :].abs().min() > 0 or out[..., 14:42, :].mean() > 0.3
    same = torch.rand(1, 1, 3, 56, 56)
    assert resize_with_pad(same, 56) is same
    batch = tokenize(make_batch(1, image_size=112), model)
    assert model.sample_actions(batch).shape == (1, 10, 32)


def test_gradient_checkpointing_same_gradients(tokenizer_dir):
    batch, (noise, time) = tokenize(make_batch(2), tiny_pi05_config(tokenizer_name=tokenizer_dir)), fixed()
    grads = []
    for flag in (False, True):
        torch.manual_seed(0)
        model = PiModel(
            tiny_pi05_config(tokenizer_name=tokenizer_dir, dropout=0.0, gradient_checkpointing=flag)
        )
        model(batch, noise=noise, time=time)["loss"].backward()
        grads.append(model.backbone.language_model.layers[0].mlp.up_proj.weight.grad)
    torch.testing.assert_close(grads[0], grads[1])


def test_gradient_checkpointing_enable_recomputes_in_backward(model):
    batch = tokenize(make_batch(2), model)
    assert layer_calls(model, batch) == (1, 1)
    model.gradient_checkpointing_enable()
    assert model.config.gradient_checkpointing
    assert layer_calls(model, batch) == (2, 2)  # each layer runs again in the backward pass
    model.eval()
    with torch.no_grad():
        model.sample_actions(batch, num_steps=1)  # no recomputation (nor checkpoint overhead) at inference
    model.train().gradient_checkpointing_disable()
    assert layer_calls(model, batch) == (1, 1) and not model.config.gradient_checkpointing


def test_kv_only_prefix_pass_gives_the_same_cache(model):
    prefix = model.prefix_from_batch(tokenize(make_batch(2), model))
    with torch.no_grad():
        hidden, full = model.backbone.run_prefix(prefix.embs, prefix.pad, prefix.flags)
        none, short = model.backbone.run_prefix(prefix.embs, prefix.pad, prefix.flags, kv_only=True)
    assert hidden is not None and none is None
    for (k0, v0), (k1, v1) in zip(full, short):
        assert torch.equal(k0, k1) and torch.equal(v0, v1)
