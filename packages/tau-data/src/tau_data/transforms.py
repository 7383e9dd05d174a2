"""Seeded image augmentations of float (N, 3, H, W) tensors in [0, 1] (torch only); the resize is tau-models'."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class AugmentConfig:
    """Ranges of the random image changes; each camera draws its own values. 0 disables an effect."""

    brightness: float = 0.2      # multiply by U(1-b, 1+b)
    contrast: float = 0.2        # blend with the mean grey by U(1-c, 1+c)
    saturation: float = 0.5      # blend with the greyscale image by U(1-s, 1+s)
    hue: float = 0.05            # rotate hue by U(-h, h) turns
    crop_scale: float = 0.9      # random crop keeping U(crop_scale, 1) of each side, resized back
    rotate_deg: float = 5.0      # rotation by U(-r, r) degrees
    translate: float = 0.05      # shift by U(-t, t) of the image size


def _uniform(gen: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen)


def _grey(images: torch.Tensor) -> torch.Tensor:
    r, g, b = images.unbind(-3)
    return (0.299 * r + 0.587 * g + 0.114 * b).unsqueeze(-3)


def _rotate_hue(images: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Hue rotation as a rotation of the chroma plane in YIQ space."""
    to_yiq = images.new_tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    from_yiq = torch.linalg.inv(to_yiq)
    angle = turns * 2 * math.pi
    cos, sin = torch.cos(angle), torch.sin(angle)
    rot = torch.zeros(len(turns), 3, 3, dtype=images.dtype)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = cos, -sin, sin, cos
    mat = from_yiq @ rot @ to_yiq
    return torch.einsum("nij,njhw->nihw", mat, images)


def augment(images: torch.Tensor, gen: torch.Generator, cfg: AugmentConfig) -> torch.Tensor:
    """Colour jitter then one random affine (crop-zoom, rotation, shift) per image of (N, 3, H, W); same gen, same out."""
    n = images.shape[0]
    ones = (n, 1, 1, 1)
    out = images * _uniform(gen, n, 1 - cfg.brightness, 1 + cfg.brightness).view(ones)
    mean = _grey(out).mean(dim=(-2, -1), keepdim=True)
    out = mean + (out - mean) * _uniform(gen, n, 1 - cfg.contrast, 1 + cfg.contrast).view(ones)
    grey = _grey(out)
    out = grey + (out - grey) * _uniform(gen, n, 1 - cfg.saturation, 1 + cfg.saturation).view(ones)
    if cfg.hue:
        out = _rotate_hue(out, _uniform(gen, n, -cfg.hue, cfg.hue))
    out = out.clamp(0, 1)
    zoom = _uniform(gen, n, cfg.crop_scale, 1.0)
    angle = _uniform(gen, n, -cfg.rotate_deg, cfg.rotate_deg) * math.pi / 180
    shift = _uniform(gen, 2 * n, -cfg.translate, cfg.translate).view(n, 2) * 2
    theta = torch.zeros(n, 2, 3, dtype=images.dtype)
    theta[:, 0, 0], theta[:, 0, 1] = zoom * torch.cos(angle), -zoom * torch.sin(angle)
    theta[:, 1, 0], theta[:, 1, 1] = zoom * torch.sin(angle), zoom * torch.cos(angle)
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(out.shape), align_corners=False)
    return F.grid_sample(out, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
