"""FAST action tokenizer: per-dimension DCT over the chunk, scale, round, then BPE over the integer sequence.

Files (HF layout, as `physical-intelligence/fast`): tokenizer.json (a `tokenizers` BPE) and processor_config.json
(scale, vocab_size, min_token, time_horizon, action_dim). The published tokenizer is read as is (its ByteLevel
pre-tokenizer included); tokenizers fitted here use no pre-tokenizer and an alphabet covering every integer in the
fitted range, so every in-range coefficient encodes (upstream can silently drop a value never seen in fitting).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy.fft import dct, idct
from tokenizers import Tokenizer, decoders, models, trainers

from tau_models.config import PiConfig

logger = logging.getLogger(__name__)

CONFIG_NAME = "processor_config.json"
TOKENIZER_NAME = "tokenizer.json"


def dct_coefficients(chunks: np.ndarray, scale: float) -> np.ndarray:
    """(B, T, D) chunks -> rounded, scaled DCT-II coefficients along time, (B, T, D) int64."""
    return np.around(dct(np.asarray(chunks, dtype=np.float64), axis=1, norm="ortho") * scale).astype(np.int64)


def _to_text(coeffs: np.ndarray, min_token: int) -> str:
    """Flatten (T, D) coefficients frequency-major and map each integer to one character."""
    return "".join(map(chr, np.maximum(coeffs.reshape(-1) - min_token, 0).tolist()))


def fast_vlm_ids(ids: Sequence[int], vocab_size: int, skip_tokens: int) -> list[int]:
    """FAST ids -> VLM vocabulary ids counted down from the top (vocab_size - 1 - skip_tokens - id), as openpi does,
    and back: the map is its own inverse."""
    top = vocab_size - 1 - skip_tokens
    return [top - int(i) for i in ids]


def check_fast_fits(fast: FastTokenizer, config: PiConfig) -> FastTokenizer:
    """The tokenizer, after checking that its ids fit the model's FAST head: the VLM vocabulary (plus the skipped
    top tokens) for fast_head "vlm_vocab", the separate head's fast_vocab_size for "separate"."""
    if config.fast_head == "separate":
        if fast.vocab_size > config.fast_vocab_size:
            raise ValueError(
                f"FAST vocab {fast.vocab_size} does not fit the separate FAST head of {config.fast_vocab_size} ids"
            )
    elif fast.vocab_size + config.fast_skip_tokens + 1 >= config.vocab_size:
        raise ValueError(
            f"FAST vocab {fast.vocab_size} + skip {config.fast_skip_tokens} does not fit in the VLM vocabulary "
            f"of {config.vocab_size}"
        )
    return fast


class FastTokenizer:
    """Encode action chunks (B, T, D) in [-1, 1] to variable-length token lists and decode them back."""

    def __init__(
        self,
        bpe: Tokenizer,
        scale: float,
        min_token: int,
        vocab_size: int,
        time_horizon: int | None = None,
        action_dim: int | None = None,
    ) -> None:
        self.bpe = bpe
        self.scale = float(scale)
        self.min_token = int(min_token)
        self.vocab_size = int(vocab_size)
        self.time_horizon = time_horizon
        self.action_dim = action_dim

    @classmethod
    def fit(
        cls,
        chunks: np.ndarray | Sequence[np.ndarray],
        scale: float = 10.0,
        vocab_size: int = 1024,
        max_token_length: int = 32,
        show_progress: bool = False,
    ) -> FastTokenizer:
        """Fit the BPE on action chunks (N, T, D): the alphabet is every integer between the min and max coefficient.

        max_token_length caps merges (long zero runs would otherwise eat the vocabulary); show_progress shows the
        tokenizers progress bar for large fits.
        """
        arr = np.asarray(chunks, dtype=np.float64)
        if arr.ndim != 3:
            raise ValueError(f"FAST fit needs chunks of shape (N, T, D), got {arr.shape}")
        if not np.isfinite(arr).all():
            raise ValueError("FAST fit: chunks contain NaN or inf")
        coeffs = dct_coefficients(arr, scale)
        min_token, max_token = int(coeffs.min()), int(coeffs.max())
        n_symbols = max_token - min_token + 1
        if n_symbols > vocab_size:
            raise ValueError(
                f"FAST fit: {n_symbols} distinct coefficient values need vocab_size >= {n_symbols}, got {vocab_size}"
            )
        bpe = Tokenizer(models.BPE())
        bpe.decoder = decoders.Fuse()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=2,
            special_tokens=[],
            show_progress=show_progress,
            initial_alphabet=[chr(i) for i in range(n_symbols)],
            max_token_length=max_token_length,
        )
        bpe.train_from_iterator((_to_text(c, min_token) for c in coeffs), trainer=trainer)
        return cls(bpe, scale, min_token, bpe.get_vocab_size(), arr.shape[1], arr.shape[2])

    def encode(self, chunks: np.ndarray) -> list[list[int]]:
        """(B, T, D) or (T, D) chunks -> one token id list per chunk."""
        arr = np.asarray(chunks, dtype=np.float64)
        if arr.ndim == 2:
            arr = arr[None]
        coeffs = dct_coefficients(arr, self.scale)
        return [self.bpe.encode(_to_text(c, self.min_token)).ids for c in coeffs]

    def decode(
        self,
        token_ids: Sequence[Sequence[int]],
        time_horizon: int | None = None,
        action_dim: int | None = None,
    ) -> np.ndarray:
        """Token lists -> (B, T, D) chunks. Too few / too many coefficients are zero-padded / truncated."""
        horizon = time_horizon or self.time_horizon
        dim = action_dim or self.action_dim
        if horizon is None or dim is None:
            raise ValueError("FAST decode needs time_horizon and action_dim (not stored in this tokenizer)")
        out = np.zeros((len(token_ids), horizon, dim), dtype=np.float64)
        for i, ids in enumerate(token_ids):
            text = self.bpe.decode(list(ids), skip_special_tokens=False)
            values = np.array([ord(ch) for ch in text], dtype=np.int64) + self.min_token
            coeffs = np.zeros(horizon * dim, dtype=np.float64)
            n = min(len(values), horizon * dim)
            if len(values) != horizon * dim:
                logger.debug("FAST decode: %d coefficients for a %dx%d chunk", len(values), horizon, dim)
            coeffs[:n] = values[:n]
            out[i] = idct(coeffs.reshape(horizon, dim) / self.scale, axis=0, norm="ortho")
        return out

    def save(self, directory: str | Path) -> None:
        """Write tokenizer.json and processor_config.json."""
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        self.bpe.save(str(folder / TOKENIZER_NAME))
        config = {
            "scale": self.scale,
            "vocab_size": self.vocab_size,
            "min_token": self.min_token,
            "time_horizon": self.time_horizon,
            "action_dim": self.action_dim,
        }
        (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2))

    @classmethod
    def load(cls, path_or_hub_id: str | Path) -> FastTokenizer:
        """Load from a folder or a hub repo id (e.g. physical-intelligence/fast) with the two files above."""
        folder = Path(path_or_hub_id)
        if not folder.is_dir():
            from huggingface_hub import snapshot_download

            folder = Path(
                snapshot_download(str(path_or_hub_id), allow_patterns=[TOKENIZER_NAME, CONFIG_NAME])
            )
        for name in (TOKENIZER_NAME, CONFIG_NAME):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"FAST tokenizer file missing: {folder / name}")
        config = json.loads((folder / CONFIG_NAME).read_text())
        for key in ("scale", "min_token"):
            if key not in config:
                raise ValueError(f"{folder / CONFIG_NAME}: missing field {key!r}")
        bpe = Tokenizer.from_file(str(folder / TOKENIZER_NAME))
        return cls(
            bpe,
            config["scale"],
            config["min_token"],
            config.get("vocab_size") or bpe.get_vocab_size(),
            config.get("time_horizon"),
            config.get("action_dim"),
        )
