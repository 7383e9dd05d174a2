"""SIGTERM pauses a run instead of killing it: the flag the training loop polls after each step, and the exception
`Trainer.fit` raises once the checkpoint of that step is written."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any


class TrainingInterrupted(Exception):
    """SIGTERM paused the run: `checkpoint` holds step `step` of `steps`; running again resumes from it. Apps exit
    with `EXIT_CODE` (EX_TEMPFAIL) and export nothing as trained."""

    EXIT_CODE = 75

    def __init__(self, checkpoint: Path, step: int, steps: int):
        super().__init__(
            f"SIGTERM: paused at step {step} of {steps}; checkpoint {checkpoint} written; run the same command "
            "again to resume from it"
        )
        self.checkpoint, self.step, self.steps = checkpoint, step, steps


class SigtermFlag:
    """While active (and enabled), SIGTERM only sets `received`, so the loop can finish its step and checkpoint."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.received = False
        self._previous = None

    def __enter__(self) -> "SigtermFlag":
        if self.enabled and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = True

    def __exit__(self, *exc_info: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
