"""ActionQueue semantics with a fake slow policy whose answers are released by events (no sleeps)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from tau_policy import ActionQueue

TIMEOUT = 10.0


class SlowPolicy:
    """Chunk i holds 100 * i + j at index j; each call blocks until the test releases it."""

    def __init__(self, chunk: int = 10, fail: bool = False, later_chunk: int | None = None) -> None:
        self.chunk, self.fail, self.later_chunk = chunk, fail, later_chunk or chunk
        self.calls: list[tuple[np.ndarray, int]] = []
        self.started = [threading.Event() for _ in range(8)]
        self.release = [threading.Event() for _ in range(8)]

    def __call__(self, prefix: np.ndarray, frozen: int) -> np.ndarray:
        i = len(self.calls)
        self.calls.append((prefix, frozen))
        self.started[i].set()
        assert self.release[i].wait(TIMEOUT)
        if self.fail:
            raise RuntimeError("policy crashed")
        length = self.chunk if i == 0 else self.later_chunk
        return (100.0 * i + np.arange(length, dtype=np.float32))[:, None].repeat(2, axis=1)


def take(queue: ActionQueue, n: int) -> list[float]:
    return [float(queue.next_action(TIMEOUT)[0]) for _ in range(n)]


def test_the_next_chunk_is_spliced_in_after_the_actions_consumed_while_it_was_computed():
    policy = SlowPolicy()
    policy.release[0].set()
    queue = ActionQueue(policy, refill_below=3)
    assert take(queue, 8) == [0, 1, 2, 3, 4, 5, 6, 7]  # the first call waits for the first chunk
    assert queue.busy and queue.remaining == 2  # 2 < 3 left: a request is in flight
    prefix, frozen = policy.calls[1]
    np.testing.assert_array_equal(prefix[:, 0], [8, 9])
    assert frozen == 0  # no delay measured yet
    assert take(queue, 1) == [8]  # the old chunk keeps running while the next one is computed
    policy.release[1].set()
    queue.join(TIMEOUT)
    assert queue.delay == 1 and not queue.busy
    assert take(queue, 7) == [101, 102, 103, 104, 105, 106, 107]  # index 1: one action ran meanwhile
    prefix, frozen = policy.calls[2]
    np.testing.assert_array_equal(prefix[:, 0], [108, 109])
    assert frozen == 1  # the last measured delay is frozen for sure


def test_an_empty_queue_blocks_until_the_chunk_arrives():
    policy = SlowPolicy(chunk=3)
    policy.release[0].set()
    queue = ActionQueue(policy, refill_below=1)
    assert take(queue, 3) == [0, 1, 2]  # the request for chunk 1 starts as the last action is taken
    releaser = threading.Thread(target=lambda: (policy.started[1].wait(TIMEOUT), policy.release[1].set()))
    releaser.start()
    assert take(queue, 1) == [100]  # nothing ran while waiting: the new chunk starts at index 0
    releaser.join()
    assert queue.delay == 0


def test_errors_reach_the_control_loop():
    policy = SlowPolicy(fail=True)
    policy.release[0].set()
    queue = ActionQueue(policy, refill_below=3)
    with pytest.raises(RuntimeError, match="chunk request failed"):
        queue.next_action(TIMEOUT)
    late = SlowPolicy(chunk=4, later_chunk=3)
    late.release[0].set()
    queue = ActionQueue(late, refill_below=4)
    assert take(queue, 1) == [0]  # 3 < 4 left: request 1 starts
    assert take(queue, 3) == [1, 2, 3]
    late.release[1].set()
    with pytest.raises(RuntimeError, match="chunk request failed") as info:
        queue.join(TIMEOUT)
    assert "raise refill_below" in str(info.value.__cause__)
    with pytest.raises(ValueError, match="refill_below"):
        ActionQueue(late, refill_below=0)
