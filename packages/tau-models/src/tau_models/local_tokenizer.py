"""A small prompt tokenizer built offline with the PaliGemma id conventions, for tiny models and CPU runs.

The real path loads `google/paligemma-3b-pt-224` from the hub. Where the hub is out of reach (air-gapped
machines, CI, the embedded default), this builds a BPE on the prompts a run will see: `<pad>`=0, `<eos>`=1,
`<bos>`=2, `<unk>`=3, byte-fallback pieces `<0x00>`..`<0xFF>` at 4..259 (so any text round-trips), then the
trained pieces. It loads with `transformers.AutoTokenizer` like the real one, and its ids stay below
`vocab_size`, so it fits a model with a small embedding table.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from tokenizers import (
    AddedToken,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

SPECIAL_TOKENS = ("<pad>", "<eos>", "<bos>", "<unk>")
BYTE_TOKENS = tuple(f"<0x{i:02X}>" for i in range(256))
# Words of the pi0 / pi0.5 prompt template ("Task: ..., State: ...;\nAction: ") and of advantage conditioning.
TEMPLATE_TEXT = ("Task: , State: ;\nAction: ", "Advantage: positive", "Advantage: negative")


def _pipeline(model: models.Model) -> Tokenizer:
    """SentencePiece-style text handling: spaces become '▁' and stay attached to the following word."""
    tokenizer = Tokenizer(model)
    tokenizer.normalizer = normalizers.Replace(" ", "▁")
    tokenizer.pre_tokenizer = pre_tokenizers.Split("▁", behavior="merged_with_next")
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    )
    return tokenizer


def build_local_tokenizer(directory: str | Path, texts: Iterable[str], vocab_size: int = 1024) -> Path:
    """Train a PaliGemma-layout BPE on `texts` (plus the prompt template and state bins) and save it to `directory`.

    Returns the directory, loadable with `PromptTokenizer(directory, ...)` / `AutoTokenizer.from_pretrained`.
    """
    reserved = len(SPECIAL_TOKENS) + len(BYTE_TOKENS)
    if vocab_size <= reserved:
        raise ValueError(
            f"vocab_size must exceed the {reserved} reserved ids (specials + bytes), got {vocab_size}"
        )
    corpus = [*texts, *TEMPLATE_TEXT, " ".join(str(b) for b in range(-1, 256))]
    draft = _pipeline(models.BPE(unk_token="<unk>"))
    draft.train_from_iterator(
        corpus, trainers.BpeTrainer(vocab_size=vocab_size - reserved, show_progress=False)
    )
    trained = json.loads(draft.to_str())["model"]
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + BYTE_TOKENS)}
    for piece in sorted(trained["vocab"], key=trained["vocab"].get):
        vocab.setdefault(piece, len(vocab))
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in trained["merges"]]
    tokenizer = _pipeline(
        models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True)
    )
    tokenizer.add_special_tokens([AddedToken(t, special=True) for t in SPECIAL_TOKENS])
    tokenizer.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])

    from transformers import PreTrainedTokenizerFast

    directory = Path(directory)
    PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    ).save_pretrained(directory)
    return directory
