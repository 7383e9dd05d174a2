"""The one episode loop of tau-sim, behind evaluation, demonstrations and RECAP rollouts.

Episodes of one task run in seeded waves of `num_envs` sub-envs (`VectorEnvs`); episode i of a task uses seed + i.
The policy is reset at each wave start and sees the wave's episodes as one batch; its chunks are executed open-loop
(`ChunkSchedule`: `action_steps`, `latency_steps`), clipped to the action space. `execution_noise` perturbs what the
env executes but not what is recorded (DART-style demonstrations: states off the expert's path, clean labels). An
optional takeover hook hands an episode to a scripted expert from a seeded step (frames marked intervention=True).
Each episode gives an `EpisodeResult`: success, length, the chunk-boundary jerk, optionally video frames and the
full `Episode`.
A worker that crashes, raises or hangs mid-episode is reported with the task and seed as a missing episode; one that
dies while starting is replaced (its wave re-run) up to MAX_START_FAILURES times in a row. Either way the vector env
is rebuilt and the rest of the wave re-run (episodes are seeded, so re-running gives the same episodes).
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
from tqdm import tqdm

from tau_sim.chunk_schedule import ChunkSchedule
from tau_sim.episode import Episode
from tau_sim.eval_report import EpisodeResult
from tau_sim.libero_env import require_libero
from tau_sim.policy import Policy
from tau_sim.registry import make_env, suite_of
from tau_sim.takeover import Takeover, TakeoverConfig
from tau_sim.vector_envs import START_UP, EnvFailure, VectorEnvs

log = logging.getLogger(__name__)

MAX_IDLE_FAILURES = 3
MAX_START_FAILURES = 3
EXECUTION_NOISE_STREAM = 0xD4A7  # seeds each episode's execution noise apart from the policy's and the env's


@dataclass(frozen=True)
class LoopConfig:
    """How episodes run: parallelism, open-loop horizon, inference latency, timeouts, takeovers, what is kept."""

    num_envs: int = 2
    use_async: bool | None = None  # worker processes; None: for LIBERO (slow steps) yes, for tabletop (~1 ms) no
    # Workers start from a clean server process: forking a parent that holds a GL context (LIBERO) or torch threads
    # (the policy) can deadlock the workers. "fork" is fine for closures over plain-numpy envs (and starts faster).
    mp_context: str | None = "forkserver"
    action_steps: int | None = None  # actions executed per policy call; None = the whole chunk
    latency_steps: int = 0  # simulated inference latency in control steps (chunk_schedule.py)
    step_timeout_s: float = 300.0  # a worker silent this long on start-up, a reset or a step is reported as hung
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    record: bool = False  # keep every episode as an `Episode` (images, state, actions, intervention, extras)
    state_key: str = "state"  # the observation entry recorded as Episode.state
    takeover: TakeoverConfig | None = None  # None: the policy acts alone
    videos_per_task: int = 0  # the first episodes of each task keep video frames (EpisodeResult.frames)
    video_size: int = 128  # camera images are subsampled by an integer stride to at most about this height
    # Gaussian std added to each executed action (one value for every dim, or one per dim), seeded per episode;
    # the recorded action (Episode.actions) stays the policy's. () = none.
    execution_noise: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not all(np.isfinite(s) and s >= 0 for s in self.execution_noise):
            raise ValueError(f"execution_noise must be finite stds >= 0, got {self.execution_noise}")
        if self.num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {self.num_envs}")
        if self.action_steps is not None and self.action_steps < 1:
            raise ValueError(f"action_steps must be >= 1 or None, got {self.action_steps}")
        if self.latency_steps < 0:
            raise ValueError(f"latency_steps must be >= 0, got {self.latency_steps}")


@dataclass(frozen=True)
class EpisodeJob:
    task: str
    episode_index: int
    seed: int


def plan_jobs(tasks: Sequence[str], episodes_per_task: int, seed: int) -> list[EpisodeJob]:
    """Episode i of every task uses seed + i."""
    return [EpisodeJob(t, i, seed + i) for t in tasks for i in range(episodes_per_task)]


def _tile(images: np.ndarray, stride: int) -> np.ndarray:
    """(N_cam, H, W, 3) -> (H / stride, N_cam * W / stride, 3): all cameras side by side, subsampled, for videos."""
    return np.concatenate([image[::stride, ::stride] for image in images], axis=1)


def _noise_std(execution_noise: Sequence[float], action_dim: int) -> np.ndarray | None:
    """The per-dim std of the execution noise, or None when there is none."""
    if not any(execution_noise):
        return None
    if len(execution_noise) not in (1, action_dim):
        raise ValueError(f"execution_noise needs 1 or {action_dim} (the action size) values, got "
                         f"{len(execution_noise)}: {tuple(execution_noise)}")
    return np.broadcast_to(np.asarray(execution_noise, dtype=np.float64), (action_dim,))


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


def accepts_action_prefix(policy: Policy) -> bool:
    """Whether policy.act takes the optional `action_prefix` keyword (or **kwargs)."""
    try:
        parameters = inspect.signature(policy.act).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "action_prefix" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


class _Track:
    """What one sub-env's episode keeps while it runs: Episode rows (when recording) and video tiles."""

    def __init__(self, record: bool, stride: int | None) -> None:
        self.record, self.stride = record, stride
        self.rows: dict[str, list] = {k: [] for k in ("images", "state", "actions", "intervention", "reward", "ok")}
        self.frames: list[np.ndarray] | None = [] if stride is not None else None
        self.jerk, self.boundaries = 0.0, 0

    def observe(self, images: np.ndarray) -> None:
        if self.frames is not None:
            self.frames.append(_tile(images, self.stride))

    def act(self, images: np.ndarray, state: np.ndarray | None, action: np.ndarray, expert: bool) -> None:
        if self.record:
            for key, value in (("images", images), ("state", state), ("actions", action), ("intervention", expert)):
                self.rows[key].append(value)

    def outcome(self, reward: float, is_success: bool) -> None:
        if self.record:
            self.rows["reward"].append(reward)
            self.rows["ok"].append(is_success)

    def episode(self, job: EpisodeJob, instruction: str, success: bool, cameras: tuple, fps: int) -> Episode:
        rows = self.rows
        return Episode(
            task=job.task, instruction=instruction, seed=job.seed, success=success,
            images=np.stack(rows["images"]), state=np.stack(rows["state"]).astype(np.float32),
            actions=np.stack(rows["actions"]).astype(np.float32), camera_names=cameras, fps=fps,
            intervention=np.asarray(rows["intervention"], dtype=bool),
            extras={"reward": np.asarray(rows["reward"], dtype=np.float32),
                    "is_success": np.asarray(rows["ok"], dtype=bool)},
        )  # fmt: skip


def _takeovers(envs: VectorEnvs, jobs: Sequence[EpisodeJob], prompts: list[str], config: LoopConfig) -> list:
    if config.takeover is None:
        return [None] * len(jobs)
    limits = envs.attribute("max_episode_steps")
    return [
        Takeover(config.takeover, job.task, prompt, job.seed, int(limit))
        for job, prompt, limit in zip(jobs, prompts, limits[: len(jobs)], strict=True)
    ]


def _run_wave(envs: VectorEnvs, policy: Policy, jobs: Sequence[EpisodeJob], config: LoopConfig,
              prefix: bool) -> list[EpisodeResult]:  # fmt: skip
    """Run len(jobs) <= num_envs episodes in lockstep; idle sub-envs replay the last job's seed and actions."""
    n = len(jobs)
    obs, info = envs.reset([job.seed for job in jobs] + [jobs[-1].seed] * (envs.num_envs - n))
    prompts = [str(p) for p in info["task"][:n]]
    if config.record and config.state_key not in obs:
        raise KeyError(f"observation has no {config.state_key!r} entry (it has {sorted(obs)}); check state_key and "
                       "env_kwargs (tabletop needs privileged_obs=True for 'privileged')")  # fmt: skip
    takeovers = _takeovers(envs, jobs, prompts, config)
    space = envs.action_space
    policy.reset()
    schedule = ChunkSchedule(n, space.shape[-1], config.action_steps, config.latency_steps)
    stride = max(1, obs["images"].shape[2] // config.video_size)
    tracks = [_Track(config.record, stride if j.episode_index < config.videos_per_task else None) for j in jobs]
    for i, track in enumerate(tracks):
        track.observe(obs["images"][i])
    done, success = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    length = np.zeros(n, dtype=np.int64)
    failure: list[str | None] = [None] * n  # why a failed episode failed, where the env says (info "failure_mode")
    previous, by_policy = np.zeros((n, space.shape[-1]), np.float32), np.zeros(n, dtype=bool)
    std = _noise_std(config.execution_noise, space.shape[-1])
    noise_rngs = [np.random.default_rng([EXECUTION_NOISE_STREAM, job.seed]) for job in jobs]
    start = time.perf_counter()
    while not done.all():
        if schedule.wants_chunk():
            kwargs = {"action_prefix": np.clip(schedule.prefix(), space.low, space.high)} if prefix else {}
            chunk = policy.act({k: v[:n] for k, v in obs.items()}, prompts, **kwargs)
            schedule.receive(_check_chunk(chunk, n, space))
        planned, boundary = schedule.next_action()
        actions = np.clip(planned, space.low, space.high)
        active = ~done
        expert = np.zeros(n, dtype=bool)
        for i in np.flatnonzero(active):
            action = None if takeovers[i] is None else takeovers[i].action(int(length[i]), obs["privileged"][i])
            if action is not None:
                actions[i], expert[i] = np.clip(action, space.low, space.high), True
        if boundary:
            jumps = np.sum((actions - previous) ** 2, axis=-1)
            for i in np.flatnonzero(active & by_policy & ~expert):
                tracks[i].jerk += float(jumps[i])
                tracks[i].boundaries += 1
        previous, by_policy = actions.copy(), ~expert
        for i in np.flatnonzero(active):
            state = obs[config.state_key][i] if config.record else None
            tracks[i].act(obs["images"][i], state, actions[i], bool(expert[i]))
        executed = actions.copy()
        if std is not None:
            for i in np.flatnonzero(active):
                executed[i] = np.clip(actions[i] + noise_rngs[i].normal(0.0, std), space.low, space.high)
        idle = np.repeat(executed[-1:], envs.num_envs - n, axis=0)
        obs, reward, terminated, truncated, info = envs.step(np.concatenate([executed, idle]))
        ended = active & (terminated[:n] | truncated[:n])
        is_success = np.asarray(info.get("is_success", terminated), dtype=bool)[:n]
        for i in np.flatnonzero(active):
            tracks[i].outcome(float(reward[i]), bool(is_success[i]))
            tracks[i].observe(obs["images"][i])
        length[active] += 1
        success[ended] = is_success[ended]
        if "failure_mode" in info:
            for i in np.flatnonzero(ended & ~is_success):
                failure[i] = str(info["failure_mode"][i]) or None
        done |= ended
    seconds = (time.perf_counter() - start) / n
    cameras = tuple(envs.attribute("camera_names")[0]) if config.record else ()
    fps = int(envs.metadata.get("render_fps", 10))
    return [
        EpisodeResult(
            task=job.task, suite=suite_of(job.task), instruction=prompts[i], episode_index=job.episode_index,
            seed=job.seed, status="ok", success=bool(success[i]), length=int(length[i]), seconds=seconds,
            jerk=track.jerk / track.boundaries if track.boundaries else None, boundaries=track.boundaries,
            failure=failure[i], frames=track.frames,
            episode=track.episode(job, prompts[i], bool(success[i]), cameras, fps) if config.record else None,
        )  # fmt: skip
        for i, (job, track) in enumerate(zip(jobs, tracks, strict=True))
    ]


def _missing(job: EpisodeJob, status: str, error: str) -> EpisodeResult:
    log.error("task %s seed %d: worker %s: %s", job.task, job.seed, status, error)
    return EpisodeResult(task=job.task, suite=suite_of(job.task), instruction=None, episode_index=job.episode_index,
                         seed=job.seed, status=status, success=None, length=None, seconds=None, error=error)


def _run_task(policy: Policy, task: str, jobs: list[EpisodeJob], config: LoopConfig,
              env_factory: Callable[..., gym.Env], worker_failures: list[dict[str, Any]],
              ) -> Iterator[EpisodeResult]:  # fmt: skip
    env_kwargs = {**config.env_kwargs, "privileged_obs": True} if config.takeover else dict(config.env_kwargs)
    envs = VectorEnvs(task, min(config.num_envs, len(jobs)), env_factory, env_kwargs, config.use_async,
                      config.mp_context, config.step_timeout_s)  # fmt: skip
    prefix = accepts_action_prefix(policy)
    pending = list(jobs)
    idle_failures = start_failures = 0
    try:
        while pending:
            wave, pending = pending[: envs.num_envs], pending[envs.num_envs :]
            try:
                finished = _run_wave(envs, policy, wave, config, prefix)
            except EnvFailure as failure:
                if failure.phase == START_UP:
                    start_failures += 1
                    gave_up = start_failures >= MAX_START_FAILURES
                    for i, (status, message) in failure.failures.items():
                        log.error("task %s: worker %d %s at start-up: %s", task, i, status, message)
                        worker_failures.append({"task": task, "phase": START_UP, "worker": i, "status": status,
                                                "seed": None, "error": message,
                                                "outcome": "gave up" if gave_up else "replaced"})  # fmt: skip
                    if gave_up:
                        error = f"workers failed to start {start_failures} times in a row; last: {failure}"
                        yield from (_missing(job, "crashed", error) for job in wave + pending)
                        return
                    pending = wave + pending
                    continue
                broken = {i: f for i, f in failure.failures.items() if i < len(wave)}
                idle_failures = idle_failures + 1 if not broken else 0
                gave_up = idle_failures >= MAX_IDLE_FAILURES  # only idle sub-envs keep breaking: give up the wave
                for i, (status, message) in failure.failures.items():
                    outcome = "episode missing" if i < len(wave) or gave_up else "wave re-run"
                    worker_failures.append({"task": task, "phase": failure.phase, "worker": i, "status": status,
                                            "seed": wave[i].seed if i < len(wave) else None, "error": message,
                                            "outcome": outcome})  # fmt: skip
                if gave_up:
                    broken = {i: ("crashed", f"idle sub-envs broke {idle_failures} times") for i in range(len(wave))}
                yield from (_missing(wave[i], status, message) for i, (status, message) in broken.items())
                pending = [job for i, job in enumerate(wave) if i not in broken] + pending
                continue
            idle_failures = start_failures = 0
            yield from finished
    finally:
        envs.close()


def run_episodes(
    policy: Policy,
    jobs: Sequence[EpisodeJob],
    config: LoopConfig,
    env_factory: Callable[..., gym.Env] = make_env,
    *,
    worker_failures: list[dict[str, Any]] | None = None,
    desc: str = "episodes",
) -> Iterator[EpisodeResult]:
    """Run `jobs` (task by task, in waves) and yield one EpisodeResult per job: status "ok", or "crashed"/"hung"
    for a missing episode. `env_factory(task_id, **config.env_kwargs)` builds envs; worker failures (start-up and
    mid-episode) are appended to `worker_failures` as dicts (task, phase, worker, status, seed, error, outcome).

    `policy.act(observation, prompts)` gets the wave's observations ({"images": uint8 (B, N_cam, H, W, 3), "state":
    (B, D), ...}) and instructions; if it accepts an `action_prefix` keyword it also gets the (B, k, A) actions that
    will be executed while it computes (k = latency_steps; empty for the first chunk of a wave). LIBERO tasks
    without the tau-sim[libero] extra raise LiberoMissingError before any env is built.
    """
    if not isinstance(policy, Policy):
        raise TypeError(f"policy must have reset() and act(observation, prompts); got {type(policy).__name__}")
    by_task: dict[str, list[EpisodeJob]] = {}
    for job in jobs:
        by_task.setdefault(job.task, []).append(job)
    if any(suite_of(task).startswith("libero") for task in by_task):
        require_libero()  # here, not in the workers: there it would only mark every episode as crashed
    failures = [] if worker_failures is None else worker_failures
    successes = completed = 0
    with tqdm(total=len(jobs), desc=desc, unit="ep") as progress:
        for task, task_jobs in by_task.items():
            for result in _run_task(policy, task, task_jobs, config, env_factory, failures):
                completed += result.status == "ok"
                successes += bool(result.success)
                progress.update(1)
                progress.set_postfix(task=task, success=f"{successes / completed:.2f}" if completed else "-")
                yield result


def collect_episodes(
    policy: Policy,
    tasks: Sequence[str],
    episodes_per_task: int,
    seed: int,
    config: LoopConfig,
    env_factory: Callable[..., gym.Env] = make_env,
    desc: str = "episodes",
) -> Iterator[Episode]:
    """Yield the recorded `Episode`s of `episodes_per_task` seeded episodes per task (episode i: seed + i), in
    order; missing episodes (broken workers) are logged as errors and skipped."""
    if not tasks:
        raise ValueError("collect_episodes needs at least one task id")
    if not config.record:
        raise ValueError("collect_episodes needs LoopConfig(record=True)")
    for result in run_episodes(policy, plan_jobs(tasks, episodes_per_task, seed), config, env_factory, desc=desc):
        if result.episode is not None:
            yield result.episode
