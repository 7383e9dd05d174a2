"""The prefix the VLM reads (camera tokens, the optional continuous state token, then the token ids of the prompt,
response and FAST actions), with the pad mask and segment kind of each position."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tau_models.tokenizer import FAST, MARKER, PROMPT


@dataclass
class Prefix:
    """Prefix embeddings with their pad mask and the segment kind of each position (images/state count as PROMPT)."""

    embs: torch.Tensor  # (B, P, W)
    pad: torch.Tensor  # (B, P) bool
    kind: torch.Tensor  # (B, P) int64: PROMPT, RESPONSE or FAST
    tokens: torch.Tensor  # (B, L) token ids of the text part (the last L prefix positions)

    @property
    def flags(self) -> torch.Tensor:
        """Block flags: response and FAST tokens are causal (each starts a block), the rest bidirectional."""
        return self.kind != PROMPT

    @property
    def visible(self) -> torch.Tensor:
        """Real tokens the action expert may attend to: everything but FAST tokens and their marker."""
        return self.pad & (self.kind != FAST) & (self.kind != MARKER)

    def without_fast(self) -> Prefix:
        """The prefix with its FAST tokens (the target actions of a training sample) masked out, for inference."""
        return Prefix(embs=self.embs, pad=self.pad & (self.kind != FAST), kind=self.kind, tokens=self.tokens)
