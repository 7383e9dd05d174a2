"""LeRobot dataset metadata (v2.1 and v3.0): info.json, episodes, tasks and stats, read from a local root or the hub."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from tau_data.errors import DatasetError

SUPPORTED_VERSIONS = ("v2.1", "v3.0")
# Columns every LeRobot frame table carries besides the user features.
INDEX_COLUMNS = ("timestamp", "frame_index", "episode_index", "index", "task_index")


@dataclass(frozen=True)
class VideoSegment:
    """Where one episode of one camera lives: an mp4 file and the time its first frame is shown at."""

    path: Path
    from_timestamp: float


@dataclass(frozen=True)
class Episode:
    """One episode: its rows in the global frame index and its files."""

    index: int
    length: int
    tasks: tuple[str, ...]
    from_index: int
    data_path: Path
    videos: dict[str, VideoSegment] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class DatasetMeta:
    """Everything about a dataset except its frames."""

    root: Path
    name: str
    version: str
    fps: float
    robot_type: str | None
    features: dict[str, dict[str, Any]]
    tasks: dict[int, str]
    episodes: list[Episode]
    stats: dict[str, dict[str, np.ndarray]] | None

    @property
    def video_keys(self) -> list[str]:
        return [k for k, f in self.features.items() if f.get("dtype") == "video"]

    @property
    def image_keys(self) -> list[str]:
        return [k for k, f in self.features.items() if f.get("dtype") == "image"]

    @property
    def camera_keys(self) -> list[str]:
        return [k for k, f in self.features.items() if f.get("dtype") in ("video", "image")]

    @property
    def total_frames(self) -> int:
        return sum(e.length for e in self.episodes)

    def feature_shape(self, key: str) -> tuple[int, ...]:
        """Shape of a feature; for cameras (H, W, C) taken from the video info when present (shape may be CHW)."""
        feat = self.features[key]
        info = feat.get("info") or {}
        if feat.get("dtype") == "video" and "video.height" in info:
            return int(info["video.height"]), int(info["video.width"]), int(info.get("video.channels", 3))
        return tuple(int(s) for s in feat["shape"])


def _read_json(path: Path, dataset: str) -> Any:
    if not path.is_file():
        raise DatasetError("missing metadata file", dataset=dataset, file=path, field=path.name)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DatasetError(f"invalid JSON ({err})", dataset=dataset, file=path) from err


def _read_jsonl(path: Path, dataset: str) -> list[dict[str, Any]]:
    if not path.is_file():
        raise DatasetError("missing metadata file", dataset=dataset, file=path, field=path.name)
    rows = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DatasetError(f"invalid JSON on line {lineno} ({err})", dataset=dataset, file=path) from err
    return rows


def _read_parquet_rows(paths: list[Path], dataset: str, columns_filter=None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for path in paths:
        if not path.is_file():
            raise DatasetError("missing metadata file", dataset=dataset, file=path, field=path.name)
        schema = pq.read_schema(path)
        cols = [c for c in schema.names if columns_filter is None or columns_filter(c)]
        rows.extend(pq.read_table(path, columns=cols).to_pylist())
    return rows


def parse_stats(raw: dict[str, Any], *, dataset: str, file: Path) -> dict[str, dict[str, np.ndarray]]:
    """Turn a stats.json mapping into float64 arrays, refusing NaN or infinite values."""
    stats: dict[str, dict[str, np.ndarray]] = {}
    for feat, entries in raw.items():
        if not isinstance(entries, dict):
            raise DatasetError("stats entry is not a mapping", dataset=dataset, file=file, field=feat)
        stats[feat] = {}
        for name, value in entries.items():
            try:
                arr = np.asarray(value, dtype=np.float64)
            except (TypeError, ValueError) as err:
                raise DatasetError(f"stats value is not numeric ({err})", dataset=dataset, file=file,
                                   field=f"{feat}.{name}") from err
            if not np.all(np.isfinite(arr)):
                raise DatasetError("NaN or infinite value in stats", dataset=dataset, file=file,
                                   field=f"{feat}.{name}")
            stats[feat][name] = arr
    return stats


def resolve_root(repo_id_or_root: str | Path, root: str | Path | None = None, revision: str | None = None) -> Path:
    """A local dataset directory: `root`, or the argument itself when it is a path, else a hub snapshot."""
    if root is not None:
        return Path(root)
    path = Path(repo_id_or_root)
    text = str(repo_id_or_root)
    if path.exists() or isinstance(repo_id_or_root, Path) or text.startswith((".", "/", "~")) or text.count("/") != 1:
        if not path.is_dir():
            raise DatasetError("dataset folder does not exist", dataset=text, file=path)
        return path
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(text, repo_type="dataset", revision=revision))
    except Exception as err:  # offline, unknown repo, auth: all end here with the hub's own reason
        raise DatasetError(f"could not fetch dataset {text!r} from the Hugging Face hub "
                           f"({type(err).__name__}: {err})", dataset=text) from err


def load_meta(root: str | Path, name: str | None = None) -> DatasetMeta:
    """Read the metadata of a LeRobot v2.1 or v3.0 dataset stored at `root`."""
    root = Path(root)
    name = name or root.name
    info_path = root / "meta" / "info.json"
    info = _read_json(info_path, name)
    version = info.get("codebase_version")
    if version not in SUPPORTED_VERSIONS:
        raise DatasetError(f"unknown codebase version {version!r}, expected one of {SUPPORTED_VERSIONS}",
                           dataset=name, file=info_path, field="codebase_version")
    for key in ("fps", "features", "data_path"):
        if key not in info:
            raise DatasetError("required key missing", dataset=name, file=info_path, field=key)
    fps = float(info["fps"])
    if not (fps > 0 and math.isfinite(fps)):
        raise DatasetError(f"fps must be positive, got {info['fps']!r}", dataset=name, file=info_path, field="fps")
    features = info["features"]
    video_keys = [k for k, f in features.items() if f.get("dtype") == "video"]
    if video_keys and not info.get("video_path"):
        raise DatasetError("video features but no video_path template", dataset=name, file=info_path,
                           field="video_path")
    loader = _load_v30 if version == "v3.0" else _load_v21
    tasks, episodes = loader(root, name, info, video_keys)
    stats_path = root / "meta" / "stats.json"
    stats = parse_stats(_read_json(stats_path, name), dataset=name, file=stats_path) if stats_path.is_file() else None
    return DatasetMeta(root=root, name=name, version=version, fps=fps, robot_type=info.get("robot_type"),
                       features=features, tasks=tasks, episodes=episodes, stats=stats)


def _load_v30(root: Path, name: str, info: dict, video_keys: list[str]) -> tuple[dict[int, str], list[Episode]]:
    tasks_path = root / "meta" / "tasks.parquet"
    tasks = {int(r["task_index"]): str(r["task"]) for r in _read_parquet_rows([tasks_path], name)}
    ep_files = sorted((root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
    if not ep_files:
        raise DatasetError("no episode metadata files", dataset=name, file=root / "meta" / "episodes",
                           field="episodes")
    rows = _read_parquet_rows(ep_files, name, lambda c: not c.startswith("stats/"))
    episodes = []
    for row in sorted(rows, key=lambda r: r["episode_index"]):
        data_path = root / info["data_path"].format(chunk_index=row["data/chunk_index"],
                                                   file_index=row["data/file_index"])
        videos = {}
        for key in video_keys:
            try:
                rel = info["video_path"].format(video_key=key, chunk_index=row[f"videos/{key}/chunk_index"],
                                                file_index=row[f"videos/{key}/file_index"])
                videos[key] = VideoSegment(root / rel, float(row[f"videos/{key}/from_timestamp"]))
            except KeyError as err:
                raise DatasetError("episode metadata lacks the video columns of a video feature", dataset=name,
                                   file=ep_files[0], field=f"videos/{key}/{err.args[0]}") from err
        known = {"episode_index", "tasks", "length", "dataset_from_index", "dataset_to_index"}
        extra = {k: v for k, v in row.items() if k not in known and "/" not in k}
        episodes.append(Episode(index=int(row["episode_index"]), length=int(row["length"]),
                                tasks=tuple(row.get("tasks") or ()), from_index=int(row["dataset_from_index"]),
                                data_path=data_path, videos=videos, extra=extra))
    return tasks, episodes


def _load_v21(root: Path, name: str, info: dict, video_keys: list[str]) -> tuple[dict[int, str], list[Episode]]:
    tasks = {int(r["task_index"]): str(r["task"]) for r in _read_jsonl(root / "meta" / "tasks.jsonl", name)}
    rows = sorted(_read_jsonl(root / "meta" / "episodes.jsonl", name), key=lambda r: r["episode_index"])
    chunks_size = int(info.get("chunks_size", 1000))
    episodes, start = [], 0
    for row in rows:
        ep = int(row["episode_index"])
        chunk = ep // chunks_size
        data_path = root / info["data_path"].format(episode_chunk=chunk, episode_index=ep)
        videos = {key: VideoSegment(root / info["video_path"].format(episode_chunk=chunk, video_key=key,
                                                                     episode_index=ep), 0.0)
                  for key in video_keys}
        extra = {k: v for k, v in row.items() if k not in ("episode_index", "tasks", "length")}
        episodes.append(Episode(index=ep, length=int(row["length"]), tasks=tuple(row.get("tasks") or ()),
                                from_index=start, data_path=data_path, videos=videos, extra=extra))
        start += int(row["length"])
    return tasks, episodes
