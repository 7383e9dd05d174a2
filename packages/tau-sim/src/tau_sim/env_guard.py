"""A wrapper that parks a sub-environment once its episode ends and remembers the error that broke it.

Vector envs keep stepping every sub-env; the evaluator runs episodes in waves, so a finished sub-env must neither
keep simulating (costly for LIBERO) nor reset itself. After the episode ends, steps and unseeded resets (the vector
env's autoreset) return the last observation without touching the simulator; a seeded reset starts a new episode.
"""

from __future__ import annotations

import traceback
from typing import Any

import gymnasium as gym


class EpisodeGuard(gym.Wrapper):
    """Parks the env after termination/truncation; `error` holds the traceback of the last exception it raised."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.finished = False
        self.error: str | None = None
        self._last: tuple[Any, dict[str, Any]] | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        if seed is None and options is None and self.finished and self._last is not None:
            return self._last
        try:
            obs, info = self.env.reset(seed=seed, options=options)
        except Exception:
            self.error = traceback.format_exc()
            raise
        self.finished = False
        self._last = (obs, info)
        return obs, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        if self.finished and self._last is not None:
            obs, info = self._last
            return obs, 0.0, False, False, info
        try:
            obs, reward, terminated, truncated, info = self.env.step(action)
        except Exception:
            self.error = traceback.format_exc()
            raise
        if terminated or truncated:
            self.finished = True
            self._last = (obs, info)
        return obs, reward, terminated, truncated, info
