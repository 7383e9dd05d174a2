"""Image preprocessing in torch ops only (torchvision is not a dependency): resize with padding, scale to [-1, 1]."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def resize_with_pad(images: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Resize (..., 3, H, W) images in [0, 1] to fit a size x size square (or (height, width)) keeping the aspect
    ratio; pad the rest with 0. The one image resize of tau (tau-data builds every sample with it).

    Bilinear resize, then symmetric zero padding (the image is centred), as openpi does. Images already at the
    target size are returned unchanged.
    """
    height, width = (size, size) if isinstance(size, int) else size
    *lead, c, h, w = images.shape
    if (h, w) == (height, width):
        return images
    flat = images.reshape(-1, c, h, w).float()
    ratio = max(h / height, w / width)
    new_h, new_w = int(h / ratio), int(w / ratio)
    resized = F.interpolate(flat, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=False)
    pad_top, pad_left = (height - new_h) // 2, (width - new_w) // 2
    padded = F.pad(resized, (pad_left, width - new_w - pad_left, pad_top, height - new_h - pad_top), value=0.0)
    return padded.clamp(0.0, 1.0).to(images.dtype).reshape(*lead, c, height, width)


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] pixels -> [-1, 1], SigLIP's input range."""
    return images * 2.0 - 1.0
