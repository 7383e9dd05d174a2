"""Failure paths of a run: a damaged latest checkpoint (fall back or stop), a locked run directory, the OS refusing
writes (no space, read-only) and the mode of written files. SIGTERM as a pause: test_resume.py."""

import errno
import json
import logging
import os
import pathlib
import random
import subprocess
import time

import pytest
import torch
from tau_train_toy import ToyDataset, ToyModel, loader_factory
from test_resume import toy_command, toy_env

from tau_train import (
    CheckpointError,
    ConfigError,
    DamagedCheckpointError,
    RunLockedError,
    Trainer,
    export_weights,
    latest_checkpoint,
    list_checkpoints,
    load_config,
    read_metrics,
)
from tau_train.os_errors import describe_os_error

QUIET = ["logging.tensorboard=false", "logging.plots=false", "logging.progress_bar=false", "logging.every_steps=1"]


def make_trainer(output_dir, *overrides):
    config = load_config(
        None, [f"output_dir={output_dir}", "batch_size=4", "mixed_precision=fp32", *QUIET, *overrides]
    )
    torch.manual_seed(0)
    return Trainer(config, ToyModel(), loader_factory(ToyDataset()))


def two_checkpoints(run):
    """A run with checkpoints at steps 2 and 4; returns the latest's path."""
    make_trainer(run, "steps=4", "checkpoint.every_steps=2").fit()
    return latest_checkpoint(run / "checkpoints")


def _shard(checkpoint):
    return next((checkpoint / "state").glob("*.distcp"))


def _truncate_shard(checkpoint):
    shard = _shard(checkpoint)
    shard.write_bytes(shard.read_bytes()[:50])
    return shard


def _garbage_shard(checkpoint, seed=0):
    shard = _shard(checkpoint)
    shard.write_bytes(random.Random(seed).randbytes(shard.stat().st_size))
    return shard


def _other_garbage_shard(checkpoint):
    """Garbage that fails to unpickle with an IndexError rather than an UnpicklingError (seed 34 of 40 tried; random
    bytes also give UnicodeDecodeError or KeyError): damage all the same."""
    return _garbage_shard(checkpoint, seed=34)


def _garbage_metadata(checkpoint):
    path = checkpoint / "state" / ".metadata"
    path.write_bytes(b"\x00not a pickle")
    return path


def _state_not_json(checkpoint):
    path = checkpoint / "trainer_state.json"
    path.write_text("{\n")
    return path


def _rank_state_truncated(checkpoint):
    path = checkpoint / "rank_00000.pt"
    path.write_bytes(path.read_bytes()[:20])
    return path


DAMAGES = [_truncate_shard, _garbage_shard, _other_garbage_shard, _garbage_metadata, _state_not_json, _rank_state_truncated]


@pytest.mark.parametrize("damage", DAMAGES)
def test_damaged_latest_checkpoint_is_named_and_the_previous_one_used(tmp_path, damage, caplog):
    latest = two_checkpoints(tmp_path)
    bad = damage(latest)
    with caplog.at_level(logging.ERROR, logger="tau_train"):
        trainer = make_trainer(tmp_path, "steps=4", "checkpoint.every_steps=2")
    assert trainer.resumed_from.name == "step_000000002" and trainer.step == 2
    assert str(bad) in caplog.text or str(latest) in caplog.text
    assert "damaged" in caplog.text and "previous complete checkpoint" in caplog.text
    trainer.fit()  # re-trains steps 3-4 and replaces the damaged checkpoint
    assert [s for s, _ in list_checkpoints(tmp_path / "checkpoints")] == [2, 4]
    make_trainer(tmp_path, "steps=4")  # the rewritten step 4 is sound again


@pytest.mark.parametrize("damage", [_truncate_shard, _state_not_json])
def test_on_damaged_stop_refuses_to_start(tmp_path, damage):
    latest = two_checkpoints(tmp_path)
    damage(latest)
    with pytest.raises(DamagedCheckpointError, match="on_damaged=stop") as caught:
        make_trainer(tmp_path, "steps=4", "checkpoint.on_damaged=stop")
    assert str(latest) in str(caught.value)
    assert len(str(caught.value).splitlines()) == 1


def test_every_checkpoint_damaged_is_an_error_not_a_fresh_start(tmp_path):
    for _, path in list_checkpoints(two_checkpoints(tmp_path).parent):
        _state_not_json(path)
    with pytest.raises(CheckpointError, match="every checkpoint .* is damaged"):
        make_trainer(tmp_path, "steps=4")


def test_on_damaged_is_validated(tmp_path):
    with pytest.raises(ConfigError, match="checkpoint.on_damaged must be fall_back or stop"):
        make_trainer(tmp_path, "steps=1", "checkpoint.on_damaged=ignore")


def test_export_of_a_truncated_checkpoint_names_it(tmp_path):
    latest = two_checkpoints(tmp_path)
    _truncate_shard(latest)
    with pytest.raises(DamagedCheckpointError, match=f"{latest / 'state'}.*damaged"):
        export_weights(latest, tmp_path / "model.safetensors")
    assert not (tmp_path / "model.safetensors").exists()


def test_a_second_training_into_a_locked_run_is_refused_with_the_holders_pid(tmp_path):
    first = make_trainer(tmp_path, "steps=2")
    with pytest.raises(RunLockedError, match=f"pid {os.getpid()}"):
        make_trainer(tmp_path, "steps=2")
    first.fit()  # the refused one wrote nothing; the lock is dropped when fit ends
    assert max(read_metrics(tmp_path / "metrics.jsonl")) == 2
    make_trainer(tmp_path, "steps=2")


def test_lock_held_by_another_process(tmp_path):
    command = [("steps=50" if arg == "steps=10" else arg) for arg in toy_command(tmp_path, "--forward-delay", "0.2")]
    child = subprocess.Popen(command, env=toy_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "metrics.jsonl").is_file() and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(RunLockedError, match=f"pid {child.pid}"):
            make_trainer(tmp_path, "steps=50")
    finally:
        child.kill()
        child.wait()
    make_trainer(tmp_path, "steps=50")  # a killed holder leaves no stale lock


@pytest.fixture
def small_disk(tmp_path):
    """A 64 KiB tmpfs (needs root), else None; unmounted afterwards."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True)
    yield mount if done.returncode == 0 else None
    if done.returncode == 0:
        subprocess.run(["umount", str(mount)], check=True)


def test_disk_full_while_saving_is_an_os_error_with_its_path(small_disk, tmp_path, monkeypatch):
    """On a real full tmpfs where possible (root), else with the shard writes failing as a full disk does."""
    run = small_disk / "run" if small_disk is not None else tmp_path / "run"
    if small_disk is None:
        real_open = pathlib.Path.open

        def full_disk(self, mode="r", *args, **kwargs):
            if "w" in mode and self.suffix == ".distcp":
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
            return real_open(self, mode, *args, **kwargs)

        monkeypatch.setattr(pathlib.Path, "open", full_disk)
    # Fills the disk with a big model's checkpoint; the metrics file fits.
    config = load_config(None, [f"output_dir={run}", "batch_size=4", "mixed_precision=fp32", *QUIET, "steps=1"])
    torch.manual_seed(0)
    trainer = Trainer(config, ToyModel(hidden=4096) if small_disk is not None else ToyModel(),
                      loader_factory(ToyDataset()))
    with pytest.raises(OSError) as caught:
        trainer.fit()
    assert caught.value.errno == errno.ENOSPC
    message = describe_os_error(caught.value)
    assert "no space left on the device (ENOSPC)" in message and str(run) in message
    assert latest_checkpoint(run / "checkpoints") is None  # nothing half-written looks complete


def test_read_only_output_dir_is_an_os_error_naming_it(tmp_path):
    """On a read-only tmpfs where possible (root), else a directory without write permission."""
    run = tmp_path / "ro"
    run.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(run)], capture_output=True)
    if mounted.returncode != 0:
        run.chmod(0o555)
    try:
        with pytest.raises(OSError) as caught:
            make_trainer(run / "run", "steps=1")
        message = describe_os_error(caught.value)
        assert message.startswith(str(run))
        expected = "the file system is read-only (EROFS)" if mounted.returncode == 0 else "permission denied"
        assert expected in message
    finally:
        if mounted.returncode == 0:
            subprocess.run(["umount", str(run)], check=True)
        else:
            run.chmod(0o755)


def test_describe_os_error_plain_words():
    assert describe_os_error(OSError(errno.EROFS, "Read-only file system", "/data/run")) == (
        "/data/run: the file system is read-only (EROFS); choose a writable output directory"
    )


def test_written_files_follow_the_umask(tmp_path):
    old = os.umask(0o002)
    try:
        run = tmp_path / "run"
        make_trainer(run, "steps=1").fit()
        export_weights(latest_checkpoint(run / "checkpoints"), run / "model.safetensors")
    finally:
        os.umask(old)
    modes = {p.relative_to(run): p.stat().st_mode & 0o777 for p in run.rglob("*") if p.is_file()}
    assert modes and all(mode == 0o664 for mode in modes.values()), modes
    assert json.loads((run / "checkpoints" / "step_000000001" / "trainer_state.json").read_text())["step"] == 1
