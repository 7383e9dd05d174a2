import numpy as np
import pytest
import torch
from tau_models.value import bin_centers, expected_value, returns_to_bins

from tau_rl.returns import ReturnConfig, episode_bounds, episode_rewards, frame_returns, normalised_returns


def test_success_returns_count_steps_to_go():
    cfg = ReturnConfig(max_episode_steps=10, failure_penalty=90.0)
    np.testing.assert_allclose(normalised_returns(4, True, cfg), np.array([-4, -3, -2, -1]) / 100.0)


def test_failure_returns_carry_penalty_and_stay_in_range():
    cfg = ReturnConfig(max_episode_steps=10, failure_penalty=90.0)
    rets = normalised_returns(10, False, cfg)
    np.testing.assert_allclose(rets, (np.arange(-10, 0) - 90.0) / 100.0)
    assert rets.min() == pytest.approx(-1.0)
    assert rets.max() < 0
    assert episode_rewards(3, False, 5.0).tolist() == [-1.0, -1.0, -6.0]


def test_any_failure_is_worse_than_any_success():
    cfg = ReturnConfig(max_episode_steps=50, failure_penalty=500.0)
    assert normalised_returns(1, False, cfg)[0] < normalised_returns(50, True, cfg)[0]


def test_too_long_episode_raises():
    with pytest.raises(ValueError, match="max_episode_steps"):
        normalised_returns(11, True, ReturnConfig(max_episode_steps=10))


def test_frame_returns_per_frame_and_per_episode_labels():
    cfg = ReturnConfig(max_episode_steps=5, failure_penalty=5.0)
    ep = np.array([3, 3, 7, 7, 7])
    per_frame = frame_returns(ep, np.array([1, 1, 0, 0, 0], bool), cfg)
    per_episode = frame_returns(ep, np.array([True, False]), cfg)
    np.testing.assert_allclose(per_frame, per_episode)
    np.testing.assert_allclose(per_frame, [-0.2, -0.1, -0.8, -0.7, -0.6])


def test_episode_bounds_reject_split_episodes():
    assert episode_bounds(np.array([0, 0, 1, 2, 2])) == [(0, 2), (2, 3), (3, 5)]
    with pytest.raises(ValueError, match=r"\[0\]"):
        episode_bounds(np.array([0, 1, 0]))


def test_returns_land_on_the_value_models_201_bins():
    cfg = ReturnConfig(max_episode_steps=100, failure_penalty=100.0)
    success = torch.as_tensor(normalised_returns(100, True, cfg))
    failure = torch.as_tensor(normalised_returns(100, False, cfg))
    assert len(bin_centers()) == 201
    assert returns_to_bins(failure)[0].item() == 0  # the worst return is the first bin
    assert returns_to_bins(success)[-1].item() == 199  # the step reaching success costs -1: one bin below 0
    assert returns_to_bins(success)[0].item() == 100  # 100 steps to go is half way
    centers = bin_centers()[returns_to_bins(success)]
    assert torch.allclose(centers.double(), success, atol=0.5 / 200 + 1e-7)


def test_expected_value_of_peaked_and_mixed_logits():
    logits = torch.full((3, 201), -1e4)
    logits[0, 40] = 0.0
    logits[1, [0, 200]] = 0.0
    logits[2] = 0.0
    values = expected_value(logits)
    assert values[0].item() == pytest.approx(bin_centers()[40].item())
    assert values[1].item() == pytest.approx(-0.5, abs=1e-6)
    assert values[2].item() == pytest.approx(-0.5, abs=1e-6)
