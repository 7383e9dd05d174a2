"""from_pretrained(path, **overrides): runtime fields take effect on a pretrained checkpoint (the LeRobot parity
fixture), architecture fields are refused by name, freezing flags of older configs are read and ignored."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch
from conftest import layer_calls, make_batch, tokenize
from safetensors.torch import load_file
from tau_models import GemmaConfig, PiModel, SampleTokenizer, ValueModel, from_pretrained, tiny_value_config
from test_parity import standard_batch


@pytest.fixture
def load(parity_dir, tokenizer_dir):
    def build(**overrides) -> PiModel:
        return from_pretrained(
            parity_dir / "checkpoint", vision_num_heads=4, tokenizer_name=tokenizer_dir, **overrides
        )

    return build


@pytest.fixture(scope="module")
def fixture_io(parity_dir):
    inputs = load_file(str(parity_dir / "inputs.safetensors"))
    outputs = load_file(str(parity_dir / "outputs.safetensors"))
    prompts = json.loads((parity_dir / "prompts.json").read_text())
    return inputs, outputs, prompts


def two_losses(model: PiModel, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    noise, time = torch.randn(2, 10, 32, generator=g), torch.rand(2, generator=g)
    with torch.no_grad():
        return tuple(model(batch, noise=noise, time=time)["loss"] for _ in range(2))


def test_dropout_override_is_active_in_train_mode(load):
    plain = load()
    assert plain.config.dropout == 0.0  # LeRobot's pi0.5 has no dropout
    batch = tokenize(make_batch(2), plain)
    a, b = two_losses(plain.train(), batch)
    assert torch.equal(a, b)
    model = load(dropout=0.1)
    assert all(m.p == 0.1 for m in model.modules() if isinstance(m, torch.nn.Dropout))
    a, b = two_losses(model.train(), batch)
    assert not torch.equal(a, b)
    a, b = two_losses(model.eval(), batch)
    assert torch.equal(a, b)


def test_gradient_checkpointing_override_recomputes(load):
    model = load(gradient_checkpointing=True).train()
    assert layer_calls(model, tokenize(make_batch(2), model)) == (2, 2)


def test_dtype_override_gives_bf16_parameters(load):
    model = load(dtype="bfloat16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    batch = tokenize(make_batch(2), model)
    assert torch.isfinite(model.eval().sample_actions(batch, num_steps=2)).all()


def test_num_inference_steps_override_matches_lerobot(load, fixture_io):
    inputs, outputs, prompts = fixture_io
    model = load(num_inference_steps=3).eval()
    actions = model.sample_actions(standard_batch(inputs, prompts, model=model), noise=inputs["sample_noise"])
    torch.testing.assert_close(actions, outputs["sample_actions_steps3"], rtol=0.0, atol=1e-4)


def test_chunk_size_override(load):
    model = load(chunk_size=6).eval()
    batch = tokenize(make_batch(2, chunk=6), model)
    assert model.sample_actions(batch).shape == (2, 6, 32)
    assert torch.isfinite(model.train()(batch)["loss"])


def test_knowledge_insulation_override(load):
    model = load(knowledge_insulation=True).train()
    model(tokenize(make_batch(2), model))["flow_loss"].backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.backbone.parameters())
    assert model.action_in_proj.weight.grad.abs().sum() > 0


def test_tokenizer_and_conditioning_overrides_reach_the_sample_tokenizer(load):
    model = load(tokenizer_max_length=30, advantage_conditioning=True, advantage_dropout=0.0)
    tokenizer = SampleTokenizer(model.config)
    sample = {"prompt": "go", "state": torch.zeros(32), "state_dim": torch.tensor(2),
              "advantage_positive": torch.tensor(False)}
    out = tokenizer(sample)
    assert out["tokens"].shape == (30,)
    text = tokenizer.prompt_tokenizer.decode(out["tokens"][out["token_pad"]].tolist())
    assert text == "Task: go, State: 128 128;\nAdvantage: negative;\nAction: "


def test_loss_weight_overrides(load):
    model = load(flow_loss_weight=0.25, response_loss_weight=2.0, response_max_tokens=6).eval()
    batch = tokenize({**make_batch(2), "response": ["grasp it", "open"]}, model)
    out = model(batch)
    torch.testing.assert_close(out["loss"], 0.25 * out["flow_loss"] + 2.0 * out["response_loss"])


@pytest.mark.parametrize(
    "override,field",
    [
        (dict(vocab_size=2048), "vocab_size"),
        (dict(variant="pi0"), "variant"),
        (dict(max_action_dim=16), "max_action_dim"),
        (dict(state_mode="continuous"), "state_mode"),
        (dict(expert=GemmaConfig(width=64, depth=2, mlp_dim=256, head_dim=32)), "expert"),
        (dict(vision={"num_heads": 8}), "vision"),
        (dict(fast_head="separate", fast_vocab_size=64), "fast_head"),
    ],
)
def test_architecture_overrides_are_refused(load, override, field):
    with pytest.raises(ValueError, match=rf"override {field}=.* changes the architecture of the checkpoint"):
        load(**override)


def test_runtime_and_unknown_overrides(load, tmp_path, parity_dir):
    assert load(max_state_dim=16).config.max_state_dim == 16  # pi0.5 discrete: no weight reads the state width
    assert load(vocab_size=1024).config.vocab_size == 1024  # the saved value itself is fine
    with pytest.raises(ValueError, match="unknown PiConfig field 'dropout_rate'"):
        load(dropout_rate=0.1)
    model = load()
    model.save_pretrained(tmp_path / "tau")
    with pytest.raises(ValueError, match="vision_num_heads=8 changes the architecture"):
        from_pretrained(tmp_path / "tau", vision_num_heads=8)


def test_freezing_flags_of_older_configs_are_read_and_ignored(load, parity_dir, tmp_path, caplog):
    folder = shutil.copytree(parity_dir / "checkpoint", tmp_path / "lerobot")
    config = json.loads((folder / "config.json").read_text())
    config.update(freeze_vision_encoder=True, train_expert_only=True)
    (folder / "config.json").write_text(json.dumps(config))
    with caplog.at_level(logging.WARNING):
        model = from_pretrained(folder, vision_num_heads=4)
    assert "TrainConfig.freeze" in caplog.text and "train_expert_only" in caplog.text
    assert all(p.requires_grad for p in model.parameters())
    load().save_pretrained(tmp_path / "old_tau")
    saved = json.loads((tmp_path / "old_tau" / "config.json").read_text())
    saved.update(freeze_vision_encoder=False, train_expert_only=False, freeze_expert=False)
    (tmp_path / "old_tau" / "config.json").write_text(json.dumps(saved))
    assert from_pretrained(tmp_path / "old_tau").config.variant == "pi05"


def test_value_model_overrides(tmp_path, tokenizer_dir):
    ValueModel(tiny_value_config(tokenizer_name=tokenizer_dir, dropout=0.0)).save_pretrained(tmp_path)
    model = ValueModel.from_pretrained(tmp_path, dropout=0.2, dtype="bfloat16")
    assert model.config.dropout == 0.2 and model.value_head.weight.dtype == torch.bfloat16
    assert all(m.p == 0.2 for m in model.modules() if isinstance(m, torch.nn.Dropout))
    with pytest.raises(ValueError, match="override num_bins=11 changes the architecture"):
        ValueModel.from_pretrained(tmp_path, num_bins=11)
