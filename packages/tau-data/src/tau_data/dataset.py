"""Map-style reader of one LeRobot v2.1/v3.0 dataset that returns what LeRobot's own reader returns, with less CPU.

Vector columns are loaded once into contiguous numpy arrays (pyarrow, no HF datasets cache); an item gathers its
action chunk with numpy and decodes camera frames by timestamp with decoders opened lazily in the calling process.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from tau_data.errors import DatasetError
from tau_data.metadata import INDEX_COLUMNS, DatasetMeta, Episode, load_meta, read_parquet, resolve_root
from tau_data.video import VideoCache, check_video_streams

log = logging.getLogger(__name__)


def delta_indices(delta_timestamps: dict[str, list[float]], fps: float, tolerance_s: float,
                  dataset: str) -> dict[str, np.ndarray]:
    """Frame offsets for each key's relative timestamps; each must lie on the 1/fps grid within `tolerance_s`."""
    out = {}
    for key, deltas in delta_timestamps.items():
        arr = np.asarray(deltas, dtype=np.float64)
        steps = np.round(arr * fps)
        off = np.abs(arr - steps / fps)
        if np.any(off > tolerance_s):
            bad = float(arr[np.argmax(off)])
            raise DatasetError(f"delta timestamp {bad} is not a multiple of 1/fps={1 / fps:.6f} within "
                               f"{tolerance_s}s", dataset=dataset, field=f"delta_timestamps[{key!r}]")
        out[key] = steps.astype(np.int64)
    return out


def _column_to_numpy(col: pa.ChunkedArray) -> np.ndarray:
    """A numeric arrow column (scalar or fixed-size list, possibly nested) as a (rows, *shape) numpy array."""
    arr = col.combine_chunks()
    shape: list[int] = []
    while pa.types.is_fixed_size_list(arr.type):
        shape.append(arr.type.list_size)
        arr = arr.flatten()
    if pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type):
        return np.asarray(col.to_pylist())
    return arr.to_numpy(zero_copy_only=False).reshape(len(col), *shape)


class LeRobotDataset(torch.utils.data.Dataset):
    """One LeRobot dataset (v2.1 or v3.0) from a local root or a hub repo id (via huggingface_hub).

    `dataset[i]` is a dict: each feature (cameras as uint8 (3, H, W) tensors, or (T, 3, H, W) with delta timestamps),
    `<key>_is_pad` for keys in `delta_timestamps`, `timestamp`, `frame_index`, `episode_index`, `index`,
    `task_index` and `task` (str). Frames past the episode edges are clamped and flagged as LeRobot does.

    Opening checks the dataset: info.json against the episode, task and data tables, and the first decoded frame of
    every video file of the selected episodes against the declared shape and codec (decoders are then closed: each
    process, loader workers included, opens its own on first use).
    """

    def __init__(self, repo_id_or_root: str | Path, *, root: str | Path | None = None, revision: str | None = None,
                 episodes: list[int] | None = None, delta_timestamps: dict[str, list[float]] | None = None,
                 tolerance_s: float = 1e-4, name: str | None = None) -> None:
        self.name = name or str(repo_id_or_root)
        self.meta: DatasetMeta = load_meta(resolve_root(repo_id_or_root, root, revision), self.name)
        self.tolerance_s = tolerance_s
        self.episodes = self._select_episodes(episodes)
        self.delta_indices = delta_indices(delta_timestamps or {}, self.meta.fps, tolerance_s, self.name)
        for key in self.delta_indices:
            if key not in self.meta.features:
                raise DatasetError("delta_timestamps names a feature the dataset does not have", dataset=self.name,
                                   file=self.meta.root / "meta" / "info.json", field=key)
        lengths = np.array([e.length for e in self.episodes], dtype=np.int64)
        self.episode_starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        self.episode_lengths = lengths
        self.columns: dict[str, Any] = {}
        self._load_frames()
        self._check_timestamps()
        check_video_streams(self.meta, self.episodes)
        self._videos = VideoCache()
        log.info("opened %s (%s, %d episodes, %d frames, %g fps)", self.name, self.meta.version, len(self.episodes),
                 len(self), self.fps)

    @property
    def fps(self) -> float:
        return self.meta.fps

    def __len__(self) -> int:
        return int(self.episode_lengths.sum())

    def _select_episodes(self, episodes: list[int] | None) -> list[Episode]:
        by_index = {e.index: e for e in self.meta.episodes}
        if episodes is None:
            return list(self.meta.episodes)
        missing = [e for e in episodes if e not in by_index]
        if missing:
            raise DatasetError(f"episodes {missing} not in the dataset (it has {len(by_index)})", dataset=self.name,
                               field="episodes")
        return [by_index[e] for e in episodes]

    def _load_frames(self) -> None:
        """Read every non-video column of the selected episodes into memory, checked against info.json."""
        wanted = [k for k, f in self.meta.features.items() if f.get("dtype") != "video"]
        absent = [k for k in INDEX_COLUMNS if k not in wanted]
        if absent:
            raise DatasetError("info.json lacks a LeRobot index feature", dataset=self.name,
                               file=self.meta.root / "meta" / "info.json", field=absent[0])
        by_file: dict[Path, list[int]] = {}
        for pos, ep in enumerate(self.episodes):
            by_file.setdefault(ep.data_path, []).append(pos)
        parts: dict[str, list[Any]] = {k: [None] * len(self.episodes) for k in wanted}
        listed = {e.index for e in self.meta.episodes}
        for path, positions in tqdm(by_file.items(), desc=f"read {self.name}", disable=len(by_file) < 20):
            if not path.is_file():
                raise DatasetError("missing data file", dataset=self.name, file=path, field="data_path")
            table = read_parquet(path, self.name)
            absent = [k for k in wanted if k not in table.column_names]
            if absent:
                raise DatasetError("feature declared in info.json is missing from the data file",
                                   dataset=self.name, file=path, field=absent[0])
            runs = self._episode_runs(table.column("episode_index").to_numpy(), path)
            unlisted = sorted(set(runs) - listed)
            if unlisted:
                raise DatasetError(f"the data file holds rows of episode {unlisted[0]}, which the episode metadata "
                                   f"does not list; expected only episodes {min(listed)}..{max(listed)}",
                                   dataset=self.name, file=path, field="episode_index")
            arrays = {k: self._read_column(table, k, path) for k in wanted}
            unknown = sorted(set(np.unique(arrays["task_index"]).tolist()) - set(self.meta.tasks))
            if unknown:
                raise DatasetError(f"task_index {unknown[0]} is not in the dataset's tasks (it has "
                                   f"{len(self.meta.tasks)}); expected indices listed in meta/tasks",
                                   dataset=self.name, file=path, field="task_index")
            for pos in positions:
                ep = self.episodes[pos]
                start, end = runs.get(ep.index, (0, 0))
                if end - start != ep.length:
                    raise DatasetError(f"episode {ep.index} has {end - start} rows here but length {ep.length} in "
                                       f"the episode metadata", dataset=self.name, file=path, field="episode_index")
                for k in wanted:
                    parts[k][pos] = arrays[k][start:end]
        for k in wanted:
            if isinstance(parts[k][0], list):
                self.columns[k] = [x for p in parts[k] for x in p]
            else:
                self.columns[k] = np.concatenate(parts[k]) if parts[k] else np.zeros((0,))

    def _episode_runs(self, episode_index: np.ndarray, path: Path) -> dict[int, tuple[int, int]]:
        """Row range [start, end) of each episode in a data file; an episode split in two runs is an error."""
        if len(episode_index) == 0:
            return {}
        bounds = np.concatenate([[0], np.flatnonzero(np.diff(episode_index)) + 1, [len(episode_index)]])
        runs: dict[int, tuple[int, int]] = {}
        for start, end in zip(bounds[:-1], bounds[1:]):
            ep = int(episode_index[start])
            if ep in runs:
                raise DatasetError(f"rows of episode {ep} are not contiguous", dataset=self.name, file=path,
                                   field="episode_index")
            runs[ep] = (int(start), int(end))
        return runs

    def _read_column(self, table: pa.Table, key: str, path: Path) -> Any:
        feat = self.meta.features[key]
        col = table.column(key)
        if feat.get("dtype") == "image":
            if not pa.types.is_struct(col.type):
                raise DatasetError(f"image feature stored as {col.type}, expected a struct of bytes/path",
                                   dataset=self.name, file=path, field=key)
            return col.combine_chunks().to_pylist()
        if feat.get("dtype") == "string" or pa.types.is_string(col.type):
            return col.to_pylist()
        data = _column_to_numpy(col)
        expected = tuple(int(s) for s in feat.get("shape", ()))
        got = data.shape[1:]
        if int(np.prod(got)) != int(np.prod(expected)):
            raise DatasetError(f"data has per-frame shape {got}, info.json declares {expected}", dataset=self.name,
                               file=path, field=key)
        return data

    def _check_timestamps(self) -> None:
        ts = self.columns["timestamp"].astype(np.float64)
        for pos, ep in enumerate(self.episodes):
            start = self.episode_starts[pos]
            ep_ts = ts[start:start + ep.length]
            grid = ep_ts[0] + np.arange(ep.length) / self.meta.fps
            off = np.abs(ep_ts - grid)
            if len(off) and off.max() > self.tolerance_s:
                frame = int(np.argmax(off))
                raise DatasetError(f"episode {ep.index} frame {frame}: timestamp {ep_ts[frame]:.6f}s is off the "
                                   f"1/{self.meta.fps:g}s grid by {off.max():.2e}s (tolerance {self.tolerance_s}s)",
                                   dataset=self.name, file=ep.data_path, field="timestamp")

    def check_finite(self, key: str) -> None:
        """Refuse NaN or infinite values in numeric column `key`, naming the data file, episode and frame."""
        values = self.columns[key]
        bad = ~np.isfinite(values.reshape(len(values), -1)).all(1)
        if bad.any():
            pos, frame = self.locate(int(np.argmax(bad)))
            episode = self.episodes[pos]
            raise DatasetError(f"NaN or infinite value in episode {episode.index} frame {frame} ({int(bad.sum())} "
                               f"rows in all); expected finite numbers: fix or drop those frames", dataset=self.name,
                               file=episode.data_path, field=key)

    def locate(self, idx: int) -> tuple[int, int]:
        """(episode position, frame within the episode) of dataset row `idx`."""
        if not 0 <= idx < len(self):
            raise IndexError(f"index {idx} out of range for dataset {self.name!r} of length {len(self)}")
        pos = int(np.searchsorted(self.episode_starts, idx, side="right") - 1)
        return pos, idx - int(self.episode_starts[pos])

    def query_rows(self, idx: int, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Row numbers for `idx + offsets` clamped to the episode, and the mask of those that fell outside it."""
        pos, frame = self.locate(idx)
        wanted = frame + offsets
        length = int(self.episode_lengths[pos])
        pad = (wanted < 0) | (wanted >= length)
        return self.episode_starts[pos] + np.clip(wanted, 0, length - 1), pad

    def camera_frames(self, key: str, rows: np.ndarray) -> np.ndarray:
        """uint8 (T, H, W, 3) frames of camera `key` at dataset rows `rows` (all in one episode)."""
        pos, _ = self.locate(int(rows[0]))
        if self.meta.features[key]["dtype"] == "image":
            frames = np.stack([self._decode_image(self.columns[key][r], key, int(r)) for r in rows])
            source = self.episodes[pos].data_path
        else:
            segment = self.episodes[pos].videos[key]
            video = self._videos.get(segment.path, self.name, key)
            ts = self.columns["timestamp"][rows].astype(np.float64) + segment.from_timestamp
            frames = np.stack([video.frame_at(float(t), self.tolerance_s) for t in ts])
            source = segment.path
        expected = self.meta.feature_shape(key)
        if frames.shape[1:] != expected:
            raise DatasetError(f"frames are {frames.shape[1:]} (H, W, C), info.json declares {expected}",
                               dataset=self.name, file=source, field=key)
        return frames

    def _decode_image(self, cell: dict, key: str, row: int) -> np.ndarray:
        data, path = cell.get("bytes"), None
        if data is None:
            path = self.meta.root / cell["path"]
            if not path.is_file():
                raise DatasetError("missing image file", dataset=self.name, file=path, field=key)
            data = path.read_bytes()
        try:
            return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        except (UnidentifiedImageError, OSError) as err:
            source = path or self.episodes[self.locate(row)[0]].data_path
            raise DatasetError(f"cannot decode the image of row {row} ({type(err).__name__}: {err}); expected PNG "
                               f"or JPEG bytes", dataset=self.name, file=source, field=key) from err

    def __getitem__(self, idx: int) -> dict[str, Any]:
        idx = int(idx)
        self.locate(idx)  # IndexError when out of range
        item: dict[str, Any] = {}
        for key, feat in self.meta.features.items():
            offsets = self.delta_indices.get(key)
            rows, pad = self.query_rows(idx, offsets) if offsets is not None else (np.array([idx]), None)
            if feat["dtype"] in ("video", "image"):
                frames = torch.from_numpy(self.camera_frames(key, rows)).permute(0, 3, 1, 2).contiguous()
                item[key] = frames if offsets is not None else frames[0]
            elif isinstance(self.columns[key], list):
                values = [self.columns[key][r] for r in rows]
                item[key] = values if offsets is not None else values[0]
            else:
                values = torch.from_numpy(self.columns[key][rows])
                item[key] = values if offsets is not None else values[0]
            if pad is not None:
                item[f"{key}_is_pad"] = torch.from_numpy(pad)
        item["task"] = self.meta.tasks.get(int(self.columns["task_index"][idx]), "")
        return item
