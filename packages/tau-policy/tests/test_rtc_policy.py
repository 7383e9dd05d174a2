"""Policy / SimPolicy with an action prefix: robot units normalised with the head's statistics, joined per `rtc`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import mixture, tiny_model
from tau_policy import ActionQueue, Policy, PolicyBundle, Provenance, SimPolicy

PROMPTS = ["push block 0", "push block 1"]


def _bundle(two_robots, **overrides) -> PolicyBundle:
    return PolicyBundle.from_mixture(tiny_model(**overrides), mixture(two_robots[0]), provenance=Provenance(),
                                     sim_state_key="privileged")


@pytest.fixture(scope="module")
def plain(two_robots) -> PolicyBundle:
    return _bundle(two_robots, num_inference_steps=5)


def _inputs(seed: int = 0):
    rng = np.random.default_rng(seed)
    obs = {"observation.images.top": rng.integers(0, 256, (2, 20, 30, 3), dtype=np.uint8),
           "observation.images.wrist": rng.integers(0, 256, (2, 20, 30, 3), dtype=np.uint8),
           "observation.state": rng.normal(size=(2, 3)).astype(np.float32)}
    noise = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(seed))
    prefix = rng.uniform(-1.5, 1.5, size=(2, 2, 2)).astype(np.float32)  # robot units, action_dim 2
    return obs, noise, prefix


def test_naive_ignores_the_prefix_and_inpaint_joins_it(plain):
    obs, noise, prefix = _inputs()
    naive = Policy(plain)
    assert naive.rtc == "naive"
    free = naive.act(obs, PROMPTS, noise)
    np.testing.assert_array_equal(naive.act(obs, PROMPTS, noise, action_prefix=prefix), free)
    inpaint = Policy(plain, rtc="inpaint")
    joined = inpaint.act(obs, PROMPTS, noise, action_prefix=prefix)
    err_free, err_joined = (np.mean((a[:, :2] - prefix) ** 2) for a in (free, joined))
    assert err_joined < 0.2 * err_free
    partly = inpaint.act(obs, PROMPTS, noise, action_prefix=prefix, frozen=1)  # position 1: soft region only
    assert np.abs(partly[:, 1] - prefix[:, 1]).mean() > np.abs(joined[:, 1] - prefix[:, 1]).mean()


def test_prefix_mode_returns_the_prefix_for_an_rtc_trained_policy(two_robots):
    obs, noise, prefix = _inputs(1)
    policy = Policy(_bundle(two_robots, rtc_max_delay=2))
    assert policy.rtc == "prefix"
    out = policy.act(obs, PROMPTS, noise, action_prefix=prefix)
    np.testing.assert_allclose(out[:, :2], prefix, atol=1e-5)
    assert not np.allclose(out[:, 2], policy.act(obs, PROMPTS, noise)[:, 2])


def test_an_action_queue_over_a_policy_continues_the_executing_actions(two_robots):
    obs, _, _ = _inputs(2)
    policy = Policy(_bundle(two_robots, rtc_max_delay=2))
    one = {key: value[:1] for key, value in obs.items()}
    calls = []

    def infer(prefix: np.ndarray, frozen: int) -> np.ndarray:
        chunk = policy.act(one, PROMPTS[:1], action_prefix=prefix[None], frozen=frozen)[0]
        calls.append((prefix, frozen, chunk))
        return chunk

    queue = ActionQueue(infer, refill_below=3, initial_delay=1)
    np.testing.assert_array_equal(queue.next_action(10.0), calls[0][2][0])  # 2 of 3 left: the next request starts
    queue.join(10.0)
    prefix, frozen, chunk = calls[1]
    np.testing.assert_array_equal(prefix, calls[0][2][1:])  # the not-yet-executed actions
    assert frozen == 1
    np.testing.assert_allclose(chunk[0], prefix[0], atol=1e-5)  # "prefix" mode returns the frozen action
    np.testing.assert_array_equal(queue.next_action(10.0), chunk[0])  # nothing ran meanwhile: index 0


def test_sim_policy_passes_the_prefix(plain):
    obs, noise, prefix = _inputs()
    sim_obs = {"images": np.stack([obs["observation.images.top"], obs["observation.images.wrist"]], axis=1),
               "privileged": obs["observation.state"]}
    free = SimPolicy(Policy(plain, rtc="inpaint"), seed=3).act(sim_obs, PROMPTS)
    joined = SimPolicy(Policy(plain, rtc="inpaint"), seed=3).act(sim_obs, PROMPTS, action_prefix=prefix)
    assert np.mean((joined[:, :2] - prefix) ** 2) < 0.2 * np.mean((free[:, :2] - prefix) ** 2)


def test_bad_rtc_settings_are_named(plain):
    obs, noise, prefix = _inputs()
    with pytest.raises(ValueError, match="rtc_max_delay > 0"):
        Policy(plain, rtc="prefix")
    with pytest.raises(ValueError, match="rtc must be one of"):
        Policy(plain, rtc="smooth")
    with pytest.raises(ValueError, match=r"action_prefix must be \(B=2, P, action_dim=2\)"):
        Policy(plain, rtc="inpaint").act(obs, PROMPTS, noise, action_prefix=prefix[:, :, :1])
    with pytest.raises(ValueError, match="chunk_size=3"):
        Policy(plain, rtc="inpaint").act(obs, PROMPTS, noise, action_prefix=np.zeros((2, 4, 2), np.float32))
