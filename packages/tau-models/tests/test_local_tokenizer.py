"""The offline prompt tokenizer keeps PaliGemma's id conventions and round-trips any text."""

from pathlib import Path

import pytest
from tau_models.local_tokenizer import build_local_tokenizer
from tau_models.tokenizer import PromptTokenizer, format_prompt


def test_ids_conventions_and_round_trip(tmp_path: Path) -> None:
    folder = build_local_tokenizer(
        tmp_path / "tok", ["push the red block onto the green target"], vocab_size=1024
    )
    tokenizer = PromptTokenizer(str(folder), max_length=48)
    ids = tokenizer.token_ids("push the red block")
    assert ids[0] == 2 and all(0 <= i < 1024 for i in ids)
    assert len(tokenizer) <= 1024
    unseen = "Zürich ✓ 42, stack\nthe cups"
    assert tokenizer.decode(tokenizer.token_ids(unseen)) == unseen
    assert tokenizer.response_ids("done", max_tokens=8)[-1] == 1
    prompt = format_prompt("push the red block onto the green target", [0, 128, 255])
    seen = tokenizer.token_ids(prompt)
    assert len(seen) < len(prompt), "trained pieces should merge the training prompts"


def test_rejects_a_vocabulary_without_room(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="vocab_size"):
        build_local_tokenizer(tmp_path / "tok", ["x"], vocab_size=200)
