"""A tiny model, dataset and loader factory for tau-train tests; also runnable as a training script.

python tau_train_toy.py OUTPUT_DIR [dotted overrides...] [--kill-at-forward N] [--kill-in-save-step N]
    [--record-indices FILE]
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time

import torch
from torch.utils.data import Dataset, DistributedSampler
from torchdata.stateful_dataloader import StatefulDataLoader
from torchdata.stateful_dataloader.sampler import RandomSampler

from tau_train import LoaderSpec, TrainConfig, Trainer, TrainingInterrupted, load_config


class ToyDataset(Dataset):
    """Noisy samples of one fixed linear map; `seed` picks the samples (another seed: a held-out split)."""

    def __init__(self, size: int = 24, dim: int = 6, seed: int = 0):
        weight = torch.randn(dim, 2, generator=torch.Generator().manual_seed(1000))
        generator = torch.Generator().manual_seed(seed)
        self.x = torch.randn(size, dim, generator=generator)
        self.y = self.x @ weight + 0.1 * torch.randn(size, 2, generator=generator)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> dict:
        return {"x": self.x[index], "y": self.y[index], "index": index}


class ToyModel(torch.nn.Module):
    """An MLP returning {"loss", "mae"}; optional dropout uses the torch RNG, `kill_at_forward` SIGKILLs
    itself at that forward call, `forward_delay` slows each call down (seconds)."""

    def __init__(
        self,
        dim: int = 6,
        hidden: int = 16,
        dropout: float = 0.0,
        kill_at_forward: int = 0,
        forward_delay: float = 0.0,
        nan_at_forward: int = 0,
        record_indices: str | None = None,
    ):
        super().__init__()
        self.inp = torch.nn.Linear(dim, hidden)
        self.norm = torch.nn.LayerNorm(hidden)
        self.drop = torch.nn.Dropout(dropout)
        self.out = torch.nn.Linear(hidden, 2)
        self.kill_at_forward = kill_at_forward
        self.forward_delay = forward_delay
        self.nan_at_forward = nan_at_forward
        self.forwards = 0
        self.checkpointing = False
        self.record_indices = record_indices

    def gradient_checkpointing_enable(self) -> None:
        self.checkpointing = True

    def forward(self, batch: dict) -> dict:
        self.forwards += 1
        time.sleep(self.forward_delay)
        if self.kill_at_forward and self.forwards == self.kill_at_forward:
            os.kill(os.getpid(), signal.SIGKILL)
        if self.record_indices and self.training:
            with open(self.record_indices, "a") as handle:  # one line per training micro-batch
                handle.write(" ".join(str(int(i)) for i in batch["index"]) + "\n")
        prediction = self.out(self.drop(torch.nn.functional.gelu(self.norm(self.inp(batch["x"])))))
        loss = torch.nn.functional.mse_loss(prediction, batch["y"])
        if self.nan_at_forward and self.forwards >= self.nan_at_forward:
            loss = loss * float("nan")
        return {"loss": loss, "mae": (prediction - batch["y"]).abs().mean().detach()}


def loader_factory(dataset: Dataset, sampler: str = "random"):
    """A factory of StatefulDataLoaders: "random" shuffles with a seeded sampler generator, "shuffle" with
    `shuffle=True` (generator seeded from the torch RNG), both for one process; "distributed" shards a seeded
    permutation across processes (DistributedSampler)."""

    def build(spec: LoaderSpec) -> StatefulDataLoader:
        if sampler == "shuffle":
            return StatefulDataLoader(dataset, batch_size=spec.batch_size, shuffle=True, drop_last=True)
        if sampler == "distributed":
            shard = DistributedSampler(
                dataset,
                num_replicas=spec.world_size,
                rank=spec.rank,
                shuffle=True,
                seed=spec.seed,
                drop_last=True,
            )
            return StatefulDataLoader(dataset, batch_size=spec.batch_size, sampler=shard, drop_last=True)
        # The sampler gets its own generator: torchdata 0.11 restores a generator shared with the loader's
        # worker-seed draw to the wrong state at the next epoch.
        shuffle = RandomSampler(dataset, generator=torch.Generator().manual_seed(spec.seed + spec.rank))
        return StatefulDataLoader(dataset, batch_size=spec.batch_size, sampler=shuffle, drop_last=True)

    return build


def val_factory(dataset: Dataset):
    """An unshuffled validation loader over each process's strided shard."""

    def build(spec: LoaderSpec) -> StatefulDataLoader:
        indices = list(range(spec.rank, len(dataset), spec.world_size))
        return StatefulDataLoader(torch.utils.data.Subset(dataset, indices), batch_size=4)

    return build


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("output_dir")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--sampler", default="random")
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--kill-at-forward", type=int, default=0)
    parser.add_argument("--forward-delay", type=float, default=0.0)
    parser.add_argument("--kill-in-save-step", type=int, default=0)
    parser.add_argument("--record-indices", default=None, help="append each micro-batch's sample indices here")
    args = parser.parse_intermixed_args()
    logging.basicConfig(level=logging.INFO)
    torch.set_num_threads(1)
    config = load_config(None, [f"output_dir={args.output_dir}", *args.overrides], TrainConfig)
    torch.manual_seed(1234)
    record = f"{args.record_indices}.{os.environ.get('RANK', '0')}" if args.record_indices else None
    model = ToyModel(
        dropout=args.dropout,
        kill_at_forward=args.kill_at_forward,
        forward_delay=args.forward_delay,
        record_indices=record,
    )
    if args.kill_in_save_step:
        _kill_inside_save(args.kill_in_save_step)
    trainer = Trainer(
        config, model, loader_factory(ToyDataset(), args.sampler), val_factory(ToyDataset(size=8, seed=1))
    )
    try:
        trainer.fit()
    except TrainingInterrupted as paused:
        print(paused, file=sys.stderr)
        sys.exit(TrainingInterrupted.EXIT_CODE)
    trainer.close()


def _kill_inside_save(step: int) -> None:
    """SIGKILL this process once every file of checkpoint `step` is written, just before it would be renamed into
    place (trainer_state.json, the completion marker, not yet written)."""
    import tau_train.run_checkpoints as checkpoints_module

    original = checkpoints_module.commit_checkpoint

    def die_before_commit(temp, trainer_state, **kwargs):
        if trainer_state["step"] == step:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(temp, trainer_state, **kwargs)

    checkpoints_module.commit_checkpoint = die_before_commit


if __name__ == "__main__":
    main()
