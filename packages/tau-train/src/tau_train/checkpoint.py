"""The training checkpoint: what it holds, how it is written atomically, and how its weights are read back.

This module alone names the files. Layout of `<output_dir>/checkpoints/step_<N>/`:
  state/              torch.distributed.checkpoint (DCP) directory with "model", "optimizer" (AdamW moments keyed
                      by parameter name), "scheduler" and, with EMA, "ema". Every process writes its own shards
                      (`__<rank>_0.distcp`, nothing is gathered on one rank) and rank 0 the `.metadata`; DCP
                      loads it onto any number of processes, re-sharding as needed.
  rank_<r>.pt         process r's RNG states, epoch, data position and data loader state (plain tensors/values,
                      `torch.load(weights_only=True)`); used when resuming on the same number of processes.
  config.yaml         the resolved run configuration.
  trainer_state.json  step, world size, the global data position, seed, package versions; written last.
Atomicity: everything is written under `.tmp-step_<N>/`, fsynced, and renamed to `step_<N>` only after every
process has finished (with async saving, at a later step boundary), so a kill at any moment never leaves a
directory that `list_checkpoints` / `latest_checkpoint` take as complete. Final weights: `load_final_weights(run_dir)`
or `load_checkpoint_weights(checkpoint)` give one full state dict, readable in any process without a process group;
`export_weights` writes it as a single model.safetensors. Multi-process runs need a filesystem all processes share.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import shutil
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import metadata as package_metadata
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import CheckpointException, FileSystemReader
from torch.distributed.checkpoint.metadata import TensorStorageMetadata
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

from .weights import save_weights

log = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"
FORMAT_VERSION = 2
_STATE_DIR = "state"
_CONFIG_FILE = "config.yaml"
_RUNS_SUBDIR = "checkpoints"
_NAME = re.compile(r"^step_(\d+)$")
_TEMP_PREFIX = ".tmp-"
_TRASH_PREFIX = ".trash-"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, incomplete or does not match the model / run it is loaded into."""


class DamagedCheckpointError(CheckpointError):
    """A checkpoint marked complete whose files cannot be read (truncated, garbage, not JSON)."""


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


def begin_checkpoint(root: str | Path, step: int, *, is_main: bool, barrier: Callable[[], None]) -> Path:
    """Create the empty temporary directory of checkpoint `step` (main process) and return its path."""
    temp = Path(root) / f"{_TEMP_PREFIX}{checkpoint_name(step)}"
    if is_main:
        temp.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(temp, ignore_errors=True)
        temp.mkdir()
    barrier()
    return temp


def commit_checkpoint(
    temp: Path, trainer_state: dict[str, Any], *, is_main: bool, barrier: Callable[[], None]
) -> Path:
    """Once every process has written its files into `temp`: write trainer_state.json, fsync, and rename the
    directory to its final name (replacing an older checkpoint of the same step). Returns the final path."""
    final = temp.parent / temp.name.removeprefix(_TEMP_PREFIX)
    barrier()
    if is_main:
        (temp / STATE_FILE).write_text(json.dumps({"format_version": FORMAT_VERSION, **trainer_state}, indent=2))
        _fsync_tree(temp)
        if final.exists():
            trash = temp.parent / f"{_TRASH_PREFIX}{final.name}"
            os.replace(final, trash)
            os.replace(temp, final)
            shutil.rmtree(trash)
        else:
            os.replace(temp, final)
        _fsync_dir(temp.parent)
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


def read_state(checkpoint: str | Path) -> dict[str, Any]:
    """The trainer_state.json of a complete checkpoint written by this version of tau-train."""
    path = Path(checkpoint) / STATE_FILE
    if not path.is_file():
        raise CheckpointError(f"{checkpoint} is not a complete checkpoint (no {STATE_FILE})")
    try:
        state = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DamagedCheckpointError(f"{path} is not valid JSON ({error}): the checkpoint is damaged") from error
    if not isinstance(state, dict):
        raise DamagedCheckpointError(f"{path} must hold a JSON object, got {type(state).__name__}: the checkpoint is damaged")
    if state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format_version {state.get('format_version')!r}, this tau-train reads "
            f"{FORMAT_VERSION} (sharded DCP state); format 1 (model.safetensors + optimizer.pt) is no longer read"
        )
    return state


def run_versions() -> dict[str, str]:
    """Python and package versions of this process (torch, accelerate, numpy, ... and every tau-* package)."""
    versions = {"python": sys.version.split()[0]}
    wanted = {"torch", "accelerate", "numpy", "torchdata", "safetensors", "peft"}
    for dist_info in package_metadata.distributions():
        name = (dist_info.metadata["Name"] or "").lower()
        if name in wanted or name.startswith("tau-"):
            versions[name] = dist_info.version
    return dict(sorted(versions.items()))


def write_config(directory: Path, text: str) -> None:
    """The resolved run configuration (YAML) beside the state."""
    (directory / _CONFIG_FILE).write_text(text)


def read_config(checkpoint: str | Path) -> str | None:
    """The config.yaml text of a checkpoint, or None when it has none."""
    path = Path(checkpoint) / _CONFIG_FILE
    return path.read_text() if path.is_file() else None


def save_rank_state(directory: Path, rank: int, state: dict[str, Any]) -> None:
    """Process `rank`'s own state (RNG, epoch, data position, loader state)."""
    torch.save(state, directory / f"rank_{rank:05d}.pt")


def load_rank_state(checkpoint: str | Path, rank: int) -> dict[str, Any]:
    """What `save_rank_state` wrote for `rank`."""
    path = Path(checkpoint) / f"rank_{rank:05d}.pt"
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist (the checkpoint has no state of process {rank})")
    try:
        return torch.load(path, weights_only=True)
    except Exception as error:  # torch raises RuntimeError, EOFError, UnpicklingError ... on a damaged file
        raise DamagedCheckpointError(f"{path} cannot be read ({_first_line(error)}): the checkpoint is damaged") from error


class TrainingParts:
    """The sharded training state of a run: model, optimizer, LR scheduler and optional EMA shadow weights."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, ema: Any = None):
        self.model, self.optimizer, self.scheduler, self.ema = model, optimizer, scheduler, ema

    def state_dict(self) -> dict[str, Any]:
        """DCP's view: model and optimizer through torch.distributed.checkpoint.state_dict (sharded under FSDP)."""
        model_state, optimizer_state = get_state_dict(self.model, self.optimizer)
        state = {"model": model_state, "optimizer": optimizer_state, "scheduler": self.scheduler.state_dict()}
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return state


def save_training_state(
    directory: Path,
    parts: TrainingParts,
    *,
    asynchronous: bool = False,
    process_group: dist.ProcessGroup | None = None,
) -> Any:
    """Every process writes its shards of `parts` to `directory/state`; returns None once written. With
    `asynchronous`, the state is copied to CPU memory and written by a background thread (collectives on
    `process_group`, a gloo group kept off the training group); the returned future completes when this
    process's part is done."""
    target = directory / _STATE_DIR
    state = parts.state_dict()
    with _quiet_single_process():
        if asynchronous:
            return dcp.async_save(state, checkpoint_id=target, process_group=process_group, no_dist=_no_dist())
        try:
            dcp.save(state, checkpoint_id=target, no_dist=_no_dist())
        except CheckpointException as error:
            cause = _first_failure(error)
            if isinstance(cause, OSError):  # no space, read-only, permission: the OS's own error, with its path
                raise OSError(cause.errno, cause.strerror, cause.filename or str(target)) from error
            raise CheckpointError(f"{target}: writing failed ({type(cause).__name__}: {_first_line(cause)})") \
                from error
    return None


def load_training_state(checkpoint: str | Path, parts: TrainingParts) -> None:
    """Load model, optimizer, scheduler (and EMA) from `checkpoint` into `parts`, re-sharding to this run's
    processes. Parameters that had no optimizer state when saved (they never received a gradient) get none."""
    directory = Path(checkpoint) / _STATE_DIR
    saved = _saved_keys(directory)
    state = parts.state_dict()  # initialises the AdamW state (a zero-lr step) so DCP knows the shapes to load
    model_name = type(parts.model).__name__
    missing = sorted(k for k in state["model"] if f"model.{k}" not in saved)
    saved_model = {k.removeprefix("model.") for k in saved if k.startswith("model.")}
    unexpected = sorted(saved_model - set(state["model"]))
    if missing or unexpected:
        raise CheckpointError(
            f"{directory} does not fit {model_name}: missing {missing[:5]}, unexpected {unexpected[:5]}"
            + (" ..." if len(missing) > 5 or len(unexpected) > 5 else "")
        )
    if parts.ema is not None and not any(k.startswith("ema.") for k in saved):
        raise CheckpointError(f"ema.enabled=true but {directory} has no EMA state (the run was trained without EMA)")
    stateless = {fqn for fqn in state["optimizer"]["state"] if f"optimizer.state.{fqn}.step" not in saved}
    for fqn in stateless:
        del state["optimizer"]["state"][fqn]
    try:
        with _quiet_single_process():
            dcp.load(state, checkpoint_id=directory, no_dist=_no_dist())
        set_state_dict(
            parts.model,
            parts.optimizer,
            model_state_dict=state["model"],
            optim_state_dict=state["optimizer"],
            options=StateDictOptions(strict=False),
        )
    except CheckpointException as error:
        raise _dcp_error(directory, error, f"does not fit {model_name} and its optimizer") from error
    except (RuntimeError, KeyError, ValueError) as error:
        raise CheckpointError(f"{directory} does not fit {model_name} and its optimizer: {error}") from error
    names = {id(p): n for n, p in parts.model.named_parameters()}
    for param in list(parts.optimizer.state):
        if names.get(id(param)) in stateless:
            del parts.optimizer.state[param]
    parts.scheduler.load_state_dict(state["scheduler"])


def load_checkpoint_weights(checkpoint: str | Path, *, ema: bool = False) -> dict[str, torch.Tensor]:
    """The full model weights of a checkpoint, by parameter name, on CPU (no process group needed); with `ema`,
    the EMA shadow weights replace the trainable ones (cast to the model's dtypes)."""
    directory = Path(checkpoint) / _STATE_DIR
    metadata = _read_metadata(directory)
    parts: dict[str, dict[str, torch.Tensor]] = {"model": {}, "ema": {}}
    for key, item in metadata.state_dict_metadata.items():
        path = metadata.planner_data.get(key, ())
        if len(path) == 2 and path[0] in parts and isinstance(item, TensorStorageMetadata):
            parts[path[0]][path[1]] = torch.empty(item.size, dtype=item.properties.dtype)
    if ema and not parts["ema"]:
        raise CheckpointError(f"{directory} holds no EMA weights (the run was trained without EMA)")
    wanted = {"model": parts["model"], **({"ema": parts["ema"]} if ema else {})}
    try:
        with _quiet_single_process():
            dcp.load(wanted, checkpoint_id=directory, no_dist=True)
    except CheckpointException as error:
        raise _dcp_error(directory, error, "cannot be loaded") from error
    weights = parts["model"]
    if ema:
        weights.update({n: t.to(weights[n].dtype) for n, t in parts["ema"].items()})
    return weights


def checkpoints_dir(run_dir: str | Path) -> Path:
    """Where a run with output_dir `run_dir` keeps its checkpoints."""
    return Path(run_dir) / _RUNS_SUBDIR


def load_final_weights(run_dir: str | Path, *, ema: bool = False) -> dict[str, torch.Tensor]:
    """The full model weights of the latest complete checkpoint of the run in `run_dir` (its output_dir)."""
    checkpoint = latest_checkpoint(checkpoints_dir(run_dir))
    if checkpoint is None:
        raise CheckpointError(f"{checkpoints_dir(run_dir)} holds no complete checkpoint")
    return load_checkpoint_weights(checkpoint, ema=ema)


def export_weights(checkpoint: str | Path, path: str | Path, *, ema: bool = False) -> Path:
    """Write a (sharded) checkpoint's full model weights as one safetensors file at `path`."""
    path = Path(path)
    save_weights(load_checkpoint_weights(checkpoint, ema=ema), path)
    return path


def _no_dist() -> bool:
    return not dist.is_initialized()


@contextmanager
def _quiet_single_process() -> Iterator[None]:
    """DCP warns at every single-process save/load that it assumes one process; here that is the intent."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")
        yield


def _read_metadata(directory: Path) -> Any:
    if not (directory / ".metadata").is_file():
        raise CheckpointError(f"{directory} is not a torch.distributed.checkpoint directory (no .metadata)")
    try:
        return FileSystemReader(directory).read_metadata()
    except Exception as error:  # a truncated or garbage pickle raises EOFError, UnpicklingError, ...
        raise DamagedCheckpointError(
            f"{directory / '.metadata'} cannot be read ({_first_line(error)}): the checkpoint is damaged"
        ) from error


def _dcp_error(directory: Path, error: CheckpointException, mismatch: str) -> CheckpointError:
    """DCP's per-process failures as one error: shards that cannot be read (damaged) or a state that does not fit.
    A failure inside the storage reader's `read_data` is damage whatever its type (garbage bytes unpickle into
    UnpicklingError, UnicodeDecodeError, IndexError or KeyError); a state that does not fit fails while planning."""
    first, stack = _first_failure(error)
    problem = f"{type(first).__name__}: {_first_line(first)}"
    reading = any(frame.name == "read_data" for frame in stack)
    if reading or isinstance(first, (OSError, EOFError, pickle.UnpicklingError)) or "truncated" in problem.lower():
        return DamagedCheckpointError(f"{directory}: shards cannot be read ({problem}): the checkpoint is damaged")
    return CheckpointError(f"{directory} {mismatch}: {problem}")


def _first_failure(error: CheckpointException) -> tuple[BaseException, traceback.StackSummary]:
    """The exception of the first process that failed inside a DCP save or load, and where it was raised."""
    causes = list(error.failures.values())
    first = causes[0] if causes else error
    if isinstance(first, tuple):  # (exception, traceback.StackSummary), as DCP wraps them
        return first[0], first[1]
    return first, traceback.extract_tb(first.__traceback__)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _saved_keys(directory: Path) -> set[str]:
    return set(_read_metadata(directory).state_dict_metadata)


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
