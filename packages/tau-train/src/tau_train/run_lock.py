"""The lock of a run directory: one training writes an output_dir at a time (a second is refused by name and pid)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from .checkpoint import CheckpointError

LOCK_FILE = ".lock"


class RunLockedError(CheckpointError):
    """Another live process holds the run directory's lock."""


class RunLock:
    """An exclusive `flock` on `<output_dir>/.lock` holding the owner's pid. The OS drops it when the process dies,
    so a killed run never leaves a stale lock."""

    def __init__(self, output_dir: str | Path):
        self.path = Path(output_dir) / LOCK_FILE
        self._handle = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self._handle is not None

    def acquire(self) -> None:
        """Take the lock, or raise RunLockedError naming the holder's pid."""
        if self._handle is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise RunLockedError(
                f"{self.path.parent} is being written by another training (pid {holder}, lock {self.path}); "
                "wait for it to finish or use another output_dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        """Drop the lock (the file stays; its pid is stale once nobody holds the flock)."""
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None
