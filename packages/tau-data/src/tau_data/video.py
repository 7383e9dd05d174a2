"""Frame-accurate video decoding by timestamp with PyAV, one open decoder per file and per process."""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from tau_data.errors import DatasetError


class VideoFile:
    """An mp4 opened for random access: seek to the keyframe before a timestamp, decode forward, keep the nearest.

    Consecutive requests moving forward in time reuse the decoder position instead of seeking again.
    """

    max_forward_s = 1.0  # decode forward rather than seek when the next request is at most this far ahead

    def __init__(self, path: Path, dataset: str, field: str) -> None:
        self.path, self.dataset, self.field = path, dataset, field
        if not path.is_file():
            raise DatasetError("missing video file", dataset=dataset, file=path, field=field)
        self._container = av.open(str(path))
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "NONE"
        self._stream.codec_context.thread_count = 1
        self._time_base = float(self._stream.time_base)
        self._reformatter = VideoReformatter()  # keeps its swscale context across frames (a frame's own does not)
        self._frames = iter(())
        self._window: list[list] = []  # the last decoded frames as [time, frame or rgb array]

    def close(self) -> None:
        self._container.close()

    def frame_at(self, ts: float, tolerance_s: float) -> np.ndarray:
        """uint8 (H, W, 3) frame shown closest to `ts` seconds; error when none lies within `tolerance_s`."""
        window = self._window
        if not window or window[0][0] > ts + tolerance_s or ts > window[-1][0] + self.max_forward_s:
            self._container.seek(int(ts / self._time_base), stream=self._stream, backward=True, any_frame=False)
            self._frames = self._container.decode(self._stream)
            window.clear()
        while not window or window[-1][0] < ts:
            frame = next(self._frames, None)
            if frame is None:
                break
            window.append([float(frame.pts * self._time_base), frame])
            del window[:-2]
        if window:
            best = min(window, key=lambda item: abs(item[0] - ts))
            if abs(best[0] - ts) <= tolerance_s:
                if not isinstance(best[1], np.ndarray):
                    best[1] = self._reformatter.reformat(best[1], format="rgb24").to_ndarray()
                return best[1]
        raise DatasetError(f"no frame within {tolerance_s}s of timestamp {ts:.6f}s", dataset=self.dataset,
                           file=self.path, field=self.field)


class VideoCache:
    """Decoders keyed by file, opened lazily and reopened after a fork (a child never uses its parent's decoders).

    Decoders inherited through a fork are kept referenced, never closed: freeing them in the child would join
    decoder threads that only exist in the parent and hang the worker.
    """

    def __init__(self, max_open: int = 64) -> None:
        self.max_open = max_open
        self._pid = os.getpid()
        self._files: OrderedDict[Path, VideoFile] = OrderedDict()
        self._inherited: list[OrderedDict[Path, VideoFile]] = []

    def get(self, path: Path, dataset: str, field: str) -> VideoFile:
        """The decoder of `path` in this process, opening it (and closing the least recently used) if needed."""
        if os.getpid() != self._pid:
            self._inherited.append(self._files)
            self._pid, self._files = os.getpid(), OrderedDict()
        video = self._files.get(path)
        if video is None:
            video = self._files[path] = VideoFile(path, dataset, field)
            if len(self._files) > self.max_open:
                self._files.popitem(last=False)[1].close()
        self._files.move_to_end(path)
        return video

    def __getstate__(self) -> dict:
        return {"max_open": self.max_open}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state.get("max_open", 64))
