"""A real tiny pi0.5 policy for the serving tests: tau-models' PiModel + tau-data's Normalizer + a local tokenizer.

TEMPORARY: it stands in for tau_policy.load_policy / Policy / SimPolicy (CONTRACTS.md), which the policy helper
builds at the same time; once they land, the serving tests build their policy with load_policy and this file goes.
It implements the same contract: act(observation keyed by feature names, prompts, noise) -> (B, chunk, A) in robot
units, with noise from its own seeded generator; `layout` and a JSON-able `metadata`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import functools
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tau_data.normalize import Normalizer
from tau_models import PiModel, resize_with_pad, tiny_pi05_config
from tau_models.local_tokenizer import build_local_tokenizer

HEAD = "tau_sim_tabletop/default"
PROMPTS = ("push the red block to the target", "push the blue block to the target",
           "push the yellow block to the target")


@dataclass(frozen=True)
class TinyLayout:
    """The fields of tau_policy's layout that the server reads."""

    cameras: tuple[str, ...] = ("observation.images.top", "observation.images.wrist")
    state_feature: str = "observation.state"
    state_dim: int = 2
    action_dim: int = 2
    chunk_size: int = 4
    image_size: int = 28


class TinyPolicy:
    """A PiModel acting in robot units: per-camera uint8 images + raw state in, unnormalised actions out."""

    def __init__(self, model: PiModel, normalizer: Normalizer, layout: TinyLayout, seed: int = 0) -> None:
        self.model, self.normalizer, self.layout = model.eval(), normalizer, layout
        self.generator = torch.Generator().manual_seed(seed)
        self.metadata: dict[str, Any] = {"layout": asdict(self.layout), "norm_head": HEAD, "source": "tiny test policy"}

    @torch.no_grad()
    def act(self, observation: Mapping[str, np.ndarray], prompts: Sequence[str],
            noise: torch.Tensor | None = None) -> np.ndarray:
        size, cfg = self.layout.image_size, self.model.config
        pixels = [resize_with_pad(torch.from_numpy(np.ascontiguousarray(observation[name])).permute(0, 3, 1, 2)
                                  .float().div(255.0), size) for name in self.layout.cameras]
        raw = np.asarray(observation[self.layout.state_feature], dtype=np.float32)
        b = raw.shape[0]
        state = np.zeros((b, cfg.max_state_dim), dtype=np.float32)
        state[:, : self.layout.state_dim] = self.normalizer.normalize(raw, HEAD, "state")
        batch = {"images": torch.stack(pixels, dim=1), "image_mask": torch.ones(b, len(pixels), dtype=torch.bool),
                 "state": torch.from_numpy(state), "state_dim": torch.full((b,), self.layout.state_dim),
                 "prompt": list(prompts)}
        if noise is None:
            noise = torch.randn(b, cfg.chunk_size, cfg.max_action_dim, generator=self.generator)
        chunk = self.model.sample_actions(batch, noise=noise)[:, :, : self.layout.action_dim].numpy()
        return self.normalizer.unnormalize(chunk, HEAD, "actions").astype(np.float32)


class TinySimPolicy:
    """tau-sim's Policy protocol over TinyPolicy (stands in for tau_policy.SimPolicy)."""

    def __init__(self, policy: TinyPolicy, state_key: str = "state") -> None:
        self.policy, self.state_key = policy, state_key

    def reset(self) -> None:
        """Nothing to clear."""

    def act(self, observation: Mapping[str, np.ndarray], prompts: Sequence[str]) -> np.ndarray:
        images = np.asarray(observation["images"])
        features = {name: images[:, slot] for slot, name in enumerate(self.policy.layout.cameras)}
        features[self.policy.layout.state_feature] = np.asarray(observation[self.state_key])
        return self.policy.act(features, prompts)


@functools.cache
def tiny_tokenizer() -> Path:
    """A local PaliGemma-layout tokenizer trained on the tabletop prompts (built once per process)."""
    return build_local_tokenizer(Path(tempfile.mkdtemp(prefix="tau-serving-tok-")), PROMPTS, vocab_size=1024)


def build_tiny_policy(seed: int = 0, layout: TinyLayout = TinyLayout(), **config_overrides: Any) -> TinyPolicy:
    """A tiny pi0.5 whose weights depend only on `seed` (so two builds act identically); tabletop-like stats."""
    config = dict(tokenizer_name=str(tiny_tokenizer()), tokenizer_max_length=48,
                  max_state_dim=4, max_action_dim=4, chunk_size=layout.chunk_size, num_inference_steps=2,
                  state_mode="continuous", dropout=0.0)
    config.update(config_overrides)
    torch.manual_seed(seed)
    model = PiModel(tiny_pi05_config(**config))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # larger weights than the default init, so the actions depend on the inputs
        for param in model.parameters():
            param.normal_(0.0, 0.1, generator=generator)
    d_s, d_a = layout.state_dim, layout.action_dim
    stats = {HEAD: {"state": {"mean": [0.5] * d_s, "std": [0.25] * d_s},
                    "actions": {"mean": [0.0] * d_a, "std": [0.5] * d_a}}}
    normalizer = Normalizer(stats=stats, modes={"state": "MEAN_STD", "actions": "MEAN_STD"})
    return TinyPolicy(model, normalizer, layout, seed=seed)


class RecordingPolicy:
    """Wraps a policy and keeps every call's observation and actions, in the order the server made them."""

    def __init__(self, policy: TinyPolicy) -> None:
        self.policy, self.layout, self.metadata = policy, policy.layout, policy.metadata
        self.calls: list[tuple[dict[str, np.ndarray], list[str], np.ndarray]] = []

    def act(self, observation: Mapping[str, np.ndarray], prompts: Sequence[str],
            noise: torch.Tensor | None = None) -> np.ndarray:
        actions = self.policy.act(observation, prompts, noise)
        self.calls.append(({k: np.array(v) for k, v in observation.items()}, list(prompts), actions.copy()))
        return actions


def sample_frames(n: int, seed: int = 0) -> dict[str, Any]:
    """n distinct robot frames: a 32x40 main and a 16x16 wrist image, a 2-D state, a prompt each."""
    rng = np.random.default_rng(seed)
    return {"image": rng.integers(0, 256, (n, 32, 40, 3), dtype=np.uint8),
            "wrist_image": rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8),
            "state": rng.uniform(0.0, 1.0, (n, 2)).astype(np.float32),
            "prompts": [PROMPTS[i % len(PROMPTS)] for i in range(n)]}


def libero_request(frames: dict[str, Any], i: int) -> dict[str, Any]:
    """Frame i as an openpi LIBERO client sends it."""
    return {"observation/image": frames["image"][i], "observation/wrist_image": frames["wrist_image"][i],
            "observation/state": frames["state"][i], "prompt": frames["prompts"][i]}


def reference_actions(policy: TinyPolicy, frames: dict[str, Any], order: Sequence[int]) -> np.ndarray:
    """The in-process policy's (chunk, A) actions for frames `order`, one call each, in that order."""
    top, wrist = policy.layout.cameras
    return np.stack([policy.act({top: frames["image"][i][None], wrist: frames["wrist_image"][i][None],
                                 policy.layout.state_feature: frames["state"][i][None]}, [frames["prompts"][i]])[0]
                     for i in order])


def load_tiny(path: str, head: str | None, device: str) -> TinyPolicy:
    """apps/serve's loader for the CLI tests (stands in for tau_policy.load_policy): the tiny policy, recording
    the arguments it got in its metadata."""
    policy = build_tiny_policy(seed=0)
    policy.metadata.update(source=path, head=head, device=device)
    return policy
