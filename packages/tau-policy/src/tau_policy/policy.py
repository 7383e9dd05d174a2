"""Acting with a policy bundle: observations keyed by the policy's feature names in, actions in robot units out.

Each observation row goes through tau-data's build_sample, the function the training mixture uses, so the policy
sees exactly the pixels and state values it was trained on; the predicted chunk is sliced to the head's real action
size, unnormalised with the head's statistics and clipped to the layout's action range (when it has one).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tau_data import build_sample
from tau_models import ActionPrefix, SampleTokenizer, soft_mask_weights
from tau_models.sample import Batch
from torch.utils.data import default_collate

from tau_policy.bundle import BUNDLE_FORMAT, PolicyBundle
from tau_policy.layout import PolicyLayout

RtcMode = Literal["naive", "inpaint", "prefix"]
RTC_MODES = ("naive", "inpaint", "prefix")


class Policy:
    """One head of a policy bundle, ready to act. Without `noise`, flow sampling draws from the policy's own
    generator seeded with `seed`, so a fresh policy with the same seed repeats its actions. `rtc`: how `act` joins
    an `action_prefix` (real-time chunking): "naive" ignores it, "inpaint" guides any flow policy toward it,
    "prefix" feeds it clean to a model trained with rtc_max_delay > 0 (None: "prefix" for such a model, else
    "naive")."""

    def __init__(self, bundle: PolicyBundle, head: str | None = None, *, device: str | torch.device = "cpu",
                 seed: int = 0, num_inference_steps: int | None = None, mode: str = "flow",
                 rtc: RtcMode | None = None) -> None:
        self.bundle = bundle
        self.layout: PolicyLayout = bundle.layout(head)
        self.device = torch.device(device)
        self.model = bundle.model.to(self.device).eval()
        self.normalizer = bundle.normalizer
        self.num_inference_steps = num_inference_steps
        if mode not in ("flow", "fast"):
            raise ValueError(f"mode must be 'flow' or 'fast', got {mode!r}")
        self.mode = mode  # "fast": FAST-decoded chunks, unnormalised with the FAST statistics when there are any
        self.action_feature = "fast_actions" if mode == "fast" and "fast_actions" in self.normalizer.modes else "actions"
        self.generator = torch.Generator().manual_seed(seed)
        self.tokenizer = SampleTokenizer(self.model.config)
        trained = self.model.config.rtc_max_delay > 0
        self.rtc: RtcMode = rtc or ("prefix" if trained and mode == "flow" else "naive")
        if self.rtc not in RTC_MODES:
            raise ValueError(f"rtc must be one of {RTC_MODES}, got {self.rtc!r}")
        if self.rtc == "prefix" and not trained:
            raise ValueError("rtc='prefix' needs a policy trained with rtc_max_delay > 0; use 'inpaint'")
        if self.rtc != "naive" and mode == "fast":
            raise ValueError(f"rtc={self.rtc!r} joins chunks during flow sampling; FAST decoding cannot take a prefix")

    @property
    def metadata(self) -> dict[str, Any]:
        """JSON-able description of the layout, the other heads, the model and the provenance (sent to clients)."""
        cfg = self.model.config
        return {"format": BUNDLE_FORMAT, "layout": self.layout.to_dict(),
                "heads": [layout.head for layout in self.bundle.layouts],
                "model": {"variant": cfg.variant, "advantage_conditioning": cfg.advantage_conditioning,
                          "num_inference_steps": self.num_inference_steps or cfg.num_inference_steps},
                "provenance": dataclasses.asdict(self.bundle.provenance)}

    def batch(self, observation: Mapping[str, np.ndarray], prompts: Sequence[str], *, guidance: bool = False) -> Batch:
        """The model batch of B observations (one build_sample + SampleTokenizer per row, then collated)."""
        layout, b = self.layout, len(prompts)
        needed = [c for c in layout.cameras if c is not None] + [layout.state_feature]
        missing = [key for key in needed if key not in observation]
        if missing:
            raise KeyError(f"observation lacks {missing}; the policy (head {layout.head!r}) reads {needed}, "
                           f"got {sorted(observation)}")
        frames = {camera: np.asarray(observation[camera]) for camera in needed[:-1]}
        for camera, images in frames.items():
            if images.dtype != np.uint8 or images.ndim != 4 or images.shape[0] != b or images.shape[-1] != 3:
                raise ValueError(f"observation[{camera!r}] must be uint8 (B={b}, H, W, 3), got {images.dtype} "
                                 f"{images.shape}")
        state = np.asarray(observation[layout.state_feature], dtype=np.float32)
        if state.shape != (b, layout.state_dim):
            raise ValueError(f"observation[{layout.state_feature!r}] must be (B={b}, {layout.state_dim}), got "
                             f"{state.shape}")
        samples = [build_sample([None if c is None else frames[c][i] for c in layout.cameras], state[i],
                                prompts[i], normalizer=self.normalizer, head=layout.head,
                                image_size=layout.image_size, max_state_dim=layout.max_state_dim)
                   for i in range(b)]
        # The prompt ids come from the training's SampleTokenizer: "Advantage: positive" for a conditioned policy,
        # plus the unconditioned ids classifier-free guidance needs.
        advantage = True if self.model.config.advantage_conditioning else None
        return default_collate([self.tokenizer(s, advantage=advantage, guidance=guidance) for s in samples])

    @torch.no_grad()
    def act(self, observation: Mapping[str, np.ndarray], prompts: Sequence[str], noise: torch.Tensor | None = None,
            *, guidance_weight: float = 1.0, action_prefix: np.ndarray | None = None,
            frozen: int | None = None) -> np.ndarray:
        """float32 (B, chunk, action_dim) actions in robot units. `noise` (B, chunk, max_action_dim) fixes the flow
        sampling; `guidance_weight` != 1 applies classifier-free guidance toward "Advantage: positive".
        `action_prefix` (B, P, action_dim) robot units: the actions executing while this chunk is computed, aligned
        with the chunk's first P positions; the first `frozen` (default P) run for sure, the rest are the soft
        region of inpainting. Joined as `self.rtc` says."""
        layout, cfg, b = self.layout, self.model.config, len(prompts)
        if guidance_weight != 1.0 and not cfg.advantage_conditioning:
            raise ValueError("guidance_weight != 1 needs a policy trained with advantage conditioning")
        batch = self.batch(observation, prompts, guidance=guidance_weight != 1.0)
        shape = (b, layout.chunk_size, layout.max_action_dim)
        if noise is None:
            noise = torch.randn(*shape, generator=self.generator)
        elif tuple(noise.shape) != shape:
            raise ValueError(f"noise must be (B, chunk, max_action_dim) = {shape}, got {tuple(noise.shape)}")
        batch = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        chunk = self.model.sample_actions(batch, noise=noise.to(self.device), num_steps=self.num_inference_steps,
                                          mode=self.mode,
                                          guidance_weight=None if guidance_weight == 1.0 else guidance_weight,
                                          action_prefix=self.action_prefix(action_prefix, frozen, b))
        actions = chunk[:, :, : layout.action_dim].float().cpu().numpy()
        actions = self.normalizer.unnormalize(actions, layout.head, self.action_feature)
        if layout.relative_actions is not None:  # the inverse of training's delta: add the observed state back
            mask = np.asarray(layout.relative_actions, dtype=bool)
            state = np.asarray(observation[layout.state_feature], dtype=np.float32)[:, : len(mask)]
            actions[..., mask] += state[:, None, mask]
        if layout.action_low is not None:
            actions = np.clip(actions, np.asarray(layout.action_low), np.asarray(layout.action_high))
        return actions.astype(np.float32)

    def action_prefix(self, actions: np.ndarray | None, frozen: int | None, batch: int) -> ActionPrefix | None:
        """The model's ActionPrefix for robot-unit prefix actions (normalised with the head's statistics, padded
        to the chunk and max_action_dim), or None when there is nothing to join or rtc is "naive"."""
        if actions is None or self.rtc == "naive":
            return None
        layout = self.layout
        prefix = np.asarray(actions, dtype=np.float32)
        if prefix.ndim == 3 and prefix.shape[1] == 0:  # nothing executing yet (e.g. an ActionQueue's first chunk)
            return None
        if prefix.ndim != 3 or prefix.shape[0] != batch or prefix.shape[2] != layout.action_dim:
            raise ValueError(f"action_prefix must be (B={batch}, P, action_dim={layout.action_dim}), got "
                             f"{prefix.shape}")
        length = prefix.shape[1]
        frozen = length if frozen is None else frozen
        if frozen == 0 and self.rtc == "prefix":
            return None
        if length > layout.chunk_size or not 0 <= frozen <= length:
            raise ValueError(f"action_prefix of {length} actions with frozen={frozen}: need 0 <= frozen <= P <= "
                             f"chunk_size={layout.chunk_size}")
        shape = (batch, layout.chunk_size, layout.max_action_dim)
        padded, weights = torch.zeros(shape), torch.zeros(shape)
        normalized = self.normalizer.normalize(prefix, layout.head, "actions")
        padded[:, :length, : layout.action_dim] = torch.from_numpy(np.asarray(normalized, dtype=np.float32))
        weights[:, :, : layout.action_dim] = soft_mask_weights(layout.chunk_size, frozen, length)[None, :, None]
        return ActionPrefix(actions=padded.to(self.device), frozen=frozen, weights=weights.to(self.device),
                            mode=self.rtc)


def load_policy(path_or_hub_id: str | Path, *, head: str | None = None, device: str | torch.device = "cpu",
                seed: int = 0, num_inference_steps: int | None = None, statistics: Any = None, strict: bool = True,
                vision_num_heads: int | None = None, mode: str = "flow", rtc: RtcMode | None = None,
                **overrides: Any) -> Policy:
    """The policy of a saved bundle or a LeRobot / OpenTau / openpi checkpoint (folder or hub repo id), acting for
    `head` (a norm head, robot type or dataset name; None: the only head). `statistics` (a Normalizer or normaliser
    file) replaces the checkpoint's own; `overrides` are PiConfig runtime fields (e.g. tokenizer_name); mode "fast"
    acts with FAST decoding (a model with a FAST head); `rtc` as in Policy."""
    bundle = PolicyBundle.load(path_or_hub_id, device=device, statistics=statistics, strict=strict,
                               vision_num_heads=vision_num_heads, **overrides)
    return Policy(bundle, head, device=device, seed=seed, num_inference_steps=num_inference_steps, mode=mode,
                  rtc=rtc)
