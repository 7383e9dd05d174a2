"""Vectorised, seeded, fault-tolerant evaluation of a Policy on tau-sim tasks.

Episodes of one task run in waves of `num_envs` parallel sub-envs (gymnasium AsyncVectorEnv workers, or
SyncVectorEnv in-process). The policy is reset at each wave start and its action chunks are executed open-loop for
`action_steps` steps. A sub-env whose worker crashes, raises or hangs is reported with its task and seed as a missing
episode; the vector env is rebuilt and the rest of the wave is re-run (episodes are seeded, so re-running gives the
same episodes), so nothing is silently counted as a success or a failure.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector.async_vector_env import AsyncState
from tqdm import tqdm

from tau_sim.env_guard import EpisodeGuard
from tau_sim.eval_report import EpisodeResult, summarize, write_report
from tau_sim.policy import Policy
from tau_sim.registry import make_env, suite_of
from tau_sim.video import write_video_grid

log = logging.getLogger(__name__)

MAX_IDLE_FAILURES = 3
DEATH_GRACE_S = 5.0


@dataclass(frozen=True)
class EvalConfig:
    """How to evaluate: episodes, parallelism, open-loop horizon, timeouts, videos and sharding."""

    episodes_per_task: int = 10
    seed: int = 0  # episode i of every task uses seed + i (LIBERO: init state (seed + i) % 50)
    num_envs: int = 2
    use_async: bool | None = (
        None  # worker processes; None: for LIBERO (slow steps) yes, for tabletop (~1 ms) no
    )
    # Workers start from a clean server process: forking a parent that holds a GL context (LIBERO) or torch threads
    # (the policy) can deadlock the workers. "fork" is fine for closures over plain-numpy envs (and starts faster).
    mp_context: str | None = "forkserver"
    action_steps: int | None = None  # actions executed per policy call; None = the whole chunk
    step_timeout_s: float = 300.0  # a worker silent this long on a reset/step is reported as hung
    videos_per_task: int = 4  # the first episodes of each task are recorded into one MP4 grid
    video_fps: int = 10
    video_size: int = 128  # camera images are subsampled by an integer stride to at most about this height
    shard_index: int = 0  # tasks[shard_index::num_shards] are evaluated by this process
    num_shards: int = 1
    env_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.episodes_per_task < 1 or self.num_envs < 1:
            raise ValueError("EvalConfig.episodes_per_task and num_envs must be >= 1")
        if self.action_steps is not None and self.action_steps < 1:
            raise ValueError(f"EvalConfig.action_steps must be >= 1 or None, got {self.action_steps}")
        if not 0 <= self.shard_index < self.num_shards:
            raise ValueError(
                f"EvalConfig.shard_index {self.shard_index} must be in [0, num_shards={self.num_shards})"
            )


@dataclass(frozen=True)
class EpisodeJob:
    task: str
    episode_index: int
    seed: int


class EnvFailure(Exception):
    """Sub-envs of a vector env broke: {env index: (status, message)} with status "crashed" or "hung"."""

    def __init__(self, failures: dict[int, tuple[str, str]]) -> None:
        super().__init__(str(failures))
        self.failures = failures


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


class _WaveRunner:
    """Owns the vector env of one task and runs waves of seeded episodes on it."""

    def __init__(
        self, task: str, config: EvalConfig, env_factory: Callable[..., gym.Env], num_envs: int
    ) -> None:
        self.task = task
        self.config = config
        self.num_envs = num_envs
        self.env_fns = [functools.partial(_guarded_env, env_factory, task, config.env_kwargs)] * num_envs
        self.vec: gym.vector.VectorEnv | None = None

    def _open(self) -> gym.vector.VectorEnv:
        if self.vec is None:
            use_async = self.config.use_async
            if use_async is None:
                use_async = suite_of(self.task).startswith("libero")
            if use_async:
                self.vec = gym.vector.AsyncVectorEnv(self.env_fns, context=self.config.mp_context)
            else:
                self.vec = gym.vector.SyncVectorEnv(self.env_fns)
        return self.vec

    def close(self, broken: bool = False) -> None:
        if self.vec is not None:
            if isinstance(self.vec, gym.vector.AsyncVectorEnv):
                if broken:  # a dead worker's pipe cannot answer the pending call that close() would wait for
                    self.vec._state = AsyncState.DEFAULT
                self.vec.close(terminate=broken)
            else:
                self.vec.close()
            self.vec = None

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """reset/step through the vector env, turning any env-side failure into EnvFailure."""
        vec = self._open()
        try:
            if isinstance(vec, gym.vector.AsyncVectorEnv):
                getattr(vec, f"{method}_async")(*args, **kwargs)
                return getattr(vec, f"{method}_wait")(timeout=self.config.step_timeout_s)
            return getattr(vec, method)(*args, **kwargs)
        except Exception as error:
            failures = _diagnose(vec, error)
            if not failures:
                raise
            self.close(broken=True)
            raise EnvFailure(failures) from error

    def run_wave(self, policy: Policy, jobs: Sequence[EpisodeJob], record: set[int]) -> list[EpisodeResult]:
        """Run len(jobs) <= num_envs episodes in lockstep; idle sub-envs replay the last job's seed, unused."""
        seeds = [job.seed for job in jobs] + [jobs[-1].seed] * (self.num_envs - len(jobs))
        obs, info = self._call("reset", seed=seeds)
        prompts = [str(p) for p in info["task"]]
        policy.reset()
        n = len(jobs)
        done = np.zeros(n, dtype=bool)
        success = np.zeros(n, dtype=bool)
        length = np.zeros(n, dtype=np.int64)
        stride = max(1, obs["images"].shape[2] // self.config.video_size)
        frames: dict[int, list[np.ndarray]] = {i: [_tile(obs["images"][i], stride)] for i in record}
        start = time.perf_counter()
        while not done.all():
            chunk = _check_chunk(policy.act(obs, prompts), self.num_envs, self.vec.single_action_space)
            steps = (
                chunk.shape[1]
                if self.config.action_steps is None
                else min(self.config.action_steps, chunk.shape[1])
            )
            for t in range(steps):
                obs, _, terminated, truncated, info = self._call("step", chunk[:, t])
                active = ~done
                length[active] += 1
                ended = active & (terminated[:n] | truncated[:n])
                is_success = info.get("is_success", terminated)[:n]
                success[ended] = np.asarray(is_success, dtype=bool)[ended]
                done |= ended
                for i in record:
                    if active[i]:
                        frames[i].append(_tile(obs["images"][i], stride))
                if done.all():
                    break
        seconds = (time.perf_counter() - start) / n
        return [
            EpisodeResult(
                task=job.task,
                suite=suite_of(job.task),
                instruction=prompts[i],
                episode_index=job.episode_index,
                seed=job.seed,
                status="ok",
                success=bool(success[i]),
                length=int(length[i]),
                seconds=seconds,
                frames=frames.get(i),
            )
            for i, job in enumerate(jobs)
        ]


def _tile(images: np.ndarray, stride: int) -> np.ndarray:
    """(N_cam, H, W, 3) -> (H / stride, N_cam * W / stride, 3): all cameras side by side, subsampled, for videos."""
    return np.concatenate([image[::stride, ::stride] for image in images], axis=1)


def _check_chunk(chunk: Any, batch: int, action_space: gym.Space) -> np.ndarray:
    chunk = np.asarray(chunk, dtype=np.float32)
    action_dim = action_space.shape[-1]
    if chunk.ndim != 3 or chunk.shape[0] != batch or chunk.shape[2] != action_dim or chunk.shape[1] < 1:
        raise ValueError(
            f"policy.act must return (batch={batch}, chunk>=1, action_dim={action_dim}), got {chunk.shape}"
        )
    if not np.all(np.isfinite(chunk)):
        raise ValueError("policy.act returned NaN or infinite actions")
    return chunk


def plan_jobs(tasks: Sequence[str], config: EvalConfig) -> list[EpisodeJob]:
    """The seeded episodes this shard runs: tasks[shard_index::num_shards] x episodes_per_task."""
    shard_tasks = list(tasks)[config.shard_index :: config.num_shards]
    return [EpisodeJob(t, i, config.seed + i) for t in shard_tasks for i in range(config.episodes_per_task)]


def _run_task(
    policy: Policy,
    task: str,
    jobs: list[EpisodeJob],
    config: EvalConfig,
    env_factory: Callable[..., gym.Env],
    progress: tqdm,
) -> list[EpisodeResult]:
    runner = _WaveRunner(task, config, env_factory, min(config.num_envs, len(jobs)))
    results: list[EpisodeResult] = []
    pending = list(jobs)
    idle_failures = 0
    try:
        while pending:
            wave, pending = pending[: runner.num_envs], pending[runner.num_envs :]
            record = {i for i, job in enumerate(wave) if job.episode_index < config.videos_per_task}
            try:
                finished = runner.run_wave(policy, wave, record)
            except EnvFailure as failure:
                broken = {i: f for i, f in failure.failures.items() if i < len(wave)}
                idle_failures = idle_failures + 1 if not broken else 0
                if (
                    idle_failures >= MAX_IDLE_FAILURES
                ):  # only idle sub-envs keep breaking: give up on this wave
                    broken = {
                        i: ("crashed", f"idle sub-envs broke {idle_failures} times") for i in range(len(wave))
                    }
                for i, (status, message) in broken.items():
                    job = wave[i]
                    log.error("task %s seed %d: worker %s: %s", job.task, job.seed, status, message)
                    results.append(
                        EpisodeResult(
                            task=job.task,
                            suite=suite_of(job.task),
                            instruction=None,
                            episode_index=job.episode_index,
                            seed=job.seed,
                            status=status,
                            success=None,
                            length=None,
                            seconds=None,
                            error=message,
                        )
                    )
                    progress.update(1)
                pending = [job for i, job in enumerate(wave) if i not in broken] + pending
                continue
            results.extend(finished)
            progress.update(len(finished))
            done = [r for r in results if r.status == "ok"]
            progress.set_postfix(
                task=task, success=f"{np.mean([r.success for r in done]):.2f}" if done else "-"
            )
    finally:
        runner.close()
    return results


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
    if not isinstance(policy, Policy):
        raise TypeError(
            f"policy must have reset() and act(observation, prompts); got {type(policy).__name__}"
        )
    jobs = plan_jobs(tasks, config)
    by_task: dict[str, list[EpisodeJob]] = {}
    for job in jobs:
        by_task.setdefault(job.task, []).append(job)
    results: list[EpisodeResult] = []
    with tqdm(total=len(jobs), desc="eval", unit="ep") as progress:
        for task, task_jobs in by_task.items():
            task_results = _run_task(policy, task, task_jobs, config, env_factory, progress)
            results.extend(task_results)
            if output_dir is not None:
                recorded = sorted((r for r in task_results if r.frames), key=lambda r: r.episode_index)
                if recorded:
                    path = Path(output_dir) / "videos" / f"{task.replace('/', '__')}.mp4"
                    write_video_grid(
                        [r.frames for r in recorded],
                        [bool(r.success) for r in recorded],
                        path,
                        fps=config.video_fps,
                    )
    config_dict = asdict(config)
    summary = summarize(results, planned=[(j.task, j.seed) for j in jobs], config=config_dict)
    if output_dir is not None:
        write_report(summary, Path(output_dir))
    return summary
