"""The bad-input suite: each broken config, checkpoint, run directory and policy bundle given to the apps gives
one line naming the file, key or field, a non-zero exit code, no traceback, and nothing written or lost.

More cases live beside the code they check (counted in the issue #19 report, not duplicated here): broken datasets
through apps/data (tests/test_data_cli_errors.py), tau-train's damaged checkpoints, lock, SIGTERM, disk full,
read-only and file modes (packages/tau-train/tests/test_failures.py), config files and overrides
(packages/tau-train/tests/test_config_errors.py), malformed serving requests
(packages/tau-policy/tests/test_serving_server.py)."""

import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from data_app.cli import main as data_main
from eval_app.cli import main as eval_main
from safetensors.torch import load_file, save_file
from train_app.cli import main as train_main

TASK = "tabletop/push_red_to_target"
CAMERAS = ["observation.images.top", "observation.images.wrist"]


def train_config(root: Path, demos: Path, output: Path, **train) -> Path:
    """A tiny apps/train YAML (2 steps, a checkpoint every step) written to root/<output name>.yaml."""
    config = {
        "data": {"datasets": [{"path": str(demos), "cameras": CAMERAS}]},
        "model": {"preset": "tiny_pi05", "tokenizer": "local",
                  "overrides": {"chunk_size": 5, "max_state_dim": 4, "max_action_dim": 4, "num_inference_steps": 2,
                                "tokenizer_max_length": 48}},
        "train": {"output_dir": str(output), "steps": 2, "batch_size": 4, "seed": 3,
                  "schedule": {"warmup_steps": 1}, "checkpoint": {"every_steps": 1, "keep_last": 0},
                  "logging": {"every_steps": 1, "plots": False, "tensorboard": False, "progress_bar": False},
                  **train},
        "num_workers": 0,
    }
    path = root / f"{output.name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def demos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demos") / "demos"
    result = CliRunner().invoke(data_main, ["generate", "--output", str(root), "--tasks", TASK,
                                            "--episodes-per-task", "2"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture(scope="module")
def trained(demos, tmp_path_factory) -> Path:
    """A finished 2-step run (checkpoints at steps 1 and 2, the exported policy)."""
    root = tmp_path_factory.mktemp("trained")
    result = CliRunner().invoke(train_main, ["--config", str(train_config(root, demos, root / "run"))],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return root / "run"


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` by its content hash (to show that nothing was written or lost)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()} if folder.exists() else {}


def assert_one_line_error(result, *expected: str) -> None:
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1, result.output
    for text in expected:
        assert text in lines[0], result.output


# ----------------------------------------------------------------------------------------- apps/eval --policy

def _weights(bundle: Path) -> Path:
    return bundle / "model" / "model.safetensors"


def _truncate_weights(bundle):
    path = _weights(bundle)
    path.write_bytes(path.read_bytes()[:100])
    return path, "not a readable safetensors file"


def _garbage_weights(bundle):
    path = _weights(bundle)
    path.write_bytes(b"garbage!" * 64)
    return path, "not a readable safetensors file"


def _missing_weights(bundle):
    path = _weights(bundle)
    path.unlink()
    return path, "checkpoint weights missing"


def _wrong_shape_weights(bundle):
    path = _weights(bundle)
    tensors = load_file(path)
    name = sorted(tensors)[0]
    tensors[name] = tensors[name].flatten()[:3].clone()
    save_file(tensors, str(path))
    return path, f"shape mismatch for {name}"


def _unknown_config_field(bundle):
    path = bundle / "model" / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "bogus_field": 1}))
    return path, "bogus_field"


def _config_not_json(bundle):
    path = bundle / "model" / "config.json"
    path.write_text("{")
    return path, "JSON"


def _bundle_not_json(bundle):
    path = bundle / "bundle.json"
    path.write_text("{")
    return path, "not valid JSON"


def _bundle_missing(bundle):
    path = bundle / "bundle.json"
    path.unlink()
    return path, "no trained policy (no bundle.json)"


def _normalizer_not_json(bundle):
    path = bundle / "normalizer.json"
    path.write_text("{")
    return path, "not valid JSON"


def _normalizer_missing(bundle):
    path = bundle / "normalizer.json"
    path.unlink()
    return path, "normaliser"


def _state_dim_mismatch(bundle):
    """A bundle whose head expects another state size than the tabletop tasks give."""
    path = bundle / "bundle.json"
    text = path.read_text()
    document = json.loads(text)
    head = document["heads"][0]
    key = next(k for k in head if "state" in k and isinstance(head[k], int))
    head[key] += 1
    path.write_text(json.dumps(document))
    return path, "state"


BUNDLE_BREAKS = [_truncate_weights, _garbage_weights, _missing_weights, _wrong_shape_weights, _unknown_config_field,
                 _config_not_json, _bundle_not_json, _bundle_missing, _normalizer_not_json, _normalizer_missing,
                 _state_dim_mismatch]


@pytest.mark.parametrize("breaks", BUNDLE_BREAKS)
def test_eval_of_a_broken_policy_bundle(trained, tmp_path, breaks):
    bundle = tmp_path / "policy"
    shutil.copytree(trained / "policy", bundle)
    path, expected = breaks(bundle)
    result = CliRunner().invoke(eval_main, ["--policy", str(bundle), "--tasks", TASK, "--episodes-per-task", "1",
                                            "--output-dir", str(tmp_path / "eval")])
    assert_one_line_error(result, str(bundle), expected)
    assert not (tmp_path / "eval").exists()


# ----------------------------------------------------------------------------------------- apps/train configs

CONFIG_CASES = [
    (["train.steps=0"], "steps must be > 0"),
    (["train.batch_size=3", "train.gradient_accumulation_steps=2"], "batch_size (3) must be a positive multiple"),
    (["train.checkpoint.on_damaged=ignore"], "checkpoint.on_damaged must be fall_back or stop"),
    (["train.optimizer.lr=-1"], "optimizer.lr must be > 0"),
    (["train.no_such_key=1"], "no_such_key"),
    (["train.steps=many"], "train.steps"),
    (["steps"], "is not of the form key=value"),
    (["model.preset=huge"], "model.preset must be one of"),
]


@pytest.mark.parametrize(("overrides", "expected"), CONFIG_CASES)
def test_train_with_a_bad_setting(demos, tmp_path, overrides, expected):
    output = tmp_path / "run"
    result = CliRunner().invoke(train_main, ["--config", str(train_config(tmp_path, demos, output)), *overrides])
    assert_one_line_error(result, expected)
    assert not (output / "checkpoints").exists() and not (output / "policy").exists()


def test_train_with_a_missing_dataset(tmp_path):
    result = CliRunner().invoke(train_main, ["--config", str(train_config(tmp_path, tmp_path / "nope", tmp_path / "r"))])
    assert_one_line_error(result, str(tmp_path / "nope"))


def test_train_with_a_broken_dataset_info(demos, tmp_path):
    broken = tmp_path / "demos"
    shutil.copytree(demos, broken)
    (broken / "meta" / "info.json").write_text("{")
    result = CliRunner().invoke(train_main, ["--config", str(train_config(tmp_path, broken, tmp_path / "run"))])
    assert_one_line_error(result, "info.json")


# ----------------------------------------------------------------------------------------- apps/train run dirs

def _run_copy(trained: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(trained, run, ignore=shutil.ignore_patterns(".lock"))
    return run


def _step(run: Path, step: int) -> Path:
    return run / "checkpoints" / f"step_{step:09d}"


def _truncate_shard(run):
    shard = next((_step(run, 2) / "state").glob("*.distcp"))
    shard.write_bytes(shard.read_bytes()[:64])
    return shard


def _state_not_json(run):
    path = _step(run, 2) / "trainer_state.json"
    path.write_text("{\n")
    return path


def _garbage_metadata(run):
    path = _step(run, 2) / "state" / ".metadata"
    path.write_bytes(b"\x00\x01garbage")
    return path


@pytest.mark.parametrize("damage", [_truncate_shard, _state_not_json, _garbage_metadata])
def test_train_resume_with_a_damaged_latest_checkpoint_and_on_damaged_stop(trained, tmp_path, demos, damage):
    run = _run_copy(trained, tmp_path)
    bad = damage(run)
    before = snapshot(run)
    config = train_config(tmp_path, demos, run, steps=3)
    result = CliRunner().invoke(train_main, ["--config", str(config), "train.checkpoint.on_damaged=stop"])
    assert_one_line_error(result, str(_step(run, 2)), "damaged", "on_damaged=stop")
    after = snapshot(run)
    assert {k: v for k, v in after.items() if k != ".lock"} == {k: v for k, v in before.items() if k != ".lock"}
    assert bad.exists()


@pytest.mark.parametrize("damage", [_truncate_shard, _state_not_json])
def test_train_resume_falls_back_to_the_previous_checkpoint(trained, tmp_path, demos, damage, caplog):
    run = _run_copy(trained, tmp_path)
    damage(run)
    config = train_config(tmp_path, demos, run, steps=3)
    result = CliRunner().invoke(train_main, ["--config", str(config)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "damaged" in caplog.text and str(_step(run, 2)) in caplog.text
    assert "resuming from the previous complete checkpoint" in caplog.text
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps[-2:] == [2, 3]  # step 2 re-trained from step 1's checkpoint, then step 3


def test_train_into_a_locked_run_dir_is_refused_with_the_pid(trained, tmp_path, demos):
    run = _run_copy(trained, tmp_path)
    with open(run / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        lock.write("424242\n")
        lock.flush()
        before = snapshot(run / "checkpoints")
        result = CliRunner().invoke(train_main, ["--config", str(train_config(tmp_path, demos, run, steps=3))])
    assert_one_line_error(result, str(run), "pid 424242", "another training")
    assert snapshot(run / "checkpoints") == before


def _mount_tmpfs(path: Path, options: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def test_train_into_a_read_only_dir(tmp_path, demos):
    mount = tmp_path / "ro"
    mounted = _mount_tmpfs(mount, "ro,size=64k")
    if not mounted:
        mount.chmod(0o555)
    try:
        result = CliRunner().invoke(train_main, ["--config", str(train_config(tmp_path, demos, mount / "run"))])
    finally:
        subprocess.run(["umount", str(mount)]) if mounted else mount.chmod(0o755)
    assert_one_line_error(result, str(mount), "read-only" if mounted else "permission denied")


def test_train_with_the_disk_full(tmp_path, demos):
    mount = tmp_path / "small"
    if not _mount_tmpfs(mount, "size=256k"):
        pytest.skip("mounting a tmpfs needs root (tau-train's test_failures covers ENOSPC without it)")
    try:
        result = CliRunner().invoke(train_main, ["--config", str(train_config(tmp_path, demos, mount / "run"))])
        assert_one_line_error(result, str(mount / "run"), "no space left on the device")
        assert not (mount / "run" / "policy").exists()
    finally:
        subprocess.run(["umount", str(mount)])


def _train_process(config: Path) -> list[str]:
    return [sys.executable, "-m", "train_app.cli", "--config", str(config)]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "HF_HUB_OFFLINE": "1",
            "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


def test_sigterm_pauses_training_with_exit_75_and_exports_nothing(tmp_path, demos):
    run = tmp_path / "run"
    config = train_config(tmp_path, demos, run, steps=200)
    child = subprocess.Popen(_train_process(config), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    deadline = time.monotonic() + 240
    metrics = run / "metrics.jsonl"
    while (not metrics.is_file() or not metrics.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.1)
    child.send_signal(signal.SIGTERM)
    stdout, stderr = child.communicate(timeout=240)
    assert child.returncode == 75, stderr
    assert "trained policy written" not in stdout
    assert "Paused: SIGTERM: paused at step" in stderr and "run the same command again" in stderr
    assert "Traceback" not in stderr
    assert not (run / "policy").exists()


def test_same_config_and_seed_give_bit_identical_losses_and_weights(tmp_path, demos):
    """apps/train twice in fresh processes: the loss series and the exported weights are identical bit for bit."""
    runs = []
    for name in ("a", "b"):
        config = train_config(tmp_path, demos, tmp_path / name)
        done = subprocess.run(_train_process(config), env=_env(), capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        runs.append(tmp_path / name)
    losses = [[json.loads(line)["train/loss"] for line in (r / "metrics.jsonl").read_text().splitlines()]
              for r in runs]
    assert len(losses[0]) == 2 and losses[0] == losses[1]
    weights = [_weights(r / "policy").read_bytes() for r in runs]
    assert weights[0] == weights[1]
