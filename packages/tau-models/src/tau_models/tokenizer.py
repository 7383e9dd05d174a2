"""Prompt formatting (task, discretised state, advantage) and the PaliGemma prompt tokenizer wrapper."""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

BOS_ID, EOS_ID, PAD_ID = 2, 1, 0
# segment kinds of text tokens in the prefix. MARKER: OpenTau's "Action: " before the FAST tokens (causal, hidden
# from the action expert, never a loss target)
PROMPT, RESPONSE, FAST, MARKER = 0, 1, 2, 3
ACTION_MARKER = "Action: "


def clean_task(task: str) -> str:
    """Strip the task and replace underscores / newlines by spaces (LeRobot's pi0.5 cleaning)."""
    return task.strip().replace("_", " ").replace("\n", " ")


def discretize_state(state: torch.Tensor | np.ndarray, num_bins: int = 256, clamp: bool = False) -> list[int]:
    """Normalised state values in [-1, 1] -> bin indices, as np.digitize over num_bins equal bins, minus one.

    Like openpi/LeRobot there is no lower clamp: a value below -1 gives -1; values >= 1 - 2/num_bins give the top bin.
    clamp: clip the values to [-1, 1] first (OpenTau), so a value below -1 gives 0.
    """
    values = np.asarray(torch.as_tensor(state).detach().float().cpu().numpy(), dtype=np.float64)
    if clamp:
        values = np.clip(values, -1.0, 1.0)
    edges = np.linspace(-1.0, 1.0, num_bins + 1)[:-1]
    return (np.digitize(values, bins=edges) - 1).astype(int).tolist()


def advantage_text(advantage: bool | None) -> str:
    """The advantage indicator line used by RECAP-style conditioning ("" when unconditioned)."""
    if advantage is None:
        return ""
    return f"Advantage: {'positive' if advantage else 'negative'};\n"


def format_prompt(
    task: str,
    state_bins: Sequence[int] | None = None,
    advantage: bool | None = None,
    variant: str = "pi05",
    prompt_format: str = "lerobot",
) -> str:
    """The text prompt of one sample.

    pi0.5: "Task: {cleaned task}, State: {bins};\\n[Advantage: positive;\\n]Action: " (openpi / LeRobot layout);
    prompt_format "opentau": "Task: {task}, State: {bins};\\n[Advantage: positive;\\n]" (the task verbatim; the
    "Action: " marker follows as its own block, see SampleTokenizer).
    pi0: "{task}\\n[Advantage: positive;\\n]", the task as given with a newline appended unless it ends with one
    (LeRobot's Pi0NewLineProcessor: no stripping, no underscore replacement).
    """
    if variant == "pi0":
        return f"{task if task.endswith(chr(10)) else task + chr(10)}{advantage_text(advantage)}"
    state = "" if state_bins is None else ", State: " + " ".join(str(int(b)) for b in state_bins)
    if prompt_format == "opentau":
        return f"Task: {task}{state};\n{advantage_text(advantage)}"
    return f"Task: {clean_task(task)}{state};\n{advantage_text(advantage)}{ACTION_MARKER}"


def value_prompt(task: str) -> str:
    """The value model's prompt: "Task: {cleaned task};\\n"."""
    return f"Task: {clean_task(task)};\n"


@functools.lru_cache(maxsize=4)
def _load_hf_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    logger.info("loading prompt tokenizer %s", name_or_path)
    return AutoTokenizer.from_pretrained(name_or_path)


class PromptTokenizer:
    """PaliGemma tokenizer (hub id such as google/paligemma-3b-pt-224, or a local folder) with <bos>, right padding.

    Pickles by name (each loader worker loads the tokenizer once, through a per-process cache).
    """

    def __init__(self, name_or_path: str, max_length: int) -> None:
        self.name_or_path = name_or_path
        self.max_length = max_length
        self.hf = _load_hf_tokenizer(str(name_or_path))

    def __getstate__(self) -> dict[str, Any]:
        return {"name_or_path": self.name_or_path, "max_length": self.max_length}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["name_or_path"], state["max_length"])

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
        return [*self.text_ids(text)[: max_tokens - 1], EOS_ID]

    def decode(self, ids: Sequence[int]) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=True)

    def text_ids(self, text: str) -> list[int]:
        """Ids of a text piece without special tokens (e.g. the "Action: " marker)."""
        return list(self.hf(text, add_special_tokens=False)["input_ids"])

    def encode(
        self,
        prompt: str,
        response: Sequence[int] = (),
        fast: Sequence[int] = (),
        length: int | None = None,
        marker: Sequence[int] = (),
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One prompt (truncated to max_length), then response ids, marker ids and FAST ids, right-padded with 0 to
        `length`.

        Returns ids (L,), the pad mask (L,) (True on real tokens) and the segment kind (L,): PROMPT (bidirectional
        block), RESPONSE, MARKER or FAST (causal tokens). length defaults to the real length.
        """
        ids = self.token_ids(prompt)
        if len(ids) > self.max_length:
            logger.warning("prompt truncated from %d to %d tokens: %r", len(ids), self.max_length, prompt)
            ids = ids[: self.max_length]
        row = [*ids, *response, *marker, *fast]
        kinds = [PROMPT] * len(ids) + [RESPONSE] * len(response) + [MARKER] * len(marker) + [FAST] * len(fast)
        length = len(row) if length is None else length
        if len(row) > length:
            raise ValueError(f"{len(row)} tokens do not fit the fixed token length {length}")
        out = torch.full((length,), PAD_ID, dtype=torch.long)
        pad = torch.zeros(length, dtype=torch.bool)
        kind = torch.full((length,), PROMPT, dtype=torch.long)
        out[: len(row)] = torch.tensor(row, dtype=torch.long)
        pad[: len(row)] = True
        kind[: len(row)] = torch.tensor(kinds, dtype=torch.long)
        return out, pad, kind
