"""save_pretrained / from_pretrained, LeRobot and OpenTau layouts, load reports and errors."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from tau_models import PiModel, from_pretrained, load_pi_checkpoint, tiny_pi05_config

from conftest import make_batch, tokenize

PG = "model.paligemma_with_expert.paligemma."


def test_round_trip(tmp_path, tokenizer_dir):
    model = PiModel(tiny_pi05_config(tokenizer_name=tokenizer_dir, knowledge_insulation=True))
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "tau_pi" and config["knowledge_insulation"] is True
    loaded, report = load_pi_checkpoint(tmp_path, strict=True)
    assert report.layout == "tau" and not report.missing and not report.unexpected
    assert config["tokenizer_name"] == "tokenizer"  # the local tokenizer is copied into the checkpoint
    assert loaded.config == dataclasses.replace(model.config, tokenizer_name=str(tmp_path / "tokenizer"))
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k


def test_checkpoint_with_local_tokenizer_can_be_moved(tmp_path, tokenizer_dir):
    own_tokenizer = shutil.copytree(tokenizer_dir, tmp_path / "run" / "tok")
    model = PiModel(tiny_pi05_config(tokenizer_name=str(own_tokenizer))).eval()

    def loss(policy: PiModel) -> torch.Tensor:
        batch = tokenize(make_batch(2), policy)  # tokenized through the policy's own config
        torch.manual_seed(0)
        with torch.no_grad():
            return policy(batch)["loss"]

    expected = loss(model)
    model.save_pretrained(tmp_path / "run" / "ckpt")
    moved = shutil.move(str(tmp_path / "run" / "ckpt"), str(tmp_path / "elsewhere"))
    shutil.rmtree(tmp_path / "run")  # the tokenizer folder the model was built with is gone
    assert torch.equal(loss(from_pretrained(moved).eval()), expected)


def test_shape_mismatch_names_key_and_shapes(tmp_path, tokenizer_dir):
    PiModel(tiny_pi05_config(tokenizer_name=tokenizer_dir)).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["expert"]["mlp_dim"] = 256  # a config.json that does not describe its weights
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        ValueError,
        match=r"shape mismatch for expert\.layers\.0\.mlp\.\w+_proj\.weight: "
        r"checkpoint \((512, 128|128, 512)\) vs model \((256, 128|128, 256)\)",
    ):
        from_pretrained(tmp_path)


def test_missing_files_and_nan(tmp_path, tokenizer_dir):
    with pytest.raises(FileNotFoundError):
        from_pretrained(tmp_path / "nope")
    model = PiModel(tiny_pi05_config(tokenizer_name=tokenizer_dir))
    model.save_pretrained(tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    state["action_in_proj.bias"][0] = float("nan")
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="action_in_proj.bias.*NaN"):
        from_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        from_pretrained(tmp_path)


def test_missing_keys_reported_and_strict(tmp_path, tokenizer_dir):
    model = PiModel(tiny_pi05_config(tokenizer_name=tokenizer_dir))
    model.save_pretrained(tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    del state["time_mlp_in.bias"]
    state["extra.weight"] = torch.zeros(2)
    save_file(state, str(tmp_path / "model.safetensors"))
    _, report = load_pi_checkpoint(tmp_path, strict=False)
    assert report.missing == ["time_mlp_in.bias"] and report.unexpected == ["extra.weight"]
    with pytest.raises(ValueError, match=r"strict.*missing \['time_mlp_in.bias'\], unexpected \['extra.weight'\]"):
        from_pretrained(tmp_path)  # strict by default


def test_opentau_layout(tmp_path, parity_dir, tokenizer_dir):
    """OpenTau: no token embedding (tied to lm_head), no expert lm_head, legacy time-MLP names, a FAST head (found
    from the weights), normalisation statistics (returned in the report)."""
    state = load_file(str(parity_dir / "checkpoint" / "model.safetensors"))
    embed = state.pop(PG + "model.language_model.embed_tokens.weight")
    state[PG + "lm_head.weight"] = embed.clone()
    del state["model.paligemma_with_expert.gemma_expert.lm_head.weight"]
    for part in ("in", "out"):
        for kind in ("weight", "bias"):
            state[f"model.action_time_mlp_{part}.{kind}"] = state.pop(f"model.time_mlp_{part}.{kind}")
    state["model.paligemma_with_expert.discrete_action_embedding.weight"] = torch.zeros(16, 256)
    state["model.paligemma_with_expert.da_head.weight"] = torch.ones(16, 256)
    state["model.paligemma_with_expert.da_head.bias"] = torch.ones(16)
    state["normalize_inputs.buffer_observation_state.mean"] = torch.full((1, 8), 0.5)
    folder = tmp_path / "opentau"
    folder.mkdir()
    save_file(state, str(folder / "model.safetensors"))
    (folder / "config.json").write_text((parity_dir / "checkpoint" / "config.json").read_text())

    model, report = load_pi_checkpoint(folder, vision_num_heads=4, tokenizer_name=tokenizer_dir)  # strict
    assert report.layout == "opentau" and report.missing == [] and report.unexpected == []
    assert list(report.normalization) == ["normalize_inputs.buffer_observation_state.mean"]
    assert torch.equal(report.normalization["normalize_inputs.buffer_observation_state.mean"], torch.full((1, 8), 0.5))
    assert model.config.fast_head == "separate" and model.config.fast_vocab_size == 16
    assert torch.equal(model.fast_head.da_head.bias, torch.ones(16))
    assert torch.equal(model.backbone.language_model.embed_tokens.weight, embed)

    reference, _ = load_pi_checkpoint(
        parity_dir / "checkpoint", vision_num_heads=4, tokenizer_name=tokenizer_dir
    )
    own = {k: v for k, v in model.state_dict().items() if not k.startswith("fast_head.")}
    assert list(own) == list(reference.state_dict())
    for (k, a), (_, b) in zip(own.items(), reference.state_dict().items()):
        assert torch.equal(a, b), k


def test_lerobot_config_needs_vision_heads(parity_dir):
    with pytest.raises(ValueError, match="vision_num_heads"):
        from_pretrained(parity_dir / "checkpoint")


def test_lerobot_pi0_layout(tmp_path, tokenizer_dir):
    """A pi0 state dict under LeRobot's names (plain RMSNorm expert, state_proj, action_time_mlp) loads exactly."""
    from tau_models import tiny_pi0_config

    model = PiModel(tiny_pi0_config(tokenizer_name=tokenizer_dir))
    to_lerobot = {
        "backbone.vision_tower.": PG + "model.vision_tower.vision_model.",
        "backbone.projector.": PG + "model.multi_modal_projector.linear.",
        "backbone.language_model.": PG + "model.language_model.",
        "expert.": "model.paligemma_with_expert.gemma_expert.model.",
    }
    state = {}
    for key, value in model.state_dict().items():
        prefix = next((p for p in to_lerobot if key.startswith(p)), None)
        state[to_lerobot[prefix] + key[len(prefix) :] if prefix else "model." + key] = value
    save_file(state, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(
        json.dumps(
            {"type": "pi0", "chunk_size": 10, "image_resolution": [56, 56], "tokenizer_max_length": 48}
        )
    )
    loaded, report = load_pi_checkpoint(tmp_path, vision_num_heads=4, tokenizer_name=tokenizer_dir)
    assert loaded.config.variant == "pi0" and report.layout == "lerobot"
    assert not report.missing and not report.unexpected
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
