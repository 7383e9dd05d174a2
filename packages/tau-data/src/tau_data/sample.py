"""One frame (a dataset row or a live observation) -> the standard `tau_models.sample.Sample`.

Training (MixtureDataset) and acting (tau-policy) both build their samples here, so a policy acts on exactly the
pixels and state values it was trained on. The order of operations is fixed: camera uint8 (H, W, 3) -> float32
(3, H, W) / 255 -> tau-models' resize_with_pad to the model size (bilinear, centred on black); state and actions
float32 -> normalised with the head's statistics -> zero-padded to the model's sizes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from tau_models.images import resize_with_pad
from tau_models.sample import Sample

from tau_data.normalize import Normalizer


def camera_pixels(image: np.ndarray | torch.Tensor, size: int | tuple[int, int], *, name: str = "image",
                  ) -> torch.Tensor:
    """One uint8 (H, W, 3) camera image -> float32 (3, height, width) in [0, 1], resized with padding."""
    pixels = torch.as_tensor(image)
    if pixels.dtype != torch.uint8 or pixels.ndim != 3 or pixels.shape[-1] != 3:
        raise ValueError(f"{name} must be a uint8 (H, W, 3) image, got {pixels.dtype} {tuple(pixels.shape)}")
    chw = pixels.permute(2, 0, 1).to(torch.float32).div_(255.0)
    return resize_with_pad(chw[None], size)[0]


def _padded(values: np.ndarray, width: int, what: str) -> torch.Tensor:
    if values.shape[-1] > width:
        raise ValueError(f"{what} has {values.shape[-1]} dims, more than the model's max_{what}_dim={width}")
    out = np.zeros((*values.shape[:-1], width), dtype=np.float32)
    out[..., : values.shape[-1]] = values
    return torch.from_numpy(out)


def build_sample(
    images: Sequence[np.ndarray | torch.Tensor | None],
    state: np.ndarray,
    prompt: str,
    *,
    normalizer: Normalizer,
    head: str,
    image_size: int | tuple[int, int],
    max_state_dim: int,
    actions: np.ndarray | None = None,
    action_is_pad: np.ndarray | None = None,
    max_action_dim: int | None = None,
) -> Sample:
    """The standard sample of one frame.

    images: one entry per camera slot, uint8 (H, W, 3) of any resolution, or None for a camera the robot lacks
    (zeros, masked out). state: raw (D_s,). actions (training): the raw (T, D_a) chunk, with `action_is_pad` (T,)
    marking steps past the episode's end and `max_action_dim` the padded width.
    """
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    pixels = torch.zeros(len(images), 3, *image_size)
    mask = torch.zeros(len(images), dtype=torch.bool)
    for slot, image in enumerate(images):
        if image is not None:
            pixels[slot] = camera_pixels(image, image_size, name=f"camera slot {slot}")
            mask[slot] = True
    raw_state = np.asarray(state, dtype=np.float32).reshape(-1)
    if not np.all(np.isfinite(raw_state)):
        raise ValueError(f"state contains NaN or inf: {raw_state.tolist()}")
    sample: Sample = {
        "images": pixels, "image_mask": mask,
        "state": _padded(normalizer.normalize(raw_state, head, "state"), max_state_dim, "state"),
        "state_dim": torch.tensor(len(raw_state)), "prompt": prompt,
    }
    if actions is None:
        return sample
    if max_action_dim is None:
        raise ValueError("build_sample got actions but no max_action_dim")
    chunk = np.asarray(actions, dtype=np.float32)
    if chunk.ndim != 2:
        raise ValueError(f"actions must be a (chunk, action_dim) array, got shape {chunk.shape}")
    pad = np.zeros(len(chunk), dtype=bool) if action_is_pad is None else np.asarray(action_is_pad, dtype=bool)
    if pad.shape != (len(chunk),):
        raise ValueError(f"action_is_pad must have shape ({len(chunk)},), got {pad.shape}")
    sample["actions"] = _padded(normalizer.normalize(chunk, head, "actions"), max_action_dim, "action")
    sample["action_dim"] = torch.tensor(chunk.shape[1])
    sample["action_is_pad"] = torch.from_numpy(pad)
    return sample
