"""A run resumed on another number of processes sees exactly the global sample sequence of the original run
(the re-sharding rule of tau_train.data_stream), and its losses continue the uninterrupted run's."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tau_train import read_metrics

TOY = Path(__file__).parent / "tau_train_toy.py"
# 24 samples, global batch 8 in 2 micro-batches: 3 steps an epoch, so step 4 stops inside epoch 1.
RUN = [
    "mixed_precision=fp32",
    "batch_size=8",
    "gradient_accumulation_steps=2",
    "seed=5",
    "optimizer.lr=0.01",
    "schedule.decay_steps=7",
    "checkpoint.every_steps=4",
    "checkpoint.keep_last=0",
    "logging.every_steps=1",
    "logging.tensorboard=false",
    "logging.plots=false",
    "logging.progress_bar=false",
]
ACCUMULATION = 2


def run_toy(output_dir: Path, processes: int, steps: int, record: Path) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
    command = [
        *(launcher if processes > 1 else [sys.executable]),
        str(TOY),
        str(output_dir),
        *RUN,
        f"steps={steps}",
        "--sampler",
        "distributed",
        "--record-indices",
        str(record),
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stderr


def samples_per_step(record: Path, processes: int, first_step: int) -> dict[int, list[int]]:
    """Each optimizer step's global samples (sorted), from every process's micro-batch log."""
    steps: dict[int, list[int]] = {}
    for rank in range(processes):
        lines = Path(f"{record}.{rank}").read_text().splitlines()
        for index, line in enumerate(lines):
            step = first_step + index // ACCUMULATION
            steps.setdefault(step, []).extend(int(i) for i in line.split())
    return {step: sorted(indices) for step, indices in steps.items()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One process, 7 steps, checkpoints at steps 4 and 7."""
    root = tmp_path_factory.mktemp("reference")
    run_toy(root / "run", processes=1, steps=7, record=root / "indices")
    return root


def assert_continues_reference(reference: Path, run: Path, record: Path, processes: int) -> None:
    expected = samples_per_step(reference / "indices", 1, first_step=1)
    assert sorted(expected) == list(range(1, 8))
    assert samples_per_step(record, processes, first_step=5) == {s: expected[s] for s in (5, 6, 7)}
    want, got = read_metrics(reference / "run" / "metrics.jsonl"), read_metrics(run / "metrics.jsonl")
    for step in (5, 6, 7):
        assert got[step]["train/loss"] == pytest.approx(want[step]["train/loss"], rel=1e-5), step
        assert got[step]["epoch"] == want[step]["epoch"]


def test_two_processes_resumed_on_one_continue_the_global_sample_sequence(reference, tmp_path):
    run = tmp_path / "run"
    run_toy(run, processes=2, steps=4, record=tmp_path / "first")
    assert samples_per_step(tmp_path / "first", 2, first_step=1) == {
        s: v for s, v in samples_per_step(reference / "indices", 1, first_step=1).items() if s <= 4
    }
    stderr = run_toy(run, processes=1, steps=7, record=tmp_path / "resumed")
    assert "written by 2 processes, this run has 1" in stderr and "global sample 8 of epoch 1" in stderr
    assert_continues_reference(reference, run, tmp_path / "resumed", processes=1)


def test_one_process_resumed_on_two_continue_the_global_sample_sequence(reference, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(reference / "run", run)
    shutil.rmtree(run / "checkpoints" / "step_000000007")
    stderr = run_toy(run, processes=2, steps=7, record=tmp_path / "resumed")
    assert "written by 1 processes, this run has 2" in stderr
    assert_continues_reference(reference, run, tmp_path / "resumed", processes=2)
