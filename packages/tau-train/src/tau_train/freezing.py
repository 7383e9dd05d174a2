"""Which parameters train: freeze lists and LoRA's trainable list name module groups or parameter globs.

A model may offer `module_groups() -> {group name: [parameter-name prefixes]}` (pi0.5 has "vision", "vlm",
"language_model", "expert"); an entry equal to a group name selects every parameter under those prefixes, any
other entry is an fnmatch glob over parameter names. A sub-module whose parameters are all frozen is kept in eval
mode while the rest trains, so its dropout is off.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

import torch

from .config import ConfigError


def module_groups(model: torch.nn.Module) -> dict[str, list[str]]:
    """The model's named parameter groups (`model.module_groups()`), or {} when it defines none."""
    method = getattr(model, "module_groups", None)
    if method is None:
        return {}
    groups = method()
    if not isinstance(groups, dict) or not all(
        isinstance(prefixes, (list, tuple)) and all(isinstance(p, str) for p in prefixes)
        for prefixes in groups.values()
    ):
        raise TypeError(
            f"{type(model).__name__}.module_groups() must return a dict of group name -> list of parameter-name "
            f"prefixes, got {groups!r}"
        )
    return {name: list(prefixes) for name, prefixes in groups.items()}


def select_parameters(model: torch.nn.Module, entries: Sequence[str], field: str) -> set[str]:
    """Names of the parameters that `entries` (group names or globs) select; an entry selecting nothing is a
    ConfigError naming `field`."""
    groups = module_groups(model)
    names = [name for name, _ in model.named_parameters()]
    selected: set[str] = set()
    for entry in entries:
        if entry in groups:
            prefixes = groups[entry]
            # a prefix names a module ("backbone.vision_tower", with or without the trailing dot) or a parameter
            matched = {n for n in names if any(n == p.rstrip(".") or n.startswith(p.rstrip(".") + ".")
                                               for p in prefixes)}
        else:
            matched = {n for n in names if fnmatch.fnmatchcase(n, entry)}
        if not matched:
            known = f"; its module groups are {sorted(groups)}" if groups else ""
            raise ConfigError(
                f"{field} entry {entry!r} matches no parameter name of {type(model).__name__}{known}"
            )
        selected |= matched
    return selected


def freeze(model: torch.nn.Module, entries: Sequence[str], field: str = "freeze") -> int:
    """requires_grad=False on every parameter `entries` select; return how many tensors were newly frozen."""
    selected = select_parameters(model, entries, field)
    frozen = 0
    for name, param in model.named_parameters():
        if name in selected and param.requires_grad:
            param.requires_grad_(False)
            frozen += 1
    return frozen


def train_only(model: torch.nn.Module, entries: Sequence[str], keep: str, field: str) -> None:
    """Freeze every parameter except those whose name contains `keep` or that `entries` select (LoRA)."""
    selected = select_parameters(model, entries, field) if entries else set()
    for name, param in model.named_parameters():
        param.requires_grad_(keep in name or name in selected)


def frozen_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The largest sub-modules whose parameters are all frozen (modules without parameters are not counted)."""
    found: list[torch.nn.Module] = []

    def visit(module: torch.nn.Module) -> None:
        params = list(module.parameters())
        if params and not any(p.requires_grad for p in params):
            found.append(module)
            return
        for child in module.children():
            visit(child)

    for child in model.children():
        visit(child)
    return found


def train_mode(model: torch.nn.Module, frozen: Sequence[torch.nn.Module]) -> None:
    """model.train(), with the fully frozen sub-modules back in eval mode."""
    model.train()
    for module in frozen:
        module.eval()
