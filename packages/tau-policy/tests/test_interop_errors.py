"""Bad checkpoint folders fail with one line naming the file and the key, and nothing is written."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import save_file
from tau_policy import load_policy

from conftest import shared_dir

LEROBOT = shared_dir() / "interop" / "lerobot_pi05_processors_a"


def snapshot(folder):
    return sorted((p.relative_to(folder), p.stat().st_size) for p in folder.rglob("*"))


def one_line_error(folder, match, **kwargs):
    before = snapshot(folder)
    with pytest.raises((ValueError, FileNotFoundError), match=match) as error:
        load_policy(folder, **kwargs)
    assert "\n" not in str(error.value)
    assert snapshot(folder) == before  # nothing written
    return str(error.value)


def test_unknown_layout(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"\0" * 8)
    one_line_error(tmp_path, rf"{tmp_path}: unknown checkpoint layout .*'weights.bin'")
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["Bert"]}))
    save_file({"w": torch.zeros(1)}, str(tmp_path / "model.safetensors"))
    one_line_error(tmp_path, r"config.json: unknown checkpoint layout")


def test_peft_adapter_without_its_base(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "lerobot/pi05_base",
                                                             "peft_type": "LORA"}))
    save_file({"base_model.model.expert.layers.0.self_attn.q_proj.lora_A.weight": torch.zeros(2, 4)},
              str(tmp_path / "adapter_model.safetensors"))
    one_line_error(tmp_path, r"adapter_config.json: a LoRA adapter without its base weights "
                             r"\(base_model_name_or_path='lerobot/pi05_base'\)")


def test_lora_weights_without_or_beside_their_base(tmp_path):
    shutil.copy(LEROBOT / "checkpoint" / "config.json", tmp_path / "config.json")
    key = "model.paligemma_with_expert.gemma_expert.model.layers.0.self_attn.q_proj.lora_A.default.weight"
    save_file({key: torch.zeros(2, 4)}, str(tmp_path / "model.safetensors"))
    one_line_error(tmp_path, rf"model.safetensors: LoRA adapter weights without their base \(key '{key}'\)")
    base = key.replace("lora_A.default", "base_layer")
    save_file({key: torch.zeros(2, 4), base: torch.zeros(4, 4)}, str(tmp_path / "model.safetensors"))
    one_line_error(tmp_path, r"model.safetensors: an unmerged LoRA adapter")


def test_a_wrong_shape_or_unexpected_key_is_named(tmp_path):
    from safetensors.torch import load_file

    folder = tmp_path / "ckpt"
    shutil.copytree(LEROBOT / "checkpoint", folder)
    tensors = load_file(str(folder / "model.safetensors"))
    kwargs = dict(vision_num_heads=4, tokenizer_name=str(LEROBOT / "tokenizer"))
    tensors["model.extra_head.weight"] = torch.zeros(3)
    (folder / "model.safetensors").chmod(0o644)
    save_file(tensors, str(folder / "model.safetensors"))
    one_line_error(folder, r"strict load failed; missing \[\], unexpected \['model.extra_head.weight'\]", **kwargs)
    assert load_policy(folder, strict=False, **kwargs).layout.action_dim == 7  # fine-tuning may opt out
    del tensors["model.extra_head.weight"]
    time_mlp = tensors.pop("model.time_mlp_in.bias")
    save_file(tensors, str(folder / "model.safetensors"))
    one_line_error(folder, r"strict load failed; missing \['time_mlp_in.bias'\], unexpected \[\]", **kwargs)
    tensors["model.time_mlp_in.bias"] = time_mlp
    tensors["model.action_out_proj.bias"] = torch.zeros(31)
    save_file(tensors, str(folder / "model.safetensors"))
    one_line_error(folder, r"shape mismatch for action_out_proj.bias: checkpoint \(31,\) vs model \(32,\)", **kwargs)
