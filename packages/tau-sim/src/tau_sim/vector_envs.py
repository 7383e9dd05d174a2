"""The vector env of one task, which turns crashed, raising or hung sub-envs into an `EnvFailure` naming them.

Sub-envs run as gymnasium AsyncVectorEnv workers (one process each) or in-process (SyncVectorEnv). A failure is
either at start-up (a worker died or went silent while building its env, before any episode ran) or during an
episode (reset/step); either way the vector env is closed, and the next call builds a fresh one.
"""

from __future__ import annotations

import functools
import multiprocessing
import time
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
from gymnasium.vector.async_vector_env import AsyncState

from tau_sim.env_guard import EpisodeGuard
from tau_sim.registry import suite_of

DEATH_GRACE_S = 5.0
START_UP = "start-up"
EPISODE = "episode"


class EnvFailure(Exception):
    """Sub-envs of a vector env broke: {env index: (status, message)}, status "crashed" or "hung", in `phase`
    "start-up" (while the workers built their envs) or "episode" (in a reset or step)."""

    def __init__(self, failures: dict[int, tuple[str, str]], phase: str) -> None:
        super().__init__(f"{phase}: {failures}")
        self.failures = failures
        self.phase = phase


class _AsyncEnvs(gym.vector.AsyncVectorEnv):
    """AsyncVectorEnv whose start-up handshake has a timeout (gymnasium's waits forever) and keeps its error in
    `start_error` instead of raising it out of __init__, so that the caller can still tell which worker died.

    The handshake must stay inside __init__: the workers unpickle the observation buffers' locks, which gymnasium
    only keeps alive until __init__ returns."""

    def __init__(self, env_fns: Sequence[Callable[[], gym.Env]], context: str | None, timeout: float) -> None:
        self.start_timeout = timeout
        self.start_error: Exception | None = None
        super().__init__(env_fns, context=context)

    def _check_spaces(self) -> None:
        """Wait until every worker has built its env and answers, then check they agree on the spaces."""
        try:
            self.call_async("observation_space")
            spaces = self.call_wait(timeout=self.start_timeout)
        except Exception as error:
            self.start_error = error
            return
        if any(space != self.single_observation_space for space in spaces):
            raise RuntimeError(f"sub-envs of one task disagree on their observation space: {spaces}")


def _guarded_env(env_factory: Callable[..., gym.Env], task: str, env_kwargs: dict[str, Any]) -> gym.Env:
    return EpisodeGuard(env_factory(task, **env_kwargs))


def _diagnose(vec: gym.vector.VectorEnv, error: BaseException) -> dict[int, tuple[str, str]]:
    """Which sub-envs broke, and how, after `error` came out of a vector env call."""
    message = f"{type(error).__name__}: {error}"
    if isinstance(vec, gym.vector.SyncVectorEnv):
        return {
            i: ("crashed", env.error or message) for i, env in enumerate(vec.envs) if env.error is not None
        }
    failures: dict[int, tuple[str, str]] = {}
    deadline = time.monotonic() + (0.0 if isinstance(error, multiprocessing.TimeoutError) else DEATH_GRACE_S)
    while all(p.is_alive() for p in vec.processes) and time.monotonic() < deadline:
        time.sleep(0.02)  # a killed worker's pipe reports EOF slightly before the process can be reaped
    for i, process in enumerate(vec.processes):
        if vec.parent_pipes[i] is None:
            process.join(timeout=5)
        if not process.is_alive():
            failures[i] = ("crashed", f"worker exited with code {process.exitcode}; {message}")
    if isinstance(error, multiprocessing.TimeoutError):
        for i, pipe in enumerate(vec.parent_pipes):
            if i not in failures and pipe is not None and not pipe.poll(0):
                failures[i] = ("hung", f"no answer within the step timeout; {message}")
    return failures


class VectorEnvs:
    """`num_envs` sub-envs of one task, built on first use (and again after a failure)."""

    def __init__(
        self,
        task: str,
        num_envs: int,
        env_factory: Callable[..., gym.Env],
        env_kwargs: dict[str, Any],
        use_async: bool | None,
        mp_context: str | None,
        timeout_s: float,
    ) -> None:
        self.task = task
        self.num_envs = num_envs
        self.env_fns = [functools.partial(_guarded_env, env_factory, task, env_kwargs)] * num_envs
        # None: worker processes for LIBERO (slow steps), in-process for tabletop (~1 ms a step)
        self.use_async = suite_of(task).startswith("libero") if use_async is None else use_async
        self.mp_context = mp_context
        self.timeout_s = timeout_s
        self.vec: gym.vector.VectorEnv | None = None

    def _open(self) -> gym.vector.VectorEnv:
        """The vector env, built now if needed; errors in this process (a bad env kwarg) propagate as they are."""
        if self.vec is not None:
            return self.vec
        if not self.use_async:
            self.vec = gym.vector.SyncVectorEnv(self.env_fns)
            return self.vec
        vec = _AsyncEnvs(self.env_fns, context=self.mp_context, timeout=self.timeout_s)
        self.vec = vec
        if vec.start_error is not None:
            failures = _diagnose(vec, vec.start_error)
            self.close(broken=True)
            if not failures:
                raise vec.start_error
            raise EnvFailure(failures, START_UP) from vec.start_error
        return vec

    @property
    def action_space(self) -> gym.Space:
        return self._open().single_action_space

    @property
    def metadata(self) -> dict[str, Any]:
        return self._open().metadata

    def close(self, broken: bool = False) -> None:
        if self.vec is None:
            return
        if isinstance(self.vec, gym.vector.AsyncVectorEnv):
            if broken:  # a dead worker's pipe cannot answer the pending call that close() would wait for
                self.vec._state = AsyncState.DEFAULT
            self.vec.close(terminate=broken)
        else:
            self.vec.close()
        self.vec = None

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """reset / step / call through the vector env, turning any env-side failure into EnvFailure."""
        vec = self._open()
        try:
            if isinstance(vec, gym.vector.AsyncVectorEnv):
                getattr(vec, f"{method}_async")(*args, **kwargs)
                return getattr(vec, f"{method}_wait")(timeout=self.timeout_s)
            return getattr(vec, method)(*args, **kwargs)
        except Exception as error:
            failures = _diagnose(vec, error)
            if not failures:
                raise
            self.close(broken=True)
            raise EnvFailure(failures, EPISODE) from error

    def reset(self, seeds: Sequence[int]) -> tuple[dict[str, Any], dict[str, Any]]:
        return self.call("reset", seed=list(seeds))

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        return self.call("step", actions)

    def attribute(self, name: str) -> tuple[Any, ...]:
        """An attribute of every sub-env's unwrapped env (e.g. max_episode_steps)."""
        return tuple(self.call("call", name))
