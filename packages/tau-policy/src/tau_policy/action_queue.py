"""Real-time action queue: a robot's control loop executes the current chunk while the next one is computed.

    queue = ActionQueue(lambda prefix, frozen: policy.act(observe(), [prompt], action_prefix=prefix[None],
                                                          frozen=frozen)[0], refill_below=5)
    while running:                       # at the robot's fps
        robot.apply(queue.next_action())

When fewer than `refill_below` actions are left after an action is taken, the queue asks `infer` (in a background
thread) for a new chunk, giving it the not-yet-executed actions as the prefix and the number `frozen` of them that
will surely run before the answer arrives (the delay measured at the last request made while actions were executing,
in actions; `initial_delay` before that). Index j of the returned chunk is
the action j steps after the request, so when the answer comes after c actions were consumed the queue continues
with chunk[c:]. If the queue runs dry first, next_action() blocks for the answer (the robot waits).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

Infer = Callable[[np.ndarray, int], np.ndarray]  # (prefix (P, A), frozen) -> chunk (H, A)


class ActionQueue:
    """The executing chunk and at most one chunk request in flight (see the module docstring)."""

    def __init__(self, infer: Infer, *, refill_below: int, initial_delay: int = 0) -> None:
        if refill_below < 1:
            raise ValueError(f"refill_below must be >= 1, got {refill_below}")
        if initial_delay < 0:
            raise ValueError(f"initial_delay must be >= 0, got {initial_delay}")
        self.infer, self.refill_below = infer, refill_below
        self.delay = initial_delay  # actions consumed during the last request: the next request's frozen count
        self._actions: np.ndarray | None = None  # what is left of the executing chunk (P, A)
        self._consumed = 0  # actions handed out so far
        self._lock = threading.Condition()
        self._worker: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def remaining(self) -> int:
        """Actions left in the executing chunk."""
        with self._lock:
            return 0 if self._actions is None else len(self._actions)

    @property
    def busy(self) -> bool:
        """Whether a chunk request is in flight."""
        with self._lock:
            return self._worker is not None

    def next_action(self, timeout: float | None = None) -> np.ndarray:
        """The action for this control step; starts a request when the queue runs low, blocks when it is empty."""
        with self._lock:
            self._raise_error()
            if not self._has_actions() and self._worker is None:
                self._request()
            while not self._has_actions():
                if not self._lock.wait(timeout):
                    raise TimeoutError(f"no chunk arrived within {timeout} s")
                self._raise_error()
            action, self._actions = self._actions[0], self._actions[1:]
            self._consumed += 1
            if len(self._actions) < self.refill_below and self._worker is None:
                self._request()
            return action

    def join(self, timeout: float | None = None) -> None:
        """Wait until no request is in flight (its chunk is spliced in); raises the request's error."""
        with self._lock:
            if not self._lock.wait_for(lambda: self._worker is None, timeout):
                raise TimeoutError(f"the chunk request did not finish within {timeout} s")
            self._raise_error()

    def _has_actions(self) -> bool:
        return self._actions is not None and len(self._actions) > 0

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise RuntimeError("the chunk request failed") from error

    def _request(self) -> None:
        """Start the background request (lock held)."""
        prefix = np.zeros((0, 0), np.float32) if self._actions is None else self._actions.copy()
        frozen = min(self.delay, len(prefix))
        self._worker = threading.Thread(target=self._run, args=(prefix, frozen, self._consumed), daemon=True)
        self._worker.start()

    def _run(self, prefix: np.ndarray, frozen: int, consumed_at_request: int) -> None:
        try:
            chunk = np.asarray(self.infer(prefix, frozen), dtype=np.float32)
            error = None
        except BaseException as caught:  # handed to the control loop's thread
            chunk, error = None, caught
        with self._lock:
            self._worker = None
            if error is not None:
                self._error = error
            else:
                self._splice(chunk, self._consumed - consumed_at_request, measured=len(prefix) > 0)
            self._lock.notify_all()

    def _splice(self, chunk: np.ndarray, consumed: int, measured: bool) -> None:
        """Continue with the new chunk from the index of the step now due (lock held). `measured`: actions were
        executing during the request, so `consumed` is the delay (not so when the robot waited on an empty queue)."""
        if chunk.ndim != 2:
            self._error = ValueError(f"infer must return a (H, A) chunk, got shape {chunk.shape}")
            return
        if measured:
            self.delay = consumed
        if consumed >= len(chunk):
            self._error = ValueError(
                f"the chunk of {len(chunk)} actions arrived after {consumed} actions were executed: nothing left "
                "to splice in (raise refill_below or make inference faster)")
            return
        self._actions = chunk[consumed:]
