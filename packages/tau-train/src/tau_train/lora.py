"""Optional LoRA through peft: adapters injected into named sub-modules of any nn.Module."""

from __future__ import annotations

import torch

from .config import LoRAConfig
from .freezing import train_only


def apply_lora(model: torch.nn.Module, config: LoRAConfig) -> torch.nn.Module:
    """Inject LoRA adapters into modules named in `config.target_modules`; freeze everything else except the
    parameters `config.trainable` selects (group names or globs). The model keeps its own forward(batch)."""
    from peft import LoraConfig, inject_adapter_in_model

    lora_config = LoraConfig(
        r=config.r,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=list(config.target_modules),
    )
    model = inject_adapter_in_model(lora_config, model)
    train_only(model, config.trainable, keep="lora_", field="lora.trainable")
    return model
