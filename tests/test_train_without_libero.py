"""apps/train is built without tau-sim[libero] (it only reads LIBERO datasets): demos of a LIBERO suite then fail
with the one-line error naming the extra, not an ImportError traceback."""

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from train_app.cli import main as train_main


def test_libero_demos_without_the_extra_are_a_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for name in ("libero", "robosuite", "mujoco"):
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed: find_spec gives None, import raises
    overrides = ["demos.suite=libero_object", "demos.episodes_per_task=1", f"data.datasets[0].path={tmp_path / 'demos'}",
                 f"train.output_dir={tmp_path / 'run'}"]
    result = CliRunner().invoke(train_main, overrides)
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: LIBERO tasks need tau-sim's optional extra: pip install tau-sim[libero]")
    assert result.output.count("\n") == 1 and not (tmp_path / "demos").exists()
