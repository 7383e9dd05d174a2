"""PaliGemma backbone shared by the policy and the value model: SigLIP tower, projector and Gemma language model."""

from __future__ import annotations

import torch
from torch import nn

from tau_models.attention_masks import block_attention, positions_from_pad
from tau_models.config import GemmaConfig, VisionConfig
from tau_models.gemma import GemmaTower, KVCache, additive_mask
from tau_models.siglip import SiglipVisionTower


class PaliGemmaBackbone(nn.Module):
    """Embeds images and tokens and runs the Gemma language model over a prefix, returning its KV cache."""

    def __init__(self, vision: VisionConfig, vlm: GemmaConfig, vocab_size: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.vision_cfg = vision
        self.vision_tower = SiglipVisionTower(vision)
        self.projector = nn.Linear(vision.width, vlm.width)
        self.language_model = GemmaTower(vlm, vocab_size=vocab_size, dropout=dropout)

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        """(B, N_cam, 3, H, W) in [-1, 1] -> (B, N_cam * patches, width); image tokens are not rescaled."""
        b, n = images.shape[:2]
        feats = self.projector(self.vision_tower(images.flatten(0, 1)))
        return feats.reshape(b, n * feats.shape[1], feats.shape[2])

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return self.language_model.embed(ids)

    def run_prefix(
        self, embs: torch.Tensor, pad: torch.Tensor, flags: torch.Tensor, kv_only: bool = False
    ) -> tuple[torch.Tensor | None, KVCache]:
        """Run the language model over prefix embeddings with the block mask; returns hidden states and KV cache
        (no hidden states with kv_only, which skips the work only they need)."""
        mask = additive_mask(block_attention(pad, flags), embs.dtype)
        return self.language_model(embs, positions_from_pad(pad), mask, kv_only=kv_only)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Next-token logits through the final norm and the (tied) token embedding."""
        normed, _ = self.language_model.norm(hidden)
        return normed @ self.language_model.embed_tokens.weight.t()
