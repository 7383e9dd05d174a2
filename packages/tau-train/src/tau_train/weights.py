"""Weights as safetensors: a state dict written once per tensor (tied tensors are stored once) and read back."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file


def save_weights(state: dict[str, torch.Tensor], path: str | Path) -> None:
    """Save a state dict as safetensors; tied tensors (same storage, shape and stride) are stored once."""
    unique: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    for name, tensor in state.items():
        tensor = tensor.detach()
        key = (
            tensor.device,
            tensor.untyped_storage().data_ptr(),
            tensor.storage_offset(),
            tensor.shape,
            tensor.stride(),
        )
        if key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        unique[name] = tensor
    storages = [t.untyped_storage().data_ptr() for t in unique.values()]
    shared = {ptr for ptr in storages if storages.count(ptr) > 1}
    unique = {
        n: (t.clone() if t.untyped_storage().data_ptr() in shared else t.contiguous())
        for n, t in unique.items()
    }
    save_file(unique, str(path), metadata={"aliases": json.dumps(aliases)})
    mask = os.umask(0)  # safetensors writes 0600; give it the mode open() gives under the umask (group-readable)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def load_weights(path: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Load a state dict written by `save_weights` (tied names point at the same tensor again)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    with safe_open(str(path), framework="pt", device=str(device)) as handle:
        state = {name: handle.get_tensor(name) for name in handle.keys()}
        aliases = json.loads((handle.metadata() or {}).get("aliases", "{}"))
    for name, target in aliases.items():
        state[name] = state[target]
    return state
