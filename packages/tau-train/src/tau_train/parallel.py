"""FSDP2 from outside the model (torchtitan's pattern): `fully_shard` on each shard unit, then on the root.

The model is not modified beyond what `fully_shard` itself does (parameters become DTensor shards of dim 0, and
forward hooks all-gather them). Shard units default to the elements of every `nn.ModuleList`, which for pi0.5 are
exactly its SigLIP layers, VLM layers and action-expert layers; everything else (embeddings, projections, final
norms) belongs to the root unit.
"""

from __future__ import annotations

import fnmatch
import logging

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

from .config import ConfigError, FSDPConfig

log = logging.getLogger(__name__)

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def shard_units(model: torch.nn.Module, patterns: list[str]) -> list[str]:
    """Names of the sub-modules that become their own FSDP unit: those matching `patterns` (globs over module
    names), or with no patterns each element of every nn.ModuleList. Nested matches keep the outer module."""
    if patterns:
        names = [n for n, _ in model.named_modules() if n and any(fnmatch.fnmatchcase(n, p) for p in patterns)]
        unused = [p for p in patterns if not any(fnmatch.fnmatchcase(n, p) for n in names)]
        if unused:
            raise ConfigError(f"fsdp.units patterns {unused} match no module name of {type(model).__name__}")
    else:
        names = [
            f"{name}.{index}" if name else str(index)
            for name, module in model.named_modules()
            if isinstance(module, torch.nn.ModuleList)
            for index in range(len(module))
        ]
    outer = [n for n in names if not any(n.startswith(o + ".") for o in names if o != n)]
    return [n for n in outer if any(True for _ in model.get_submodule(n).parameters())]


def mixed_precision_policy(mixed_precision: str, reduce_dtype: str) -> MixedPrecisionPolicy:
    """bf16: compute with bf16 parameter copies, reduce gradients in `reduce_dtype`; fp32: no casts at all.
    Inputs are never cast (the model casts what it needs: a float32 action target must stay float32)."""
    if mixed_precision == "fp32":
        return MixedPrecisionPolicy(cast_forward_inputs=False)
    if mixed_precision == "bf16":
        return MixedPrecisionPolicy(
            param_dtype=torch.bfloat16, reduce_dtype=_DTYPES[reduce_dtype], cast_forward_inputs=False
        )
    raise ConfigError(f"FSDP supports mixed_precision fp32 or bf16, got {mixed_precision!r}")


def ensure_process_group(device: torch.device) -> None:
    """A one-process group when none is running (a plain `python train.py`), so FSDP works the same on 1 rank."""
    if dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)


def parallelize(
    model: torch.nn.Module, config: FSDPConfig, mixed_precision: str, device: torch.device
) -> torch.nn.Module:
    """Shard `model` in place over all processes (one flat mesh) and return it; see the module docstring."""
    ensure_process_group(device)
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    policy = mixed_precision_policy(mixed_precision, config.reduce_dtype)
    units = shard_units(model, config.units)
    for name in units:
        unit = model.get_submodule(name)
        fully_shard(unit, mesh=mesh, mp_policy=policy, reshard_after_forward=config.reshard_after_forward)
        for method in config.forward_methods:
            if callable(getattr(unit, method, None)):
                register_fsdp_forward_method(unit, method)
    fully_shard(model, mesh=mesh, mp_policy=policy, reshard_after_forward=config.reshard_after_forward)
    log.info("FSDP2 over %d processes: %d shard units + root", dist.get_world_size(), len(units))
    return model


def is_sharded(model: torch.nn.Module) -> bool:
    """Whether `model` went through `parallelize` (FSDP2)."""
    return isinstance(model, FSDPModule)


def local_parameter_count(model: torch.nn.Module) -> tuple[int, int]:
    """(elements this process stores, elements of the full model) over all parameters."""
    local = total = 0
    for param in model.parameters():
        local += param.to_local().numel() if hasattr(param, "to_local") else param.numel()
        total += param.numel()
    return local, total
