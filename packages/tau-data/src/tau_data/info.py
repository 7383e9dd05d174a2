"""A short, JSON-able summary of a dataset (what `apps/data info` prints)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tau_data.metadata import check_data_files, load_meta, resolve_root
from tau_data.video import check_video_streams


def info(repo_id_or_root: str | Path, revision: str | None = None) -> dict[str, Any]:
    """Version, fps, robot, episode/frame/task counts, duration and each feature's dtype and shape, once the
    metadata, the data files' row counts and the first frame of every video file are checked against info.json."""
    meta = load_meta(resolve_root(repo_id_or_root, revision=revision), name=str(repo_id_or_root))
    check_data_files(meta)
    check_video_streams(meta, meta.episodes)
    lengths = [e.length for e in meta.episodes]
    return {
        "name": meta.name, "root": str(meta.root), "codebase_version": meta.version, "fps": meta.fps,
        "robot_type": meta.robot_type, "episodes": len(lengths), "frames": sum(lengths),
        "episode_length": {"min": min(lengths, default=0), "max": max(lengths, default=0)},
        "duration_s": round(sum(lengths) / meta.fps, 3), "tasks": len(meta.tasks), "cameras": meta.camera_keys,
        "features": {k: {"dtype": f.get("dtype"), "shape": list(meta.feature_shape(k))}
                     for k, f in meta.features.items()},
        "has_stats": meta.stats is not None,
    }
