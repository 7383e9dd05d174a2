"""pi0 / pi0.5: a PaliGemma VLM over the prefix and a Gemma action expert over the noisy action chunk.

Read top to bottom: inputs -> prefix (images, the token ids SampleTokenizer made: prompt, optional response and FAST
tokens) -> VLM pass with KV cache -> suffix (noisy actions, time) through the expert attending to the cached prefix
-> flow-matching loss / Euler sampling.
The prefix never attends to the suffix, so running the VLM once and handing its keys/values to the expert is the
same computation as one joint pass; it is also what makes knowledge insulation a one-line detach.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tau_models.attention_masks import suffix_attention
from tau_models.backbone import PaliGemmaBackbone
from tau_models.config import PiConfig
from tau_models.decoding import append_tokens, decode_fast
from tau_models.fast import FastTokenizer, check_fast_fits
from tau_models.flow import (
    action_loss_mask,
    masked_mean,
    noisy_actions,
    sample_time,
    time_embedding,
)
from tau_models.fast_head import SeparateFastHead
from tau_models.gemma import AdaRMSNorm, GemmaTower, KVCache, additive_mask
from tau_models.images import resize_with_pad, to_model_range
from tau_models.prefix import Prefix
from tau_models.rtc import training_prefix
from tau_models.sample import UNCOND_PREFIX, batch_tokens, check_finite, require_keys, trim_token_padding
from tau_models.sampling import decode_responses, sample_actions
from tau_models.tokenizer import FAST, PROMPT, RESPONSE


# Modules of the action-expert side besides the expert tower (those the variant has).
EXPERT_SIDE = (
    "action_in_proj",
    "action_out_proj",
    "time_mlp_in",
    "time_mlp_out",
    "state_proj",
    "action_time_mlp_in",
    "action_time_mlp_out",
)


class PiModel(nn.Module):
    """pi0.5 (variant "pi05") or pi0 (variant "pi0"); forward(batch) -> {"loss", ...}; sample_actions(batch)."""

    def __init__(self, config: PiConfig, fast_tokenizer: FastTokenizer | None = None) -> None:
        super().__init__()
        self.config = cfg = config
        we = cfg.expert.width
        pi05 = cfg.variant == "pi05"
        self.backbone = PaliGemmaBackbone(cfg.vision, cfg.vlm, cfg.vocab_size, cfg.dropout)
        self.expert = GemmaTower(cfg.expert, cond_dim=we if pi05 else None, dropout=cfg.dropout)
        self.action_in_proj = nn.Linear(cfg.max_action_dim, we)
        self.action_out_proj = nn.Linear(we, cfg.max_action_dim)
        if pi05:
            self.time_mlp_in = nn.Linear(we, we)
            self.time_mlp_out = nn.Linear(we, we)
            if cfg.state_mode == "continuous":
                self.state_proj = nn.Linear(cfg.max_state_dim, cfg.vlm.width)
        else:
            self.state_proj = nn.Linear(cfg.max_state_dim, we)
            self.action_time_mlp_in = nn.Linear(2 * we, we)
            self.action_time_mlp_out = nn.Linear(we, we)
        if cfg.fast_head == "separate":
            self.fast_head = SeparateFastHead(cfg.fast_vocab_size, cfg.vlm.width)
        self._fast_tokenizer = fast_tokenizer
        self.apply(_init_weights)
        if cfg.dtype == "bfloat16":
            self.to(torch.bfloat16)
        self._set_gradient_checkpointing(cfg.gradient_checkpointing)

    # ------------------------------------------------------------------ setup
    def module_groups(self) -> dict[str, list[str]]:
        """Named parameter groups as parameter-name prefixes (a parameter belongs to a group when its name starts
        with one of them), for tau-train's TrainConfig.freeze: "vision" (SigLIP tower + projector), "vlm" (the whole
        PaliGemma backbone, with a separate FAST head), "language_model", "expert" (action expert and its
        in/out/time/state projections)."""
        own = [n for n in EXPERT_SIDE if hasattr(self, n)]
        return {
            "vision": ["backbone.vision_tower.", "backbone.projector."],
            "vlm": ["backbone.", *(["fast_head."] if hasattr(self, "fast_head") else [])],
            "language_model": ["backbone.language_model."],
            "expert": ["expert.", *(f"{n}." for n in own)],
        }

    def gradient_checkpointing_enable(self) -> None:
        """Recompute each Gemma layer (VLM and expert) in the backward pass instead of keeping its activations."""
        self._set_gradient_checkpointing(True)

    def gradient_checkpointing_disable(self) -> None:
        self._set_gradient_checkpointing(False)

    def _set_gradient_checkpointing(self, on: bool) -> None:
        self.backbone.language_model.gradient_checkpointing = on
        self.expert.gradient_checkpointing = on
        self.config = dataclasses.replace(self.config, gradient_checkpointing=on)

    @property
    def fast_tokenizer(self) -> FastTokenizer:
        """The FAST tokenizer that decodes mode="fast" samples (loaded from config.fast_tokenizer_path)."""
        if self._fast_tokenizer is None:
            if self.config.fast_tokenizer_path is None:
                raise ValueError(
                    "FAST is used but config.fast_tokenizer_path is not set and no tokenizer was given"
                )
            self._fast_tokenizer = FastTokenizer.load(self.config.fast_tokenizer_path)
        return check_fast_fits(self._fast_tokenizer, self.config)

    @property
    def dtype(self) -> torch.dtype:
        return self.action_in_proj.weight.dtype

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write config.json + model.safetensors."""
        from tau_models.checkpoint import save_pretrained

        return save_pretrained(self, directory)

    @classmethod
    def from_pretrained(cls, path_or_hub_id: str | Path, *, strict: bool = True, **overrides: Any) -> PiModel:
        """Load a tau, LeRobot or OpenTau checkpoint folder / hub id with runtime overrides (see
        tau_models.checkpoint.from_pretrained)."""
        from tau_models.checkpoint import from_pretrained

        return from_pretrained(path_or_hub_id, strict=strict, **overrides)

    # ------------------------------------------------------------------ inputs
    def prepare_images(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch images (B, N_cam, 3, H, W) in [0, 1] -> model resolution in [-1, 1], and the camera mask."""
        images = batch["images"]
        if images.ndim != 5 or images.shape[2] != 3:
            raise ValueError(f"batch['images'] must be (B, N_cam, 3, H, W), got {tuple(images.shape)}")
        check_finite(images, "images")
        images = to_model_range(resize_with_pad(images.float(), self.config.vision.image_size))
        mask = batch.get("image_mask")
        if mask is None:
            mask = torch.ones(images.shape[:2], dtype=torch.bool, device=images.device)
        return images.to(self.dtype), mask.bool()

    def embed_prefix(
        self,
        images: torch.Tensor,
        image_mask: torch.Tensor,
        tokens: torch.Tensor,
        token_pad: torch.Tensor,
        token_kind: torch.Tensor | None = None,
        state: torch.Tensor | None = None,
    ) -> Prefix:
        """[camera tokens, (continuous state token), prompt (+ response) (+ FAST) tokens] with pad mask and kinds."""
        b = images.shape[0]
        img = self.backbone.embed_images(images)
        per_cam = img.shape[1] // images.shape[1]
        parts, pads = [img], [image_mask.repeat_interleave(per_cam, dim=1)]
        if self.config.variant == "pi05" and self.config.state_mode == "continuous":
            parts.append(self.state_proj(state.to(self.dtype))[:, None])
            pads.append(torch.ones(b, 1, dtype=torch.bool, device=img.device))
        parts.append(self.embed_token_ids(tokens, token_kind))
        pads.append(token_pad.bool())
        embs, pad = torch.cat(parts, dim=1), torch.cat(pads, dim=1)
        kind = torch.full_like(pad, PROMPT, dtype=torch.long)
        if token_kind is not None:
            kind[:, -tokens.shape[1] :] = token_kind
        return Prefix(embs=embs, pad=pad, kind=kind, tokens=tokens)

    def prefix_from_batch(self, batch: dict[str, Any], guidance: bool = False) -> Prefix:
        """Images, state and token ids of a standard batch -> Prefix. guidance: the batch twice, first with its
        (conditioned) tokens, then with its uncond_* tokens (classifier-free guidance)."""
        images, image_mask = self.prepare_images(batch)
        tokens, pad, kind = batch_tokens(batch)
        state = batch["state"].float() if "state" in batch else None
        if guidance:
            u_tokens, u_pad, u_kind = batch_tokens(batch, UNCOND_PREFIX)
            if u_tokens.shape != tokens.shape:
                raise ValueError(
                    f"batch['{UNCOND_PREFIX}tokens'] has shape {tuple(u_tokens.shape)}, batch['tokens'] "
                    f"{tuple(tokens.shape)}: tokenize both with the same SampleTokenizer(guidance=True)"
                )
            kind = None if kind is None or u_kind is None else torch.cat([kind, u_kind])
            tokens, pad = torch.cat([tokens, u_tokens]), torch.cat([pad, u_pad])
            images, image_mask = torch.cat([images, images]), torch.cat([image_mask, image_mask])
            state = None if state is None else torch.cat([state, state])
        tokens, pad, kind = trim_token_padding(tokens, pad, kind)
        dev = images.device
        return self.embed_prefix(images, image_mask.to(dev), tokens.to(dev), pad.to(dev),
                                 None if kind is None else kind.to(dev), None if state is None else state.to(dev))

    def embed_token_ids(self, tokens: torch.Tensor, kind: torch.Tensor | None = None) -> torch.Tensor:
        """Token embeddings (text scaled by sqrt(width)); FAST ids through the separate FAST embedding when the
        config has one (fast_head "separate")."""
        embs = self.backbone.embed_tokens(tokens)
        if self.config.fast_head != "separate" or kind is None:
            return embs
        fast = self.fast_head.embed(tokens.clamp(0, self.config.fast_vocab_size - 1))
        return torch.where((kind == FAST)[..., None], fast.to(embs.dtype), embs)

    def fast_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """FAST-token logits of VLM hidden states (before the final norm), through the FAST head of the config."""
        if self.config.fast_head != "separate":
            return self.backbone.logits(hidden)
        normed, _ = self.backbone.language_model.norm(hidden)
        return self.fast_head.logits(normed)

    def extend_prefix(self, prefix: Prefix, rows: list[list[int]], kind: int) -> Prefix:
        """The prefix with each row's new token ids (response or FAST) placed right after its real tokens."""
        n_tok = prefix.tokens.shape[1]
        tokens, pad, kinds = append_tokens(
            prefix.tokens, prefix.pad[:, -n_tok:], prefix.kind[:, -n_tok:], rows, kind
        )
        head_pad = prefix.pad[:, :-n_tok]
        return Prefix(
            embs=torch.cat([prefix.embs[:, :-n_tok], self.embed_token_ids(tokens, kinds)], dim=1),
            pad=torch.cat([head_pad, pad], dim=1),
            kind=torch.cat([torch.full_like(head_pad, PROMPT, dtype=torch.long), kinds], dim=1),
            tokens=tokens,
        )

    # ------------------------------------------------------------------ action expert
    def time_condition(self, t: torch.Tensor) -> torch.Tensor:
        """pi0.5 adaRMS condition: sinusoid(t) -> time_mlp_in -> swish -> time_mlp_out -> swish."""
        emb = time_embedding(t, self.config.expert.width, self.config.min_period, self.config.max_period)
        return F.silu(self.time_mlp_out(F.silu(self.time_mlp_in(emb.to(self.dtype)))))

    def embed_suffix(
        self, x_t: torch.Tensor, t: torch.Tensor, state: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Suffix tokens, their block flags and the adaRMS condition (None for pi0); t (B,) or per position (B, T)."""
        actions = self.action_in_proj(x_t.to(self.dtype))
        b, horizon, _ = actions.shape
        flags = torch.zeros(b, horizon, dtype=torch.bool, device=actions.device)
        flags[:, 0] = True
        if self.config.variant == "pi05":
            return actions, flags, self.time_condition(t)
        if state is None:
            raise ValueError("pi0 needs batch['state']")
        emb = time_embedding(t, self.config.expert.width, self.config.min_period, self.config.max_period)
        emb = emb[:, None].expand(-1, horizon, -1) if emb.ndim == 2 else emb  # per sample or per position
        mixed = torch.cat([actions, emb.to(self.dtype)], dim=2)
        actions = self.action_time_mlp_out(F.silu(self.action_time_mlp_in(mixed)))
        state_tok = self.state_proj(state.to(self.dtype))[:, None]
        state_flag = torch.ones(b, 1, dtype=torch.bool, device=actions.device)
        return torch.cat([state_tok, actions], dim=1), torch.cat([state_flag, flags], dim=1), None

    def velocity(self, kv: KVCache, prefix_visible: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
                 state: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted velocity (B, T, D) of the noisy chunk x_t at time t, attending to the cached prefix."""
        embs, flags, cond = self.embed_suffix(x_t, t, state)
        pad = torch.ones_like(flags)
        mask = additive_mask(suffix_attention(prefix_visible, pad, flags), embs.dtype)
        start = prefix_visible.sum(dim=1)
        positions = start[:, None] + torch.arange(embs.shape[1], device=embs.device)[None]
        hidden, _ = self.expert(embs, positions, mask, cond, kv_prefix=kv)
        out, _ = self.expert.norm(hidden, cond)
        return self.action_out_proj(out[:, -x_t.shape[1] :]).float()

    def expert_kv(self, kv: KVCache) -> KVCache:
        """The prefix keys/values the expert reads: detached under knowledge insulation."""
        if self.config.knowledge_insulation:
            return [(k.detach(), v.detach()) for k, v in kv]
        return kv

    # ------------------------------------------------------------------ training
    def flow_loss_per_element(self, prefix: Prefix, actions: torch.Tensor, noise: torch.Tensor, t: torch.Tensor,
                              state: torch.Tensor | None = None) -> torch.Tensor:
        """(u - v)^2 per element (B, T, D), unmasked (LeRobot's PI05Pytorch.forward output)."""
        _, kv = self.backbone.run_prefix(prefix.embs, prefix.pad, prefix.flags, kv_only=True)
        x_t, u = noisy_actions(actions.float(), noise.float(), t.float())
        v = self.velocity(self.expert_kv(kv), prefix.visible, x_t, t, state)
        return (u - v) ** 2

    def forward(
        self, batch: dict[str, Any], noise: torch.Tensor | None = None, time: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Training losses on a tokenized standard batch: flow matching (+ FAST / response cross-entropy on the
        FAST / response token ids SampleTokenizer put in the batch), weighted into "loss"."""
        cfg = self.config
        require_keys(batch, ("images", "state", "actions"))
        actions = batch["actions"].float()
        b, horizon, dim = actions.shape
        if (horizon, dim) != (cfg.chunk_size, cfg.max_action_dim):
            raise ValueError(
                f"batch['actions'] has shape {tuple(actions.shape)}, expected (B, {cfg.chunk_size}, {cfg.max_action_dim})"
            )
        check_finite(actions, "actions")
        dev = actions.device
        prefix = self.prefix_from_batch(batch)
        train_response = cfg.response_loss_weight > 0
        needs_hidden = cfg.uses_fast or train_response
        hidden, kv = self.backbone.run_prefix(prefix.embs, prefix.pad, prefix.flags, kv_only=not needs_hidden)
        noise = torch.randn_like(actions) if noise is None else noise.to(dev).float()
        t = (
            sample_time(b, cfg.time_beta_alpha, cfg.time_beta_beta, cfg.time_scale, cfg.time_offset, dev)
            if time is None
            else time.to(dev).float()
        )
        state = batch["state"].to(dev).float()
        x_t, u = noisy_actions(actions, noise, t)
        mask = action_loss_mask(batch.get("action_is_pad"), batch.get("action_dim"), (b, horizon, dim), dev)
        if cfg.rtc_max_delay > 0:  # real-time chunking: a clean prefix at time 0, left out of the loss
            x_t, t, in_loss = training_prefix(actions, x_t, t, cfg.rtc_max_delay)
            mask = mask & in_loss
        v = self.velocity(self.expert_kv(kv), prefix.visible, x_t, t, state)
        flow = masked_mean((u - v) ** 2, mask)
        out = {"flow_loss": flow}
        loss = cfg.flow_loss_weight * flow
        if cfg.uses_fast:
            fast = self.token_loss(hidden, prefix, FAST)
            out["fast_loss"] = fast
            loss = loss + cfg.fast_loss_weight * fast
        if train_response:
            response = self.token_loss(hidden, prefix, RESPONSE)
            out["response_loss"] = response
            loss = loss + cfg.response_loss_weight * response
        out["loss"] = loss
        return out

    def token_loss(self, hidden: torch.Tensor, prefix: Prefix, kind: int) -> torch.Tensor:
        """Next-token cross-entropy on the tokens of one segment kind (FAST or RESPONSE), mean over real tokens."""
        ids = torch.zeros(prefix.pad.shape, dtype=torch.long, device=hidden.device)
        ids[:, prefix.pad.shape[1] - prefix.tokens.shape[1] :] = prefix.tokens
        targets_mask = (prefix.kind[:, 1:] == kind) & prefix.pad[:, 1:]
        score = self.fast_logits if kind == FAST else self.backbone.logits
        logits = score(hidden[:, :-1][targets_mask]).float()
        if logits.shape[0] == 0:  # no token of this kind in the batch (e.g. no sample has a response)
            return hidden.sum() * 0.0
        return F.cross_entropy(logits, ids[:, 1:][targets_mask])

    # ------------------------------------------------------------------ inference (tau_models.sampling)
    sample_actions = sample_actions  # (batch, noise=, num_steps=, mode=, guidance_weight=, ...): tau_models.sampling

    @torch.no_grad()
    def generate_fast_tokens(self, prefix: Prefix) -> list[list[int]]:
        """Greedy KV-cached decoding of FAST tokens after the prefix (see decoding.decode_fast). Returns FAST ids."""
        return decode_fast(self, prefix)

    @torch.no_grad()
    def generate_responses(self, batch: dict[str, Any]) -> list[list[int]]:
        """Greedy KV-cached decoding of the response / subtask text after the prompt; token ids without <eos>
        (SampleTokenizer.prompt_tokenizer.decode turns them into text)."""
        return decode_responses(self, self.prefix_from_batch(batch).without_fast())


def _init_weights(module: nn.Module) -> None:
    """Small normal init for linear/embedding weights, identity adaRMS modulation, the separate FAST embedding as
    OpenTau starts it (checkpoints overwrite all of it)."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
    if isinstance(module, AdaRMSNorm):
        module.reset_modulation()
    if isinstance(module, SeparateFastHead):  # unscaled embedding, as OpenTau initialises it
        module.reset_embedding()
