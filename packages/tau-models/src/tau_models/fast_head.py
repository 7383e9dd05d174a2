"""OpenTau's separate FAST head (`fast_head: separate`): FAST ids get their own embedding and output layer instead
of sharing PaliGemma's vocabulary."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SeparateFastHead(nn.Module):
    """An own embedding of the FAST ids (not scaled by sqrt(width); id 0 is padding) and a linear head scoring them
    from the VLM's final-norm output, computed in float32."""

    def __init__(self, fast_vocab_size: int, width: int) -> None:
        super().__init__()
        self.discrete_action_embedding = nn.Embedding(fast_vocab_size, width, padding_idx=0)
        self.da_head = nn.Linear(width, fast_vocab_size)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.discrete_action_embedding(ids)

    def logits(self, normed: torch.Tensor) -> torch.Tensor:
        return F.linear(normed.float(), self.da_head.weight.float(), self.da_head.bias.float())

    def reset_embedding(self) -> None:
        """The embedding as OpenTau starts it: PyTorch's unit normal init, the padding row zero."""
        embedding = self.discrete_action_embedding
        nn.init.normal_(embedding.weight)
        with torch.no_grad():
            embedding.weight[embedding.padding_idx].zero_()
