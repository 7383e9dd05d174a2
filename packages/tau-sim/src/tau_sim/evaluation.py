"""Vectorised, seeded, fault-tolerant evaluation of a Policy on tau-sim tasks, through the one episode loop.

Broken workers are reported (missing episodes with task and seed; start-up failures replaced), so nothing is silently
counted as a success or a failure. The summary holds per-task / per-suite success rates and the chunk-boundary jerk.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym

from tau_sim.episode_loop import EpisodeJob, LoopConfig, plan_jobs, run_episodes
from tau_sim.eval_report import EpisodeResult, summarize, write_report
from tau_sim.policy import Policy
from tau_sim.registry import make_env
from tau_sim.video import write_video_grid


@dataclass(frozen=True)
class EvalConfig:
    """How to evaluate: episodes, parallelism, open-loop horizon, latency, timeouts, videos and sharding."""

    episodes_per_task: int = 10
    seed: int = 0  # episode i of every task uses seed + i (LIBERO: init state (seed + i) % 50)
    num_envs: int = 2
    use_async: bool | None = None  # worker processes; None: for LIBERO (slow steps) yes, for tabletop (~1 ms) no
    mp_context: str | None = "forkserver"  # see LoopConfig
    action_steps: int | None = None  # actions executed per policy call; None = the whole chunk
    latency_steps: int = 0  # simulated inference latency in control steps (see chunk_schedule.py); 0 = none
    step_timeout_s: float = 300.0  # a worker silent this long on start-up, a reset or a step is reported as hung
    videos_per_task: int = 4  # the first episodes of each task are recorded into one MP4 grid
    video_fps: int = 10
    video_size: int = 128  # camera images are subsampled by an integer stride to at most about this height
    shard_index: int = 0  # tasks[shard_index::num_shards] are evaluated by this process
    num_shards: int = 1
    env_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.episodes_per_task < 1:
            raise ValueError(f"EvalConfig.episodes_per_task must be >= 1, got {self.episodes_per_task}")
        if not 0 <= self.shard_index < self.num_shards:
            raise ValueError(
                f"EvalConfig.shard_index {self.shard_index} must be in [0, num_shards={self.num_shards})"
            )
        try:
            self.loop()
        except ValueError as error:
            raise ValueError(f"EvalConfig: {error}") from error

    def loop(self) -> LoopConfig:
        """The episode-loop settings of this evaluation (results and video frames, no recorded episodes)."""
        return LoopConfig(
            num_envs=self.num_envs, use_async=self.use_async, mp_context=self.mp_context,
            action_steps=self.action_steps, latency_steps=self.latency_steps, step_timeout_s=self.step_timeout_s,
            env_kwargs=self.env_kwargs, videos_per_task=self.videos_per_task, video_size=self.video_size,
        )  # fmt: skip


def shard_jobs(tasks: Sequence[str], config: EvalConfig) -> list[EpisodeJob]:
    """The seeded episodes this shard runs: tasks[shard_index::num_shards] x episodes_per_task."""
    return plan_jobs(list(tasks)[config.shard_index :: config.num_shards], config.episodes_per_task, config.seed)


def _write_video(task: str, results: Sequence[EpisodeResult], output_dir: Path, fps: int) -> None:
    """The MP4 grid of a task's recorded episodes, labelled by success; their frames are dropped afterwards."""
    recorded = sorted((r for r in results if r.task == task and r.frames), key=lambda r: r.episode_index)
    if recorded:
        path = output_dir / "videos" / f"{task.replace('/', '__')}.mp4"
        write_video_grid([r.frames for r in recorded], [bool(r.success) for r in recorded], path, fps=fps)
    for result in recorded:
        result.frames = None


def evaluate(
    policy: Policy,
    tasks: Sequence[str],
    config: EvalConfig = EvalConfig(),
    output_dir: str | Path | None = None,
    env_factory: Callable[..., gym.Env] = make_env,
) -> dict[str, Any]:
    """Evaluate `policy` on this shard's tasks; return the summary and, with `output_dir`, write
    summary.json, success.png and videos/<task>.mp4 there. `env_factory(task_id, **config.env_kwargs)` builds envs.
    """
    jobs = shard_jobs(tasks, config)
    failures: list[dict[str, Any]] = []
    results: list[EpisodeResult] = []
    for result in run_episodes(policy, jobs, config.loop(), env_factory, worker_failures=failures, desc="eval"):
        if output_dir is not None and results and result.task != results[-1].task:  # a task is done
            _write_video(results[-1].task, results, Path(output_dir), config.video_fps)
        results.append(result)
    if output_dir is not None and results:
        _write_video(results[-1].task, results, Path(output_dir), config.video_fps)
    summary = summarize(results, [(j.task, j.seed) for j in jobs], asdict(config), failures)
    if output_dir is not None:
        write_report(summary, Path(output_dir))
    return summary
