"""record_episodes: duck-typed episodes -> LeRobot v3.0 through tau-data's writer, with caller-given extra columns."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import make_episode
from tau_data import LeRobotDataset
from tau_policy import episode_labels, record_episodes


def _extras(episode):
    length = len(episode.actions)
    return {**episode_labels(episode), "reward": np.full(length, -1.0), "phase": np.arange(length),
            "advantage": np.ones((length, 2), np.float32)}


def test_episodes_round_trip_with_their_extra_columns(tmp_path):
    episodes = [make_episode(0, ("top", "wrist"), 3, 2), make_episode(1, ("top", "wrist"), 3, 2, success=False)]
    episodes[1].intervention = None  # an episode without interventions (a scripted demo) records all False
    summary = record_episodes(episodes, tmp_path / "ds", robot_type="arm_a", extras=_extras)
    assert summary == {"episodes": 2, "frames": 12, "success_rate": 0.5, "intervened_episodes": 1,
                       "mean_length": 6.0}
    ds = LeRobotDataset(tmp_path / "ds")
    assert ds.meta.robot_type == "arm_a" and ds.meta.fps == 10
    features = ds.meta.features
    assert features["observation.images.top"]["dtype"] == "image" and features["reward"]["dtype"] == "float32"
    assert features["success"]["dtype"] == "bool" and features["phase"]["dtype"] == "int64"
    assert features["advantage"]["shape"] == [2]
    np.testing.assert_array_equal(ds.columns["observation.state"], np.concatenate([e.state for e in episodes]))
    np.testing.assert_array_equal(ds.columns["action"], np.concatenate([e.actions for e in episodes]))
    assert ds.columns["success"].reshape(-1).tolist() == [True] * 6 + [False] * 6
    assert ds.columns["intervention"].reshape(-1).tolist() == [False] * 4 + [True] * 2 + [False] * 6
    assert ds.columns["phase"].reshape(-1).tolist() == list(range(6)) * 2
    assert np.all(ds.columns["reward"] == -1.0)
    # cameras are lossless: the frames come back bit for bit
    np.testing.assert_array_equal(ds.camera_frames("observation.images.wrist", np.arange(6, 12)),
                                  episodes[1].images[:, 1])
    assert ds.meta.tasks[int(ds.columns["task_index"][0])] == "push block 0"
    table = pq.read_table(next((tmp_path / "ds" / "meta" / "episodes").rglob("*.parquet")))
    assert table.column("success").to_pylist() == [True, False] and table.column("seed").to_pylist() == [0, 1]


def test_without_extras_only_cameras_state_and_actions_are_written(tmp_path):
    record_episodes([make_episode(0, ("top",), 2, 2)], tmp_path / "ds", robot_type="arm_a")
    ds = LeRobotDataset(tmp_path / "ds")
    assert {"reward", "success", "intervention"}.isdisjoint(ds.meta.features)


def test_bad_episodes_are_named(tmp_path):
    with pytest.raises(ValueError, match="no episodes to write"):
        record_episodes([], tmp_path / "empty", robot_type="arm_a")
    with pytest.raises(ValueError, match=r"extra column 'reward' of episode 0 .* must be \(6,\)"):
        record_episodes([make_episode(0, ("top",), 2, 2)], tmp_path / "short", robot_type="arm_a",
                        extras=lambda e: {"reward": np.zeros(5)})
    with pytest.raises(ValueError, match="extra column 'note' must be bool, integer or float"):
        record_episodes([make_episode(0, ("top",), 2, 2)], tmp_path / "text", robot_type="arm_a",
                        extras=lambda e: {"note": np.array(["x"] * 6)})
    with pytest.raises(ValueError, match="episode 1 .* has features"):
        record_episodes([make_episode(0, ("top",), 2, 2), make_episode(1, ("top",), 3, 2)], tmp_path / "mixed",
                        robot_type="arm_a")
