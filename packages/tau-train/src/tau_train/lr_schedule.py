"""Learning-rate schedule: linear warmup then cosine decay, as a multiplier of each group's peak LR."""

from __future__ import annotations

import math

import torch


class WarmupCosine:
    """LR multiplier at optimizer step `step` (0-based): linear 0→1 over `warmup_steps`, cosine 1→min_ratio after."""

    def __init__(self, warmup_steps: int, decay_steps: int, min_lr_ratio: float):
        self.warmup_steps = warmup_steps
        self.decay_steps = decay_steps
        self.min_lr_ratio = min_lr_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if step >= self.decay_steps:
            return self.min_lr_ratio
        progress = (step - self.warmup_steps) / max(1, self.decay_steps - self.warmup_steps)
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, warmup_steps: int, decay_steps: int, min_lr_ratio: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR whose state (including the multiplier's settings) goes into checkpoints."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(warmup_steps, decay_steps, min_lr_ratio))
