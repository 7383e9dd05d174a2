"""Prompt formatting (task, discretised state, advantage) and the PaliGemma prompt tokenizer wrapper."""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

BOS_ID, EOS_ID, PAD_ID = 2, 1, 0
# segment kinds of text tokens in the prefix
PROMPT, RESPONSE, FAST = 0, 1, 2


def clean_task(task: str) -> str:
    """Strip the task and replace underscores / newlines by spaces (LeRobot's cleaning)."""
    return task.strip().replace("_", " ").replace("\n", " ")


def discretize_state(state: torch.Tensor | np.ndarray, num_bins: int = 256) -> list[int]:
    """Normalised state values in [-1, 1] -> bin indices, as np.digitize over num_bins equal bins, minus one.

    Like openpi/LeRobot there is no lower clamp: a value below -1 gives -1; values >= 1 - 2/num_bins give the top bin.
    """
    values = np.asarray(torch.as_tensor(state).detach().float().cpu().numpy(), dtype=np.float64)
    edges = np.linspace(-1.0, 1.0, num_bins + 1)[:-1]
    return (np.digitize(values, bins=edges) - 1).astype(int).tolist()


def advantage_text(advantage: bool | None) -> str:
    """The advantage indicator line used by RECAP-style conditioning ("" when unconditioned)."""
    if advantage is None:
        return ""
    return f"Advantage: {'positive' if advantage else 'negative'};\n"


def format_prompt(
    task: str, state_bins: Sequence[int] | None = None, advantage: bool | None = None, variant: str = "pi05"
) -> str:
    """The text prompt of one sample.

    pi0.5: "Task: {task}, State: {bins};\\n[Advantage: positive;\\n]Action: " (openpi / LeRobot layout).
    pi0: "{task}\\n[Advantage: positive;\\n]".
    """
    task = clean_task(task)
    if variant == "pi0":
        return f"{task}\n{advantage_text(advantage)}"
    state = "" if state_bins is None else ", State: " + " ".join(str(int(b)) for b in state_bins)
    return f"Task: {task}{state};\n{advantage_text(advantage)}Action: "


@functools.lru_cache(maxsize=4)
def _load_hf_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    logger.info("loading prompt tokenizer %s", name_or_path)
    return AutoTokenizer.from_pretrained(name_or_path)


class PromptTokenizer:
    """PaliGemma tokenizer (hub id such as google/paligemma-3b-pt-224, or a local folder) with <bos>, right padding."""

    def __init__(self, name_or_path: str, max_length: int) -> None:
        self.name_or_path = name_or_path
        self.max_length = max_length
        self.hf = _load_hf_tokenizer(str(name_or_path))

    def __len__(self) -> int:
        return len(self.hf)

    def token_ids(self, text: str) -> list[int]:
        """Ids of text with the leading <bos>, untruncated."""
        ids = self.hf(text, add_special_tokens=True)["input_ids"]
        if not ids or ids[0] != BOS_ID:
            ids = [BOS_ID, *ids]
        return ids

    def response_ids(self, text: str, max_tokens: int) -> list[int]:
        """Ids of a response / subtask text (no <bos>), truncated, ending with <eos>; [] for an empty text."""
        if not text:
            return []
        ids = self.hf(text, add_special_tokens=False)["input_ids"]
        return [*ids[: max_tokens - 1], EOS_ID]

    def decode(self, ids: Sequence[int]) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=True)

    def encode(
        self,
        prompts: Sequence[str],
        responses: Sequence[Sequence[int]] | None = None,
        fast: Sequence[Sequence[int]] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Tokenise prompts (truncated to max_length), each optionally followed by response ids then FAST ids.

        Returns ids (B, L) right-padded with 0 to the longest row, the pad mask (B, L) and the segment kind (B, L):
        PROMPT (bidirectional block), RESPONSE or FAST (causal tokens).
        """
        rows, kinds = [], []
        for i, prompt in enumerate(prompts):
            ids = self.token_ids(prompt)
            if len(ids) > self.max_length:
                logger.warning("prompt truncated from %d to %d tokens: %r", len(ids), self.max_length, prompt)
                ids = ids[: self.max_length]
            resp = [] if responses is None else list(responses[i])
            act = [] if fast is None else list(fast[i])
            rows.append(ids + resp + act)
            kinds.append([PROMPT] * len(ids) + [RESPONSE] * len(resp) + [FAST] * len(act))
        length = max(len(r) for r in rows)
        out = torch.full((len(rows), length), PAD_ID, dtype=torch.long)
        pad = torch.zeros(len(rows), length, dtype=torch.bool)
        kind = torch.zeros(len(rows), length, dtype=torch.long)
        for i, (r, k) in enumerate(zip(rows, kinds)):
            out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            pad[i, : len(r)] = True
            kind[i, : len(k)] = torch.tensor(k, dtype=torch.long)
        return out, pad, kind
