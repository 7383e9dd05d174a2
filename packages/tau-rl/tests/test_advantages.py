import numpy as np
import pytest

from tau_rl.advantages import n_step_advantages
from tau_rl.threshold import choose_threshold, is_positive


def _brute_force(values, rewards, episode, n):
    out = []
    for i in range(len(values)):
        total, j = 0.0, i
        while j < len(values) and j < i + n and episode[j] == episode[i]:
            total += rewards[j]
            j += 1
        boot = values[j] if j == i + n and j < len(values) and episode[j] == episode[i] else 0.0
        out.append(total + boot - values[i])
    return np.array(out)


@pytest.mark.parametrize("n", [1, 2, 5, 50])
def test_n_step_matches_brute_force_across_episode_boundaries(n):
    rng = np.random.default_rng(0)
    episode = np.repeat([4, 1, 9], [7, 3, 12])
    values, rewards = rng.uniform(-1, 0, 22), rng.uniform(-0.1, 0, 22)
    np.testing.assert_allclose(n_step_advantages(values, rewards, episode, n), _brute_force(values, rewards, episode, n))


def test_perfect_value_gives_zero_advantage():
    rewards = np.full(6, -0.1)
    values = np.cumsum(rewards[::-1])[::-1]
    np.testing.assert_allclose(n_step_advantages(values, rewards, np.zeros(6, int), 3), 0.0, atol=1e-12)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="N must be"):
        n_step_advantages(np.zeros(3), np.zeros(3), np.zeros(3), 0)
    with pytest.raises(ValueError, match="one entry per frame"):
        n_step_advantages(np.zeros(3), np.zeros(2), np.zeros(3), 1)
    with pytest.raises(ValueError, match="NaN"):
        n_step_advantages(np.array([0, np.nan, 0]), np.zeros(3), np.zeros(3), 1)


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.5, 0.9])
def test_threshold_reaches_target_fraction(fraction):
    adv = np.random.default_rng(1).normal(size=1000)
    chosen = choose_threshold(adv, fraction)
    assert chosen.positive_fraction == pytest.approx(fraction, abs=1e-3)
    assert is_positive(adv, chosen.threshold).mean() == chosen.positive_fraction
    assert chosen.to_dict()["num_frames"] == 1000


def test_threshold_default_is_thirty_percent_and_ties_never_overshoot():
    assert choose_threshold(np.arange(10.0)).threshold == 6.0
    chosen = choose_threshold(np.array([0.0] * 8 + [1.0, 2.0]), 0.3)
    assert chosen.positive_fraction == pytest.approx(0.2)


def test_threshold_rejects_bad_fraction_and_empty():
    with pytest.raises(ValueError, match="between 0 and 1"):
        choose_threshold(np.zeros(3), 1.0)
    with pytest.raises(ValueError, match="zero frames"):
        choose_threshold(np.zeros(0))


def test_wilson_interval():
    from tau_rl.confidence import wilson_interval

    lo, hi = wilson_interval(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-3) and hi == pytest.approx(0.5962, abs=1e-3)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    with pytest.raises(ValueError):
        wilson_interval(3, 0)
