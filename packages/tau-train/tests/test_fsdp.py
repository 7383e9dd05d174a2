"""FSDP2 on a tiny pi0.5 with gloo processes on the CPU: two processes (one node, or two "nodes" through c10d
rendezvous on 127.0.0.1) match one process, each holds half the parameters and writes its own checkpoint shards,
and a sharded checkpoint (model, AdamW, EMA) resumes exactly on 1, 2 and 4 processes and exports as one
model.safetensors."""

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_pi import build_model

from tau_train import export_weights, latest_checkpoint, load_weights, read_metrics

SCRIPT = Path(__file__).parent / "tiny_pi.py"
STEPS = 20
RUN = [
    "mixed_precision=fp32",
    f"steps={STEPS}",
    "batch_size=8",
    "gradient_accumulation_steps=2",
    "seed=11",
    "optimizer.lr=0.003",
    "ema.enabled=true",
    "ema.decay=0.9",
    "checkpoint.every_steps=10",
    "checkpoint.keep_last=0",
    "logging.every_steps=1",
    "logging.tensorboard=false",
    "logging.plots=false",
    "logging.progress_bar=false",
]


def env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(sys.path),
        "OMP_NUM_THREADS": "1",
        "ACCELERATE_USE_CPU": "true",
        "HF_HUB_OFFLINE": "1",
    }


def script(output: Path, *extra: str) -> list[str]:
    return [str(SCRIPT), str(output), *RUN, *extra]


def run(command: list[str]) -> None:
    result = subprocess.run(command, env=env(), capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-8000:]


def launch(output: Path, processes: int, *extra: str) -> None:
    """`processes` gloo processes on one node (torchrun), or a plain python process for 1."""
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
    run([*(torchrun if processes > 1 else [sys.executable]), *script(output, *extra)])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """20 steps on one process without FSDP, and on two with FSDP2 (checkpoints at 10 and 20, full-state dumps)."""
    root = tmp_path_factory.mktemp("fsdp")
    launch(root / "single", 1, "--dump", str(root / "single.pt"))
    launch(root / "sharded", 2, "fsdp.enabled=true", "--dump", str(root / "sharded.pt"))
    return root


def assert_same_losses(expected: Path, actual: Path, tolerance: float) -> None:
    want, got = read_metrics(expected / "metrics.jsonl"), read_metrics(actual / "metrics.jsonl")
    assert sorted(want) == sorted(got) == list(range(1, STEPS + 1))
    for step in want:
        assert abs(got[step]["train/loss"] - want[step]["train/loss"]) <= tolerance, step
        assert got[step]["train/grad_norm"] == pytest.approx(want[step]["train/grad_norm"], rel=1e-4), step


def test_two_fsdp2_processes_match_one_process_and_each_holds_half(runs):
    assert_same_losses(runs / "single", runs / "sharded", tolerance=1e-5)
    metrics = read_metrics(runs / "sharded" / "metrics.jsonl")
    assert metrics[STEPS]["train/loss"] < metrics[1]["train/loss"]  # it learns
    single, sharded = torch.load(runs / "single.pt"), torch.load(runs / "sharded.pt")
    assert single["model"].keys() == sharded["model"].keys()
    for part in ("model", "ema"):
        assert single[part].keys() == sharded[part].keys() and single[part]
        for name, value in single[part].items():
            torch.testing.assert_close(sharded[part][name], value, rtol=0, atol=1e-5, msg=f"{part} {name}")
    (local_0, total), (local_1, total_1) = sharded["shares"]
    assert total == total_1 == sum(t.numel() for t in single["model"].values())
    assert local_0 + local_1 == total and 0.45 < local_0 / total < 0.55
    assert single["shares"] == [[total, total]]


def test_each_process_writes_its_own_checkpoint_shards(runs):
    checkpoint = latest_checkpoint(runs / "sharded" / "checkpoints")
    assert checkpoint.name == f"step_{STEPS:09d}"
    files = {p.name: p.stat().st_size for p in (checkpoint / "state").iterdir()}
    assert set(files) == {".metadata", "__0_0.distcp", "__1_0.distcp"}
    shards = files["__0_0.distcp"] + files["__1_0.distcp"]
    assert max(files["__0_0.distcp"], files["__1_0.distcp"]) < 0.65 * shards  # nothing gathered on rank 0
    assert not list(checkpoint.rglob("*.safetensors")) and not list(checkpoint.rglob("optimizer*"))


@pytest.mark.parametrize("processes, sharding", [(1, "fsdp.enabled=false"), (2, "fsdp.enabled=true"), (4, "fsdp.enabled=true")])
def test_sharded_checkpoint_resumes_exactly_on_1_2_and_4_processes(runs, tmp_path, processes, sharding):
    output = tmp_path / "resumed"
    shutil.copytree(runs / "sharded", output)
    launch(output, processes, sharding, "--no-train", "--dump", str(tmp_path / "resumed.pt"))
    saved, resumed = torch.load(runs / "sharded.pt"), torch.load(tmp_path / "resumed.pt")
    assert resumed["step"] == STEPS
    for part in ("model", "ema"):
        assert saved[part].keys() == resumed[part].keys()
        assert all(torch.equal(saved[part][k], resumed[part][k]) for k in saved[part]), part
    assert saved["optimizer"]["param_groups"] == resumed["optimizer"]["param_groups"]
    assert saved["optimizer"]["state"].keys() == resumed["optimizer"]["state"].keys()
    for name, state in saved["optimizer"]["state"].items():
        assert state.keys() == resumed["optimizer"]["state"][name].keys()
        assert all(torch.equal(v, resumed["optimizer"]["state"][name][k]) for k, v in state.items()), name
    local, total = resumed["shares"][0]
    assert local == (total if processes == 1 else pytest.approx(total / processes, rel=0.15))


def test_a_sharded_checkpoint_exports_one_safetensors_file(runs, tmp_path):
    path = export_weights(latest_checkpoint(runs / "sharded" / "checkpoints"), tmp_path / "model.safetensors")
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]
    weights = load_weights(path)
    saved = torch.load(runs / "sharded.pt")["model"]
    assert weights.keys() == saved.keys() and all(torch.equal(weights[k], saved[k]) for k in saved)
    model = build_model(seed=1)
    model.load_state_dict(weights)  # strict: a plain, unsharded pi0.5 takes it as is
    torch.testing.assert_close(model.pi.action_out_proj.weight, saved["pi.action_out_proj.weight"], rtol=0, atol=0)


def test_two_nodes_through_c10d_rendezvous_match_the_single_node_run(runs, tmp_path):
    port = free_port()
    node = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1",
        "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=tau-train-test",
    ]
    command = [*node, *script(tmp_path / "two_nodes", "fsdp.enabled=true")]
    nodes = [subprocess.Popen(command, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outputs = [node.communicate(timeout=400)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], "\n".join(o[-6000:] for o in outputs)
    assert_same_losses(runs / "sharded", tmp_path / "two_nodes", tolerance=1e-7)
