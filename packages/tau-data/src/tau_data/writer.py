"""LeRobot v3.0 dataset writer: episodes appended to shared parquet/mp4 files, exact stats, atomic finalisation.

Usage (the API tau-sim and tau-rl write demonstrations and rollouts with):

    writer = DatasetWriter("/data/my_ds", fps=20, robot_type="sim_arm", features={
        "observation.images.front": {"dtype": "video", "shape": (96, 96, 3)},   # uint8 HWC frames, encoded to mp4
        "observation.images.wrist": {"dtype": "image", "shape": (96, 96, 3)},   # PNG bytes inside the parquet
        "observation.state": {"dtype": "float32", "shape": (8,)},
        "action": {"dtype": "float32", "shape": (7,)},
        "reward": {"dtype": "float32", "shape": (1,)},                          # any extra per-frame column
        "success": {"dtype": "bool", "shape": (1,)},
    })
    for episode in episodes:
        for step in episode:
            writer.add_frame({"observation.images.front": rgb, ..., "reward": 0.0, "success": False})
        writer.save_episode(task="pick up the cube", outcome="success")   # extra keywords: per-episode columns
    writer.finalize()

Everything is written into `<root>.partial/`; `finalize()` writes the metadata there and renames the folder to `root`
in one step, so a crash at any moment leaves no folder at `root` that reads as a complete dataset (a later writer for
the same root removes the leftover). `clear_episode()` drops the frames buffered since the last `save_episode`;
`abort()` deletes everything; used as a context manager the writer finalises on success and aborts on an exception.
Videos default to LeRobot's AV1 settings (libsvtav1, yuv420p, g=2, crf=30: lossy); `vcodec="libx264rgb", crf=0,
pix_fmt="rgb24"` stores frames losslessly. `timestamp`, `frame_index`, `episode_index`, `index` and `task_index` are
filled in by the writer. The writer creates new datasets only (it does not append to an existing one).
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from tau_data.errors import DatasetError
from tau_data.metadata import INDEX_COLUMNS
from tau_data.stats import histogram_stats, image_histogram, vector_stats, write_stats

log = logging.getLogger(__name__)

CODEBASE_VERSION = "v3.0"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-000/file-000.parquet"
_ARROW_TYPES = {"float32": pa.float32(), "float64": pa.float64(), "int64": pa.int64(), "int32": pa.int32(),
                "int16": pa.int16(), "int8": pa.int8(), "uint8": pa.uint8(), "bool": pa.bool_(), "string": pa.string()}
_CODEC_NAMES = {"libsvtav1": "av1", "libaom-av1": "av1", "libx264": "h264", "libx264rgb": "h264", "libx265": "hevc"}
_EPISODE_COLUMNS = {"episode_index", "tasks", "length", "dataset_from_index", "dataset_to_index"}
_INDEX_FEATURES = {"timestamp": "float32", "frame_index": "int64", "episode_index": "int64", "index": "int64",
                   "task_index": "int64"}


def _hf_feature(feat: dict[str, Any]) -> dict[str, Any]:
    """The HF `datasets` feature description LeRobot stores in the parquet schema metadata."""
    if feat["dtype"] == "image":
        return {"_type": "Image"}
    value = {"dtype": feat["dtype"], "_type": "Value"}
    shape = tuple(feat["shape"])
    if shape == (1,):
        return value
    for size in reversed(shape):
        value = {"feature": value, "length": int(size), "_type": "List"}
    return value


def _file_position(file_index: int, chunks_size: int) -> tuple[int, int]:
    return file_index // chunks_size, file_index % chunks_size


class _VideoEncoder:
    """One mp4 being written: frames appended with consecutive pts, so episodes follow each other in time."""

    def __init__(self, path: Path, fps: float, height: int, width: int, vcodec: str, options: dict[str, str],
                 pix_fmt: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.container = av.open(str(path), mode="w")
        self.stream = self.container.add_stream(vcodec, rate=Fraction(fps).limit_denominator(1001), options=options)
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, pix_fmt
        self.frames = 0

    def encode(self, frames: list[np.ndarray]) -> None:
        for rgb in frames:
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = self.frames
            self.frames += 1
            self.container.mux(self.stream.encode(frame))

    def size_mb(self) -> float:
        return self.path.stat().st_size / 1e6 if self.path.exists() else 0.0

    def close(self) -> None:
        self.container.mux(self.stream.encode(None))
        self.container.close()


class DatasetWriter:
    """Writes a LeRobot v3.0 dataset episode by episode (see the module docstring for a complete example)."""

    def __init__(self, root: str | Path, fps: float, features: dict[str, dict[str, Any]], robot_type: str | None = None,
                 *, vcodec: str = "libsvtav1", crf: int = 30, gop: int = 2, pix_fmt: str = "yuv420p",
                 data_file_mb: float = 100, video_file_mb: float = 200, chunks_size: int = 1000) -> None:
        self.root = Path(root)
        if self.root.exists():
            raise DatasetError("dataset folder already exists; the writer only creates new datasets",
                               dataset=self.root.name, file=self.root)
        self.staging = self.root.with_name(self.root.name + ".partial")
        if self.staging.exists():
            log.warning("removing the leftover of an unfinished write at %s", self.staging)
            shutil.rmtree(self.staging)
        self.staging.mkdir(parents=True)
        self.fps, self.robot_type = float(fps), robot_type
        self.features = self._check_features(features)
        self.video_keys = [k for k, f in self.features.items() if f["dtype"] == "video"]
        self.vcodec, self.crf, self.gop, self.pix_fmt = vcodec, crf, gop, pix_fmt
        self.data_file_mb, self.video_file_mb, self.chunks_size = data_file_mb, video_file_mb, chunks_size
        self.tasks: dict[str, int] = {}
        self.episode_rows: list[dict[str, Any]] = []
        self._buffer: list[dict[str, Any]] = []
        self._vectors: dict[str, list[np.ndarray]] = {}
        self._histograms: dict[str, np.ndarray] = {}
        self._data_file, self._data_writer = 0, None
        self._video_files = {k: 0 for k in self.video_keys}
        self._encoders: dict[str, _VideoEncoder] = {}
        self._frames_total = 0
        self._finalized = False

    def _check_features(self, features: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        out = {}
        for key, feat in features.items():
            if key in INDEX_COLUMNS:
                raise DatasetError("index columns are filled in by the writer", dataset=self.root.name, field=key)
            dtype = feat.get("dtype")
            if dtype not in _ARROW_TYPES and dtype not in ("video", "image"):
                raise DatasetError(f"unsupported dtype {dtype!r}", dataset=self.root.name, field=key)
            shape = tuple(int(s) for s in feat.get("shape", (1,)))
            if dtype in ("video", "image") and (len(shape) != 3 or shape[2] != 3):
                raise DatasetError(f"camera shape must be (height, width, 3), got {shape}", dataset=self.root.name,
                                   field=key)
            entry = {"dtype": dtype, "shape": list(shape), "names": feat.get("names")}
            if dtype in ("video", "image") and entry["names"] is None:
                entry["names"] = ["height", "width", "channels"]
            out[key] = entry
        return out

    def add_frame(self, frame: dict[str, Any]) -> None:
        """Buffer one frame: a value for every declared feature (cameras as uint8 (H, W, 3) arrays)."""
        missing = [k for k in self.features if k not in frame]
        unknown = [k for k in frame if k not in self.features]
        if missing or unknown:
            raise DatasetError(f"frame keys disagree with the features (missing {missing}, unknown {unknown})",
                               dataset=self.root.name, field=(missing or unknown)[0])
        checked = {}
        for key, feat in self.features.items():
            value = np.asarray(frame[key])
            shape = tuple(feat["shape"])
            if feat["dtype"] in ("video", "image"):
                if value.shape == (shape[2], shape[0], shape[1]):
                    value = value.transpose(1, 2, 0)
                if value.shape != shape or value.dtype != np.uint8:
                    raise DatasetError(f"camera frame must be uint8 {shape}, got {value.dtype} {value.shape}",
                                       dataset=self.root.name, field=key)
                value = np.ascontiguousarray(value)
            elif feat["dtype"] == "string":
                value = str(frame[key])
            else:
                if value.size != int(np.prod(shape)):
                    raise DatasetError(f"value of shape {value.shape} does not fit declared shape {shape}",
                                       dataset=self.root.name, field=key)
                value = value.astype(feat["dtype"]).reshape(shape)
            checked[key] = value
        self._buffer.append(checked)

    def clear_episode(self) -> None:
        """Drop the frames buffered since the last saved episode."""
        self._buffer = []

    def save_episode(self, task: str, **episode_values: Any) -> int:
        """Write the buffered frames as one episode of `task`; extra keywords become per-episode columns."""
        if self._finalized:
            raise DatasetError("writer already finalized or aborted", dataset=self.root.name)
        clash = sorted(k for k in episode_values if k in _EPISODE_COLUMNS or "/" in k)
        if clash:
            raise DatasetError(f"per-episode values {clash} clash with episode metadata columns",
                               dataset=self.root.name, field=clash[0])
        frames, self._buffer = self._buffer, []
        if not frames:
            raise DatasetError("save_episode with no frames added", dataset=self.root.name)
        n, ep = len(frames), len(self.episode_rows)
        task_index = self.tasks.setdefault(task, len(self.tasks))
        row: dict[str, Any] = {"episode_index": ep, "tasks": [task], "length": n}
        row.update(self._write_data(frames, ep, task_index))
        for key in self.video_keys:
            row.update(self._write_video(key, [f[key] for f in frames]))
        for key, feat in self.features.items():
            if feat["dtype"] in ("video", "image"):
                hist = image_histogram(np.stack([f[key] for f in frames]))
                self._histograms[key] = self._histograms.get(key, 0) + hist
            elif feat["dtype"] != "string":
                self._vectors.setdefault(key, []).append(np.stack([f[key] for f in frames]).reshape(n, -1))
        row.update({"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})
        row.update(episode_values)
        self.episode_rows.append(row)
        self._frames_total += n
        return ep

    def _write_data(self, frames: list[dict[str, Any]], ep: int, task_index: int) -> dict[str, Any]:
        n = len(frames)
        columns: dict[str, pa.Array] = {}
        for key, feat in self.features.items():
            values = [f[key] for f in frames]
            if feat["dtype"] == "image":
                columns[key] = pa.array([{"bytes": _png(v), "path": None} for v in values],
                                        type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
            elif feat["dtype"] == "video":
                continue
            elif feat["dtype"] == "string":
                columns[key] = pa.array(values, type=pa.string())
            else:
                arr = pa.array(np.stack(values).reshape(-1), type=_ARROW_TYPES[feat["dtype"]])
                for size in reversed(feat["shape"] if tuple(feat["shape"]) != (1,) else []):
                    arr = pa.FixedSizeListArray.from_arrays(arr, int(size))
                columns[key] = arr
        frame_index = np.arange(n)
        columns["timestamp"] = pa.array((frame_index / self.fps).astype(np.float32))
        columns["frame_index"] = pa.array(frame_index.astype(np.int64))
        columns["episode_index"] = pa.array(np.full(n, ep, dtype=np.int64))
        columns["index"] = pa.array(np.arange(self._frames_total, self._frames_total + n, dtype=np.int64))
        columns["task_index"] = pa.array(np.full(n, task_index, dtype=np.int64))
        table = pa.table(columns)
        if self._data_writer is not None and self._data_path().stat().st_size / 1e6 >= self.data_file_mb:
            self._data_writer.close()
            self._data_writer, self._data_file = None, self._data_file + 1
        if self._data_writer is None:
            path = self._data_path()
            path.parent.mkdir(parents=True, exist_ok=True)
            hf = {"info": {"features": {k: _hf_feature(f) for k, f in self._all_features().items()
                                        if f["dtype"] != "video"}}}
            schema = table.schema.with_metadata({"huggingface": json.dumps(hf)})
            self._data_writer = pq.ParquetWriter(path, schema, compression="snappy")
        self._data_writer.write_table(table.replace_schema_metadata(self._data_writer.schema.metadata),
                                      row_group_size=n)
        chunk, file = _file_position(self._data_file, self.chunks_size)
        return {"data/chunk_index": chunk, "data/file_index": file, "dataset_from_index": self._frames_total,
                "dataset_to_index": self._frames_total + n}

    def _data_path(self) -> Path:
        chunk, file = _file_position(self._data_file, self.chunks_size)
        return self.staging / DATA_PATH.format(chunk_index=chunk, file_index=file)

    def _write_video(self, key: str, frames: list[np.ndarray]) -> dict[str, Any]:
        encoder = self._encoders.get(key)
        if encoder is not None and encoder.size_mb() >= self.video_file_mb:
            encoder.close()
            del self._encoders[key]
            self._video_files[key] += 1
        chunk, file = _file_position(self._video_files[key], self.chunks_size)
        if key not in self._encoders:
            height, width, _ = self.features[key]["shape"]
            path = self.staging / VIDEO_PATH.format(video_key=key, chunk_index=chunk, file_index=file)
            self._encoders[key] = _VideoEncoder(path, self.fps, height, width, self.vcodec, self._codec_options(),
                                                self.pix_fmt)
        encoder = self._encoders[key]
        start = encoder.frames / self.fps
        encoder.encode(frames)
        return {f"videos/{key}/chunk_index": chunk, f"videos/{key}/file_index": file,
                f"videos/{key}/from_timestamp": start, f"videos/{key}/to_timestamp": encoder.frames / self.fps}

    def _codec_options(self) -> dict[str, str]:
        options = {"g": str(self.gop), "crf": str(self.crf)}
        if self._preset() is not None:
            options["preset"] = str(self._preset())
        return options

    def _preset(self) -> int | None:
        return 12 if self.vcodec == "libsvtav1" else None

    def _all_features(self) -> dict[str, dict[str, Any]]:
        feats = dict(self.features)
        for key in self.video_keys:
            height, width, channels = feats[key]["shape"]
            fps = int(self.fps) if self.fps == int(self.fps) else self.fps
            feats[key] = {**feats[key], "info": {
                "video.height": height, "video.width": width, "video.codec": self._codec_name(),
                "video.pix_fmt": self.pix_fmt, "video.fps": fps, "video.channels": channels, "has_audio": False,
                "video.g": self.gop, "video.crf": self.crf, "video.preset": self._preset(),
                "video.fast_decode": 0, "video.video_backend": "pyav", "video.extra_options": {},
                "is_depth_map": False}}
        for key, dtype in _INDEX_FEATURES.items():
            feats[key] = {"dtype": dtype, "shape": [1], "names": None}
        return feats

    def _codec_name(self) -> str:
        return _CODEC_NAMES.get(self.vcodec, self.vcodec)

    def finalize(self) -> Path:
        """Close the files, write stats and metadata, and move the finished dataset to `root` atomically."""
        if self._finalized:
            return self.root
        if self._buffer:
            raise DatasetError(f"{len(self._buffer)} frames added but not saved as an episode", dataset=self.root.name)
        if not self.episode_rows:
            raise DatasetError("no episodes saved", dataset=self.root.name)
        if self._data_writer is not None:
            self._data_writer.close()
        for encoder in self._encoders.values():
            encoder.close()
        meta = self.staging / "meta"
        (meta / "episodes" / "chunk-000").mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(self.episode_rows), self.staging / EPISODES_PATH)
        _write_tasks(self.tasks, meta / "tasks.parquet")
        write_stats(self._stats(), meta / "stats.json")
        info = {
            "codebase_version": CODEBASE_VERSION, "fps": self.fps if self.fps != int(self.fps) else int(self.fps),
            "features": self._all_features(), "total_episodes": len(self.episode_rows),
            "total_frames": self._frames_total, "total_tasks": len(self.tasks), "chunks_size": self.chunks_size,
            "data_files_size_in_mb": self.data_file_mb, "video_files_size_in_mb": self.video_file_mb,
            "data_path": DATA_PATH, "video_path": VIDEO_PATH if self.video_keys else None,
            "robot_type": self.robot_type, "splits": {"train": f"0:{len(self.episode_rows)}"},
        }
        (meta / "info.json").write_text(json.dumps(info, indent=4))
        os.rename(self.staging, self.root)
        self._finalized = True
        log.info("wrote %d episodes (%d frames) to %s", len(self.episode_rows), self._frames_total, self.root)
        return self.root

    def _stats(self) -> dict[str, dict[str, np.ndarray]]:
        stats = {k: vector_stats(np.concatenate(v)) for k, v in self._vectors.items()}
        for key, hist in self._histograms.items():
            stats[key] = histogram_stats(hist, self._frames_total)
        index = {"frame_index": [], "episode_index": [], "index": [], "task_index": [], "timestamp": []}
        for row in self.episode_rows:
            n = row["length"]
            index["frame_index"].append(np.arange(n))
            index["timestamp"].append((np.arange(n) / self.fps).astype(np.float32))
            index["episode_index"].append(np.full(n, row["episode_index"]))
            index["index"].append(np.arange(row["dataset_from_index"], row["dataset_to_index"]))
            index["task_index"].append(np.full(n, self.tasks[row["tasks"][0]]))
        stats.update({k: vector_stats(np.concatenate(v)) for k, v in index.items()})
        return stats

    def abort(self) -> None:
        """Close the open files and delete everything written so far (nothing appears at `root`)."""
        if self._finalized:
            return
        if self._data_writer is not None:
            self._data_writer.close()
        for encoder in self._encoders.values():
            encoder.close()
        self._data_writer, self._encoders, self._buffer = None, {}, []
        shutil.rmtree(self.staging, ignore_errors=True)
        self._finalized = True

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        """Finalise on success; on an exception, abort so no half-written dataset is left behind."""
        if exc_type is None:
            self.finalize()
        else:
            self.abort()


def _png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _write_tasks(tasks: dict[str, int], path: Path) -> None:
    """tasks.parquet as LeRobot writes it: a pandas frame indexed by the task string, with a task_index column."""
    ordered = sorted(tasks.items(), key=lambda kv: kv[1])
    table = pa.table({"task_index": pa.array([i for _, i in ordered], type=pa.int64()),
                      "task": pa.array([t for t, _ in ordered], type=pa.string())})
    pandas_meta = {"index_columns": ["task"], "column_indexes": [{"name": None, "field_name": None,
                   "pandas_type": "unicode", "numpy_type": "object", "metadata": {"encoding": "UTF-8"}}],
                   "columns": [{"name": "task_index", "field_name": "task_index", "pandas_type": "int64",
                                "numpy_type": "int64", "metadata": None},
                               {"name": "task", "field_name": "task", "pandas_type": "unicode",
                                "numpy_type": "object", "metadata": None}],
                   "attributes": {}, "creator": {"library": "pyarrow", "version": pa.__version__}}
    pq.write_table(table.replace_schema_metadata({"pandas": json.dumps(pandas_meta)}), path)
