"""A very small pi0.5 (real tau-models PiModel, every layer kind present, tiny widths), deterministic samples, and
a training script for tau-train's distributed tests.

python tiny_pi.py OUTPUT_DIR [dotted TrainConfig overrides...] [--dump FILE] [--no-train]
  trains (or, with --no-train, only resumes) and writes to FILE (rank 0) the full model, optimizer and EMA
  state plus each process's share of the parameters.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

import torch
from conftest import shared_dir
from tau_models import GemmaConfig, PiModel, SampleTokenizer, VisionConfig, tiny_pi05_config
from torch.utils.data import Dataset, DistributedSampler
from torchdata.stateful_dataloader import StatefulDataLoader

from tau_train import LoaderSpec, TrainConfig, Trainer, load_config, local_parameter_count

CAMERAS, STATE_DIM, ACTION_DIM = 2, 4, 3


def tiny_config(**overrides) -> object:
    """pi0.5 with SigLIP, VLM and expert of 2 layers each, widths 32-64, 28x28 images (4 patches), chunk 4."""
    base = dict(
        vision=VisionConfig(width=32, depth=2, mlp_dim=64, num_heads=2, patch_size=14, image_size=28),
        vlm=GemmaConfig(width=64, depth=2, mlp_dim=128, num_heads=2, num_kv_heads=1, head_dim=16),
        expert=GemmaConfig(width=32, depth=2, mlp_dim=64, num_heads=2, num_kv_heads=1, head_dim=16),
        chunk_size=4,
        max_state_dim=8,
        max_action_dim=8,
        tokenizer_name=str(shared_dir() / "parity" / "pi05_tiny_a" / "tokenizer"),
        tokenizer_max_length=40,
        dropout=0.0,
    )
    base.update(overrides)
    return tiny_pi05_config(**base)


class PiSamples(Dataset):
    """Random standard samples, each with its own flow-matching noise and time (so a sample's loss does not
    depend on which process's RNG would have drawn them)."""

    TASKS = ("pick up the red block", "open the drawer", "push the button", "stack the cubes")

    def __init__(self, config, size: int = 32, seed: int = 0):
        self.config, self.size, self.seed = config, size, seed
        self.tokenize = SampleTokenizer(config)  # token ids are made where samples are, as in tau's pipelines

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict:
        cfg = self.config
        g = torch.Generator().manual_seed(self.seed * 100003 + index)
        state = torch.zeros(cfg.max_state_dim)
        state[:STATE_DIM] = torch.rand(STATE_DIM, generator=g) * 2 - 1
        actions = torch.zeros(cfg.chunk_size, cfg.max_action_dim)
        actions[:, :ACTION_DIM] = torch.rand(cfg.chunk_size, ACTION_DIM, generator=g) * 2 - 1
        size = cfg.vision.image_size
        return self.tokenize({
            "images": torch.rand(CAMERAS, 3, size, size, generator=g),
            "image_mask": torch.ones(CAMERAS, dtype=torch.bool),
            "state": state,
            "state_dim": torch.tensor(STATE_DIM),
            "actions": actions,
            "action_dim": torch.tensor(ACTION_DIM),
            "action_is_pad": torch.zeros(cfg.chunk_size, dtype=torch.bool),
            "prompt": self.TASKS[index % len(self.TASKS)],
            "noise": torch.randn(cfg.chunk_size, cfg.max_action_dim, generator=g),
            "time": torch.rand((), generator=g) * 0.9 + 0.05,
            "index": index,
        })


class SampleNoise(torch.nn.Module):
    """A PiModel trained with each sample's own noise and time; everything else is PiModel's forward."""

    def __init__(self, pi: PiModel):
        super().__init__()
        self.pi = pi

    def forward(self, batch: dict) -> dict:
        return self.pi(batch, noise=batch["noise"], time=batch["time"])


def loader_factory(dataset: Dataset):
    """Each process reads its strided shard of one seeded permutation per epoch (DistributedSampler)."""

    def build(spec: LoaderSpec) -> StatefulDataLoader:
        sampler = DistributedSampler(
            dataset, num_replicas=spec.world_size, rank=spec.rank, shuffle=True, seed=spec.seed, drop_last=True
        )
        return StatefulDataLoader(dataset, batch_size=spec.batch_size, sampler=sampler, drop_last=True)

    return build


def build_model(seed: int = 0, **overrides) -> SampleNoise:
    torch.manual_seed(seed)
    return SampleNoise(PiModel(tiny_config(**overrides)))


def full_state(trainer: Trainer) -> dict:
    """The gathered model and optimizer state (collective: every process calls it), on CPU."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    shadows = trainer.ema.shadow.items() if trainer.ema is not None else ()
    return {
        "model": get_model_state_dict(trainer.model, options=options),
        "optimizer": get_optimizer_state_dict(trainer.model, trainer._torch_optimizer, options=options),
        "ema": {n: (t.full_tensor() if hasattr(t, "full_tensor") else t).cpu() for n, t in shadows},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("output_dir")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--dump", default=None)
    parser.add_argument("--no-train", action="store_true")
    args = parser.parse_intermixed_args()
    logging.basicConfig(level=logging.INFO)
    torch.set_num_threads(1)
    config = load_config(None, [f"output_dir={args.output_dir}", *args.overrides], TrainConfig)
    model = build_model()
    trainer = Trainer(config, model, loader_factory(PiSamples(model.pi.config)))
    if not args.no_train:
        trainer.fit()
    if args.dump:
        state = full_state(trainer)
        local, total = local_parameter_count(trainer.model)
        shares = [None] * trainer.world_size
        if torch.distributed.is_initialized():
            torch.distributed.all_gather_object(shares, [local, total])
        else:
            shares = [[local, total]]
        if trainer.is_main:
            torch.save({**state, "step": trainer.step, "shares": shares}, args.dump)
            print(json.dumps({"rank": int(os.environ.get("RANK", 0)), "shares": shares}))
    trainer.close()
    # Skip interpreter teardown: with 4 gloo processes on 2 loaded cores, a C++ thread of torch.distributed has
    # aborted the process at exit ("terminate called without an active exception", 1 exit in ~15) after every
    # file was written and the process groups were destroyed. Everything this script writes is closed by now.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
