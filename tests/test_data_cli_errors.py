"""`apps/data info` and `stats` on a broken dataset print one line naming the file, not a traceback."""

import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from data_app.cli import main as data_main

SHARED_V21 = Path(os.environ.get("TAU_SHARED_DIR", "../shared")) / "datasets" / "lerobot-written" / "synth_2cam_96_av1_v21"


def _truncate(root: Path) -> Path:
    path = root / "data" / "chunk-000" / "episode_000002.parquet"
    path.write_bytes(path.read_bytes()[:100])
    return path


def _wrong_total(root: Path) -> Path:
    path = root / "meta" / "info.json"
    info = json.loads(path.read_text())
    info["total_frames"] += 1
    path.write_text(json.dumps(info))
    return path


def _garbage_video(root: Path) -> Path:
    path = root / "videos" / "chunk-000" / "observation.images.front" / "episode_000003.mp4"
    path.write_bytes(b"\x00garbage" * 100)
    return path


@pytest.mark.parametrize("command", ["info", "stats"])
@pytest.mark.parametrize("breaks", [_truncate, _wrong_total, _garbage_video])
def test_broken_dataset_is_one_line(command, breaks, tmp_path: Path) -> None:
    root = tmp_path / "broken"
    shutil.copytree(SHARED_V21, root)
    bad = breaks(root)
    result = CliRunner().invoke(data_main, [command, str(root)])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and f"file='{bad}'" in lines[0], result.output
    assert not (root / "meta" / "tau_stats.json").exists()


@pytest.mark.parametrize("value,expected", [("0.2,x", "expected comma-separated numbers"),
                                            ("0.2,-1", "stds must be finite and >= 0"),
                                            ("nan", "stds must be finite and >= 0")])
def test_generate_with_bad_execution_noise_is_refused_before_anything_runs(value, expected, tmp_path: Path) -> None:
    out = tmp_path / "demos"
    result = CliRunner().invoke(data_main, ["generate", "--output", str(out), "--execution-noise", value])
    assert result.exit_code == 2 and "--execution-noise" in result.output and expected in result.output, result.output
    assert not out.exists()
