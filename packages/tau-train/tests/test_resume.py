"""Exact resume: a real subprocess killed mid-run (SIGKILL) or pre-empted (SIGTERM), then resumed, matches the
uninterrupted run bitwise; a kill during a save leaves no checkpoint that looks complete."""

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tau_train import TrainingInterrupted, latest_checkpoint, list_checkpoints, load_checkpoint_weights, read_metrics

TOY = Path(__file__).parent / "tau_train_toy.py"

# 24 samples, micro-batch 4, accumulation 2: 3 steps per epoch, so 10 steps cross three epoch boundaries.
RUN = [
    "mixed_precision=fp32",
    "steps=10",
    "batch_size=8",
    "gradient_accumulation_steps=2",
    "seed=7",
    "optimizer.lr=0.01",
    "schedule.warmup_steps=3",
    "ema.enabled=true",
    "ema.decay=0.9",
    "checkpoint.every_steps=3",
    "checkpoint.keep_last=2",
    "logging.every_steps=1",
    "logging.tensorboard=false",
    "logging.plots=false",
    "logging.progress_bar=false",
    "validation.every_steps=4",
]


def toy_command(output_dir: Path, *extra: str, sampler: str = "random") -> list[str]:
    return [sys.executable, str(TOY), str(output_dir), *RUN, "--dropout", "0.2", "--sampler", sampler, *extra]


def toy_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "HF_HUB_OFFLINE": "1"}


def run_toy(output_dir: Path, *extra: str, sampler: str = "random") -> subprocess.CompletedProcess:
    command = toy_command(output_dir, *extra, sampler=sampler)
    return subprocess.run(command, env=toy_env(), capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Uninterrupted runs, one per sampler, made on first use."""
    runs: dict[str, Path] = {}

    def get(sampler: str) -> Path:
        if sampler not in runs:
            output = tmp_path_factory.mktemp(f"reference-{sampler}")
            result = run_toy(output, sampler=sampler)
            assert result.returncode == 0, result.stderr
            runs[sampler] = output
        return runs[sampler]

    return get


def assert_identical_runs(expected_dir: Path, actual_dir: Path) -> None:
    """Every logged training value, validation loss and final weight (model and EMA) is bitwise equal."""
    expected = read_metrics(expected_dir / "metrics.jsonl")
    actual = read_metrics(actual_dir / "metrics.jsonl")
    assert sorted(actual) == sorted(expected) == list(range(1, 11))
    for step in expected:
        for key in ("train/loss", "train/mae", "train/grad_norm", "lr/default", "epoch"):
            assert actual[step][key] == expected[step][key], (step, key)
    for step in (4, 8):
        assert actual[step]["val/loss"] == expected[step]["val/loss"]
        assert actual[step]["val_ema/loss"] == expected[step]["val_ema/loss"]
    final_expected = latest_checkpoint(expected_dir / "checkpoints")
    final_actual = latest_checkpoint(actual_dir / "checkpoints")
    for ema in (False, True):
        a, b = load_checkpoint_weights(final_expected, ema=ema), load_checkpoint_weights(final_actual, ema=ema)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), f"ema={ema}"


@pytest.mark.parametrize("sampler, save", [("random", "sync"), ("shuffle", "sync"), ("random", "async")])
def test_sigkill_mid_run_then_resume_is_bitwise_identical(tmp_path, reference, sampler, save):
    # Forward 19 is the first micro-batch of step 8 (steps 1-7 take 14, validation at step 4 takes 2 + 2 EMA):
    # checkpoint 6 exists, step 7 and half of step 8 are lost. An asynchronous save of step 6 is renamed into place
    # at the first step boundary after every process finished writing it, which may come after the kill: then
    # the run resumes from step 3. The reference run saves synchronously.
    mode = [f"checkpoint.async_save={save == 'async'}"]
    killed = run_toy(tmp_path, *mode, "--kill-at-forward", "19", sampler=sampler)
    assert killed.returncode == -signal.SIGKILL
    latest = latest_checkpoint(tmp_path / "checkpoints").name
    assert latest in (("step_000000003", "step_000000006") if save == "async" else ("step_000000006",))
    assert max(read_metrics(tmp_path / "metrics.jsonl")) == 7

    resumed = run_toy(tmp_path, *mode, sampler=sampler)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stderr and latest in resumed.stderr
    assert_identical_runs(reference(sampler), tmp_path)
    assert [s for s, _ in list_checkpoints(tmp_path / "checkpoints")] == [9, 10]


def test_sigterm_checkpoints_the_current_step_and_resumes_exactly(tmp_path, reference):
    child = subprocess.Popen(
        toy_command(tmp_path, "--forward-delay", "0.05"),
        env=toy_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while max(read_metrics(tmp_path / "metrics.jsonl"), default=0) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    child.send_signal(signal.SIGTERM)
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == TrainingInterrupted.EXIT_CODE, stderr
    assert "SIGTERM received" in stderr
    stopped_at = max(read_metrics(tmp_path / "metrics.jsonl"))
    assert 2 <= stopped_at < 10
    stopped = latest_checkpoint(tmp_path / "checkpoints")
    assert stopped.name == f"step_{stopped_at:09d}"
    assert f"checkpoint {stopped} written" in stderr and "run the same command again" in stderr  # a pause

    resumed = run_toy(tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert_identical_runs(reference("random"), tmp_path)


def test_sigkill_during_save_leaves_no_complete_looking_checkpoint(tmp_path):
    output = tmp_path / "run"
    killed = run_toy(output, "--kill-in-save-step", "6")
    assert killed.returncode == -signal.SIGKILL
    checkpoints = output / "checkpoints"
    written = checkpoints / ".tmp-step_000000006"
    assert (written / "state" / ".metadata").is_file() and (written / "rank_00000.pt").is_file()
    assert not (checkpoints / "step_000000006").exists()
    assert [s for s, _ in list_checkpoints(checkpoints)] == [3]

    resumed = run_toy(output)
    assert resumed.returncode == 0, resumed.stderr
    assert "step_000000003" in resumed.stderr
    assert not any(p.name.startswith(".tmp-") for p in checkpoints.iterdir())
    assert [s for s, _ in list_checkpoints(checkpoints)] == [9, 10]


def test_bf16_mixed_precision_keeps_fp32_weights(tmp_path):
    result = run_toy(tmp_path, "mixed_precision=bf16", "steps=4")
    assert result.returncode == 0, result.stderr
    assert "mixed precision bf16" in result.stderr
    assert all(math.isfinite(m["train/loss"]) for m in read_metrics(tmp_path / "metrics.jsonl").values())
    weights = load_checkpoint_weights(latest_checkpoint(tmp_path / "checkpoints"))
    assert {t.dtype for t in weights.values()} == {torch.float32}
