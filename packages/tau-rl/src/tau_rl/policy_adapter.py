"""A tau-models PiModel behind tau-sim's Policy interface: env observations in, action chunks in env units out.

Observations are mapped onto the standard sample exactly as tau-data maps dataset frames (uint8 HWC -> float CHW in
[0, 1], resized with padding; state normalised and zero-padded); predicted actions are sliced to the real action
dimensions, unnormalised and clipped to the env's box (tabletop: [-1, 1]). The policy is asked for "Advantage: positive", with
classifier-free guidance when `guidance_weight` != 1.
"""

from __future__ import annotations

import numpy as np
import torch
from tau_data.normalize import Normalizer
from tau_data.transforms import resize_with_pad
from tau_models import PiModel

from tau_rl.models import PolicyBundle


class PiPolicy:
    """Acts with a PiModel; noise comes from its own seeded generator, so seeded episodes are reproducible."""

    def __init__(self, model: PiModel, normalizer: Normalizer, bundle: PolicyBundle, guidance_weight: float = 1.0,
                 num_inference_steps: int | None = None, seed: int = 0, action_clip: float | None = 1.0) -> None:
        self.model = model.eval()
        self.normalizer, self.bundle = normalizer, bundle
        self.guidance_weight = guidance_weight
        self.num_inference_steps = num_inference_steps
        self.action_clip = action_clip
        self.generator = torch.Generator().manual_seed(seed)
        if guidance_weight != 1.0 and not model.config.advantage_conditioning:
            raise ValueError("guidance_weight != 1 needs a policy trained with advantage conditioning")

    def reset(self) -> None:
        """Nothing to clear: the policy acts on the current observation only."""

    def batch(self, observation: dict[str, np.ndarray], prompts: list[str]) -> dict[str, object]:
        """The standard batch of one vector-env observation."""
        images = np.asarray(observation["images"])
        if images.ndim != 5 or images.dtype != np.uint8 or images.shape[-1] != 3:
            raise ValueError(f"observation['images'] must be uint8 (B, N_cam, H, W, 3), got {images.dtype} "
                             f"{images.shape}")
        b, n_cam = images.shape[:2]
        if n_cam != self.bundle.num_cameras:
            raise ValueError(f"observation has {n_cam} cameras, the policy was trained on {self.bundle.num_cameras}")
        size = self.bundle.image_size
        pixels = torch.from_numpy(images).permute(0, 1, 4, 2, 3).float().div_(255.0).flatten(0, 1)
        pixels = resize_with_pad(pixels, size, size).reshape(b, n_cam, 3, size, size)
        if self.bundle.state_key not in observation:
            raise KeyError(f"observation has no {self.bundle.state_key!r} entry (it has {sorted(observation)})")
        raw_state = np.asarray(observation[self.bundle.state_key], dtype=np.float32).reshape(b, -1)
        if raw_state.shape[1] != self.bundle.state_dim:
            raise ValueError(f"observation state has {raw_state.shape[1]} dims, the policy expects "
                             f"{self.bundle.state_dim}")
        state = np.zeros((b, self.model.config.max_state_dim), dtype=np.float32)
        state[:, : self.bundle.state_dim] = self.normalizer.normalize(raw_state, self.bundle.norm_head, "state")
        return {"images": pixels, "image_mask": torch.ones(b, n_cam, dtype=torch.bool),
                "state": torch.from_numpy(state), "state_dim": torch.full((b,), self.bundle.state_dim),
                "prompt": list(prompts)}

    @torch.no_grad()
    def act(self, observation: dict[str, np.ndarray], prompts: list[str]) -> np.ndarray:
        batch = self.batch(observation, prompts)
        cfg = self.model.config
        b = len(prompts)
        noise = torch.randn(b, cfg.chunk_size, cfg.max_action_dim, generator=self.generator)
        guidance = None if self.guidance_weight == 1.0 else self.guidance_weight
        chunk = self.model.sample_actions(batch, noise=noise, num_steps=self.num_inference_steps,
                                          guidance_weight=guidance)
        actions = chunk[:, :, : self.bundle.action_dim].float().cpu().numpy()
        actions = self.normalizer.unnormalize(actions, self.bundle.norm_head, "actions")
        if self.action_clip is not None:
            actions = np.clip(actions, -self.action_clip, self.action_clip)
        return actions.astype(np.float32)
