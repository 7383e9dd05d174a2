"""RECAP value model: images + task (+ optionally the robot state) -> a distribution over bins of the normalised
return in [-1, 0].

It reuses the policy's PaliGemma backbone: a learned readout token is appended after the prompt (its own block, so it
sees every image and prompt token), and its final hidden state goes through a linear head to num_bins logits, trained
with cross-entropy on the bin of the observed return. With `state_dim` > 0 the first state_dim entries of the
(normalised) state enter as one continuous token before the readout, as pi0.5's continuous state token does.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from tau_models.backbone import PaliGemmaBackbone
from tau_models.config import (
    PALIGEMMA_TOKENIZER,
    PALIGEMMA_VOCAB_SIZE,
    GemmaConfig,
    VisionConfig,
    gemma_2b,
    merge_overrides,
    tiny_vision,
)
from tau_models.images import resize_with_pad, to_model_range
from tau_models.sample import batch_tokens, trim_token_padding


@dataclass
class ValueConfig:
    """Backbone sizes, number of return bins and the prompt tokenizer of the value model."""

    vision: VisionConfig = field(default_factory=VisionConfig)
    vlm: GemmaConfig = field(default_factory=gemma_2b)
    vocab_size: int = PALIGEMMA_VOCAB_SIZE
    num_bins: int = 201
    tokenizer_name: str = PALIGEMMA_TOKENIZER
    tokenizer_max_length: int = 48
    dropout: float = 0.1
    dtype: Literal["float32", "bfloat16"] = "float32"
    state_dim: int = 0  # > 0: batch["state"][:, :state_dim] enters as one continuous token

    def __post_init__(self) -> None:
        if self.state_dim < 0:
            raise ValueError(f"ValueConfig.state_dim must be >= 0, got {self.state_dim}")

    def architecture_fields(self) -> set[str]:
        """Fields that decide the parameters or their shapes; the rest (dropout, dtype, tokenizer) are runtime."""
        return {"vision", "vlm", "vocab_size", "num_bins", "state_dim"}

    def to_dict(self) -> dict[str, Any]:
        return {"model_type": "tau_value", **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ValueConfig:
        data = {k: v for k, v in data.items() if k != "model_type"}
        data["vision"] = VisionConfig(**data.get("vision", {}))
        if "vlm" in data:
            data["vlm"] = GemmaConfig(**data["vlm"])
        return cls(**data)


def value_config(**overrides: Any) -> ValueConfig:
    """Full-size value model on the PaliGemma-3B backbone."""
    return ValueConfig(**overrides)


def tiny_value_config(**overrides: Any) -> ValueConfig:
    """Tiny value model for CPU tests (the tiny policy's backbone sizes)."""
    base: dict[str, Any] = dict(
        vision=tiny_vision(),
        vlm=GemmaConfig(width=256, depth=2, mlp_dim=1024, num_heads=8, num_kv_heads=1, head_dim=32),
        vocab_size=1024,
    )
    base.update(overrides)
    return ValueConfig(**base)


def bin_centers(num_bins: int = 201) -> torch.Tensor:
    """Centres of num_bins equal bins spanning normalised returns [-1, 0]."""
    return torch.linspace(-1.0, 0.0, num_bins)


def returns_to_bins(returns: torch.Tensor, num_bins: int = 201) -> torch.Tensor:
    """Normalised returns in [-1, 0] -> nearest bin index (int64); values outside the range are an error."""
    returns = torch.as_tensor(returns, dtype=torch.float32)
    if not torch.isfinite(returns).all() or (returns < -1.0 - 1e-6).any() or (returns > 1e-6).any():
        raise ValueError(
            f"normalised returns must lie in [-1, 0], got min {returns.min()} max {returns.max()}"
        )
    return torch.round((returns.clamp(-1.0, 0.0) + 1.0) * (num_bins - 1)).long()


def expected_value(logits: torch.Tensor) -> torch.Tensor:
    """Expected normalised return under the softmax of (..., num_bins) logits."""
    centers = bin_centers(logits.shape[-1]).to(logits.device)
    return (logits.float().softmax(dim=-1) * centers).sum(dim=-1)


class ValueModel(nn.Module):
    """Distributional value function V(images, task) over num_bins return bins."""

    def __init__(self, config: ValueConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = PaliGemmaBackbone(config.vision, config.vlm, config.vocab_size, config.dropout)
        self.value_query = nn.Parameter(torch.zeros(config.vlm.width))
        self.value_head = nn.Linear(config.vlm.width, config.num_bins)
        self.state_proj = nn.Linear(config.state_dim, config.vlm.width) if config.state_dim > 0 else None
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
                if isinstance(module, nn.Linear) and module.bias is not None:
                    nn.init.zeros_(module.bias)
        if config.dtype == "bfloat16":
            self.to(torch.bfloat16)

    def module_groups(self) -> dict[str, list[str]]:
        """Parameter-name prefixes of the groups tau-train's TrainConfig.freeze can name, as PiModel.module_groups:
        "vision", "vlm", "language_model", and "head" (readout query, value head, state token)."""
        head = ["value_query", "value_head."] + (["state_proj."] if self.state_proj is not None else [])
        return {
            "vision": ["backbone.vision_tower.", "backbone.projector."],
            "vlm": ["backbone."],
            "language_model": ["backbone.language_model."],
            "head": head,
        }

    @classmethod
    def from_policy(cls, policy: nn.Module, config: ValueConfig | None = None) -> ValueModel:
        """A value model whose backbone starts from a policy's VLM (vision tower, projector, language model)."""
        pc = policy.config
        config = config or ValueConfig(
            vision=pc.vision, vlm=pc.vlm, vocab_size=pc.vocab_size, tokenizer_name=pc.tokenizer_name
        )
        model = cls(config)
        model.backbone.load_state_dict(policy.backbone.state_dict())
        policy_state = getattr(policy, "state_proj", None)
        if model.state_proj is not None and policy_state is not None and policy_state.weight.shape[0] == (
            model.state_proj.weight.shape[0]
        ) and policy_state.weight.shape[1] >= config.state_dim:
            with torch.no_grad():  # a pi0.5 continuous state token (or pi0's) maps the state the same way
                model.state_proj.weight.copy_(policy_state.weight[:, : config.state_dim])
                model.state_proj.bias.copy_(policy_state.bias)
        return model

    def logits(self, batch: dict[str, Any]) -> torch.Tensor:
        """(B, num_bins) return-bin logits for a standard batch (images, image_mask, the token ids that
        SampleTokenizer(value_config) made from the prompt; state if used)."""
        images = batch["images"]
        if images.ndim != 5:
            raise ValueError(f"batch['images'] must be (B, N_cam, 3, H, W), got {tuple(images.shape)}")
        dtype = self.value_head.weight.dtype
        images = to_model_range(resize_with_pad(images.float(), self.config.vision.image_size)).to(dtype)
        b, dev = images.shape[0], images.device
        image_mask = batch.get("image_mask", torch.ones(images.shape[:2], dtype=torch.bool)).bool().to(dev)
        tokens, token_pad, _ = trim_token_padding(*batch_tokens(batch))
        tokens, token_pad = tokens.to(dev), token_pad.to(dev).bool()
        img = self.backbone.embed_images(images)
        per_cam = img.shape[1] // images.shape[1]
        query = self.value_query.to(dtype)[None, None].expand(b, 1, -1)
        parts = [img, self.backbone.embed_tokens(tokens)]
        if self.state_proj is not None:
            parts.append(self.state_proj(self._state(batch, b).to(dev, dtype))[:, None])
        embs = torch.cat([*parts, query], dim=1)
        extra = torch.ones(b, embs.shape[1] - img.shape[1] - tokens.shape[1], dtype=torch.bool, device=dev)
        pad = torch.cat([image_mask.repeat_interleave(per_cam, dim=1), token_pad, extra], dim=1)
        flags = torch.zeros_like(pad)
        flags[:, -1] = True
        hidden, _ = self.backbone.run_prefix(embs, pad, flags)
        normed, _ = self.backbone.language_model.norm(hidden[:, -1:])
        return self.value_head(normed[:, 0]).float()

    def _state(self, batch: dict[str, Any], b: int) -> torch.Tensor:
        """The (B, state_dim) state the config asks for, with a clear error when the batch lacks it."""
        state = batch.get("state")
        if state is None or state.ndim != 2 or state.shape[0] != b or state.shape[1] < self.config.state_dim:
            shape = None if state is None else tuple(state.shape)
            raise ValueError(f"value model with state_dim={self.config.state_dim} needs batch['state'] of shape "
                             f"({b}, >= {self.config.state_dim}), got {shape}")
        return state[:, : self.config.state_dim].float()

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Cross-entropy against the bin of batch["return"] (normalised return in [-1, 0])."""
        if "return" not in batch:
            raise ValueError("value model training needs batch['return'] (normalised return in [-1, 0])")
        logits = self.logits(batch)
        targets = returns_to_bins(batch["return"], self.config.num_bins).to(logits.device)
        loss = F.cross_entropy(logits, targets)
        return {"loss": loss, "value": expected_value(logits.detach()).mean()}

    @torch.no_grad()
    def predict_value(self, batch: dict[str, Any]) -> torch.Tensor:
        """(B,) expected normalised return."""
        return expected_value(self.logits(batch))

    def save_pretrained(self, directory: str | Path) -> Path:
        from tau_models.checkpoint import save_pretrained

        return save_pretrained(self, directory)

    @classmethod
    def from_pretrained(cls, path_or_hub_id: str | Path, *, strict: bool = True, **overrides: Any) -> ValueModel:
        """Load a value model saved by save_pretrained (folder or hub id); runtime overrides (dropout, dtype,
        tokenizer fields) are merged into the saved config before the model is built, architecture ones refused."""
        from tau_models.checkpoint import (
            load_state,
            read_config_json,
            read_weights,
            resolve_bundled_tokenizer,
            resolve_folder,
        )

        folder = resolve_folder(path_or_hub_id)
        raw = resolve_bundled_tokenizer(read_config_json(folder), folder)
        if raw.get("model_type") != "tau_value":
            raise ValueError(
                f"{folder}/config.json: model_type must be 'tau_value', got {raw.get('model_type')!r}"
            )
        model = cls(merge_overrides(ValueConfig.from_dict(raw), overrides, str(folder / "config.json")))
        load_state(model, read_weights(folder), "tau", str(folder), strict)
        return model
