"""The memory and FLOPs model of benchmarks/tau_train_memory.py against the real PiModel: parameter counts exactly,
peak memory within 15% and FLOPs within 5% of what torch's trackers measure on the CPU (tiny and small configs, one
process and two FSDP2 gloo processes), and the GPU check script in its --tiny CPU mode."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import shared_dir
from tau_models import PiModel, pi05_config
from tau_train_memory import full_pi05, parameter_count, predict
from tau_train_memory_check import PEAK_TOLERANCE, configs, random_batch, validate

BENCHMARKS = Path(__file__).resolve().parents[3] / "benchmarks"


@pytest.mark.parametrize("name", ["tiny", "small"])
def test_parameter_counts_match_the_model_and_its_gradients(name):
    cfg = configs(shared_dir())[name]
    torch.manual_seed(0)
    model = PiModel(cfg).train()
    batch = random_batch(cfg, batch=2, cameras=2)
    model(batch, noise=batch["noise"], time=batch["time"])["loss"].backward()
    total, trained = parameter_count(cfg)
    assert total == sum(p.numel() for p in model.parameters())
    assert trained == sum(p.numel() for p in model.parameters() if p.grad is not None)


def test_full_pi05_has_3_35_billion_parameters():
    with torch.device("meta"):
        model = PiModel(pi05_config())
    total, _ = parameter_count(pi05_config())
    assert total == sum(p.numel() for p in model.parameters()) and round(total / 1e9, 2) == 3.35


def test_measured_peak_and_flops_agree_with_the_model():
    """About 25 s: 6 single-process cases and 2 FSDP2 cases in 2 torchrun processes (the issue's validation)."""
    rows = validate(shared_dir(), quick=True)
    assert len(rows) == 8 and sum(" fsdp=2 " in r.name for r in rows) == 2
    for row in rows:
        assert abs(row.peak_error) < PEAK_TOLERANCE, (row.name, row.peak_error)
        if row.measured_flops:
            assert abs(row.flops_error) < 0.05, (row.name, row.flops_error)
    print("\n".join(f"{r.name}: peak {r.peak_error:+.2%}, flops {r.flops_error}" for r in rows))


def test_full_pi05_predictions_respond_to_batch_checkpointing_and_sharding():
    base = predict(full_pi05(8, False))
    assert predict(full_pi05(16, False)).activations == pytest.approx(2 * base.activations, rel=0.01)
    assert predict(full_pi05(8, True)).activations < 0.3 * base.activations
    assert predict(full_pi05(8, True)).flops > base.flops  # recomputation
    one_gpu = predict(full_pi05(8, False, gpus=1))
    assert one_gpu.optimizer == pytest.approx(8 * base.optimizer, rel=1e-6)
    assert predict(full_pi05(32, False)).peak > 80 * 2**30 > predict(full_pi05(32, True)).peak


def test_gpu_check_runs_on_the_cpu_with_tiny():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, str(BENCHMARKS / "gpu_step.py"), "--tiny", "--processes", "2"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("gpu_step:")]
    assert len(lines) == 1, result.stdout
    match = re.search(r"2 x CPU \| FSDP2 fp32 .* ([\d.]+) samples/s .* peak ([\d.]+) GiB \(MemTracker\), predicted ([\d.]+) GiB",
                      lines[0])
    assert match, lines[0]
    samples, measured, predicted = map(float, match.groups())
    assert samples > 0 and abs(predicted / measured - 1) < PEAK_TOLERANCE
    assert "NON-FINITE" not in lines[0]
