"""tau's reader against LeRobot 0.6.1's own reading of the shared datasets (*.reference.npz)."""

from __future__ import annotations

import numpy as np
import pytest

from tau_data import LeRobotDataset

VECTOR_KEYS = ["observation.state", "action", "action_is_pad", "timestamp", "frame_index", "episode_index", "index",
               "task_index"]


def _references(root):
    refs = sorted(root.glob("*.reference.npz"))
    assert refs, f"no *.reference.npz under {root}"
    return refs


def _open(path, ref):
    """The dataset with the same action chunk the reference was made with (i / fps for i < chunk)."""
    fps = LeRobotDataset(path).fps
    return LeRobotDataset(path, delta_timestamps={"action": [i / fps for i in range(ref["action"].shape[1])]})


def test_every_reference_matches_exactly(lerobot_written):
    for ref_path in _references(lerobot_written):
        ref = np.load(ref_path)
        ds = _open(lerobot_written / ref_path.name.removesuffix(".reference.npz"), ref)
        cameras = ds.meta.camera_keys
        assert cameras and all(c in ref.files for c in cameras)
        for j, idx in enumerate(ref["indices"]):
            item = ds[int(idx)]
            for key in VECTOR_KEYS:
                np.testing.assert_array_equal(item[key].numpy(), ref[key][j], err_msg=f"{ref_path.name} {key} {idx}")
            assert item["task"] == str(ref["task"][j])
            for cam in cameras:
                diff = np.abs(item[cam].numpy().astype(np.int16) - ref[cam][j].astype(np.int16))
                assert diff.max() <= 2, f"{ref_path.name} {cam} index {idx}: max pixel diff {diff.max()}"


def test_v21_copy_reads_like_v30(lerobot_written):
    """The v2.1 copy holds the same vectors; its videos were re-encoded, so frames must only be the right ones."""
    ref = np.load(lerobot_written / "synth_2cam_96_av1.reference.npz")
    ds = _open(lerobot_written / "synth_2cam_96_av1_v21", ref)
    assert ds.meta.version == "v2.1"
    for j, idx in enumerate(ref["indices"]):
        item = ds[int(idx)]
        for key in VECTOR_KEYS:
            np.testing.assert_array_equal(item[key].numpy(), ref[key][j], err_msg=f"{key} {idx}")
        for cam in ds.meta.camera_keys:
            err = np.abs(item[cam].numpy().astype(float) - ref[cam][j]).mean()
            assert err < 3.0, f"{cam} {idx}: mean abs diff {err}"
            neighbour = int(idx) + (1 if ref["frame_index"][j] == 0 else -1)
            other = np.abs(ds[neighbour][cam].numpy().astype(float) - ref[cam][j]).mean()
            assert err < other, f"{cam} {idx}: frame closer to its neighbour than to the reference"


@pytest.mark.parametrize("name", ["synth_2cam_96_av1", "synth_2cam_96_av1_v21"])
def test_sequential_and_random_access_agree(lerobot_written, name):
    ds = LeRobotDataset(lerobot_written / name)
    forward = [ds[i]["observation.images.front"].numpy() for i in range(40, 60)]
    backward = [ds[i]["observation.images.front"].numpy() for i in reversed(range(40, 60))][::-1]
    for a, b in zip(forward, backward):
        np.testing.assert_array_equal(a, b)
