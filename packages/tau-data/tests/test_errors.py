"""Malformed datasets and configs raise one DatasetError naming dataset, file and field."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tau_data import DatasetError, DatasetSpec, LeRobotDataset, MixtureConfig, MixtureDataset, Normalizer


@pytest.fixture
def copy_a(robot_a, tmp_path) -> Path:
    dst = tmp_path / "broken"
    shutil.copytree(robot_a, dst)
    return dst


def _edit_info(root: Path, edit) -> None:
    path = root / "meta" / "info.json"
    info = json.loads(path.read_text())
    edit(info)
    path.write_text(json.dumps(info))


def _rewrite_data(root: Path, column: str, values) -> Path:
    path = root / "data" / "chunk-000" / "file-000.parquet"
    table = pq.read_table(path)
    table = table.set_column(table.column_names.index(column), column, values)
    pq.write_table(table, path)
    return path


def test_missing_info(copy_a):
    (copy_a / "meta" / "info.json").unlink()
    with pytest.raises(DatasetError, match="missing metadata file") as err:
        LeRobotDataset(copy_a)
    assert err.value.dataset and err.value.file.endswith("info.json") and err.value.field == "info.json"


def test_missing_data_file(copy_a):
    path = copy_a / "data" / "chunk-000" / "file-000.parquet"
    path.unlink()
    with pytest.raises(DatasetError, match="missing data file") as err:
        LeRobotDataset(copy_a)
    assert err.value.file == str(path) and err.value.field == "data_path"


def test_missing_video_file(copy_a):
    path = copy_a / "videos" / "observation.images.wrist" / "chunk-000" / "file-000.mp4"
    path.unlink()
    with pytest.raises(DatasetError, match="missing video file") as err:
        LeRobotDataset(copy_a)
    assert err.value.file == str(path) and err.value.field == "observation.images.wrist"


def test_unknown_codebase_version(copy_a):
    _edit_info(copy_a, lambda info: info.update(codebase_version="v9.9"))
    with pytest.raises(DatasetError, match="unknown codebase version 'v9.9'") as err:
        LeRobotDataset(copy_a)
    assert err.value.field == "codebase_version" and err.value.file.endswith("info.json")


def test_feature_shape_disagrees_with_data(copy_a):
    _edit_info(copy_a, lambda info: info["features"]["observation.state"].update(shape=[9]))
    with pytest.raises(DatasetError, match=r"per-frame shape \(8,\), info.json declares \(9,\)") as err:
        LeRobotDataset(copy_a, name="robot_a_copy")
    assert err.value.field == "observation.state" and err.value.dataset == "robot_a_copy"
    assert err.value.file.endswith("file-000.parquet")


def test_timestamps_off_the_fps_grid(copy_a):
    ts = np.arange(115, dtype=np.float32)
    ts[:30] = np.arange(30) / 30
    ts[30:] = 0
    ts[10] += 0.01
    path = _rewrite_data(copy_a, "timestamp", pa.array(ts))
    with pytest.raises(DatasetError, match="episode 0 frame 10.*off the") as err:
        LeRobotDataset(copy_a)
    assert err.value.file == str(path) and err.value.field == "timestamp"


def test_delta_timestamps_off_grid(robot_a):
    with pytest.raises(DatasetError, match="not a multiple of 1/fps") as err:
        LeRobotDataset(robot_a, delta_timestamps={"action": [0.0, 0.05]})
    assert err.value.field == "delta_timestamps['action']"


def test_nan_in_stats(copy_a):
    path = copy_a / "meta" / "stats.json"
    stats = json.loads(path.read_text())
    stats["action"]["std"][2] = float("nan")
    path.write_text(json.dumps(stats))
    with pytest.raises(DatasetError, match="NaN") as err:
        LeRobotDataset(copy_a)
    assert err.value.file == str(path) and err.value.field == "action.std"


def test_nan_in_normaliser_stats():
    with pytest.raises(DatasetError, match="NaN") as err:
        Normalizer(stats={"h": {"state": {"q01": [0.0, np.nan], "q99": [1.0, 1.0]}}}, modes={"state": "QUANTILES"})
    assert err.value.field == "state.q01" and err.value.dataset == "h"


def test_mixture_mapping_names_missing_column(robot_a):
    spec = DatasetSpec(path=str(robot_a), cameras=["observation.images.front", "observation.images.side"])
    with pytest.raises(DatasetError, match="column 'observation.images.side'") as err:
        MixtureDataset(MixtureConfig(datasets=[spec], image_size=(32, 32)))
    assert err.value.field == "observation.images.side" and err.value.dataset == "robot_a"
    assert err.value.file.endswith("info.json")


def test_episode_length_disagrees_with_data(copy_a):
    path = copy_a / "meta" / "episodes" / "chunk-000" / "file-000.parquet"
    table = pq.read_table(path)
    lengths = table.column("length").to_numpy().copy()
    lengths[1] += 1
    pq.write_table(table.set_column(table.column_names.index("length"), "length", pa.array(lengths)), path)
    with pytest.raises(DatasetError, match="episode 1 spans rows 30..55 but has length 26") as err:
        LeRobotDataset(copy_a)
    assert err.value.field == "length" and err.value.file == str(path)


def test_missing_local_folder(tmp_path):
    with pytest.raises(DatasetError, match="dataset folder does not exist") as err:
        LeRobotDataset(tmp_path / "nowhere")
    assert err.value.file == str(tmp_path / "nowhere")


def test_hub_repo_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DatasetError, match="could not fetch dataset 'tau-tests/no-such-dataset'") as err:
        LeRobotDataset("tau-tests/no-such-dataset")
    assert err.value.dataset == "tau-tests/no-such-dataset"


def test_video_shape_disagrees_with_info(copy_a):
    def shrink(info):
        info["features"]["observation.images.front"]["shape"] = [32, 64, 3]
        info["features"]["observation.images.front"]["info"]["video.height"] = 32
    _edit_info(copy_a, shrink)
    with pytest.raises(DatasetError, match=r"the video is 64x64 \(H x W\) but .*info.json declares 32x64") as err:
        LeRobotDataset(copy_a)
    assert err.value.field == "observation.images.front" and err.value.file.endswith("file-000.mp4")
