"""Frame-accurate video decoding by timestamp with PyAV, one open decoder per file and per process, and the check
on open that every video file decodes to what info.json declares."""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from tau_data.errors import DatasetError
from tau_data.metadata import DatasetMeta, Episode

_REDO = "re-download the file or re-encode it"


def _unreadable(err: Exception, path: Path, dataset: str, field: str, what: str) -> DatasetError:
    return DatasetError(f"{what} ({type(err).__name__}: {err}); expected a video the decoder can read: {_REDO}",
                        dataset=dataset, file=path, field=field)


class VideoFile:
    """An mp4 opened for random access: seek to the keyframe before a timestamp, decode forward, keep the nearest.

    Consecutive requests moving forward in time reuse the decoder position instead of seeking again.
    """

    max_forward_s = 1.0  # decode forward rather than seek when the next request is at most this far ahead

    def __init__(self, path: Path, dataset: str, field: str) -> None:
        self.path, self.dataset, self.field = path, dataset, field
        if not path.is_file():
            raise DatasetError("missing video file", dataset=dataset, file=path, field=field)
        try:
            self._container = av.open(str(path))
        except (av.error.FFmpegError, OSError) as err:
            raise _unreadable(err, path, dataset, field, "cannot open the video") from err
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
        """uint8 (H, W, 3) frame shown closest to `ts` seconds; error when none lies within `tolerance_s` or the
        bytes there do not decode (the error names the file and the timestamp)."""
        try:
            return self._frame_at(ts, tolerance_s)
        except av.error.FFmpegError as err:
            self._window.clear()  # the decoder is in an unknown state: the next request seeks afresh
            raise _unreadable(err, self.path, self.dataset, self.field,
                              f"cannot decode the frame at timestamp {ts:.6f}s") from err

    def _frame_at(self, ts: float, tolerance_s: float) -> np.ndarray:
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


@dataclass(frozen=True)
class FirstFrame:
    """What a video file really holds, read from its first decoded frame."""

    height: int
    width: int
    codec: str  # canonical codec name, e.g. "av1", "h264"


def probe_video(path: Path, dataset: str, field: str) -> FirstFrame:
    """Open `path` and decode its first frame (about 0.3 ms for a 96x96 AV1 file); an unreadable file is an error."""
    if not path.is_file():
        raise DatasetError("missing video file", dataset=dataset, file=path, field=field)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DatasetError(f"the file has no video stream; expected one: {_REDO}", dataset=dataset,
                                   file=path, field=field)
            stream = container.streams.video[0]
            stream.thread_type = "NONE"
            stream.codec_context.thread_count = 1
            frame = next(container.decode(stream), None)
            codec = stream.codec_context.codec
    except (av.error.FFmpegError, OSError) as err:
        raise _unreadable(err, path, dataset, field, "cannot decode the first frame") from err
    if frame is None:
        raise DatasetError(f"the video stream has no frames; expected at least one: {_REDO}", dataset=dataset,
                           file=path, field=field)
    return FirstFrame(frame.height, frame.width, codec.canonical_name or codec.name)


def _canonical_codec(name: str) -> str | None:
    """The canonical codec name of an encoder or decoder name ("libsvtav1" -> "av1"); None when PyAV lacks it."""
    for mode in ("r", "w"):
        try:
            codec = av.codec.Codec(name, mode)
        except (av.error.FFmpegError, ValueError):
            continue
        return codec.canonical_name or codec.name
    return None


def declared_hw(feature: dict) -> tuple[int, int] | None:
    """(height, width) of a camera feature's `shape` ((H, W, C), or (C, H, W) when `names` start with channels)."""
    shape = [int(s) for s in feature.get("shape", ())]
    if len(shape) != 3:
        return None
    names = list(feature.get("names") or [])
    chw = names[:1] == ["channels"] or (not names and shape[0] in (1, 3) and shape[2] not in (1, 3))
    return (shape[1], shape[2]) if chw else (shape[0], shape[1])


def check_video_streams(meta: DatasetMeta, episodes: Iterable[Episode]) -> None:
    """Decode the first frame of each video file of `episodes` and check it against info.json: resolution (the
    feature's `shape` and `info.video.height/width`) and codec (`info.video.codec`)."""
    info_path = meta.root / "meta" / "info.json"
    seen: set[Path] = set()
    for ep in episodes:
        for key, segment in ep.videos.items():
            if segment.path in seen:
                continue
            seen.add(segment.path)
            first = probe_video(segment.path, meta.name, key)
            feature = meta.features[key]
            info = feature.get("info") or {}
            declared = [("shape", declared_hw(feature))]
            if "video.height" in info and "video.width" in info:
                declared.append(("info video.height x video.width", (int(info["video.height"]),
                                                                      int(info["video.width"]))))
            for what, hw in declared:
                if hw is not None and hw != (first.height, first.width):
                    raise DatasetError(f"the video is {first.height}x{first.width} (H x W) but {info_path} declares "
                                       f"{hw[0]}x{hw[1]} in its {what}; expected them to agree: fix info.json or "
                                       f"re-encode the video", dataset=meta.name, file=segment.path, field=key)
            declared_codec = info.get("video.codec")
            canonical = _canonical_codec(str(declared_codec)) if declared_codec else None
            if canonical is not None and canonical != first.codec:
                raise DatasetError(f"the video is {first.codec} but {info_path} declares video.codec="
                                   f"{declared_codec!r}; expected them to agree: fix info.json",
                                   dataset=meta.name, file=segment.path, field=key)
