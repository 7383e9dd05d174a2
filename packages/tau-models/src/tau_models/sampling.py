"""Acting with a PiModel: Euler integration of the flow from noise to an action chunk (with classifier-free guidance
and real-time chunking), FAST-token decoding, and greedy decoding of the response / subtask text."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from tau_models.decoding import decode_fast, greedy_decode
from tau_models.flow import guided_velocity
from tau_models.gemma import KVCache
from tau_models.prefix import Prefix
from tau_models.rtc import ActionPrefix
from tau_models.sample import require_keys
from tau_models.tokenizer import EOS_ID, RESPONSE

if TYPE_CHECKING:
    from tau_models.pi0 import PiModel


@torch.no_grad()
def sample_actions(
    model: PiModel,
    batch: dict[str, Any],
    noise: torch.Tensor | None = None,
    num_steps: int | None = None,
    mode: Literal["flow", "fast"] = "flow",
    guidance_weight: float | None = None,
    predict_response: bool = False,
    action_prefix: ActionPrefix | None = None,
) -> torch.Tensor:
    """Action chunks (B, chunk, max_action_dim) for a batch tokenized by SampleTokenizer (no actions needed).

    mode "flow": Euler integration from t=1 (noise) to 0, the prefix run once and its KV cache reused.
    mode "fast": greedy KV-cached decoding of FAST tokens, then the inverse FAST transform.
    guidance_weight w (needs advantage conditioning): v = v_uncond + w (v_cond - v_uncond), with v_cond from
    batch["tokens"] (tokenized with advantage=True) and v_uncond from batch["uncond_tokens"] / ["uncond_token_pad"]
    / ["uncond_token_kind"] (no advantage line): SampleTokenizer(sample, advantage=True, guidance=True) makes both.
    predict_response: first decode the response / subtask text greedily and put it in the prefix.
    action_prefix: real-time chunking toward the actions executed meanwhile (tau_models.rtc: "inpaint" guidance or,
    for rtc_max_delay > 0 models, "prefix" conditioning; the frozen positions of the result are the prefix).
    Dropout follows the module mode: call model.eval() for inference.
    """
    cfg = model.config
    require_keys(batch, ("images", "state"))
    b = batch["images"].shape[0]
    guided = guidance_weight is not None
    if guided and not cfg.advantage_conditioning:
        raise ValueError("guidance_weight needs a model trained with advantage_conditioning=True")
    if mode not in ("flow", "fast"):
        raise ValueError(f"mode must be 'flow' or 'fast', got {mode!r}")
    prefix = model.prefix_from_batch(batch, guidance=guided).without_fast()
    if predict_response:
        rows = [[*ids, EOS_ID] for ids in decode_responses(model, prefix)]
        prefix = model.extend_prefix(prefix, rows, RESPONSE)
    dev = prefix.embs.device
    if mode == "fast":
        chunks = model.fast_tokenizer.decode(
            decode_fast(model, prefix)[:b], time_horizon=cfg.chunk_size, action_dim=cfg.max_action_dim
        )
        return torch.as_tensor(np.asarray(chunks), dtype=torch.float32, device=dev)
    rtc = action_prefix
    if rtc is not None and rtc.mode == "prefix" and rtc.frozen > cfg.rtc_max_delay:
        raise ValueError(f"a 'prefix' of {rtc.frozen} frozen actions needs a model trained with "
                         f"rtc_max_delay >= {rtc.frozen} (this one: {cfg.rtc_max_delay}); use 'inpaint'")
    state = batch["state"].float().to(dev)
    if guided:
        state = torch.cat([state, state])
    _, kv = model.backbone.run_prefix(prefix.embs, prefix.pad, prefix.flags, kv_only=True)

    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return _step_velocity(model, kv, prefix, x, t, state, guidance_weight)

    steps = num_steps or cfg.num_inference_steps
    x = torch.randn(b, cfg.chunk_size, cfg.max_action_dim, device=dev) if noise is None else noise.float().to(dev)
    dt = -1.0 / steps
    for k in range(steps):  # Euler from t = 1 (noise) to t = 0 (actions)
        t = torch.full((x.shape[0],), 1.0 + k * dt, dtype=torch.float32, device=dev)
        x = x + dt * (velocity(x, t) if rtc is None else rtc.velocity(velocity, x, t))
    return x if rtc is None else rtc.clamp(x)


def _step_velocity(model: PiModel, kv: KVCache, context: Prefix, x: torch.Tensor, t: torch.Tensor,
                   state: torch.Tensor, guidance_weight: float | None) -> torch.Tensor:
    """One sampling step's velocity; with classifier-free guidance the batch runs twice (conditioned first)."""
    if guidance_weight is None:
        return model.velocity(kv, context.visible, x, t, state)
    b = x.shape[0]
    v2 = model.velocity(kv, context.visible, torch.cat([x, x]), torch.cat([t, t]), state)
    return guided_velocity(v2[b:], v2[:b], guidance_weight)


@torch.no_grad()
def decode_responses(model: PiModel, prefix: Prefix) -> list[list[int]]:
    """Greedy KV-cached decoding of the response / subtask text after the prefix; ids without <eos>."""
    return greedy_decode(
        model, prefix, model.config.response_max_tokens, model.backbone.logits, model.backbone.embed_tokens
    )
