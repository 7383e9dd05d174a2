"""Gemma decoder layers with RoPE, GQA attention over an optional key/value prefix, and (adaptive) RMSNorm.

A tower runs one token stream; joint attention between the VLM and the expert is done by handing the expert the
VLM's per-layer keys/values (a KV prefix). Parameter names follow transformers' Gemma so checkpoints map 1:1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from tau_models.config import GemmaConfig

KVCache = list[tuple[torch.Tensor, torch.Tensor]]
# The additive mask value LeRobot/openpi use for disallowed attention: rows with nothing allowed stay finite.
MASK_VALUE = -2.3819763e38


class RMSNorm(nn.Module):
    """Gemma RMSNorm: x / rms(x) * (1 + weight), computed in float32."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> tuple[torch.Tensor, None]:
        xf = x.float()
        normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (normed * (1.0 + self.weight.float())).type_as(x), None


class AdaRMSNorm(nn.Module):
    """Adaptive RMSNorm (pi0.5): scale, shift and a residual gate computed from a conditioning vector per sample
    (B, C) or per token (B, L, C) (per-position flow time for real-time chunking)."""

    def __init__(self, dim: int, cond_dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.dense = nn.Linear(cond_dim, 3 * dim)
        self.reset_modulation()

    def reset_modulation(self) -> None:
        """Zero weight; bias gives scale 0, shift 0, gate 1: a plain pre-norm layer until training moves it."""
        nn.init.zeros_(self.dense.weight)
        with torch.no_grad():
            self.dense.bias.zero_()
            self.dense.bias[2 * self.dense.out_features // 3 :] = 1.0

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if cond is None:
            raise ValueError("AdaRMSNorm needs a conditioning vector")
        xf = x.float()
        normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        modulation = self.dense(cond)  # cond (B, C): one per sample; (B, L, C): one per token
        scale, shift, gate = (modulation.unsqueeze(1) if cond.ndim == 2 else modulation).chunk(3, dim=-1)
        out = normed * (1.0 + scale.float()) + shift.float()
        return out.type_as(x), gate


class GemmaMLP(nn.Module):
    """Gated GELU(tanh) feed-forward."""

    def __init__(self, width: int, mlp_dim: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(width, mlp_dim, bias=False)
        self.up_proj = nn.Linear(width, mlp_dim, bias=False)
        self.down_proj = nn.Linear(mlp_dim, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.gelu(self.gate_proj(x), approximate="tanh") * self.up_proj(x))


class GemmaAttention(nn.Module):
    """Query/key/value/output projections of one Gemma layer (no biases)."""

    def __init__(self, cfg: GemmaConfig) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.width, cfg.num_heads * cfg.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.width, cfg.num_kv_heads * cfg.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.width, cfg.num_kv_heads * cfg.head_dim, bias=False)
        self.o_proj = nn.Linear(cfg.num_heads * cfg.head_dim, cfg.width, bias=False)


def rope_tables(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos / sin tables (B, 1, L, hd) in float32 for integer positions (B, L); shared by every layer."""
    inv_freq = 1.0 / (
        theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64, device=positions.device).float() / head_dim)
    )
    freqs = positions.float()[:, :, None] * inv_freq[None, None, :]
    emb = torch.cat([freqs, freqs], dim=-1)[:, None]
    return emb.cos(), emb.sin()


def rope(x: torch.Tensor, tables: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Rotary embedding ("rotate half" convention) of x (B, H, L, hd), computed in float32."""
    cos, sin = tables
    half = x.shape[-1] // 2
    xf = x.float()
    rotated = torch.cat([-xf[..., half:], xf[..., :half]], dim=-1)
    return (xf * cos + rotated * sin).to(x.dtype)


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, Lq, Lk) bool allowed-matrix -> (B, 1, Lq, Lk) additive mask (0 or a large finite negative)."""
    zero = torch.zeros((), dtype=dtype, device=allowed.device)
    neg = torch.tensor(max(MASK_VALUE, torch.finfo(dtype).min), dtype=dtype, device=allowed.device)
    return torch.where(allowed, zero, neg)[:, None]


class GemmaLayer(nn.Module):
    """One pre-norm decoder layer; with adaptive norms (cond_dim set) the residuals are gated."""

    def __init__(self, cfg: GemmaConfig, cond_dim: int | None, dropout: float) -> None:
        super().__init__()
        self.cfg = cfg
        self.self_attn = GemmaAttention(cfg)
        self.mlp = GemmaMLP(cfg.width, cfg.mlp_dim)
        norm = (
            (lambda: AdaRMSNorm(cfg.width, cond_dim, cfg.rms_norm_eps))
            if cond_dim
            else (lambda: RMSNorm(cfg.width, cfg.rms_norm_eps))
        )
        self.input_layernorm = norm()
        self.post_attention_layernorm = norm()
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        rope_cos_sin: tuple[torch.Tensor, torch.Tensor],
        mask: torch.Tensor,
        cond: torch.Tensor | None = None,
        kv_prefix: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """x (B, L, W); mask (B, 1, L, P+L) additive over [kv_prefix ; own keys]. Returns x and own (k, v)."""
        attn = self.self_attn
        b, length, _ = x.shape
        h, gate = self.input_layernorm(x, cond)
        q = rope(attn.q_proj(h).view(b, length, attn.num_heads, attn.head_dim).transpose(1, 2), rope_cos_sin)
        k, v = self._key_values(h, rope_cos_sin)
        keys, values = k, v
        if kv_prefix is not None:
            keys, values = torch.cat([kv_prefix[0], k], dim=2), torch.cat([kv_prefix[1], v], dim=2)
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask.to(q.dtype), enable_gqa=True)
        out = attn.o_proj(out.transpose(1, 2).reshape(b, length, attn.num_heads * attn.head_dim))
        out = self.dropout(out)
        x = x + out if gate is None else x + out * gate
        h, gate = self.post_attention_layernorm(x, cond)
        out = self.dropout(self.mlp(h))
        x = x + out if gate is None else x + out * gate
        return x, (k, v)

    def key_values(
        self,
        x: torch.Tensor,
        rope_cos_sin: tuple[torch.Tensor, torch.Tensor],
        cond: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Only this layer's keys (after RoPE) and values of x: all that later streams read from a last layer."""
        h, _ = self.input_layernorm(x, cond)
        return self._key_values(h, rope_cos_sin)

    def _key_values(
        self, h: torch.Tensor, rope_cos_sin: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        attn = self.self_attn
        b, length, _ = h.shape
        k = attn.k_proj(h).view(b, length, attn.num_kv_heads, attn.head_dim).transpose(1, 2)
        v = attn.v_proj(h).view(b, length, attn.num_kv_heads, attn.head_dim).transpose(1, 2)
        return rope(k, rope_cos_sin), v


class GemmaTower(nn.Module):
    """A stack of Gemma layers with a final norm; embed_tokens only for the language model."""

    def __init__(
        self,
        cfg: GemmaConfig,
        vocab_size: int | None = None,
        cond_dim: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(vocab_size, cfg.width) if vocab_size else None
        self.layers = nn.ModuleList(GemmaLayer(cfg, cond_dim, dropout) for _ in range(cfg.depth))
        self.gradient_checkpointing = False  # recompute each layer in backward instead of keeping activations
        self.norm = (
            AdaRMSNorm(cfg.width, cond_dim, cfg.rms_norm_eps)
            if cond_dim
            else RMSNorm(cfg.width, cfg.rms_norm_eps)
        )

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings times sqrt(width) (Gemma's scaling, rounded to the embedding dtype)."""
        if self.embed_tokens is None:
            raise RuntimeError("this Gemma tower has no token embedding")
        emb = self.embed_tokens(ids)
        return emb * torch.tensor(self.cfg.width**0.5, dtype=emb.dtype)

    def forward(
        self,
        x: torch.Tensor,
        positions: torch.Tensor,
        mask: torch.Tensor,
        cond: torch.Tensor | None = None,
        kv_prefix: KVCache | None = None,
        kv_only: bool = False,
    ) -> tuple[torch.Tensor | None, KVCache]:
        """Run every layer; returns the hidden states (before the final norm) and each layer's own (k, v).

        kv_only: the caller needs only the KV cache (e.g. the VLM prefix for the flow loss), so the last layer stops
        after its keys/values and no hidden states are returned; the cache is identical.
        """
        cache: KVCache = []
        tables = rope_tables(positions, self.cfg.head_dim, self.cfg.rope_theta)
        for i, layer in enumerate(self.layers):
            prefix = None if kv_prefix is None else kv_prefix[i]
            if kv_only and i == len(self.layers) - 1:
                cache.append(layer.key_values(x, tables, cond))
                return None, cache
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x, kv = checkpoint(layer, x, tables, mask, cond, prefix, use_reentrant=False)
            else:
                x, kv = layer(x, tables, mask, cond, prefix)
            cache.append(kv)
        return x, cache
