"""The block attention masks and RoPE positions of pi0 / pi0.5, as small pure functions.

Each token carries a pad flag (real or padding) and a block flag. A flag of 1 starts a new block; a token sees every
real token whose block index (cumulative sum of flags) is not larger than its own. For pi0.5 with a response and
FAST tokens:

    tokens:  img img | Task: ... State: ...;\\nAction: | r1 r2 | f1 f2 f3 | a1 a2 a3
    flags:    0   0  |  0    0  ...                   |  1  1 |  1  1  1 |  1  0  0
    block:    0   0  |  0    0  ...                   |  1  2 |  3  4  5 |  6  6  6

so images and prompt attend bidirectionally, response and FAST tokens are causal, and the action chunk (suffix) is
one block that sees the prefix (minus the FAST tokens: the expert's view is cut separately) and itself.
"""

from __future__ import annotations

import torch


def block_attention(pad: torch.Tensor, flags: torch.Tensor) -> torch.Tensor:
    """(B, L) pad and block flags -> (B, L, L) bool: allowed[b, query, key]."""
    blocks = torch.cumsum(flags.long(), dim=1)
    allowed = blocks[:, None, :] <= blocks[:, :, None]
    return allowed & pad[:, None, :] & pad[:, :, None]


def positions_from_pad(pad: torch.Tensor) -> torch.Tensor:
    """RoPE positions: the running count of real tokens minus one (padding repeats a position)."""
    return torch.cumsum(pad.long(), dim=1) - 1


def suffix_attention(
    prefix_visible: torch.Tensor, suffix_pad: torch.Tensor, suffix_flags: torch.Tensor
) -> torch.Tensor:
    """(B, Ls, P + Ls) bool: suffix queries see the visible prefix keys and suffix keys of earlier/same blocks."""
    length = suffix_pad.shape[1]
    to_prefix = prefix_visible[:, None, :].expand(-1, length, -1) & suffix_pad[:, :, None]
    return torch.cat([to_prefix, block_attention(suffix_pad, suffix_flags)], dim=2)
