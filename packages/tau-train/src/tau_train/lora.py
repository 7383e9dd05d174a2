"""Optional LoRA through peft: adapters injected into named sub-modules of any nn.Module."""

from __future__ import annotations

import fnmatch

import torch

from .config import LoRAConfig


def apply_lora(model: torch.nn.Module, config: LoRAConfig) -> torch.nn.Module:
    """Inject LoRA adapters into modules named in `config.target_modules`; freeze everything else except
    parameters matching `config.trainable`. The model keeps its own forward(batch)."""
    from peft import LoraConfig, inject_adapter_in_model

    lora_config = LoraConfig(
        r=config.r,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=list(config.target_modules),
    )
    model = inject_adapter_in_model(lora_config, model)
    for name, param in model.named_parameters():
        keep = "lora_" in name or any(fnmatch.fnmatchcase(name, p) for p in config.trainable)
        param.requires_grad_(keep)
    return model
