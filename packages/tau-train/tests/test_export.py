"""tau_train.export: which weights an export holds, and LoRA merged back into plain layers."""

import pytest
import torch
from tau_train import CheckpointError, LoRAConfig, apply_lora, export_kind, merge_lora


def test_export_kind_defaults_to_ema_and_names_lora_merges():
    assert export_kind("auto", ema=True, lora=True) == "ema"
    assert export_kind("auto", ema=False, lora=True) == "lora_merged"
    assert export_kind("raw", ema=True, lora=False) == "raw"
    with pytest.raises(CheckpointError, match="ema.enabled=true"):
        export_kind("ema", ema=False, lora=False)
    with pytest.raises(ValueError, match="export weights must be one of"):
        export_kind("best", ema=False, lora=False)


def test_merge_lora_restores_plain_linears_computing_the_adapted_output():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    model = apply_lora(model, LoRAConfig(enabled=True, r=2, alpha=4, target_modules=["0", "2"]))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_()
    x = torch.randn(3, 4)
    adapted = model(x)
    merged = merge_lora(model)
    assert all(type(m) is torch.nn.Linear for m in (merged[0], merged[2]))
    assert not any("lora" in n for n in merged.state_dict())
    torch.testing.assert_close(merged(x), adapted, rtol=1e-5, atol=1e-6)
