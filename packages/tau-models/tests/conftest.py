"""Shared fixtures: the shared/ folder (TAU_SHARED_DIR or found next to the repo root), tokenizers, tiny batches."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Tiny models: one thread is as fast, and far faster when CI runs other test batches on the same cores.
torch.set_num_threads(1)


def shared_dir() -> Path:
    """TAU_SHARED_DIR if set, else the 'shared' folder beside the directory holding pants.toml."""
    env = os.environ.get("TAU_SHARED_DIR")
    if env:
        path = Path(env)
        if not path.is_dir():
            raise RuntimeError(f"TAU_SHARED_DIR={env} is not a directory")
        return path
    for parent in Path(__file__).resolve().parents:
        if (parent / "pants.toml").is_file() and (parent.parent / "shared").is_dir():
            return parent.parent / "shared"
    raise RuntimeError(
        "shared fixtures not found: set TAU_SHARED_DIR to the shared/ folder (holding parity/)"
    )


def fixture_dir(*parts: str) -> Path:
    """A folder of shared/ (e.g. "parity", "pi05_tiny_a"), with a clear error when it is missing."""
    path = shared_dir().joinpath(*parts)
    if not path.is_dir():
        raise RuntimeError(f"shared fixture missing: {path}")
    return path


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    return fixture_dir("parity", "pi05_tiny_a")


@pytest.fixture(scope="session")
def pi0_parity_dir() -> Path:
    return fixture_dir("parity", "pi0_tiny_a")


@pytest.fixture(scope="session")
def opentau_dir() -> Path:
    return fixture_dir("interop", "opentau_pi05_fast_a")


@pytest.fixture(scope="session")
def tokenizer_dir(parity_dir: Path) -> str:
    """A PaliGemma-layout tokenizer (ids < 1024 for plain text), built offline and stored with the parity fixture."""
    return str(parity_dir / "tokenizer")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
    np.random.seed(0)


def make_batch(
    batch_size: int = 2,
    n_cams: int = 2,
    image_size: int = 56,
    chunk: int = 10,
    max_dim: int = 32,
    state_dim: int = 8,
    action_dim: int = 7,
) -> dict:
    """A standard batch (GUIDE.md layout) with random content."""
    g = torch.Generator().manual_seed(123)
    state = torch.zeros(batch_size, max_dim)
    state[:, :state_dim] = torch.rand(batch_size, state_dim, generator=g) * 2 - 1
    actions = torch.zeros(batch_size, chunk, max_dim)
    actions[:, :, :action_dim] = torch.rand(batch_size, chunk, action_dim, generator=g) * 2 - 1
    tasks = ["pick up the red block", "stack the cubes in the bowl", "open the drawer", "push the button"]
    return {
        "images": torch.rand(batch_size, n_cams, 3, image_size, image_size, generator=g),
        "image_mask": torch.ones(batch_size, n_cams, dtype=torch.bool),
        "state": state,
        "state_dim": torch.full((batch_size,), state_dim, dtype=torch.long),
        "actions": actions,
        "action_dim": torch.full((batch_size,), action_dim, dtype=torch.long),
        "action_is_pad": torch.zeros(batch_size, chunk, dtype=torch.bool),
        "prompt": [tasks[i % len(tasks)] for i in range(batch_size)],
        "dataset_index": torch.zeros(batch_size, dtype=torch.long),
    }


def tokenize(batch: dict, model_or_config, **kwargs) -> dict:
    """The batch with the SampleTokenizer's ids, as a loader collates tokenized samples (kwargs go to the tokenizer)."""
    from tau_models import SampleTokenizer

    config = getattr(model_or_config, "config", model_or_config)
    return SampleTokenizer(config).tokenize_batch(batch, **kwargs)


def layer_calls(model, batch: dict) -> tuple[int, int]:
    """How often the first VLM layer and the first expert layer start running in one forward + backward (a pre-hook:
    the recomputation stops as soon as it has the saved tensors backward needs, before the layer returns)."""
    counts = [0, 0]
    layers = (model.backbone.language_model.layers[0], model.expert.layers[0])
    hooks = [
        layer.register_forward_pre_hook(lambda *_, i=i: counts.__setitem__(i, counts[i] + 1))
        for i, layer in enumerate(layers)
    ]
    model(batch)["loss"].backward()
    for hook in hooks:
        hook.remove()
    return counts[0], counts[1]


def smooth_chunks(n: int, chunk: int = 10, max_dim: int = 32, real_dim: int = 7, seed: int = 0) -> np.ndarray:
    """Smooth random action chunks in [-1, 1] (sums of low-frequency sinusoids), zero-padded to max_dim."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 1.0, chunk)[None, :, None]
    freq = rng.uniform(0.2, 1.5, size=(n, 1, real_dim))
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1, real_dim))
    amp = rng.uniform(0.2, 0.9, size=(n, 1, real_dim))
    out = np.zeros((n, chunk, max_dim))
    out[:, :, :real_dim] = amp * np.sin(2 * np.pi * freq * t + phase)
    return out


@pytest.fixture(scope="session")
def fast_dir(tmp_path_factory) -> Path:
    """A FAST tokenizer fitted on smooth synthetic chunks of the tiny config's shape, saved to disk."""
    from tau_models import FastTokenizer

    folder = tmp_path_factory.mktemp("fast")
    FastTokenizer.fit(smooth_chunks(400), scale=10.0, vocab_size=256).save(folder)
    return folder
