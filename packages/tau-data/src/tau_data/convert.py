"""Conversion of a LeRobot v2.1 dataset to v3.0: parquet files concatenated, mp4s remuxed (no re-encoding)."""

from __future__ import annotations

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
from tqdm import tqdm

from tau_data.dataset import LeRobotDataset
from tau_data.errors import DatasetError
from tau_data.metadata import load_meta, read_parquet
from tau_data.stats import dataset_stats, write_stats
from tau_data.writer import CODEBASE_VERSION, DATA_PATH, EPISODES_PATH, VIDEO_PATH, _write_tasks

log = logging.getLogger(__name__)


def _concat_videos(sources: list[Path], dst: Path, dataset: str, field: str) -> list[float]:
    """Remux episode mp4s one after the other into `dst`; returns each episode's start time in the new file."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    starts: list[float] = []
    with av.open(str(dst), mode="w") as out:
        out_stream, offset = None, Fraction(0)
        for src in sources:
            if not src.is_file():
                raise DatasetError("missing video file", dataset=dataset, file=src, field=field)
            starts.append(float(offset))
            try:
                out_stream, offset = _append_video(out, out_stream, src, offset)
            except (av.error.FFmpegError, OSError) as err:
                raise DatasetError(f"cannot remux the video ({type(err).__name__}: {err}); expected a video the "
                                   f"decoder can read: re-download the file or re-encode it", dataset=dataset,
                                   file=src, field=field) from err
    return starts


def _append_video(out: Any, out_stream: Any, src: Path, offset: Fraction) -> tuple[Any, Fraction]:
    """Mux the packets of `src` into `out` shifted by `offset` seconds; returns the stream and the new end time."""
    with av.open(str(src)) as inp:
        stream = inp.streams.video[0]
        if out_stream is None:
            out_stream = out.add_stream_from_template(stream, opaque=True)
            out_stream.time_base = stream.time_base
        end = offset
        for packet in inp.demux(stream):
            if packet.pts is None:
                continue
            pkt_time = Fraction(packet.pts) * stream.time_base
            duration = Fraction(packet.duration or 0) * stream.time_base
            end = max(end, offset + pkt_time + duration)
            packet.pts = round((offset + pkt_time) / out_stream.time_base)
            packet.dts = round((offset + Fraction(packet.dts) * stream.time_base) / out_stream.time_base)
            packet.duration = round(duration / out_stream.time_base)
            packet.stream = out_stream
            out.mux(packet)
    return out_stream, end


def convert_v21_to_v30(src: str | Path, dst: str | Path) -> Path:
    """Write the v3.0 version of the v2.1 dataset at `src` to `dst` (atomically: built in `<dst>.partial`)."""
    src, dst = Path(src), Path(dst)
    meta = load_meta(src)
    if meta.version != "v2.1":
        raise DatasetError(f"expected a v2.1 dataset, found {meta.version}", dataset=meta.name,
                           file=src / "meta" / "info.json", field="codebase_version")
    if dst.exists():
        raise DatasetError("destination already exists", dataset=meta.name, file=dst)
    staging = dst.with_name(dst.name + ".partial")
    if staging.exists():
        shutil.rmtree(staging)
    info = json.loads((src / "meta" / "info.json").read_text())
    rows: list[dict[str, Any]] = [{"episode_index": e.index, "tasks": list(e.tasks), "length": e.length,
                                   "data/chunk_index": 0, "data/file_index": 0, "dataset_from_index": e.from_index,
                                   "dataset_to_index": e.from_index + e.length, "meta/episodes/chunk_index": 0,
                                   "meta/episodes/file_index": 0} for e in meta.episodes]
    data_path = staging / DATA_PATH.format(chunk_index=0, file_index=0)
    data_path.parent.mkdir(parents=True)
    writer = None
    for ep in tqdm(meta.episodes, desc=f"convert {meta.name}: data", disable=len(meta.episodes) < 50):
        if not ep.data_path.is_file():
            raise DatasetError("missing data file", dataset=meta.name, file=ep.data_path, field="data_path")
        table = read_parquet(ep.data_path, meta.name)
        if writer is None:
            writer = pq.ParquetWriter(data_path, table.schema, compression="snappy")
        writer.write_table(table.cast(writer.schema), row_group_size=max(len(table), 1))
    writer.close()
    for key in meta.video_keys:
        rel = VIDEO_PATH.format(video_key=key, chunk_index=0, file_index=0)
        starts = _concat_videos([e.videos[key].path for e in meta.episodes], staging / rel, meta.name, key)
        for row, start, ep in zip(rows, starts, meta.episodes):
            row.update({f"videos/{key}/chunk_index": 0, f"videos/{key}/file_index": 0,
                        f"videos/{key}/from_timestamp": start,
                        f"videos/{key}/to_timestamp": start + ep.length / meta.fps})
    (staging / EPISODES_PATH).parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), staging / EPISODES_PATH)
    _write_tasks({task: index for index, task in meta.tasks.items()}, staging / "meta" / "tasks.parquet")
    for key in ("total_chunks", "total_videos"):
        info.pop(key, None)
    info.update(codebase_version=CODEBASE_VERSION, data_path=DATA_PATH,
                video_path=VIDEO_PATH if meta.video_keys else None, data_files_size_in_mb=100,
                video_files_size_in_mb=200)
    (staging / "meta" / "info.json").write_text(json.dumps(info, indent=4))
    stats = dataset_stats(LeRobotDataset(staging, name=meta.name))
    stats.update(_camera_stats(src, meta.camera_keys, meta.name))
    write_stats(stats, staging / "meta" / "stats.json")
    os.rename(staging, dst)
    log.info("converted %s (v2.1) to %s (v3.0)", src, dst)
    return dst


def _camera_stats(src: Path, cameras: list[str], dataset: str) -> dict[str, dict[str, np.ndarray]]:
    """Pool v2.1 per-episode camera stats (count-weighted mean, pooled variance, min of mins, max of maxes)."""
    path = src / "meta" / "episodes_stats.jsonl"
    if not path.is_file() or not cameras:
        return {}
    entries = [json.loads(line)["stats"] for line in path.read_text().splitlines() if line.strip()]
    out = {}
    for key in cameras:
        eps = [e[key] for e in entries if key in e]
        if not eps:
            continue
        counts = np.array([float(np.asarray(e["count"]).reshape(-1)[0]) for e in eps])
        means = np.stack([np.asarray(e["mean"], dtype=np.float64) for e in eps])
        stds = np.stack([np.asarray(e["std"], dtype=np.float64) for e in eps])
        w = (counts / counts.sum()).reshape(-1, *([1] * (means.ndim - 1)))
        mean = (w * means).sum(0)
        var = (w * (stds**2 + (means - mean) ** 2)).sum(0)
        out[key] = {"min": np.min([np.asarray(e["min"]) for e in eps], 0),
                    "max": np.max([np.asarray(e["max"]) for e in eps], 0), "mean": mean, "std": np.sqrt(var),
                    "count": np.array([int(counts.sum())])}
        for name, value in out[key].items():
            if not np.all(np.isfinite(value)):
                raise DatasetError("NaN or infinite value in episode stats", dataset=dataset, file=path,
                                   field=f"{key}.{name}")
    return out
