"""Flow-matching pieces as pure functions: time sampling, time embedding, interpolation, masked loss, guidance."""

from __future__ import annotations

import math

import torch


def sample_time(
    batch_size: int,
    alpha: float,
    beta: float,
    scale: float,
    offset: float,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """t ~ Beta(alpha, beta) * scale + offset (pi0's choice: more weight on noisy times, never exactly 0)."""
    dist = torch.distributions.Beta(torch.tensor(float(alpha)), torch.tensor(float(beta)))
    return (dist.sample((batch_size,)) * scale + offset).to(device=device, dtype=torch.float32)


def time_embedding(t: torch.Tensor, dim: int, min_period: float, max_period: float) -> torch.Tensor:
    """Sinusoidal embedding [sin, cos] of t (B,) or per position (B, T) with periods spaced geometrically; computed
    in float64."""
    if dim % 2:
        raise ValueError(f"time embedding dim must be even, got {dim}")
    fraction = torch.linspace(0.0, 1.0, dim // 2, dtype=torch.float64, device=t.device)
    period = min_period * (max_period / min_period) ** fraction
    angle = t.to(torch.float64)[..., None] * (2.0 * math.pi / period)
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1).float()


def noisy_actions(
    actions: torch.Tensor, noise: torch.Tensor, t: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """x_t = t * noise + (1 - t) * actions and the velocity target u = noise - actions; t (B,) or per position
    (B, T) (real-time chunking's clean prefix has t = 0)."""
    tt = t[:, :, None] if t.ndim == 2 else t[:, None, None]
    return tt * noise + (1.0 - tt) * actions, noise - actions


def action_loss_mask(
    action_is_pad: torch.Tensor | None,
    action_dim: torch.Tensor | None,
    shape: tuple[int, int, int],
    device: torch.device,
) -> torch.Tensor:
    """(B, T, D) bool: real time steps and real action dimensions only."""
    b, t, d = shape
    mask = torch.ones(b, t, d, dtype=torch.bool, device=device)
    if action_is_pad is not None:
        mask &= ~action_is_pad.to(device).bool()[:, :, None]
    if action_dim is not None:
        dims = torch.as_tensor(action_dim, device=device).reshape(-1)
        mask &= (torch.arange(d, device=device)[None, :] < dims[:, None])[:, None, :]
    return mask


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of values over True entries of mask (0 when the mask is empty)."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def guided_velocity(v_uncond: torch.Tensor, v_cond: torch.Tensor, weight: float) -> torch.Tensor:
    """Classifier-free guidance: v_uncond + w * (v_cond - v_uncond); w = 1 is the conditioned model."""
    return v_uncond + weight * (v_cond - v_uncond)
