"""Optimizer parameter groups (per-group LR / weight decay by name globs) and the AdamW optimizer."""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Sequence

import torch

from .config import ConfigError, OptimizerConfig, ParamGroupConfig

log = logging.getLogger(__name__)


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def build_param_groups(
    model: torch.nn.Module, optim: OptimizerConfig, groups: Sequence[ParamGroupConfig]
) -> list[dict]:
    """Split trainable parameters into optimizer groups: configured groups first, then the rest.

    Each group is split again so that 1-D parameters (biases, norm scales) get no weight decay.
    """
    buckets: dict[tuple[int, bool], list[torch.nn.Parameter]] = {}
    used = [False] * len(groups)
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        index = next((i for i, g in enumerate(groups) if _matches(name, g.patterns)), len(groups))
        if index < len(groups):
            used[index] = True
        key = (index, param.ndim >= 2)
        buckets.setdefault(key, []).append(param)
    unused = [groups[i].patterns for i, u in enumerate(used) if not u]
    if unused:
        raise ConfigError(
            f"param_groups patterns {unused} match no trainable parameter of {type(model).__name__}"
        )
    if not buckets:
        raise ConfigError(f"{type(model).__name__} has no trainable parameter (check freeze / lora settings)")
    param_groups = []
    for (index, decays), params in sorted(buckets.items(), key=lambda item: item[0]):
        group = groups[index] if index < len(groups) else ParamGroupConfig()
        weight_decay = group.weight_decay if group.weight_decay is not None else optim.weight_decay
        param_groups.append(
            {
                "params": params,
                "lr": group.lr if group.lr is not None else optim.lr,
                "weight_decay": weight_decay if decays else 0.0,
                "name": f"group{index}" if index < len(groups) else "default",
            }
        )
        log.info("param group %s (decay=%s): %d tensors", param_groups[-1]["name"], decays, len(params))
    return param_groups


def build_optimizer(
    param_groups: list[dict], optim: OptimizerConfig, device: torch.device
) -> torch.optim.AdamW:
    """AdamW over `param_groups`; fused when requested, or by default when training on CUDA (`device`)."""
    fused = optim.fused if optim.fused is not None else device.type == "cuda"
    return torch.optim.AdamW(
        param_groups,
        lr=optim.lr,
        betas=tuple(optim.betas),
        eps=optim.eps,
        weight_decay=optim.weight_decay,
        fused=fused or None,
    )
