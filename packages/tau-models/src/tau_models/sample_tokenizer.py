"""SampleTokenizer: the data transform that turns a Sample's text (and action chunk) into fixed-length token ids.

It runs where the samples are made, on the CPU: as the dataset transform in the loader workers (training) and in
the acting adapter (inference), never inside the model's step. The ids have one fixed length per config, so torch's
default collate stacks them; the model may drop columns that are padding in every row (exact, see
`tau_models.sample.trim_token_padding`). Layout of one row: [<bos> prompt (truncated)] [response ids <eos>] [marker] [FAST ids (<eos>)] [pad ...], the
marker being OpenTau's "Action: " block (prompt_format "opentau" only) and <eos> ending FAST ids on the VLM
vocabulary (fast_head "vlm_vocab"; a separate FAST head has raw FAST ids and no <eos>).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import default_collate

from tau_models.config import PiConfig
from tau_models.fast import FastTokenizer, check_fast_fits, fast_vlm_ids
from tau_models.tokenizer import (
    ACTION_MARKER,
    EOS_ID,
    PromptTokenizer,
    discretize_state,
    format_prompt,
    value_prompt,
)
from tau_models.sample import UNCOND_PREFIX
from tau_models.value import ValueConfig

logger = logging.getLogger(__name__)

Advantage = bool | None | Literal["label"]


class SampleTokenizer:
    """Adds `tokens`, `token_pad`, `token_kind` (fixed length `length`) to a Sample; picklable.

    Built from a PiConfig (pi0 / pi0.5 prompt, discretised state, advantage line, response, FAST ids) or a
    ValueConfig (the value model's prompt). Tokenizers are loaded lazily from the config unless given.
    """

    def __init__(
        self,
        config: PiConfig | ValueConfig,
        prompt_tokenizer: PromptTokenizer | None = None,
        fast_tokenizer: FastTokenizer | None = None,
    ) -> None:
        if not isinstance(config, (PiConfig, ValueConfig)):
            raise TypeError(f"SampleTokenizer needs a PiConfig or ValueConfig, got {type(config).__name__}")
        self.config = config
        self._prompt_tokenizer = prompt_tokenizer
        self._fast_tokenizer = fast_tokenizer

    @property
    def is_policy(self) -> bool:
        return isinstance(self.config, PiConfig)

    @property
    def length(self) -> int:
        """The fixed token length: prompt budget (+ response budget) (+ marker) (+ FAST budget), as the config
        trains them."""
        cfg = self.config
        length = cfg.tokenizer_max_length
        if self.is_policy:
            length += cfg.response_max_tokens if cfg.response_loss_weight > 0 else 0
            length += len(self.marker_ids()) + (cfg.fast_max_tokens if cfg.uses_fast else 0)
        return length

    @property
    def prompt_tokenizer(self) -> PromptTokenizer:
        if self._prompt_tokenizer is None:
            self._prompt_tokenizer = PromptTokenizer(self.config.tokenizer_name, self.config.tokenizer_max_length)
        return self._prompt_tokenizer

    @property
    def fast_tokenizer(self) -> FastTokenizer:
        cfg = self.config
        if self._fast_tokenizer is None:
            if not self.is_policy or cfg.fast_tokenizer_path is None:
                raise ValueError("FAST ids need config.fast_tokenizer_path (or a fast_tokenizer argument)")
            self._fast_tokenizer = FastTokenizer.load(cfg.fast_tokenizer_path)
        return check_fast_fits(self._fast_tokenizer, cfg)

    # ------------------------------------------------------------------ text
    def prompt_text(self, sample: Mapping[str, Any], advantage: bool | None = None) -> str:
        """The prompt string of a sample: task, discretised state (pi0.5 discrete mode), advantage line."""
        if "prompt" not in sample:
            raise KeyError("sample has no 'prompt' (the task instruction)")
        task = sample["prompt"]
        if not isinstance(task, str):
            raise TypeError(f"sample['prompt'] must be a str, got {type(task).__name__}")
        if not self.is_policy:
            return value_prompt(task)
        cfg = self.config
        bins = None
        if cfg.variant == "pi05" and cfg.state_mode == "discrete":
            if "state" not in sample:
                raise KeyError("sample has no 'state' (pi0.5 discrete state mode puts it in the prompt)")
            dim = int(sample["state_dim"]) if "state_dim" in sample else cfg.max_state_dim
            state = torch.as_tensor(sample["state"])[:dim]
            if not torch.isfinite(state).all():
                raise ValueError("sample['state'] contains NaN or inf")
            bins = discretize_state(state, cfg.state_bins, clamp=cfg.prompt_format == "opentau")
        return format_prompt(task, bins, advantage, cfg.variant, cfg.prompt_format)

    def marker_ids(self) -> list[int]:
        """Ids of OpenTau's "Action: " marker block (prompt_format "opentau"), else []."""
        if not self.is_policy or self.config.prompt_format != "opentau":
            return []
        return self.prompt_tokenizer.text_ids(ACTION_MARKER)

    def advantage_line(self, sample: Mapping[str, Any], advantage: Advantage, rng: Any) -> bool | None:
        """The advantage indicator to write: the given one, or ("label") the sample's label dropped with
        config.advantage_dropout by one draw of rng (a numpy Generator or an int seed)."""
        conditioning = self.is_policy and self.config.advantage_conditioning
        if advantage != "label":
            if advantage is not None and not conditioning:
                raise ValueError(f"advantage={advantage!r} needs a config with advantage_conditioning=True")
            return advantage
        if not conditioning:
            return None
        if "advantage_positive" not in sample:
            raise KeyError(
                "advantage_conditioning is on but the sample has no 'advantage_positive' "
                "(pass advantage=True/False/None to choose the line when acting)"
            )
        label = bool(torch.as_tensor(sample["advantage_positive"]).item())
        dropout = self.config.advantage_dropout
        if dropout <= 0:
            return label
        if rng is None:
            raise ValueError(
                f"advantage_dropout={dropout} needs rng (a numpy Generator or an int seed) so the draw is reproducible"
            )
        draw = (np.random.default_rng(rng) if isinstance(rng, (int, np.integer)) else rng).random()
        return None if draw < dropout else label

    def response_ids(self, sample: Mapping[str, Any]) -> list[int]:
        """Ids of sample['response'] when the config trains the response head, else []."""
        cfg = self.config
        if not self.is_policy or cfg.response_loss_weight <= 0 or not sample.get("response"):
            return []
        return self.prompt_tokenizer.response_ids(sample["response"], cfg.response_max_tokens)

    def fast_ids(self, sample: Mapping[str, Any]) -> list[int]:
        """FAST ids of the sample's normalised, padded action chunk (sample['fast_actions'] if it has one, else
        sample['actions']): on the VLM vocabulary tail ending with <eos> (fast_head "vlm_vocab"), or raw
        (fast_head "separate"); [] without FAST training or without actions (acting)."""
        cfg = self.config
        key = "fast_actions" if "fast_actions" in sample else "actions"
        if not self.is_policy or not cfg.uses_fast or key not in sample:
            return []
        actions = torch.as_tensor(sample[key]).detach().float()
        if actions.shape != (cfg.chunk_size, cfg.max_action_dim):
            raise ValueError(
                f"sample['{key}'] has shape {tuple(actions.shape)}, expected ({cfg.chunk_size}, {cfg.max_action_dim})"
            )
        if not torch.isfinite(actions).all():
            raise ValueError(f"sample['{key}'] contains NaN or inf")
        (ids,) = self.fast_tokenizer.encode(actions.cpu().numpy()[None])
        if cfg.fast_head == "separate":
            ids, tail = list(ids), []
        else:
            ids, tail = fast_vlm_ids(ids, cfg.vocab_size, cfg.fast_skip_tokens), [EOS_ID]
        if len(ids) + len(tail) > cfg.fast_max_tokens:
            logger.warning("FAST sequence of %d tokens truncated to %d", len(ids) + len(tail), cfg.fast_max_tokens)
        return ids[: cfg.fast_max_tokens - len(tail)] + tail

    # ------------------------------------------------------------------ transform
    def encode(self, sample: Mapping[str, Any], advantage: bool | None) -> dict[str, torch.Tensor]:
        """The three token tensors of one sample with the given advantage line (no dropout)."""
        tokens, pad, kind = self.prompt_tokenizer.encode(
            self.prompt_text(sample, advantage),
            self.response_ids(sample),
            self.fast_ids(sample),
            self.length,
            self.marker_ids(),
        )
        return {"tokens": tokens, "token_pad": pad, "token_kind": kind}

    def __call__(
        self,
        sample: Mapping[str, Any],
        *,
        advantage: Advantage = "label",
        rng: np.random.Generator | int | None = None,
        guidance: bool = False,
    ) -> dict[str, Any]:
        """A copy of `sample` with tokens / token_pad / token_kind added.

        advantage: "label" (training) reads sample['advantage_positive'] and drops it with advantage_dropout using
        rng; True / False / None (acting) writes that line / no line. guidance=True also adds the unconditioned set
        uncond_tokens / uncond_token_pad / uncond_token_kind (no advantage line) that classifier-free guidance in
        PiModel.sample_actions needs.
        """
        out = dict(sample)
        out.update(self.encode(sample, self.advantage_line(sample, advantage, rng)))
        if guidance:
            if not (self.is_policy and self.config.advantage_conditioning):
                raise ValueError("guidance=True needs a config with advantage_conditioning=True")
            out.update({UNCOND_PREFIX + k: v for k, v in self.encode(sample, None).items()})
        return out

    def tokenize_batch(
        self,
        batch: Mapping[str, Any],
        *,
        advantage: Advantage = "label",
        rng: np.random.Generator | int | None = None,
        guidance: bool = False,
    ) -> dict[str, Any]:
        """Tokenize every sample of an already collated batch (acting on B observations) and collate again."""
        size = len(batch["prompt"]) if "prompt" in batch else 0
        generator = np.random.default_rng(rng) if isinstance(rng, (int, np.integer)) else rng
        samples = [
            self({k: v[i] for k, v in batch.items()}, advantage=advantage, rng=generator, guidance=guidance)
            for i in range(size)
        ]
        if not samples:
            raise ValueError("tokenize_batch needs a batch with a non-empty 'prompt' list")
        return default_collate(samples)

