"""The weights a finished run exports: raw or EMA, with LoRA adapters merged into the base weights.

The exported model is a plain copy of the trained one (no peft layers, no DDP wrapper), so it saves and reloads
in the model's own checkpoint format; the in-memory trained model is left as it was.
"""

from __future__ import annotations

import copy

import torch

from .checkpoint import CheckpointError
from .ema import EMA

EXPORT_CHOICES = ("auto", "raw", "ema")


def export_kind(choice: str, *, ema: bool, lora: bool) -> str:
    """The Provenance.weights of an export: "ema" ("auto" with EMA enabled, or asked), "lora_merged" (raw
    weights of a LoRA run), else "raw"."""
    if choice not in EXPORT_CHOICES:
        raise ValueError(f"export weights must be one of {EXPORT_CHOICES}, got {choice!r}")
    if choice == "ema" and not ema:
        raise CheckpointError("export weights 'ema' needs a run trained with ema.enabled=true")
    if choice == "ema" or (choice == "auto" and ema):
        return "ema"
    return "lora_merged" if lora else "raw"


@torch.no_grad()
def merge_lora(model: torch.nn.Module) -> torch.nn.Module:
    """Fold every peft LoRA layer of `model` into its base layer (W + scale * B @ A) and put the base layer back
    in its place, in place; a model without adapters is returned unchanged."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    tuned = [(name, module) for name, module in model.named_modules() if isinstance(module, BaseTunerLayer)]
    for name, module in tuned:
        module.merge(safe_merge=True)  # refuses adapters whose merge produces NaN/inf
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, module.get_base_layer())
    return model


@torch.no_grad()
def exported_model(model: torch.nn.Module, *, ema: EMA | None = None, use_ema: bool = False) -> torch.nn.Module:
    """A copy of the trained (unwrapped) `model` for export: with `use_ema` the EMA shadow weights replace the
    trainable parameters (cast to their dtypes), then LoRA adapters are merged."""
    exported = copy.deepcopy(model)
    if use_ema:
        if ema is None:
            raise CheckpointError("use_ema=True but the run has no EMA weights (ema.enabled=false)")
        params = dict(exported.named_parameters())
        for name, shadow in ema.shadow.items():
            params[name].copy_(shadow.to(params[name].dtype))
    return merge_lora(exported)
