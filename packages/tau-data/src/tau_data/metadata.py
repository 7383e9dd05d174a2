"""LeRobot dataset metadata (v2.1 and v3.0): info.json, episodes, tasks and stats, read from a local root or the hub."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
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


def _read_json(path: Path, dataset: str, expected: type = dict) -> Any:
    if not path.is_file():
        raise DatasetError("missing metadata file", dataset=dataset, file=path, field=path.name)
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetError(f"invalid JSON ({err}); expected a JSON {expected.__name__}", dataset=dataset,
                           file=path) from err
    if not isinstance(value, expected):
        raise DatasetError(f"holds a JSON {type(value).__name__}; expected a JSON {expected.__name__}",
                           dataset=dataset, file=path)
    return value


def _read_jsonl(path: Path, dataset: str, required: tuple[str, ...]) -> list[dict[str, Any]]:
    """The rows of a JSON-lines file; each must be an object with the `required` keys."""
    if not path.is_file():
        raise DatasetError("missing metadata file", dataset=dataset, file=path, field=path.name)
    rows = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DatasetError(f"invalid JSON on line {lineno} ({err})", dataset=dataset, file=path) from err
            missing = [k for k in required if not isinstance(row, dict) or k not in row]
            if missing:
                raise DatasetError(f"line {lineno} lacks {missing[0]!r}; expected an object with keys "
                                   f"{list(required)}", dataset=dataset, file=path, field=missing[0])
            rows.append(row)
    return rows


def _unreadable_parquet(err: Exception, path: Path, dataset: str) -> DatasetError:
    return DatasetError(f"unreadable parquet file ({type(err).__name__}: {err}); expected a complete parquet file: "
                        f"re-download or rewrite it", dataset=dataset, file=path)


def read_parquet(path: Path, dataset: str, columns_filter: Callable[[str], bool] | None = None) -> pa.Table:
    """A parquet file (the columns `columns_filter` keeps) as a table; a truncated or corrupt file is a DatasetError
    naming it."""
    try:
        columns = None if columns_filter is None else [c for c in pq.read_schema(path).names if columns_filter(c)]
        return pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as err:
        raise _unreadable_parquet(err, path, dataset) from err


def _read_parquet_rows(path: Path, dataset: str, required: tuple[str, ...],
                       columns_filter: Callable[[str], bool] | None = None) -> list[dict[str, Any]]:
    if not path.is_file():
        raise DatasetError("missing metadata file", dataset=dataset, file=path, field=path.name)
    table = read_parquet(path, dataset, columns_filter)
    missing = [k for k in required if k not in table.column_names]
    if missing:
        raise DatasetError(f"column {missing[0]!r} is missing; expected columns {list(required)}", dataset=dataset,
                           file=path, field=missing[0])
    return table.to_pylist()


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
    """Read the metadata of a LeRobot v2.1 or v3.0 dataset stored at `root`, checked for consistency: features
    well formed, episode indices 0..N-1, and info.json's totals equal to what the episode and task tables hold."""
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
    try:
        fps = float(info["fps"])
    except (TypeError, ValueError):
        fps = math.nan
    if not (fps > 0 and math.isfinite(fps)):
        raise DatasetError(f"fps must be positive, got {info['fps']!r}", dataset=name, file=info_path, field="fps")
    features = info["features"]
    _check_features(features, name, info_path)
    video_keys = [k for k, f in features.items() if f.get("dtype") == "video"]
    if video_keys and not info.get("video_path"):
        raise DatasetError("video features but no video_path template", dataset=name, file=info_path,
                           field="video_path")
    loader = _load_v30 if version == "v3.0" else _load_v21
    tasks, episodes, episodes_file = loader(root, name, info, video_keys)
    _check_episode_indices(episodes, name, episodes_file)
    counts = {"total_episodes": (len(episodes), episodes_file), "total_frames": (sum(e.length for e in episodes),
              episodes_file), "total_tasks": (len(tasks), root / "meta" / ("tasks.parquet" if version == "v3.0"
                                                                             else "tasks.jsonl"))}
    for key, (actual, source) in counts.items():
        if key in info and info[key] != actual:
            raise DatasetError(f"info.json says {key}={info[key]!r} but {source.relative_to(root)} holds {actual}; "
                               f"expected them to agree: fix info.json", dataset=name, file=info_path, field=key)
    stats_path = root / "meta" / "stats.json"
    stats = parse_stats(_read_json(stats_path, name), dataset=name, file=stats_path) if stats_path.is_file() else None
    return DatasetMeta(root=root, name=name, version=version, fps=fps, robot_type=info.get("robot_type"),
                       features=features, tasks=tasks, episodes=episodes, stats=stats)


def check_data_files(meta: DatasetMeta) -> None:
    """Cheap check of the data files without reading them: each parquet footer is readable and its row count equals
    the summed lengths of the episodes the episode metadata places in that file."""
    expected: dict[Path, int] = {}
    for ep in meta.episodes:
        expected[ep.data_path] = expected.get(ep.data_path, 0) + ep.length
    for path, rows in expected.items():
        if not path.is_file():
            raise DatasetError("missing data file", dataset=meta.name, file=path, field="data_path")
        try:
            found = pq.read_metadata(path).num_rows
        except (pa.ArrowException, OSError) as err:
            raise _unreadable_parquet(err, path, meta.name) from err
        if found != rows:
            raise DatasetError(f"the data file has {found} rows but the episode metadata puts {rows} frames in it; "
                               f"expected them to agree", dataset=meta.name, file=path, field="length")


def _check_features(features: Any, name: str, info_path: Path) -> None:
    """Every feature of info.json is a mapping with a dtype and a shape of non-negative integers."""
    if not isinstance(features, dict):
        raise DatasetError(f"features is a {type(features).__name__}; expected a mapping of feature name to its "
                           f"dtype and shape", dataset=name, file=info_path, field="features")
    for key, feat in features.items():
        shape = feat.get("shape") if isinstance(feat, dict) else None
        if not isinstance(feat, dict) or not isinstance(feat.get("dtype"), str):
            raise DatasetError("feature has no dtype; expected a mapping with 'dtype' and 'shape'", dataset=name,
                               file=info_path, field=key)
        if not isinstance(shape, (list, tuple)) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise DatasetError(f"feature shape is {shape!r}; expected a list of non-negative integers",
                               dataset=name, file=info_path, field=key)


def _check_episode_indices(episodes: list[Episode], name: str, file: Path) -> None:
    """Episodes (sorted by index) are numbered 0..N-1 without gaps or repeats, and none is empty."""
    for pos, ep in enumerate(episodes):
        if ep.index != pos:
            problem = f"episode {ep.index} is listed twice" if ep.index < pos else f"episode {pos} is missing"
            raise DatasetError(f"{problem}; expected episode indices 0..{len(episodes) - 1} without gaps",
                               dataset=name, file=file, field="episode_index")
        if ep.length < 1:
            raise DatasetError(f"episode {ep.index} has length {ep.length}; expected at least one frame",
                               dataset=name, file=file, field="length")


def _format_path(template: str, name: str, info_path: Path, field: str, **values: Any) -> str:
    try:
        return template.format(**values)
    except (KeyError, IndexError, ValueError) as err:
        raise DatasetError(f"path template {template!r} does not format with {sorted(values)} ({err})",
                           dataset=name, file=info_path, field=field) from err


_V30_EPISODE_COLUMNS = ("episode_index", "length", "data/chunk_index", "data/file_index", "dataset_from_index",
                        "dataset_to_index")


def _load_v30(root: Path, name: str, info: dict,
              video_keys: list[str]) -> tuple[dict[int, str], list[Episode], Path]:
    info_path = root / "meta" / "info.json"
    tasks_path = root / "meta" / "tasks.parquet"
    tasks = {int(r["task_index"]): str(r["task"]) for r in _read_parquet_rows(tasks_path, name, ("task_index", "task"))}
    ep_files = sorted((root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
    if not ep_files:
        raise DatasetError("no episode metadata files", dataset=name, file=root / "meta" / "episodes",
                           field="episodes")
    required = _V30_EPISODE_COLUMNS + tuple(f"videos/{k}/{c}" for k in video_keys
                                            for c in ("chunk_index", "file_index", "from_timestamp"))
    rows = [(row, path) for path in ep_files
            for row in _read_parquet_rows(path, name, required, lambda c: not c.startswith("stats/"))]
    episodes = []
    for row, path in sorted(rows, key=lambda r: r[0]["episode_index"]):
        if row["dataset_to_index"] - row["dataset_from_index"] != row["length"]:
            raise DatasetError(f"episode {row['episode_index']} spans rows {row['dataset_from_index']}.."
                               f"{row['dataset_to_index']} but has length {row['length']}; expected "
                               f"dataset_to_index - dataset_from_index = length", dataset=name, file=path,
                               field="length")
        data_path = root / _format_path(info["data_path"], name, info_path, "data_path",
                                        chunk_index=row["data/chunk_index"], file_index=row["data/file_index"])
        videos = {key: VideoSegment(root / _format_path(info["video_path"], name, info_path, "video_path",
                                                        video_key=key, chunk_index=row[f"videos/{key}/chunk_index"],
                                                        file_index=row[f"videos/{key}/file_index"]),
                                    float(row[f"videos/{key}/from_timestamp"]))
                  for key in video_keys}
        known = {"episode_index", "tasks", "length", "dataset_from_index", "dataset_to_index"}
        extra = {k: v for k, v in row.items() if k not in known and "/" not in k}
        episodes.append(Episode(index=int(row["episode_index"]), length=int(row["length"]),
                                tasks=tuple(row.get("tasks") or ()), from_index=int(row["dataset_from_index"]),
                                data_path=data_path, videos=videos, extra=extra))
    return tasks, episodes, ep_files[0] if len(ep_files) == 1 else root / "meta" / "episodes"


def _load_v21(root: Path, name: str, info: dict,
              video_keys: list[str]) -> tuple[dict[int, str], list[Episode], Path]:
    info_path = root / "meta" / "info.json"
    rows = _read_jsonl(root / "meta" / "tasks.jsonl", name, ("task_index", "task"))
    tasks = {int(r["task_index"]): str(r["task"]) for r in rows}
    episodes_file = root / "meta" / "episodes.jsonl"
    rows = sorted(_read_jsonl(episodes_file, name, ("episode_index", "length")), key=lambda r: r["episode_index"])
    chunks_size = int(info.get("chunks_size", 1000))
    episodes, start = [], 0
    for row in rows:
        ep = int(row["episode_index"])
        chunk = ep // chunks_size
        data_path = root / _format_path(info["data_path"], name, info_path, "data_path", episode_chunk=chunk,
                                        episode_index=ep)
        videos = {key: VideoSegment(root / _format_path(info["video_path"], name, info_path, "video_path",
                                                        episode_chunk=chunk, video_key=key, episode_index=ep), 0.0)
                  for key in video_keys}
        extra = {k: v for k, v in row.items() if k not in ("episode_index", "tasks", "length")}
        episodes.append(Episode(index=ep, length=int(row["length"]), tasks=tuple(row.get("tasks") or ()),
                                from_index=start, data_path=data_path, videos=videos, extra=extra))
        start += int(row["length"])
    return tasks, episodes, episodes_file
