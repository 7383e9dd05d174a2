"""Real-time chunking (RTC): the next chunk joins the actions a robot keeps executing while it is computed.

Two ways, both in tau's flow convention (x_t = t * noise + (1 - t) * actions, Euler from t = 1 to 0, v ~ noise - A):
- "inpaint" (training-free, any flow policy; Black et al. 2025, "Real-Time Execution of Action Chunking Flow
  Policies", Algorithm 1): every Euler step pulls the predicted clean chunk toward the prefix by a guided velocity.
- "prefix" (models trained with PiConfig.rtc_max_delay > 0): the first d actions are fed clean at time 0, the way
  training showed them, and come back unchanged.
Training (`training_prefix`): a delay d ~ U{0..rtc_max_delay} per sample from torch's RNG, the first d positions
clean at t = 0 and out of the loss (the OpenTau / LeRobot recipe).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

RtcMode = Literal["inpaint", "prefix"]
Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t, t) -> v


def soft_mask_weights(chunk_size: int, frozen: int, overlap: int) -> torch.Tensor:
    """(chunk_size,) prefix weights W of the RTC paper: 1 on the `frozen` positions executed for sure while the chunk
    is computed, an exponential decay c_i (e^c_i - 1) / (e - 1), c_i = (overlap - i) / (overlap - frozen + 1), over
    the rest of the previous chunk's `overlap` actions (the soft region), 0 after."""
    if not 0 <= frozen <= overlap <= chunk_size:
        raise ValueError(f"need 0 <= frozen ({frozen}) <= overlap ({overlap}) <= chunk_size ({chunk_size})")
    i = torch.arange(chunk_size, dtype=torch.float32)
    c = (overlap - i) / (overlap - frozen + 1)
    soft = c * (torch.exp(c) - 1.0) / (math.e - 1.0)
    return torch.where(i < frozen, torch.ones(()), torch.where(i < overlap, soft, torch.zeros(())))


@dataclass
class ActionPrefix:
    """The actions the next chunk must join, for PiModel.sample_actions(..., prefix=...).

    actions (B, T, D): normalised, padded to the model's chunk / action size; position j is the action at the j-th
    step after the observation. frozen: how many leading positions are executed for sure (the inference delay d).
    weights (B, T, D): guidance weights for "inpaint" (soft_mask_weights, 0 on padded action dimensions).
    max_guidance: the RTC paper's clip beta of the guidance weight."""

    actions: torch.Tensor
    frozen: int
    weights: torch.Tensor
    mode: RtcMode = "inpaint"
    max_guidance: float = 5.0

    def __post_init__(self) -> None:
        if self.mode not in ("inpaint", "prefix"):
            raise ValueError(f"ActionPrefix.mode must be 'inpaint' or 'prefix', got {self.mode!r}")
        if self.actions.shape != self.weights.shape or self.actions.ndim != 3:
            raise ValueError(f"ActionPrefix actions {tuple(self.actions.shape)} and weights "
                             f"{tuple(self.weights.shape)} must both be (B, T, D)")
        if not 0 <= self.frozen <= self.actions.shape[1]:
            raise ValueError(f"ActionPrefix.frozen must be in [0, {self.actions.shape[1]}], got {self.frozen}")

    def frozen_mask(self) -> torch.Tensor:
        """(1, T, 1) bool: the frozen positions."""
        t = self.actions.shape[1]
        return (torch.arange(t, device=self.actions.device) < self.frozen)[None, :, None]

    def velocity(self, velocity: Velocity, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The velocity of one Euler step at x (B, T, D), t (B,) under this prefix."""
        if self.mode == "prefix":
            x, t_pos = self.clamp(x), position_time(t, self.frozen, x.shape[1])
            return velocity(x, t_pos)
        return inpaint_velocity(velocity, x, t, self.actions, self.weights, self.max_guidance)

    def clamp(self, x: torch.Tensor) -> torch.Tensor:
        """x with the frozen positions replaced by the prefix ("prefix" mode; also the final chunk)."""
        return torch.where(self.frozen_mask(), self.actions.to(x.dtype), x)


def position_time(t: torch.Tensor, frozen: int | torch.Tensor, chunk_size: int) -> torch.Tensor:
    """Per-position time (B, T): 0 on the first `frozen` positions (int, or (B,) per sample), t elsewhere."""
    pos = torch.arange(chunk_size, device=t.device)[None, :]
    frozen = torch.as_tensor(frozen, device=t.device).reshape(-1, 1)
    return torch.where(pos < frozen, torch.zeros((), device=t.device), t.reshape(-1, 1).float())


def inpaint_velocity(
    velocity: Velocity,
    x: torch.Tensor,
    t: torch.Tensor,
    prefix: torch.Tensor,
    weights: torch.Tensor,
    max_guidance: float = 5.0,
) -> torch.Tensor:
    """Training-free RTC guidance (the paper's pseudo-inverse guidance with soft masking), in tau's convention.

    With tau = 1 - t the paper's time (0 noise, 1 data), A_hat = x_t - t v(x_t) the predicted clean chunk,
    e = W * (prefix - A_hat), g = e^T dA_hat/dx_t (a vector-Jacobian product by autograd) and
    r^2 = (1 - tau)^2 / (tau^2 + (1 - tau)^2), the guided paper velocity is v_p + min(beta, (1 - tau) / (tau r^2)) g;
    tau's velocity points the other way (v = -v_p), so v_guided = v - min(beta, t / ((1 - t) r^2)) g.
    Computed in float32 with autograd enabled (sampling otherwise runs under no_grad).
    """
    with torch.enable_grad():
        xg = x.detach().float().requires_grad_(True)
        v = velocity(xg, t).float()
        tt = t.float().reshape(-1, 1, 1)
        a_hat = xg - tt * v
        error = weights.float() * (prefix.float() - a_hat)
        (grad,) = torch.autograd.grad(a_hat, xg, grad_outputs=error.detach())
    tau = 1.0 - tt
    r2 = (1.0 - tau) ** 2 / (tau**2 + (1.0 - tau) ** 2)
    scale = torch.clamp((1.0 - tau) / (tau * r2).clamp(min=1e-12), max=max_guidance)
    return v.detach() - scale * grad


def training_prefix(
    actions: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, max_delay: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """RTC training inputs: d ~ U{0..max_delay} per sample (torch RNG, like flow noise and time); returns x_t with
    the first d positions clean, the per-position time (B, T) with 0 there, and the (B, T, 1) bool mask of the
    positions that stay in the loss."""
    b, horizon, _ = actions.shape
    delay = torch.randint(0, max_delay + 1, (b,)).to(actions.device)
    clean = (torch.arange(horizon, device=actions.device)[None, :] < delay[:, None])[:, :, None]
    return torch.where(clean, actions, x_t), position_time(t, delay, horizon), ~clean
