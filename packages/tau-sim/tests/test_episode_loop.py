"""The episode loop: latency execution, the action prefix, the chunk-boundary jerk, takeovers, start-up failures."""

import os
import signal
import time

import numpy as np
import pytest

from tau_sim import (
    EvalConfig,
    LoopConfig,
    TabletopExpertPolicy,
    TakeoverConfig,
    evaluate,
    make_env,
    plan_jobs,
    run_episodes,
    suite_tasks,
)

TASK = "tabletop_target/push_red_to_target"
SHORT = {"image_size": 16, "max_episode_steps": 14}


class ScriptedChunks:
    """Chunk c of a wave holds action [0.1 c, 0.05 j] at index j, so an executed action says which chunk and index
    it came from; remembers the observations and action prefixes it was given."""

    def __init__(self, chunk: int = 6) -> None:
        self.chunk, self.calls, self.states, self.prefixes = chunk, 0, [], []

    def reset(self) -> None:
        self.calls = 0

    def act(self, observation, prompts, action_prefix=None):
        self.states.append(observation["state"].copy())
        self.prefixes.append(action_prefix)
        c, self.calls = self.calls, self.calls + 1
        j = np.arange(self.chunk)
        actions = np.stack([np.full(self.chunk, 0.1 * c), 0.05 * j], axis=-1)
        return np.repeat(actions[None], len(prompts), axis=0)


def executed(policy, action_steps, latency_steps, episodes=1):
    config = LoopConfig(num_envs=episodes, action_steps=action_steps, latency_steps=latency_steps, env_kwargs=SHORT,
                        record=True)
    results = list(run_episodes(policy, plan_jobs([TASK], episodes, 0), config))
    return results, [[(round(a / 0.1), round(b / 0.05)) for a, b in r.episode.actions] for r in results]


def test_latency_runs_the_old_chunk_while_the_next_is_computed():
    policy = ScriptedChunks()
    results, (sequence,) = executed(policy, action_steps=3, latency_steps=2)
    # requested at steps 0, 3, 6, 9, 12; each new chunk takes over 2 steps later, from its index 2
    assert sequence == [(0, 0), (0, 1), (0, 2), (0, 3), (0, 4), (1, 2), (1, 3), (1, 4), (2, 2), (2, 3), (2, 4),
                        (3, 2), (3, 3), (3, 4)]
    episode = results[0].episode
    assert len(policy.states) == 5
    for call, state in enumerate(policy.states):  # the chunk requested at step s saw the observation at step s
        np.testing.assert_array_equal(state[0], episode.state[3 * call])
    assert policy.prefixes[0].shape == (1, 0, 2)
    for call in range(1, 5):  # the prefix is what the envs executed while the chunk was computed
        np.testing.assert_array_equal(policy.prefixes[call][0], episode.actions[3 * call : 3 * call + 2])


def test_no_latency_is_plain_open_loop_execution():
    _, (sequence,) = executed(ScriptedChunks(), action_steps=3, latency_steps=0)
    assert sequence == [(step // 3, step % 3) for step in range(14)]
    _, (whole,) = executed(ScriptedChunks(chunk=4), action_steps=None, latency_steps=0)
    assert whole == [(step // 4, step % 4) for step in range(14)]
    _, (late,) = executed(ScriptedChunks(chunk=4), action_steps=None, latency_steps=1)  # asked with 1 action left
    assert late == [(0, 0), (0, 1), (0, 2), (0, 3)] + [(1 + i // 3, 1 + i % 3) for i in range(10)]


def test_jerk_is_the_mean_squared_action_change_at_chunk_boundaries():
    for latency in (0, 2):
        summary = evaluate(ScriptedChunks(), [TASK], EvalConfig(episodes_per_task=2, num_envs=2, action_steps=3,
                                                                latency_steps=latency, videos_per_task=0,
                                                                env_kwargs=SHORT))
        _, (sequence,) = executed(ScriptedChunks(), action_steps=3, latency_steps=latency)
        actions = np.array([(0.1 * c, 0.05 * j) for c, j in sequence], dtype=np.float32)
        jumps = [np.sum((actions[t] - actions[t - 1]) ** 2) for t in range(1, 14) if sequence[t][0] != sequence[t - 1][0]]
        for episode in summary["episodes"]:
            assert episode["boundaries"] == len(jumps) == (4 if latency == 0 else 3)
            assert episode["jerk"] == pytest.approx(np.mean(jumps))
        assert summary["overall"]["boundary_jerk"] == pytest.approx(np.mean(jumps))
        assert summary["config"]["latency_steps"] == latency


def test_chunks_too_short_for_the_latency_are_a_clear_error():
    with pytest.raises(ValueError, match="too short for latency_steps=4"):
        executed(ScriptedChunks(chunk=4), action_steps=None, latency_steps=4)
    with pytest.raises(ValueError, match="latency_steps must be >= 0"):
        EvalConfig(latency_steps=-1)


def test_policies_without_the_prefix_keyword_run_with_latency_too():
    class Plain(ScriptedChunks):
        def act(self, observation, prompts):
            return super().act(observation, prompts)

    policy = Plain()
    _, (sequence,) = executed(policy, action_steps=3, latency_steps=2)
    _, (reference,) = executed(ScriptedChunks(), action_steps=3, latency_steps=2)
    assert sequence == reference and policy.prefixes == [None] * 5


class RandomPolicy:
    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)

    def reset(self) -> None:
        pass

    def act(self, observation, prompts):
        return self.rng.uniform(-1, 1, size=(len(prompts), 4, 2))


def test_takeover_marks_the_expert_frames_and_is_reproducible():
    takeover = TakeoverConfig(rate=1.0, window=(0.1, 0.2))
    config = LoopConfig(num_envs=3, record=True, takeover=takeover, env_kwargs={"image_size": 16})
    jobs = plan_jobs(suite_tasks("tabletop_target"), 3, 5)
    episodes = [r.episode for r in run_episodes(RandomPolicy(), jobs, config)]
    for episode in episodes:
        start = int(np.argmax(episode.intervention))
        assert 10 <= start < 20 and episode.intervention[start:].all() and not episode.intervention[:start].any()
    assert sum(e.success for e in episodes) >= 6  # the expert rescues most episodes
    again = [r.episode for r in run_episodes(RandomPolicy(), jobs, LoopConfig(**{**config.__dict__, "num_envs": 2}))]
    for one, other in zip(episodes, again, strict=True):  # the takeover step depends on (seed, task) only
        assert np.argmax(one.intervention) == np.argmax(other.intervention)


def start_up_saboteur(marker, mode: str, once: bool = True):
    """An env factory whose worker processes die ("kill") or go silent ("hang") while building the env, once
    (the first worker to claim `marker`) or every time."""
    main = os.getpid()

    def factory(task: str, **kwargs):
        if os.getpid() != main:
            try:
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
                first = True
            except FileExistsError:
                first = False
            if first or not once:
                if mode == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                time.sleep(3600)
        return make_env(task, **kwargs)

    return factory


@pytest.mark.parametrize("mode,status,context", [("kill", "crashed", "fork"), ("hang", "hung", "fork"),
                                                 ("kill", "crashed", "forkserver")])
def test_worker_dying_at_start_up_is_reported_and_replaced(tmp_path, mode, status, context):
    config = EvalConfig(episodes_per_task=3, num_envs=2, use_async=True, mp_context=context,
                        step_timeout_s=3.0 if mode == "hang" else 30.0,
                        videos_per_task=0, env_kwargs={"privileged_obs": True, "image_size": 16})
    factory = start_up_saboteur(tmp_path / "marker", mode)
    summary = evaluate(TabletopExpertPolicy(), [TASK], config, env_factory=factory)
    assert summary["overall"]["completed"] == 3 and summary["missing_episodes"] == []
    (failure,) = summary["worker_failures"]
    assert failure["phase"] == "start-up" and failure["status"] == status and failure["outcome"] == "replaced"
    assert failure["task"] == TASK and failure["seed"] is None


def test_workers_that_never_start_count_their_episodes_missing(tmp_path):
    config = EvalConfig(episodes_per_task=2, num_envs=2, use_async=True, mp_context="fork", videos_per_task=0,
                        env_kwargs={"privileged_obs": True, "image_size": 16})
    factory = start_up_saboteur(tmp_path / "marker", "kill", once=False)
    summary = evaluate(TabletopExpertPolicy(), suite_tasks("tabletop_target")[:2], config, env_factory=factory)
    assert summary["overall"]["completed"] == 0 and len(summary["missing_episodes"]) == 4
    assert all("failed to start 3 times" in m["error"] for m in summary["missing_episodes"])
    outcomes = [f["outcome"] for f in summary["worker_failures"] if f["task"] == TASK]
    # two replacements (each attempt reports one or both killed workers), then the third attempt gives up
    first_gave_up = outcomes.index("gave up")
    assert set(outcomes[:first_gave_up]) == {"replaced"} and set(outcomes[first_gave_up:]) == {"gave up"}


class ConstantAction:
    """Always the same action, so a recorded action that differs from it was changed on the way."""

    def reset(self) -> None:
        pass

    def act(self, observation, prompts):
        return np.full((len(prompts), 1, 2), 0.3, dtype=np.float32)


def test_execution_noise_moves_the_env_but_records_the_policys_actions():
    jobs = plan_jobs([TASK], 2, 0)

    def run(noise, num_envs=2):
        config = LoopConfig(num_envs=num_envs, env_kwargs=SHORT, record=True, execution_noise=noise)
        return [r.episode for r in run_episodes(ConstantAction(), jobs, config)]

    clean, noisy, one_at_a_time = run(()), run((0.5,)), run((0.5, 0.5), num_envs=1)
    for plain, jittered, again in zip(clean, noisy, one_at_a_time, strict=True):
        assert np.all(jittered.actions == np.float32(0.3))  # the label is the policy's action
        assert not np.allclose(jittered.state[1:], plain.state[1:])  # what ran was not
        np.testing.assert_array_equal(jittered.state, again.state)  # seeded per episode, whatever the batching
    assert not np.allclose(noisy[0].state[1:], noisy[1].state[1:])  # each episode draws its own noise
    with pytest.raises(ValueError, match="1 or 2"):
        run((0.1, 0.1, 0.1))
    with pytest.raises(ValueError, match="execution_noise"):
        LoopConfig(execution_noise=(-0.1,))
