"""Image preprocessing in torch ops only (torchvision is not a dependency): resize with padding, scale to [-1, 1]."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def resize_with_pad(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize (..., 3, H, W) images to fit a size x size square keeping the aspect ratio; pad the rest with 0.

    Bilinear resize, then symmetric zero padding (the image is centred), as openpi does. Images already at the
    target size are returned unchanged.
    """
    *lead, c, h, w = images.shape
    if (h, w) == (size, size):
        return images
    flat = images.reshape(-1, c, h, w).float()
    ratio = max(h / size, w / size)
    new_h, new_w = int(h / ratio), int(w / ratio)
    resized = F.interpolate(flat, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=False)
    pad_top, pad_left = (size - new_h) // 2, (size - new_w) // 2
    padded = F.pad(resized, (pad_left, size - new_w - pad_left, pad_top, size - new_h - pad_top), value=0.0)
    return padded.clamp(0.0, 1.0).to(images.dtype).reshape(*lead, c, size, size)


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] pixels -> [-1, 1], SigLIP's input range."""
    return images * 2.0 - 1.0
