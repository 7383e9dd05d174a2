"""Greedy autoregressive decoding after a pi0 / pi0.5 prefix (response text, FAST tokens), with a growing KV cache,
and placing decoded ids back into a right-padded token row."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from tau_models.fast import fast_vlm_ids
from tau_models.gemma import additive_mask
from tau_models.tokenizer import EOS_ID, PAD_ID, PROMPT

if TYPE_CHECKING:
    from tau_models.pi0 import PiModel
    from tau_models.prefix import Prefix


def greedy_decode(
    model: PiModel,
    prefix: Prefix,
    max_tokens: int,
    logits_fn: Callable[[torch.Tensor], torch.Tensor],
    embed_fn: Callable[[torch.Tensor], torch.Tensor],
    allowed: torch.Tensor | None = None,
    stop_at_eos: bool = True,
) -> list[list[int]]:
    """Greedy decoding over the VLM after the prefix, reusing a growing KV cache.

    logits_fn scores hidden states (before the final norm), embed_fn embeds the chosen ids; allowed (V,) bool
    restricts the choices. With stop_at_eos a row stops at <eos> (not returned), else every row gets max_tokens ids.
    """
    backbone = model.backbone
    hidden, cache = backbone.run_prefix(prefix.embs, prefix.pad, prefix.flags)
    b, n_tok = prefix.pad.shape
    dev = hidden.device
    last = (prefix.pad.long() * torch.arange(n_tok, device=dev)).argmax(dim=1)
    logits = logits_fn(hidden[torch.arange(b, device=dev), last])
    keys_pad, position = prefix.pad, prefix.pad.sum(dim=1)
    finished = torch.zeros(b, dtype=torch.bool, device=dev)
    generated: list[torch.Tensor] = []
    for _ in range(max_tokens):
        scores = logits.float() if allowed is None else logits.float().masked_fill(~allowed, float("-inf"))
        token = scores.argmax(dim=-1)
        if stop_at_eos:
            token = torch.where(finished, torch.full_like(token, EOS_ID), token)
            finished |= token == EOS_ID
        generated.append(token)
        if len(generated) == max_tokens or (stop_at_eos and finished.all()):
            break
        keys_pad = torch.cat([keys_pad, torch.ones(b, 1, dtype=torch.bool, device=dev)], dim=1)
        mask = additive_mask(keys_pad[:, None, :], hidden.dtype)
        h, new_kv = backbone.language_model(embed_fn(token[:, None]), position[:, None], mask, kv_prefix=cache)
        cache = [
            (torch.cat([k0, k1], dim=2), torch.cat([v0, v1], dim=2)) for (k0, v0), (k1, v1) in zip(cache, new_kv)
        ]
        position = position + 1
        logits = logits_fn(h[:, 0])
    rows = torch.stack(generated, dim=1).tolist()
    return [row[: row.index(EOS_ID)] if stop_at_eos and EOS_ID in row else row for row in rows]


def decode_fast(model: PiModel, prefix: Prefix) -> list[list[int]]:
    """FAST ids decoded after the prefix: only FAST ids (and <eos> on the VLM vocabulary) can be chosen.

    fast_head "vlm_vocab": VLM vocabulary tail, tied embedding and LM head, stops at <eos>. "separate": the own FAST
    embedding and head, fast_max_tokens ids (no <eos>; coefficients past the chunk are dropped when decoding)."""
    cfg, fast = model.config, model.fast_tokenizer
    dev = prefix.embs.device
    if cfg.fast_head == "separate":
        allowed = torch.arange(cfg.fast_vocab_size, device=dev) < fast.vocab_size
        return greedy_decode(
            model, prefix, cfg.fast_max_tokens, model.fast_logits, model.fast_head.embed, allowed, False
        )
    top = cfg.vocab_size - 1 - cfg.fast_skip_tokens
    allowed = torch.zeros(cfg.vocab_size, dtype=torch.bool, device=dev)
    allowed[top - fast.vocab_size + 1 : top + 1] = True
    allowed[EOS_ID] = True
    rows = greedy_decode(
        model, prefix, cfg.fast_max_tokens, model.backbone.logits, model.backbone.embed_tokens, allowed
    )
    return [fast_vlm_ids(row, cfg.vocab_size, cfg.fast_skip_tokens) for row in rows]


def append_tokens(
    tokens: torch.Tensor, pad: torch.Tensor, kind: torch.Tensor, rows: list[list[int]], segment: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded token ids (B, L) with each row's new ids written right after its real tokens (width grows as
    needed); returns ids, pad mask and segment kinds."""
    lengths = pad.sum(dim=1).tolist()
    width = max([tokens.shape[1], *(n + len(r) for n, r in zip(lengths, rows))])
    extra = width - tokens.shape[1]
    out = F.pad(tokens, (0, extra), value=PAD_ID)
    new_pad, new_kind = F.pad(pad, (0, extra), value=False), F.pad(kind, (0, extra), value=PROMPT)
    for i, (n, row) in enumerate(zip(lengths, rows)):
        if row:
            out[i, n : n + len(row)] = torch.tensor(row, dtype=out.dtype, device=out.device)
            new_pad[i, n : n + len(row)] = True
            new_kind[i, n : n + len(row)] = segment
    return out, new_pad, new_kind
