"""A run's checkpoints as the Trainer uses them: which one to resume, saving (optionally in the background) and
committing atomically, loading exactly or re-sharded onto another number of processes, and retention."""

from __future__ import annotations

import errno
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch.distributed as dist
from accelerate import Accelerator
from accelerate.utils import set_seed
from omegaconf import OmegaConf

from .checkpoint import (
    CheckpointError,
    DamagedCheckpointError,
    TrainingParts,
    begin_checkpoint,
    checkpoint_name,
    checkpoints_dir,
    commit_checkpoint,
    list_checkpoints,
    load_rank_state,
    load_training_state,
    prune_checkpoints,
    read_config,
    read_state,
    remove_temporaries,
    run_versions,
    save_rank_state,
    save_training_state,
    write_config,
)
from .config import ConfigError, TrainConfig, config_differences, config_to_dict, config_to_yaml
from .data_stream import DataStream
from .rng import rng_state, set_rng_state
from .run_lock import RunLock, RunLockedError

log = logging.getLogger(__name__)


@dataclass
class _PendingSave:
    """A checkpoint written (or, with `future`, being written) into `temp`, not yet renamed into place."""

    future: Any
    temp: Path
    trainer_state: dict[str, Any]


class RunCheckpoints:
    """Checkpoints of one run under `<output_dir>/checkpoints` (file layout and atomicity: `tau_train.checkpoint`).

    `any_process(flag)` is true on every process when `flag` is true on any (the trainer's agreement primitive).
    """

    def __init__(
        self,
        config: TrainConfig,
        run_config: Any,
        parts: TrainingParts,
        data: DataStream,
        accelerator: Accelerator,
        *,
        any_process: Callable[[bool], bool],
    ):
        self.config, self.run_config, self.parts, self.data = config, run_config, parts, data
        self.accelerator, self.any_process = accelerator, any_process
        self.root = checkpoints_dir(config.output_dir)
        self.rank, self.world_size = accelerator.process_index, accelerator.num_processes
        self.is_main = accelerator.is_main_process
        self._group = None
        if config.checkpoint.async_save and dist.is_initialized():
            self._group = dist.new_group(backend="gloo")  # DCP's background collectives, off the training group
        self._pending: _PendingSave | None = None
        self.lock = RunLock(config.output_dir)

    def lock_run(self) -> None:
        """Take the output_dir's lock on the main process (every process raises RunLockedError when it is held)."""
        problem = None
        if self.is_main:
            try:
                self.lock.acquire()
            except RunLockedError as error:
                problem = error
        if self.any_process(problem is not None):
            raise problem or RunLockedError(f"{self.config.output_dir} is locked by another training")

    def resume(self) -> tuple[Path | None, int]:
        """Lock the run directory, then load the checkpoint `checkpoint.resume` names (default: the latest complete
        one; a damaged one is reported and, with `checkpoint.on_damaged=fall_back`, the previous one used); return
        it and its step (None, 0 when starting fresh)."""
        resume = self.config.checkpoint.resume
        self.lock_run()
        if self.is_main:
            remove_temporaries(self.root)
        self.accelerator.wait_for_everyone()
        if resume == "never":
            if list_checkpoints(self.root):
                raise ConfigError(
                    f"{self.root} already holds checkpoints and checkpoint.resume=never would mix two runs; "
                    "use a new output_dir or checkpoint.resume=auto"
                )
            return None, 0
        if resume != "auto":
            return Path(resume), self.load(Path(resume))
        damaged = []
        for _, path in reversed(list_checkpoints(self.root)):
            try:
                return path, self.load(path)
            except DamagedCheckpointError as error:
                if self.config.checkpoint.on_damaged == "stop":
                    raise DamagedCheckpointError(
                        f"{error}; checkpoint.on_damaged=stop: remove {path} or set checkpoint.on_damaged=fall_back "
                        "to resume from the previous complete checkpoint"
                    ) from error
                log.error("%s; resuming from the previous complete checkpoint instead", error)
                damaged.append(path.name)
        if damaged:
            raise CheckpointError(
                f"every checkpoint in {self.root} is damaged ({', '.join(damaged)}); remove them to start afresh "
                "or set checkpoint.resume=<path of a good checkpoint>"
            )
        return None, 0

    def load(self, path: Path) -> int:
        """Restore model, optimizer, scheduler, EMA (re-sharded to this run's processes), and the RNG and loader
        states (same number of processes) or the global data position (another number); return the step."""
        state = read_state(path)
        load_training_state(path, self.parts)
        step = state["step"]
        saved_config = read_config(path)
        if saved_config is not None:
            old = OmegaConf.to_container(OmegaConf.create(saved_config), resolve=True)
            changes = config_differences(old, config_to_dict(self.run_config))
            if changes:
                log.warning(
                    "config differs from the checkpoint's (the saved optimizer and LR schedule state still apply):"
                    "\n  %s",
                    "\n  ".join(changes),
                )
        if state["world_size"] == self.world_size:
            rank_state = load_rank_state(path, self.rank)
            set_rng_state(rank_state["rng"])
            self.data.load_rank_state(rank_state["data"])
        else:
            set_seed(self.config.seed + self.rank + self.world_size * step)
            self.data.reshard(state["data"])
            log.warning(
                "%s was written by %d processes, this run has %d: model, optimizer, schedule, EMA and step are "
                "re-sharded; the data stream continues at global sample %d of epoch %d; per-process RNGs are re-seeded",
                path,
                state["world_size"],
                self.world_size,
                state["data"]["samples"],
                state["data"]["epoch"],
            )
        log.info("resumed from %s at step %d", path, step)
        return step

    def save(self, step: int) -> Path:
        """Write the checkpoint of `step` (every process its own shards); it is renamed into place once complete:
        now, or with `checkpoint.async_save` at a later `finish`. Returns its final path."""
        self.finish()
        barrier = self.accelerator.wait_for_everyone
        temp = begin_checkpoint(self.root, step, is_main=self.is_main, barrier=barrier)
        try:
            save_rank_state(temp, self.rank, {"rng": rng_state(), "data": self.data.rank_state()})
            if self.is_main:
                write_config(temp, config_to_yaml(self.run_config))
            future = save_training_state(
                temp, self.parts, asynchronous=self.config.checkpoint.async_save, process_group=self._group
            )
        except (OSError, RuntimeError) as error:  # no space, read-only, ...: free what was written, name the path
            shutil.rmtree(temp, ignore_errors=True)
            if isinstance(error, OSError):
                raise OSError(error.errno, error.strerror, error.filename or str(temp)) from error
            if _nearly_full(self.root):  # torch's zip writer reports a full disk only as "unexpected pos ..."
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(temp)) from error
            raise
        trainer_state = {
            "step": step,
            "world_size": self.world_size,
            "data": self.data.global_position(),
            "seed": self.config.seed,
            "versions": run_versions(),
        }
        self._pending = _PendingSave(future, temp, trainer_state)
        if future is None:
            self.finish()
        return self.root / checkpoint_name(step)

    def finish(self, *, wait: bool = True) -> None:
        """Commit the pending checkpoint once every process has written it (waiting for that; with `wait=False`
        only if all are done already), then apply the retention policy."""
        pending = self._pending
        if pending is None:
            return
        if pending.future is not None:
            if not wait and self.any_process(not pending.future.done()):
                return
            pending.future.result()
        self._pending = None
        commit_checkpoint(
            pending.temp, pending.trainer_state, is_main=self.is_main, barrier=self.accelerator.wait_for_everyone
        )
        if self.is_main:
            ckpt = self.config.checkpoint
            for removed in prune_checkpoints(self.root, ckpt.keep_last, ckpt.keep_every):
                log.info("retention: removed %s", removed)


def _nearly_full(path: Path) -> bool:
    """Whether the file system holding `path` has less than 1 MiB left for this user."""
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize < 1 << 20
