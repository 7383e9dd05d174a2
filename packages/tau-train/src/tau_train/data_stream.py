"""The training data stream of one process: endless micro-batches, epoch after epoch, and its position.

Re-sharding rule. A checkpoint stores the global data position: the epoch E and the number G of samples all
processes together consumed in it. Samplers split one global sequence per epoch by striding (rank r of W reads
items r, r + W, r + 2W, ...: torch's DistributedSampler, tau-data's MixtureSampler), so global sample k is read
by rank k mod W. Resumed on W' processes, each process sets its sampler to epoch E and skips the first G / W'
samples of its shard (G / (W' x micro-batch) micro-batches): the run continues at global sample G of epoch E, so
the global sample sequence is the one the original run would have seen. G is always a multiple of W' x micro-batch
(= batch_size / gradient_accumulation_steps for any W'). Skipping reads the skipped batches (data loading only, no
model compute). On the same number of processes each process restores its own loader state instead (exact,
including worker RNG).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any

import torch

from .checkpoint import CheckpointError

log = logging.getLogger(__name__)


class DataStream:
    """Micro-batches of `micro_batch` samples from this process's `loader` (one of `world_size` shards)."""

    def __init__(self, loader: Iterable[dict], micro_batch: int, world_size: int):
        self.loader, self.micro_batch, self.world_size = loader, micro_batch, world_size
        self.epoch = 0
        self.position = 0  # micro-batches consumed in the current epoch
        self._skip = 0
        self._iterator: Iterator[dict] | None = None

    def __iter__(self) -> DataStream:
        return self

    def __next__(self) -> dict:
        empty_epochs = 0
        while True:
            if self._iterator is None:
                sampler = getattr(self.loader, "sampler", None)
                if hasattr(sampler, "set_epoch"):
                    sampler.set_epoch(self.epoch)
                # Creating an iterator may draw worker seeds from the global RNG; keep that out of the training
                # stream so a resumed run (which creates its first iterator at a different moment) sees the same RNG.
                with isolated_rng():
                    self._iterator = iter(self.loader)
            for batch in self._iterator:
                self.position += 1
                if self._skip:
                    self._skip -= 1
                    continue
                return batch
            empty_epochs = empty_epochs + 1 if self.position == 0 else 0
            if empty_epochs > 1:
                raise RuntimeError("the train loader yields no batches")
            if self._skip:
                raise CheckpointError(f"the train loader's epoch {self.epoch} ended {self._skip} micro-batches "
                                      "before the checkpoint's data position (was the dataset changed?)")
            self.epoch += 1
            self.position = 0
            self._iterator = None

    def global_position(self) -> dict[str, int]:
        """{"epoch", "samples"}: the epoch and the samples all processes consumed in it (the re-sharding rule)."""
        return {"epoch": self.epoch, "samples": self.position * self.micro_batch * self.world_size}

    def rank_state(self) -> dict[str, Any]:
        """This process's exact position: epoch, micro-batches consumed and the loader's own state (if any)."""
        loader_state = self.loader.state_dict() if hasattr(self.loader, "state_dict") else None
        return {"epoch": self.epoch, "position": self.position, "train_loader": loader_state}

    def load_rank_state(self, state: dict[str, Any]) -> None:
        """Continue exactly where this process stopped (same number of processes)."""
        self.epoch, self.position = state["epoch"], state["position"]
        if state["train_loader"] is not None and hasattr(self.loader, "load_state_dict"):
            self.loader.load_state_dict(state["train_loader"])
        elif self.position:
            self._skip_to(self.epoch, self.position)

    def reshard(self, position: dict[str, int]) -> None:
        """Continue at the global data position of a checkpoint written by another number of processes."""
        epoch, samples = position["epoch"], position["samples"]
        per_step = self.micro_batch * self.world_size
        if samples % per_step:
            raise CheckpointError(
                f"the checkpoint's data position ({samples} samples of epoch {epoch}) is not a multiple of "
                f"{self.world_size} processes x micro-batch {self.micro_batch}; the global batch size changed?"
            )
        sampler = getattr(self.loader, "sampler", None)
        if epoch > 0 and not hasattr(sampler, "set_epoch"):
            raise CheckpointError(
                f"the checkpoint is in epoch {epoch}, but the train loader's sampler has no set_epoch(): the data "
                "stream cannot be placed there on another number of processes (give the sampler set_epoch, or "
                "resume on the number of processes that wrote the checkpoint)"
            )
        self._skip_to(epoch, samples // per_step)

    def _skip_to(self, epoch: int, position: int) -> None:
        self.epoch, self.position, self._skip, self._iterator = epoch, 0, position, None
        log.info("data stream: epoch %d, skipping %d micro-batches of this process's shard", epoch, position)


def isolated_rng():
    """Run a block without advancing the torch RNGs the training stream uses (CPU, and the current CUDA device)."""
    return torch.random.fork_rng(devices=[torch.cuda.current_device()] if torch.cuda.is_available() else [])
