"""Atomic checkpoint directories: written under a temporary name, renamed into place when complete.

Layout of `<root>/step_<step>/` (a directory with this name exists only once every file is written):
  model.safetensors   full (unsharded) model weights
  ema.safetensors     EMA weights (when EMA is on)
  optimizer.pt        full optimizer state keyed by parameter name
  scheduler.pt        LR scheduler state
  rank_<r>.pt         per-process RNG states and data loader states
  config.yaml         the resolved run configuration
  trainer_state.json  step, epoch, world size (written last)
Multi-process runs need a filesystem shared by all processes, as accelerate's own checkpoints do.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

log = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"
_NAME = re.compile(r"^step_(\d+)$")
_TEMP_PREFIX = ".tmp-"
_TRASH_PREFIX = ".trash-"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, incomplete or does not match the model / run it is loaded into."""


def checkpoint_name(step: int) -> str:
    """Directory name of the checkpoint taken after optimizer step `step`."""
    return f"step_{step:09d}"


def list_checkpoints(root: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under `root` as (step, path), oldest first; temporaries are ignored."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _NAME.match(path.name)
        if match and (path / STATE_FILE).is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(root: str | Path) -> Path | None:
    """The most recent complete checkpoint under `root`, or None."""
    checkpoints = list_checkpoints(root)
    return checkpoints[-1][1] if checkpoints else None


def remove_temporaries(root: str | Path) -> None:
    """Delete leftovers of interrupted saves or deletions (never complete checkpoints)."""
    root = Path(root)
    if not root.is_dir():
        return
    for path in root.iterdir():
        if path.name.startswith((_TEMP_PREFIX, _TRASH_PREFIX)):
            log.warning("removing leftover of an interrupted checkpoint operation: %s", path)
            shutil.rmtree(path, ignore_errors=True)


def write_checkpoint(
    root: str | Path,
    step: int,
    write: Callable[[Path], None],
    *,
    is_main: bool,
    barrier: Callable[[], None],
) -> Path:
    """Run `write(tmp_dir)` on every process, then rename the directory to its final name on the main process.

    `write` must put STATE_FILE (on the main process); a crash at any point leaves only a temporary
    directory, which `list_checkpoints` ignores and `remove_temporaries` cleans up.
    """
    root = Path(root)
    final = root / checkpoint_name(step)
    temp = root / f"{_TEMP_PREFIX}{final.name}"
    if is_main:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(temp, ignore_errors=True)
        temp.mkdir()
    barrier()
    write(temp)
    barrier()
    if is_main:
        if not (temp / STATE_FILE).is_file():
            raise CheckpointError(f"{temp}: the writer did not produce {STATE_FILE}")
        _fsync_tree(temp)
        if final.exists():
            trash = root / f"{_TRASH_PREFIX}{final.name}"
            os.replace(final, trash)
            os.replace(temp, final)
            shutil.rmtree(trash)
        else:
            os.replace(temp, final)
        _fsync_dir(root)
    barrier()
    return final


def prune_checkpoints(root: str | Path, keep_last: int, keep_every: int = 0) -> list[Path]:
    """Delete all but the `keep_last` newest checkpoints (0 keeps all), sparing steps that are multiples of
    `keep_every`. Each is renamed away first, so a crash mid-deletion never leaves a half checkpoint."""
    if keep_last <= 0:
        return []
    root = Path(root)
    removed = []
    for step, path in list_checkpoints(root)[:-keep_last]:
        if keep_every and step % keep_every == 0:
            continue
        trash = root / f"{_TRASH_PREFIX}{path.name}"
        os.replace(path, trash)
        shutil.rmtree(trash)
        removed.append(path)
    return removed


def read_state(checkpoint: str | Path) -> dict:
    """The trainer_state.json of a complete checkpoint."""
    path = Path(checkpoint) / STATE_FILE
    if not path.is_file():
        raise CheckpointError(f"{checkpoint} is not a complete checkpoint (no {STATE_FILE})")
    return json.loads(path.read_text())


def save_weights(state: dict[str, torch.Tensor], path: str | Path) -> None:
    """Save a state dict as safetensors; tied tensors (same storage, shape and stride) are stored once."""
    unique: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    for name, tensor in state.items():
        tensor = tensor.detach()
        key = (
            tensor.device,
            tensor.untyped_storage().data_ptr(),
            tensor.storage_offset(),
            tensor.shape,
            tensor.stride(),
        )
        if key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        unique[name] = tensor
    storages = [t.untyped_storage().data_ptr() for t in unique.values()]
    shared = {ptr for ptr in storages if storages.count(ptr) > 1}
    unique = {
        n: (t.clone() if t.untyped_storage().data_ptr() in shared else t.contiguous())
        for n, t in unique.items()
    }
    save_file(unique, str(path), metadata={"aliases": json.dumps(aliases)})


def load_weights(path: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Load a state dict written by `save_weights` (tied names point at the same tensor again)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist")
    with safe_open(str(path), framework="pt", device=str(device)) as handle:
        state = {name: handle.get_tensor(name) for name in handle.keys()}
        aliases = json.loads((handle.metadata() or {}).get("aliases", "{}"))
    for name, target in aliases.items():
        state[name] = state[target]
    return state


def _fsync_tree(directory: Path) -> None:
    for path in directory.iterdir():
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    _fsync_dir(directory)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
