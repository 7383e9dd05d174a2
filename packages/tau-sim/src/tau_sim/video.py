"""MP4 videos of evaluation episodes: several episodes tiled in one grid, each framed green (success) or red."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np

BORDER = 2
SUCCESS_RGB = np.array([40, 200, 60], dtype=np.uint8)
FAILURE_RGB = np.array([220, 40, 40], dtype=np.uint8)


def _framed(frame: np.ndarray, color: np.ndarray | None) -> np.ndarray:
    out = np.pad(frame, ((BORDER, BORDER), (BORDER, BORDER), (0, 0)))
    if color is not None:
        out[:BORDER], out[-BORDER:], out[:, :BORDER], out[:, -BORDER:] = color, color, color, color
    return out


def grid_frames(episodes: Sequence[Sequence[np.ndarray]], successes: Sequence[bool]) -> list[np.ndarray]:
    """Tile episodes (lists of (H, W, 3) uint8 frames of one size) into grid frames; a finished episode holds its last
    frame with a green (success) or red (failure) border until the longest one ends."""
    if not episodes or any(len(e) == 0 for e in episodes):
        raise ValueError("write_video_grid needs at least one episode and one frame per episode")
    cols = math.ceil(math.sqrt(len(episodes)))
    rows = math.ceil(len(episodes) / cols)
    h, w, _ = episodes[0][0].shape
    length = max(len(e) for e in episodes)
    frames = []
    for t in range(length):
        canvas = np.zeros((rows * (h + 2 * BORDER), cols * (w + 2 * BORDER), 3), dtype=np.uint8)
        for k, (episode, success) in enumerate(zip(episodes, successes, strict=True)):
            ended = t >= len(episode) - 1
            color = (SUCCESS_RGB if success else FAILURE_RGB) if ended else None
            tile = _framed(episode[min(t, len(episode) - 1)], color)
            r, c = divmod(k, cols)
            canvas[
                r * tile.shape[0] : (r + 1) * tile.shape[0], c * tile.shape[1] : (c + 1) * tile.shape[1]
            ] = tile
        frames.append(canvas)
    return frames


def write_video_grid(
    episodes: Sequence[Sequence[np.ndarray]], successes: Sequence[bool], path: str | Path, fps: int = 10
) -> None:
    """Write the episode grid as an H.264 MP4 (frames padded to even sizes, as yuv420p requires)."""
    frames = grid_frames(episodes, successes)
    h, w, _ = frames[0].shape
    pad_h, pad_w = h % 2, w % 2
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = w + pad_w, h + pad_h
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            image = np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)))
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
