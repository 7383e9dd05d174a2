"""Exponential moving average of a model's trainable weights, kept in fp32 beside the model."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


class EMA:
    """Shadow copies of the trainable parameters: `shadow = decay * shadow + (1 - decay) * param` after each step."""

    def __init__(self, model: torch.nn.Module, decay: float, start_step: int = 0):
        self.decay = decay
        self.start_step = start_step
        self.params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        self.shadow = {n: p.detach().float().clone() for n, p in self.params.items()}

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Fold the current weights in; before `start_step` the shadow simply copies them."""
        weight = 1.0 if step < self.start_step else 1.0 - self.decay
        shadows = list(self.shadow.values())
        current = [p.detach().float() for p in self.params.values()]
        torch._foreach_lerp_(shadows, current, weight)

    @contextmanager
    @torch.no_grad()
    def swapped_in(self) -> Iterator[None]:
        """Temporarily load the EMA weights into the model (e.g. for validation), restoring them afterwards."""
        backup = {n: p.detach().clone() for n, p in self.params.items()}
        for name, param in self.params.items():
            param.copy_(self.shadow[name])
        try:
            yield
        finally:
            for name, param in self.params.items():
                param.copy_(backup[name])

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The shadow weights by parameter name: the live tensors (DTensor shards under FSDP), so a sharded
        checkpoint saves and loads them in place."""
        return dict(self.shadow)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore shadow weights saved by `state_dict`; names and shapes must match."""
        missing = sorted(set(self.shadow) - set(state))
        unexpected = sorted(set(state) - set(self.shadow))
        if missing or unexpected:
            raise KeyError(
                f"EMA state does not match the trainable parameters: missing {missing}, unexpected {unexpected}"
            )
        for name, shadow in self.shadow.items():
            value = state[name]
            if hasattr(shadow, "device_mesh"):  # FSDP2 DTensor: keep only this rank's shard
                from torch.distributed.tensor import distribute_tensor

                value = distribute_tensor(value.to(shadow.device), shadow.device_mesh, shadow.placements)
            if value.shape != shadow.shape:
                raise ValueError(
                    f"EMA tensor {name}: expected shape {tuple(shadow.shape)}, got {tuple(value.shape)}"
                )
            shadow.copy_(value)

