import json
import os
import signal
import time

import av
import gymnasium as gym
import numpy as np
import pytest

from tau_sim import (
    EvalConfig,
    ExpertConfig,
    TabletopExpertPolicy,
    evaluate,
    make_env,
    merge_summaries,
    suite_tasks,
)

PRIVILEGED = {"privileged_obs": True, "image_size": 32}
TARGET_TASKS = suite_tasks("tabletop_target")


class Sabotage(gym.Wrapper):
    """Breaks the episode with seed `bad_seed` at its third step: killed worker, exception, or hang."""

    def __init__(self, env: gym.Env, bad_seed: int, mode: str) -> None:
        super().__init__(env)
        self.bad_seed, self.mode, self.seed, self.t = bad_seed, mode, None, 0

    def reset(self, *, seed=None, options=None):
        self.seed, self.t = seed, 0
        return self.env.reset(seed=seed, options=options)

    def step(self, action):
        self.t += 1
        if self.seed == self.bad_seed and self.t == 3:
            if self.mode == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if self.mode == "raise":
                raise RuntimeError("simulator exploded")
            if self.mode == "hang":
                time.sleep(3600)
        return self.env.step(action)


def sabotaged_factory(bad_task: str, bad_seed: int, mode: str):
    def factory(task: str, **kwargs) -> gym.Env:
        env = make_env(task, **kwargs)
        return Sabotage(env, bad_seed, mode) if task == bad_task else env

    return factory


def test_vectorised_scripted_policy_reports_expected_success_and_outputs(tmp_path):
    policy = TabletopExpertPolicy(ExpertConfig(mistake_rate=0.5), seed=1)
    config = EvalConfig(
        episodes_per_task=16,
        num_envs=4,
        use_async=True,
        mp_context="fork",
        videos_per_task=3,
        env_kwargs=PRIVILEGED,
    )
    summary = evaluate(policy, TARGET_TASKS, config, output_dir=tmp_path)
    overall = summary["overall"]
    assert overall["planned"] == overall["completed"] == 48 and overall["missing"] == 0
    # 48 episodes, expected 0.5 (mistakes are the only failures): 4 standard deviations is +-0.29
    assert abs(overall["success_rate"] - 0.5) < 0.29
    assert set(summary["tasks"]) == set(TARGET_TASKS)
    assert summary["suites"]["tabletop_target"]["completed"] == 48
    failures = [e for e in summary["episodes"] if not e["success"]]
    assert all(e["length"] == 100 for e in failures)  # failed episodes run to the step limit
    # the expert's mistakes (pushing another block) are its only failures, and the env names them so
    assert all(e["failure"] == "wrong_block" for e in failures)
    assert overall["failure_modes"] == {"wrong_block": len(failures)}
    assert all(e["failure"] is None for e in summary["episodes"] if e["success"])
    assert summary["versions"]["gymnasium"] == gym.__version__
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["overall"] == overall
    assert (tmp_path / "success.png").read_bytes()[:4] == b"\x89PNG"
    video = tmp_path / "videos" / "tabletop_target__push_red_to_target.mp4"
    with av.open(str(video)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    recorded = [e for e in summary["episodes"] if e["task"] == TARGET_TASKS[0] and e["episode_index"] < 3]
    assert len(frames) == max(e["length"] for e in recorded) + 1
    assert frames[0].shape[1] >= 2 * 2 * 32  # two episodes per grid row, two cameras side by side


def test_sync_and_async_give_identical_episodes():
    policy = TabletopExpertPolicy(ExpertConfig(action_noise=0.3, mistake_rate=0.3), seed=2)
    common = dict(episodes_per_task=5, num_envs=3, videos_per_task=0, env_kwargs=PRIVILEGED)
    sync = evaluate(policy, TARGET_TASKS[:2], EvalConfig(use_async=False, **common))
    asyn = evaluate(policy, TARGET_TASKS[:2], EvalConfig(use_async=True, mp_context="fork", **common))

    def key(summary):
        return [(e["task"], e["seed"], e["success"], e["length"]) for e in summary["episodes"]]

    assert key(sync) == key(asyn)


@pytest.mark.parametrize("mode,status", [("kill", "crashed"), ("raise", "crashed"), ("hang", "hung")])
def test_broken_worker_is_reported_and_evaluation_goes_on(mode, status):
    bad_task = TARGET_TASKS[1]
    factory = sabotaged_factory(bad_task, bad_seed=2, mode=mode)
    config = EvalConfig(
        episodes_per_task=4,
        num_envs=2,
        use_async=True,
        mp_context="fork",
        step_timeout_s=3.0,
        videos_per_task=0,
        env_kwargs=PRIVILEGED,
    )
    summary = evaluate(TabletopExpertPolicy(), TARGET_TASKS[:2], config, env_factory=factory)
    assert summary["missing_episodes"] == [
        {"task": bad_task, "seed": 2, "status": status, "error": summary["missing_episodes"][0]["error"]}
    ]
    assert summary["tasks"][bad_task]["completed"] == 3 and summary["tasks"][bad_task]["missing"] == 1
    assert summary["tasks"][TARGET_TASKS[0]]["completed"] == 4
    assert summary["overall"]["success_rate"] == 1.0  # the missing episode counts neither way
    if mode == "raise":
        assert "simulator exploded" in summary["missing_episodes"][0]["error"]


def test_raising_env_is_reported_in_sync_mode_too():
    factory = sabotaged_factory(TARGET_TASKS[0], bad_seed=1, mode="raise")
    config = EvalConfig(
        episodes_per_task=3, num_envs=3, use_async=False, videos_per_task=0, env_kwargs=PRIVILEGED
    )
    summary = evaluate(TabletopExpertPolicy(), TARGET_TASKS[:1], config, env_factory=factory)
    (missing,) = summary["missing_episodes"]
    assert (
        missing["seed"] == 1 and missing["status"] == "crashed" and "simulator exploded" in missing["error"]
    )
    assert summary["overall"]["completed"] == 2


def test_shards_merge_to_the_unsharded_result():
    policy = TabletopExpertPolicy(ExpertConfig(mistake_rate=0.3), seed=0)
    base = dict(episodes_per_task=4, num_envs=2, use_async=False, videos_per_task=0, env_kwargs=PRIVILEGED)
    whole = evaluate(policy, TARGET_TASKS, EvalConfig(**base))
    shards = [
        evaluate(policy, TARGET_TASKS, EvalConfig(shard_index=i, num_shards=2, **base)) for i in range(2)
    ]
    assert {t for s in shards for t in s["tasks"]} == set(TARGET_TASKS)
    merged = merge_summaries(shards)
    assert merged["overall"] == whole["overall"]
    assert merged["tasks"] == whole["tasks"]


class CountingPolicy:
    """Returns chunks of `chunk` constant actions and counts how often it is asked."""

    def __init__(self, chunk: int) -> None:
        self.chunk, self.calls, self.resets = chunk, 0, 0

    def reset(self) -> None:
        self.resets += 1

    def act(self, observation, prompts):
        self.calls += 1
        assert observation["images"].ndim == 5 and len(prompts) == observation["state"].shape[0]
        return np.zeros((len(prompts), self.chunk, 2), dtype=np.float32)


def test_action_chunks_run_open_loop_for_action_steps():
    policy = CountingPolicy(chunk=8)
    config = EvalConfig(
        episodes_per_task=2,
        num_envs=2,
        use_async=False,
        action_steps=5,
        videos_per_task=0,
        env_kwargs={"max_episode_steps": 20, "image_size": 16},
    )
    summary = evaluate(policy, TARGET_TASKS[:1], config)
    assert policy.resets == 1 and policy.calls == 4  # 20 steps / 5 per call
    assert summary["overall"]["mean_length"] == 20 and summary["overall"]["success_rate"] == 0.0


def test_bad_policy_output_is_a_clear_error():
    class Wrong(CountingPolicy):
        def act(self, observation, prompts):
            return np.zeros((len(prompts), 2))

    with pytest.raises(ValueError, match="policy.act must return"):
        evaluate(Wrong(1), TARGET_TASKS[:1], EvalConfig(episodes_per_task=1, num_envs=1, use_async=False))
    with pytest.raises(TypeError, match="reset"):
        evaluate(object(), TARGET_TASKS[:1], EvalConfig(episodes_per_task=1, num_envs=1, use_async=False))
