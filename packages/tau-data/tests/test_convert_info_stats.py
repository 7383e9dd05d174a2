"""v2.1 -> v3.0 conversion, the info summary, and exact stats written next to a dataset."""

from __future__ import annotations

import json
import shutil

import numpy as np

from tau_data import LeRobotDataset, convert_v21_to_v30, info, read_stats, write_dataset_stats


def test_convert_v21_reads_identically(lerobot_written, tmp_path):
    src = lerobot_written / "synth_2cam_96_av1_v21"
    dst = convert_v21_to_v30(src, tmp_path / "converted")
    old = LeRobotDataset(src, delta_timestamps={"action": [i / 30 for i in range(50)]})
    new = LeRobotDataset(dst, delta_timestamps={"action": [i / 30 for i in range(50)]})
    assert new.meta.version == "v3.0" and len(new) == len(old) == 250
    assert len(list((dst / "videos" / "observation.images.front").rglob("*.mp4"))) == 1
    for idx in [0, 1, 49, 50, 83, 125, 199, 200, 248, 249]:
        a, b = old[idx], new[idx]
        for key, value in a.items():
            if key == "task":
                assert value == b[key]
            else:
                np.testing.assert_array_equal(value.numpy(), b[key].numpy(), err_msg=f"{key} {idx}")
    stats = read_stats(dst / "meta" / "stats.json")
    assert "q01" in stats["action"] and stats["observation.images.front"]["mean"].shape == (3, 1, 1)


def test_info_summary(lerobot_written):
    summary = info(lerobot_written / "synth_2cam_96_av1")
    assert summary["codebase_version"] == "v3.0" and summary["fps"] == 30 and summary["episodes"] == 5
    assert summary["frames"] == 250 and summary["tasks"] == 3 and summary["robot_type"] == "synthetic_arm"
    assert summary["features"]["observation.images.front"] == {"dtype": "video", "shape": [96, 96, 3]}
    assert summary["features"]["action"]["shape"] == [7]
    json.dumps(summary)


def test_exact_stats_next_to_dataset(lerobot_written, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(lerobot_written / "synth_2cam_96_av1", root)
    path = write_dataset_stats(root)
    assert path == root / "meta" / "tau_stats.json"
    stats = read_stats(path)
    action = LeRobotDataset(root).columns["action"].astype(np.float64)
    np.testing.assert_allclose(stats["action"]["q99"], np.quantile(action, 0.99, axis=0))
    np.testing.assert_allclose(stats["action"]["std"], action.std(0))
    lerobot = read_stats(root / "meta" / "stats.json")  # LeRobot's own file is left as it was
    np.testing.assert_allclose(lerobot["action"]["mean"], stats["action"]["mean"], rtol=1e-5)
