"""Broken datasets, one thing broken per case: each raises one one-line DatasetError naming the file (and field) and
what was expected, and neither the broken copy nor its source changes."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from tau_data import (DatasetError, DatasetSpec, LeRobotDataset, MixtureConfig, MixtureDataset, info, make_loader,
                      write_dataset_stats)

DATA = "data/chunk-000/file-000.parquet"
EPISODES = "meta/episodes/chunk-000/file-000.parquet"
FRONT = "videos/observation.images.front/chunk-000/file-000.mp4"
V21_DATA = "data/chunk-000/episode_000002.parquet"
V21_FRONT = "videos/chunk-000/observation.images.front/episode_000003.mp4"


def _tree(root: Path) -> dict[str, str]:
    """Every file under `root` with the hash of its bytes."""
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file()}


def _truncate(rel: str) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        path = root / rel
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return apply


def _garbage(rel: str) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        path = root / rel
        path.write_bytes(np.random.default_rng(0).integers(0, 256, path.stat().st_size, dtype=np.uint8).tobytes())
    return apply


def _info(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        path = root / "meta" / "info.json"
        data = json.loads(path.read_text())
        edit(data)
        path.write_text(json.dumps(data))
    return apply


def _table(rel: str, edit: Callable[[pa.Table], pa.Table]) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        pq.write_table(edit(pq.read_table(root / rel)), root / rel)
    return apply


def _set(column: str, change: Callable[[np.ndarray], None]) -> Callable[[pa.Table], pa.Table]:
    """Edit a scalar column's values with numpy."""
    def edit(table: pa.Table) -> pa.Table:
        values = table.column(column).to_numpy().copy()
        change(values)
        return table.set_column(table.column_names.index(column), column, pa.array(values))
    return edit


def _nan_state(table: pa.Table) -> pa.Table:
    col = table.column("observation.state").combine_chunks()
    values = col.flatten().to_numpy().copy().reshape(len(col), -1)
    values[33, 2] = np.nan  # episode 1, frame 3
    new = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])
    return table.set_column(table.column_names.index("observation.state"), "observation.state", new)


def _video_size(key: str, height: int, width: int) -> Callable[[dict], None]:
    def edit(data: dict) -> None:
        feat = data["features"][key]
        feat["shape"] = [height, width, 3]
        feat["info"].update({"video.height": height, "video.width": width})
    return edit


def _write_text(rel: str, text: str) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        (root / rel).write_text(text)
    return apply


def _drop_key_v21(root: Path) -> None:
    path = root / "meta" / "episodes.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    del rows[1]["length"]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@dataclass(frozen=True)
class Case:
    name: str
    source: str                         # "v30" (tau-written, conftest's robot_a) or "v21" (written by LeRobot)
    breaks: Callable[[Path], None]
    message: str                        # regex the message must match
    file: str | None                    # the file the error must name, relative to the dataset root
    field: str | None = None
    call: str = "open"                  # "open" (LeRobotDataset), "info" or "stats" (write_dataset_stats)


CASES = [
    Case("truncated data parquet", "v30", _truncate(DATA),
         r"unreadable parquet file \(ArrowInvalid: .*\); expected a complete parquet file", DATA),
    Case("truncated data parquet, seen by info", "v30", _truncate(DATA), r"unreadable parquet file \(ArrowInvalid",
         DATA, call="info"),
    Case("data file with fewer rows than the metadata, seen by info", "v30", _table(DATA, lambda t: t.slice(0, 110)),
         r"the data file has 110 rows but the episode metadata puts 115 frames in it", DATA, "length", call="info"),
    Case("truncated episodes parquet", "v30", _truncate(EPISODES),
         r"unreadable parquet file \(ArrowInvalid: .*\); expected a complete parquet file", EPISODES, call="info"),
    Case("truncated tasks parquet", "v30", _truncate("meta/tasks.parquet"), r"unreadable parquet file",
         "meta/tasks.parquet", call="stats"),
    Case("garbage video", "v30", _garbage(FRONT),
         r"cannot decode the first frame \(InvalidDataError: .*\); expected a video the decoder can read", FRONT,
         "observation.images.front"),
    Case("truncated video", "v30", _truncate(FRONT), r"cannot decode the first frame \(InvalidDataError", FRONT,
         "observation.images.front", call="info"),
    Case("video larger than declared", "v30", _info(_video_size("observation.images.front", 32, 32)),
         r"the video is 64x64 \(H x W\) but .*info.json declares 32x32 in its shape; expected them to agree", FRONT,
         "observation.images.front", call="info"),
    Case("declared codec is not the video's", "v30",
         _info(lambda d: d["features"]["observation.images.wrist"]["info"].update({"video.codec": "h264"})),
         r"the video is av1 but .*info.json declares video.codec='h264'",
         "videos/observation.images.wrist/chunk-000/file-000.mp4", "observation.images.wrist"),
    Case("wrong total_frames", "v30", _info(lambda d: d.update(total_frames=999)),
         rf"info.json says total_frames=999 but {EPISODES} holds 115; expected them to agree", "meta/info.json",
         "total_frames", call="info"),
    Case("wrong total_episodes", "v30", _info(lambda d: d.update(total_episodes=3)),
         rf"info.json says total_episodes=3 but {EPISODES} holds 4", "meta/info.json", "total_episodes"),
    Case("wrong total_tasks", "v30", _info(lambda d: d.update(total_tasks=5)),
         r"info.json says total_tasks=5 but meta/tasks.parquet holds 2", "meta/info.json", "total_tasks"),
    Case("missing info.json", "v30", lambda root: (root / "meta" / "info.json").unlink(), r"missing metadata file",
         "meta/info.json", "info.json", call="info"),
    Case("info.json is not JSON", "v30", _write_text("meta/info.json", "{'fps': 30,"),
         r"invalid JSON \(.*\); expected a JSON dict", "meta/info.json"),
    Case("info.json is a list", "v30", _write_text("meta/info.json", "[1, 2]"),
         r"holds a JSON list; expected a JSON dict", "meta/info.json", call="info"),
    Case("unknown codebase_version", "v30", _info(lambda d: d.update(codebase_version="v2.0")),
         r"unknown codebase version 'v2.0', expected one of \('v2.1', 'v3.0'\)", "meta/info.json",
         "codebase_version", call="stats"),
    Case("feature without shape", "v30", _info(lambda d: d["features"]["action"].pop("shape")),
         r"feature shape is None; expected a list of non-negative integers", "meta/info.json", "action"),
    Case("declared column missing from the data", "v30", _table(DATA, lambda t: t.drop_columns(["action"])),
         r"feature declared in info.json is missing from the data file", DATA, "action"),
    Case("episode metadata column missing", "v30", _table(EPISODES, lambda t: t.drop_columns(["length"])),
         r"column 'length' is missing; expected columns \[", EPISODES, "length", call="info"),
    Case("NaN in state", "v30", _table(DATA, _nan_state),
         r"NaN or infinite value in episode 1 frame 3 \(1 rows in all\); expected finite numbers", DATA,
         "observation.state", call="stats"),
    Case("episode index gap", "v30", _table(EPISODES, _set("episode_index", lambda v: v.__setitem__(3, 4))),
         r"episode 3 is missing; expected episode indices 0..3 without gaps", EPISODES, "episode_index"),
    Case("episode index repeated", "v30", _table(EPISODES, _set("episode_index", lambda v: v.__setitem__(2, 1))),
         r"episode 1 is listed twice; expected episode indices 0..3", EPISODES, "episode_index", call="info"),
    Case("data rows of an unlisted episode", "v30", _table(DATA, _set("episode_index", lambda v: v.__setitem__(
         slice(95, None), 7))), r"holds rows of episode 7, which the episode metadata does not list", DATA,
         "episode_index"),
    Case("episode shorter in the data than its metadata", "v30", _table(DATA, lambda t: t.slice(0, 110)),
         r"episode 3 has 15 rows here but length 20 in the episode metadata", DATA, "episode_index"),
    Case("task_index not in the tasks", "v30", _table(DATA, _set("task_index", lambda v: v.__setitem__(40, 9))),
         r"task_index 9 is not in the dataset's tasks \(it has 2\)", DATA, "task_index", call="stats"),
    Case("v2.1 truncated data parquet", "v21", _truncate(V21_DATA), r"unreadable parquet file \(ArrowInvalid",
         V21_DATA),
    Case("v2.1 garbage video", "v21", _garbage(V21_FRONT), r"cannot decode the first frame", V21_FRONT,
         "observation.images.front", call="info"),
    Case("v2.1 video smaller than declared", "v21", _info(_video_size("observation.images.front", 128, 96)),
         r"the video is 96x96 \(H x W\) but .*declares 128x96 in its shape", "videos/chunk-000/"
         "observation.images.front/episode_000000.mp4", "observation.images.front"),
    Case("v2.1 wrong total_frames", "v21", _info(lambda d: d.update(total_frames=251)),
         r"info.json says total_frames=251 but meta/episodes.jsonl holds 250", "meta/info.json", "total_frames",
         call="info"),
    Case("v2.1 episode without length", "v21", _drop_key_v21,
         r"line 2 lacks 'length'; expected an object with keys \['episode_index', 'length'\]",
         "meta/episodes.jsonl", "length"),
]


@pytest.fixture(scope="module")
def sources(robot_a: Path, lerobot_written: Path) -> dict[str, Path]:
    return {"v30": robot_a, "v21": lerobot_written / "synth_2cam_96_av1_v21"}


def _call(how: str, root: Path) -> None:
    if how == "open":
        LeRobotDataset(root)
    elif how == "info":
        info(root)
    else:
        write_dataset_stats(root)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_broken_dataset_raises_one_clear_error(case: Case, sources: dict[str, Path], tmp_path: Path) -> None:
    source = sources[case.source]
    before = _tree(source)
    root = tmp_path / "broken"
    shutil.copytree(source, root)
    case.breaks(root)
    broken = _tree(root)
    with pytest.raises(DatasetError) as err:
        _call(case.call, root)
    text = str(err.value)
    assert "\n" not in text, text
    assert err.value.file == (str(root / case.file) if case.file else None), text
    assert err.value.field == case.field, text
    assert _tree(root) == broken, "a failed open must not write or change anything"
    assert _tree(source) == before
    assert re.search(case.message, err.value.message), text


def test_enough_cases_and_each_source_reads_cleanly(sources: dict[str, Path]) -> None:
    assert len(CASES) >= 15
    for root in sources.values():
        LeRobotDataset(root)
        info(root)


def _corrupt_after_first_frames(path: Path, keep_packets: int) -> None:
    """Overwrite every packet of the video after the first `keep_packets` with random bytes (same file size)."""
    with av.open(str(path)) as container:
        packets = [(p.pos, p.size) for p in container.demux(container.streams.video[0]) if p.size]
    start, end = packets[keep_packets][0], packets[-1][0] + packets[-1][1]
    data = bytearray(path.read_bytes())
    data[start:end] = np.random.default_rng(0).integers(0, 256, end - start, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))


def test_corrupt_frame_in_a_worker_is_one_error_naming_file_and_timestamp(robot_a: Path, tmp_path: Path) -> None:
    root = tmp_path / "corrupt"
    shutil.copytree(robot_a, root)
    _corrupt_after_first_frames(root / FRONT, keep_packets=10)
    dataset = LeRobotDataset(root)  # the first frame still decodes: the open check passes
    assert not dataset._videos._files, "the open check must close its decoders (workers open their own)"
    with pytest.raises(DatasetError, match=r"cannot decode the frame at timestamp \d+\.\d{6}s \(InvalidDataError"):
        dataset[100]
    cfg = MixtureConfig(datasets=[DatasetSpec(path=str(root), cameras=["observation.images.front"])], num_cameras=1,
                        image_size=(32, 32), max_state_dim=8, max_action_dim=8, chunk_size=4)
    loader = make_loader(MixtureDataset(cfg), batch_size=4, num_workers=1, seed=0, samples_per_epoch=64)
    with pytest.raises(DatasetError) as err:
        list(loader)
    text = str(err.value)
    assert "\n" not in text and "Traceback" not in text and "DataLoader worker" not in text, text
    assert err.value.message.startswith("cannot decode the frame at timestamp "), text
    assert err.value.file == str(root / FRONT) and err.value.field == "observation.images.front"
    assert err.value.dataset == "corrupt"
    del err  # frees the loader now (its worker exits at once) rather than at a later garbage collection


class _ThreadsAndDecoders(torch.utils.data.Dataset):
    """Reports, per item, the torch thread count and how many decoders the member dataset holds in that process."""

    def __init__(self, member: LeRobotDataset) -> None:
        self.member = member
        self.lengths, self.weights = np.array([len(member)]), np.array([1.0])

    def __len__(self) -> int:
        return len(self.member)

    def __getitem__(self, key) -> dict:
        self.member.camera_frames("observation.images.front", np.array([key[1]]))
        return {"threads": torch.get_num_threads(), "decoders": len(self.member._videos._files), "pid": os.getpid()}


def test_workers_use_one_thread_and_open_their_own_decoders(robot_a: Path) -> None:
    member = LeRobotDataset(robot_a)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        batches = list(make_loader(_ThreadsAndDecoders(member), batch_size=2, num_workers=1, samples_per_epoch=4))
    finally:
        torch.set_num_threads(threads)
    assert [b["threads"].tolist() for b in batches] == [[1, 1], [1, 1]]
    assert [b["decoders"].tolist() for b in batches] == [[1, 1], [1, 1]]
    assert batches[0]["pid"][0] != os.getpid() and not member._videos._files
