"""The standard sample: the one contract between data (datasets, live observations) and the pi0 / pi0.5 models.

tau-data builds a `Sample` from a dataset frame or from a live observation (one function for both);
`tau_models.SampleTokenizer` (the data-pipeline transform, also called by the acting adapter) adds the token ids;
the loader collates samples into a `Batch` (every entry gains a leading batch dimension B, strings become lists).
The model reads only these keys (the text through its token ids, never the strings). Shapes below are per sample; N_cam is the
policy's camera count, L the token length, T the chunk size, D_s / D_a the padded state / action sizes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NotRequired, TypedDict

import torch


class Sample(TypedDict):
    """One training or acting sample (tensors without the batch dimension)."""

    images: torch.Tensor  # float32 (N_cam, 3, H, W) in [0, 1], resized with padding to the model's image size
    image_mask: torch.Tensor  # bool (N_cam,): False for a camera the robot does not have (its image is zeros)
    state: torch.Tensor  # float32 (D_s,): normalised proprioceptive state, zero-padded past state_dim
    state_dim: torch.Tensor  # int64 (): the real state size of this robot
    prompt: str  # the task instruction (the model's prompt text is built from it by the tokenize transform)
    actions: NotRequired[torch.Tensor]  # float32 (T, D_a): normalised action chunk, zero-padded (training only)
    # the chunk FAST encodes when it is normalised apart from `actions` (OpenTau: MIN_MAX); default: `actions`
    fast_actions: NotRequired[torch.Tensor]  # float32 (T, D_a)
    action_dim: NotRequired[torch.Tensor]  # int64 (): the real action size of this robot
    action_is_pad: NotRequired[torch.Tensor]  # bool (T,): chunk steps past the episode's end (no loss)
    dataset_index: NotRequired[torch.Tensor]  # int64 (): mixture member the frame came from (its norm head)
    tokens: NotRequired[torch.Tensor]  # int64 (L,): prompt (+ response) (+ FAST) token ids, right-padded with 0
    token_pad: NotRequired[torch.Tensor]  # bool (L,): True for real tokens
    token_kind: NotRequired[torch.Tensor]  # int64 (L,): segment of each token: PROMPT 0, RESPONSE 1, FAST 2, MARKER 3
    response: NotRequired[str]  # subtask / answer text trained with the response head (knowledge insulation)
    advantage_positive: NotRequired[torch.Tensor]  # bool (): RECAP's advantage label of the frame
    # classifier-free guidance (acting only): the same sample tokenized without the advantage line
    # (SampleTokenizer(..., guidance=True)); `tokens` then carries the conditioned "Advantage: positive" line
    uncond_tokens: NotRequired[torch.Tensor]  # int64 (L,)
    uncond_token_pad: NotRequired[torch.Tensor]  # bool (L,)
    uncond_token_kind: NotRequired[torch.Tensor]  # int64 (L,)


class Batch(TypedDict):
    """A collated batch of samples: the same keys, each with a leading batch dimension B (strings as lists)."""

    images: torch.Tensor  # float32 (B, N_cam, 3, H, W)
    image_mask: torch.Tensor  # bool (B, N_cam)
    state: torch.Tensor  # float32 (B, D_s)
    state_dim: torch.Tensor  # int64 (B,)
    prompt: list[str]
    actions: NotRequired[torch.Tensor]  # float32 (B, T, D_a)
    fast_actions: NotRequired[torch.Tensor]  # float32 (B, T, D_a)
    action_dim: NotRequired[torch.Tensor]  # int64 (B,)
    action_is_pad: NotRequired[torch.Tensor]  # bool (B, T)
    dataset_index: NotRequired[torch.Tensor]  # int64 (B,)
    tokens: NotRequired[torch.Tensor]  # int64 (B, L)
    token_pad: NotRequired[torch.Tensor]  # bool (B, L)
    token_kind: NotRequired[torch.Tensor]  # int64 (B, L)
    response: NotRequired[list[str]]
    advantage_positive: NotRequired[torch.Tensor]  # bool (B,)
    uncond_tokens: NotRequired[torch.Tensor]  # int64 (B, L)
    uncond_token_pad: NotRequired[torch.Tensor]  # bool (B, L)
    uncond_token_kind: NotRequired[torch.Tensor]  # int64 (B, L)


SAMPLE_KEYS: frozenset[str] = frozenset(Sample.__annotations__)

TOKEN_KEYS = ("tokens", "token_pad", "token_kind")
UNCOND_PREFIX = "uncond_"  # the unconditioned token set for classifier-free guidance: uncond_tokens, ...


def batch_tokens(
    batch: Mapping[str, Any], prefix: str = ""
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(tokens, token_pad, token_kind or None) of a batch (prefix "uncond_" for the guidance set)."""
    keys = [prefix + k for k in TOKEN_KEYS]
    missing = [k for k in keys[:2] if k not in batch]
    if missing:
        raise KeyError(
            f"batch is missing {missing}: the model reads token ids, made by tau_models.SampleTokenizer "
            "(run it as the dataset transform when training, on the observation sample when acting"
            + (", with guidance=True for classifier-free guidance)" if prefix else ")")
        )
    return batch[keys[0]], batch[keys[1]], batch.get(keys[2])


def trim_token_padding(
    tokens: torch.Tensor, pad: torch.Tensor, kind: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Drop trailing columns that are padding in every row (exact: padding is masked everywhere).

    Only for CPU tensors, where the check costs nothing; on an accelerator the fixed length is kept, since finding
    the cut would wait for the device every step (and fixed shapes suit compiled graphs).
    """
    if pad.device.type != "cpu" or pad.ndim != 2 or pad.shape[1] == 0:
        return tokens, pad, kind
    real = pad.any(dim=0).nonzero()
    n = int(real[-1]) + 1 if len(real) else 1
    return tokens[:, :n], pad[:, :n], None if kind is None else kind[:, :n]


def require_keys(batch: Mapping[str, Any], keys: tuple[str, ...]) -> None:
    """Raise one KeyError naming the standard-batch keys the model needs and `batch` lacks."""
    missing = [k for k in keys if k not in batch]
    if missing:
        raise KeyError(
            f"batch is missing {missing}; a standard batch has images, image_mask, state, state_dim, "
            f"actions, action_dim, action_is_pad, prompt and the SampleTokenizer's tokens / token_pad / token_kind"
        )


def check_finite(tensor: torch.Tensor, name: str) -> None:
    """Reject NaN / inf CPU inputs with the batch key named. Tensors on an accelerator are not checked: the check
    would wait for the device every step (SampleTokenizer checks state and FAST actions on the CPU)."""
    if tensor.device.type == "cpu" and not torch.isfinite(tensor).all():
        raise ValueError(f"batch['{name}'] contains NaN or inf")
