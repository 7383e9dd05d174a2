"""tau's LeRobot v3.0 writer: read-back, stats, atomic finalisation and input checks."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import subprocess_env

from tau_data import DatasetError, DatasetWriter, LeRobotDataset, dataset_stats, load_meta, read_stats


def _frames(root: Path, key: str) -> list[np.ndarray]:
    """The frames write_synthetic put into `root` for camera `key`, rebuilt from the episode/frame indices."""
    ds = LeRobotDataset(root)
    h, w, _ = ds.meta.feature_shape(key)
    out = []
    for ep, t in zip(ds.columns["episode_index"], ds.columns["frame_index"]):
        img = np.full((h, w, 3), 40 + 3 * ep, dtype=np.uint8)
        img[:, (t * 2) % w: (t * 2) % w + 6] = (220, 60 + 5 * ep, 120)
        out.append(img)
    return out


def test_written_dataset_reads_back(robot_a):
    ds = LeRobotDataset(robot_a, delta_timestamps={"action": [i / 30 for i in range(10)]})
    meta = ds.meta
    assert meta.version == "v3.0" and meta.fps == 30 and meta.robot_type == "arm_a"
    assert [e.length for e in meta.episodes] == [30, 25, 40, 20] and len(ds) == 115
    assert [e.extra["outcome"] for e in meta.episodes] == ["ep0", "ep1", "ep2", "ep3"]
    assert meta.tasks == {0: "arm_a task 0", 1: "arm_a task 1"}
    t = np.arange(30)
    expected_state0 = np.sin(np.arange(8)[None] + 0.1 * t[:, None])
    np.testing.assert_allclose(ds.columns["observation.state"][:30], expected_state0, atol=0.05)
    np.testing.assert_array_equal(ds.columns["index"], np.arange(115))
    assert ds.columns["reward"].sum() == 4 and ds.columns["success"].dtype == bool
    item = ds[28]
    np.testing.assert_array_equal(item["action_is_pad"].numpy(), np.arange(10) >= 2)
    np.testing.assert_array_equal(item["action"][2:].numpy(), np.repeat(ds.columns["action"][29:30], 8, 0))
    truth = _frames(robot_a, "observation.images.front")
    for i in [0, 29, 30, 54, 55, 100, 114]:
        got = ds[i]["observation.images.front"].numpy().transpose(1, 2, 0).astype(float)
        err = np.abs(got - truth[i]).mean()
        assert err < 4, f"frame {i}: mean abs error {err}"
        if i + 1 < len(truth):
            assert err < np.abs(got - truth[i + 1]).mean()


def test_png_images_read_back_exactly(robot_b):
    ds = LeRobotDataset(robot_b)
    truth = _frames(robot_b, "observation.images.top")
    for i in [0, 59, 60, 154]:
        np.testing.assert_array_equal(ds[i]["observation.images.top"].numpy().transpose(1, 2, 0), truth[i])


def test_written_stats_are_exact(robot_a):
    stats = read_stats(robot_a / "meta" / "stats.json")
    exact = dataset_stats(LeRobotDataset(robot_a))
    for key in ("observation.state", "action", "reward"):
        for name in ("min", "max", "mean", "std", "q01", "q50", "q99"):
            np.testing.assert_allclose(stats[key][name], exact[key][name], rtol=1e-6, atol=1e-7)
    action = LeRobotDataset(robot_a).columns["action"].astype(np.float64)
    np.testing.assert_allclose(stats["action"]["q01"], np.quantile(action, 0.01, axis=0))
    assert stats["observation.images.front"]["mean"].shape == (3, 1, 1)
    assert 0 <= stats["observation.images.front"]["min"].min() <= stats["observation.images.front"]["max"].max() <= 1


def test_data_file_keeps_lerobot_layout(robot_a):
    pf = pq.ParquetFile(robot_a / "data" / "chunk-000" / "file-000.parquet")
    assert pf.metadata.num_row_groups == 4
    assert b"huggingface" in pf.schema_arrow.metadata
    tasks = pq.read_table(robot_a / "meta" / "tasks.parquet")
    assert b"pandas" in tasks.schema.metadata and tasks.column_names == ["task_index", "task"]


def test_crash_mid_write_leaves_no_dataset(tmp_path):
    root = tmp_path / "crashy"
    script = textwrap.dedent(f"""
        import os, numpy as np
        from tau_data import DatasetWriter
        w = DatasetWriter({str(root)!r}, fps=10, features={{
            "observation.images.cam": {{"dtype": "video", "shape": (64, 64, 3)}},
            "observation.state": {{"dtype": "float32", "shape": (3,)}}, "action": {{"dtype": "float32", "shape": (2,)}}}})
        for ep in range(3):
            for t in range(12):
                w.add_frame({{"observation.images.cam": np.zeros((64, 64, 3), np.uint8),
                             "observation.state": np.zeros(3), "action": np.ones(2)}})
            w.save_episode(task="t")
        print("saved", flush=True)
        os.kill(os.getpid(), {int(signal.SIGKILL)})
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=subprocess_env())
    assert "saved" in proc.stdout, proc.stderr
    assert proc.returncode == -signal.SIGKILL
    assert not root.exists() and (tmp_path / "crashy.partial").exists()
    with pytest.raises(DatasetError, match="missing metadata file"):
        load_meta(root)
    writer = DatasetWriter(root, fps=10, features={"action": {"dtype": "float32", "shape": (2,)}})
    writer.add_frame({"action": [1.0, 2.0]})
    writer.save_episode(task="again")
    writer.finalize()
    assert not (tmp_path / "crashy.partial").exists() and len(LeRobotDataset(root)) == 1


def test_writer_rejects_bad_frames(tmp_path):
    writer = DatasetWriter(tmp_path / "w", fps=10, features={
        "observation.images.cam": {"dtype": "video", "shape": (64, 64, 3)},
        "action": {"dtype": "float32", "shape": (2,)}})
    with pytest.raises(DatasetError, match="missing") as err:
        writer.add_frame({"action": [0.0, 0.0]})
    assert err.value.field == "observation.images.cam"
    with pytest.raises(DatasetError, match="uint8"):
        writer.add_frame({"observation.images.cam": np.zeros((64, 64, 3), np.float32), "action": [0.0, 0.0]})
    with pytest.raises(DatasetError, match="does not fit") as err:
        writer.add_frame({"observation.images.cam": np.zeros((64, 64, 3), np.uint8), "action": [0.0, 0.0, 1.0]})
    assert err.value.field == "action"
    with pytest.raises(DatasetError, match="no frames"):
        writer.save_episode(task="t")
    writer.add_frame({"observation.images.cam": np.zeros((64, 64, 3), np.uint8), "action": [0.0, 0.0]})
    with pytest.raises(DatasetError, match="clash") as err:
        writer.save_episode(task="t", length=3)
    assert err.value.field == "length"
    assert writer.save_episode(task="t", success=True) == 0  # the frame is still buffered after the refusal
    writer.abort()
    assert not (tmp_path / "w").exists() and not (tmp_path / "w.partial").exists()
    with pytest.raises(DatasetError, match="already exists"):
        DatasetWriter(tmp_path, fps=10, features={})


def test_context_manager_aborts_on_error(tmp_path):
    with pytest.raises(RuntimeError, match="rollout failed"):
        with DatasetWriter(tmp_path / "ctx", fps=10, features={"action": {"dtype": "float32", "shape": (2,)}}) as w:
            w.add_frame({"action": [1.0, 2.0]})
            w.save_episode(task="t")
            raise RuntimeError("rollout failed")
    assert not (tmp_path / "ctx").exists() and not (tmp_path / "ctx.partial").exists()
    with DatasetWriter(tmp_path / "ctx", fps=10, features={"action": {"dtype": "float32", "shape": (2,)}}) as w:
        w.add_frame({"action": [1.0, 2.0]})
        w.save_episode(task="t")
    assert len(LeRobotDataset(tmp_path / "ctx")) == 1


def test_lossless_video_reads_back_identically(tmp_path):
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(12)]
    states = rng.normal(size=(12, 4)).astype(np.float32)
    writer = DatasetWriter(tmp_path / "lossless", fps=15, vcodec="libx264rgb", crf=0, pix_fmt="rgb24", features={
        "observation.images.cam": {"dtype": "video", "shape": (48, 64, 3)},
        "observation.state": {"dtype": "float32", "shape": (4,)}})
    for i in range(12):
        writer.add_frame({"observation.images.cam": frames[i], "observation.state": states[i]})
        if i in (4, 11):
            writer.save_episode(task=f"part {i}")
    ds = LeRobotDataset(writer.finalize())
    assert [e.length for e in ds.meta.episodes] == [5, 7]
    for i in [0, 4, 5, 11, 7, 2]:
        item = ds[i]
        np.testing.assert_array_equal(item["observation.images.cam"].numpy().transpose(1, 2, 0), frames[i])
        np.testing.assert_array_equal(item["observation.state"].numpy(), states[i])


def test_h264_long_gop_any_access_order(tmp_path):
    """h264 with B-frames and a 30-frame GOP: every access order decodes the frame shown at the timestamp."""
    yy, xx = np.mgrid[0:64, 0:96]
    truth = []
    writer = DatasetWriter(tmp_path / "h264", fps=30, vcodec="libx264", gop=30,
                           features={"observation.images.c": {"dtype": "video", "shape": (64, 96, 3)}})
    for ep in range(2):
        for t in range(40):
            img = np.clip(127 + 100 * np.sin((xx + 5 * t + ep * 50) / 9.0)[..., None] * np.ones(3), 0, 255)
            truth.append(img.astype(np.uint8))
            writer.add_frame({"observation.images.c": truth[-1]})
        writer.save_episode(task="t")
    ds = LeRobotDataset(writer.finalize())
    order = list(range(80)) + list(np.random.default_rng(0).permutation(80)) + list(reversed(range(80)))
    for i in order:
        got = ds[int(i)]["observation.images.c"].numpy().transpose(1, 2, 0).astype(float)
        own = np.abs(got - truth[i]).mean()
        assert own < 4, (i, own)
        for j in (i - 1, i + 1):
            if 0 <= j < 80:
                assert own < np.abs(got - truth[j]).mean(), (i, j)


def test_layout_matches_a_lerobot_written_dataset(lerobot_written, tmp_path):
    """Same schema as LeRobot 0.6.1's own output for the same features: info.json, data and episode parquet, stats."""
    import json

    ref = lerobot_written / "synth_2cam_96_av1"
    names = {"observation.state": [f"s{i}" for i in range(8)], "action": [f"a{i}" for i in range(7)]}
    features = {k: {"dtype": "float32", "shape": (len(v),), "names": v} for k, v in names.items()}
    features.update({f"observation.images.{c}": {"dtype": "video", "shape": (96, 96, 3)} for c in ("front", "wrist")})
    writer = DatasetWriter(tmp_path / "mine", fps=30, robot_type="synthetic_arm", features=features)
    for _ in range(2):
        for _ in range(4):
            writer.add_frame({k: np.zeros(f["shape"], np.uint8 if f["dtype"] == "video" else np.float32)
                              for k, f in features.items()})
        writer.save_episode(task="x")
    mine = writer.finalize()
    info_ref, info_mine = (json.loads((r / "meta" / "info.json").read_text()) for r in (ref, mine))
    assert info_ref.keys() == info_mine.keys() and info_ref["features"] == info_mine["features"]
    data_ref, data_mine = (pq.read_schema(r / "data" / "chunk-000" / "file-000.parquet") for r in (ref, mine))
    assert data_ref.remove_metadata().equals(data_mine.remove_metadata())
    hf_ref, hf_mine = (json.loads(s.metadata[b"huggingface"])["info"] for s in (data_ref, data_mine))
    assert hf_ref == hf_mine
    ep_ref, ep_mine = (pq.read_schema(r / "meta" / "episodes" / "chunk-000" / "file-000.parquet") for r in (ref, mine))
    for name in ep_ref.names:
        if not name.startswith("stats/"):
            assert ep_mine.field(name).type == ep_ref.field(name).type, name
    tasks_ref, tasks_mine = (pq.read_schema(r / "meta" / "tasks.parquet") for r in (ref, mine))
    assert tasks_ref.remove_metadata().equals(tasks_mine.remove_metadata())
    stats_ref, stats_mine = (json.loads((r / "meta" / "stats.json").read_text()) for r in (ref, mine))
    assert {k: sorted(v) for k, v in stats_ref.items()} == {k: sorted(v) for k, v in stats_mine.items()}
