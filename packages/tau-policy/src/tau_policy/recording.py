"""Recording episodes as a LeRobot v3.0 dataset through tau-data's DatasetWriter.

An episode is duck-typed (tau_sim.Episode, or anything with task/instruction/seed/success, images uint8
(T, N_cam, H, W, 3), state (T, D), actions (T, A), camera_names and fps). Each frame gets the cameras as lossless
PNG `observation.images.<name>` columns, `observation.state` and `action`, plus the per-frame extra columns the
caller computes (`extras(episode) -> {name: (T,) or (T, k) array}`: rewards, labels, advantages). Each episode
records its instruction as the task and `success` and `seed` as per-episode values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from tau_data import DatasetWriter

Extras = Callable[[Any], Mapping[str, np.ndarray]]


def episode_labels(episode: Any) -> dict[str, np.ndarray]:
    """The per-frame labels tau-rl's RECAP reads: `success` (the episode's label on every frame) and `intervention`
    (frames an expert controlled; all False for an episode without an `intervention` array)."""
    length = len(episode.actions)
    intervention = getattr(episode, "intervention", None)
    intervention = np.zeros(length, bool) if intervention is None else np.asarray(intervention, dtype=bool)
    return {"success": np.full(length, bool(episode.success)), "intervention": intervention}


def _column_feature(name: str, values: np.ndarray) -> dict[str, Any]:
    if values.dtype == np.bool_:
        dtype = "bool"
    elif np.issubdtype(values.dtype, np.integer):
        dtype = "int64"
    elif np.issubdtype(values.dtype, np.floating):
        dtype = "float32"
    else:
        raise ValueError(f"extra column {name!r} must be bool, integer or float, got {values.dtype}")
    return {"dtype": dtype, "shape": (int(np.prod(values.shape[1:], dtype=np.int64)),)}


def _episode_columns(episode: Any, extras: Extras | None, index: int) -> dict[str, np.ndarray]:
    length = len(episode.actions)
    columns = {name: np.asarray(values) for name, values in (extras(episode) if extras else {}).items()}
    for name, values in columns.items():
        if values.ndim not in (1, 2) or len(values) != length:
            raise ValueError(f"extra column {name!r} of episode {index} ({episode.task} seed {episode.seed}) must "
                             f"be ({length},) or ({length}, k), got shape {values.shape}")
    return columns


def _features(episode: Any, columns: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    _, _, height, width, _ = episode.images.shape
    features = {f"observation.images.{name}": {"dtype": "image", "shape": (height, width, 3)}
                for name in episode.camera_names}
    features["observation.state"] = {"dtype": "float32", "shape": (episode.state.shape[1],)}
    features["action"] = {"dtype": "float32", "shape": (episode.actions.shape[1],)}
    features.update({name: _column_feature(name, values) for name, values in columns.items()})
    return features


def record_episodes(episodes: Iterable[Any], root: str | Path, *, robot_type: str,
                    extras: Extras | None = None) -> dict[str, Any]:
    """Write `episodes` as a new LeRobot v3.0 dataset at `root`; returns counts (episodes, frames, success_rate,
    intervened_episodes, mean_length). Every episode must have the cameras, sizes and extra columns of the first."""
    writer: DatasetWriter | None = None
    features: dict[str, dict[str, Any]] = {}
    lengths, successes, intervened = [], [], 0
    for index, episode in enumerate(episodes):
        columns = _episode_columns(episode, extras, index)
        if writer is None:
            features = _features(episode, columns)
            writer = DatasetWriter(root, fps=episode.fps, features=features, robot_type=robot_type)
        elif _features(episode, columns) != features:
            raise ValueError(f"episode {index} ({episode.task} seed {episode.seed}) has features "
                             f"{_features(episode, columns)}, the dataset {features}")
        for t in range(len(episode.actions)):
            frame = {f"observation.images.{name}": episode.images[t, c] for c, name in enumerate(episode.camera_names)}
            frame.update({"observation.state": episode.state[t], "action": episode.actions[t]})
            frame.update({name: values[t] for name, values in columns.items()})
            writer.add_frame(frame)
        writer.save_episode(task=episode.instruction, success=bool(episode.success), seed=int(episode.seed))
        lengths.append(len(episode.actions))
        successes.append(bool(episode.success))
        intervention = getattr(episode, "intervention", None)
        intervened += int(intervention is not None and bool(np.any(intervention)))
    if writer is None:
        raise ValueError(f"no episodes to write to {root}")
    writer.finalize()
    return {"episodes": len(lengths), "frames": int(sum(lengths)), "success_rate": float(np.mean(successes)),
            "intervened_episodes": intervened, "mean_length": float(np.mean(lengths))}
