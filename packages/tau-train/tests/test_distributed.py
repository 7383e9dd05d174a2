"""Two CPU processes (gloo, launched with torchrun as accelerate expects) match one process with the same global
batch, and a checkpoint written by two processes resumes on one."""

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tau_train_toy import ToyDataset, ToyModel, loader_factory

from tau_train import Trainer, latest_checkpoint, load_checkpoint_weights, load_config, read_metrics

TOY = Path(__file__).parent / "tau_train_toy.py"
RUN = [
    "mixed_precision=fp32",
    "steps=3",
    "batch_size=8",
    "gradient_accumulation_steps=2",
    "seed=3",
    "optimizer.lr=0.01",
    "checkpoint.every_steps=0",
    "logging.every_steps=1",
    "logging.tensorboard=false",
    "logging.plots=false",
    "logging.progress_bar=false",
]


def run_toy(output_dir: Path, processes: int) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(sys.path),
        "HF_HUB_OFFLINE": "1",
        "ACCELERATE_USE_CPU": "true",
    }
    launcher = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={processes}",
    ]
    command = [
        *(launcher if processes > 1 else [sys.executable]),
        str(TOY),
        str(output_dir),
        *RUN,
        "--sampler",
        "distributed",
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("distributed")
    run_toy(root / "two", processes=2)
    run_toy(root / "one", processes=1)
    return root


def test_two_processes_match_one_process_with_the_same_global_batch(runs):
    two = read_metrics(runs / "two" / "metrics.jsonl")
    one = read_metrics(runs / "one" / "metrics.jsonl")
    assert sorted(two) == sorted(one) == [1, 2, 3]
    for step in one:
        for key in ("train/loss", "train/grad_norm"):
            assert two[step][key] == pytest.approx(one[step][key], rel=1e-6, abs=1e-7), (step, key)
    weights_two = load_checkpoint_weights(latest_checkpoint(runs / "two" / "checkpoints"))
    weights_one = load_checkpoint_weights(latest_checkpoint(runs / "one" / "checkpoints"))
    assert weights_two.keys() == weights_one.keys()
    for name in weights_one:
        torch.testing.assert_close(weights_two[name], weights_one[name], rtol=0, atol=1e-6)


def test_checkpoint_of_two_processes_resumes_on_one(runs, tmp_path, caplog):
    output = tmp_path / "resume"
    shutil.copytree(runs / "two", output)
    checkpoint = latest_checkpoint(output / "checkpoints")
    assert sorted(p.name for p in checkpoint.glob("rank_*.pt")) == ["rank_00000.pt", "rank_00001.pt"]
    config = load_config(None, [*RUN, "steps=5", f"output_dir={output}"])
    with caplog.at_level(logging.WARNING):
        trainer = Trainer(config, ToyModel(), loader_factory(ToyDataset(), "distributed"))
    assert "written by 2 processes" in caplog.text
    assert trainer.step == 3
    saved = load_checkpoint_weights(checkpoint)
    for name, param in trainer.model.state_dict().items():
        assert torch.equal(param, saved[name]), name
    assert all(state["step"].item() == 3 for state in trainer.optimizer.state_dict()["state"].values())
    trainer.fit()
    assert latest_checkpoint(output / "checkpoints").name == "step_000000005"
