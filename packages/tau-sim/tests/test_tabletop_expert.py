import numpy as np
import pytest

from tau_sim import ExpertConfig, TabletopEnv, TabletopExpert, generate_demos, suite_tasks


def _success_rate(config: ExpertConfig, episodes_per_task: int, layout: str = "slots") -> float:
    tasks = suite_tasks("tabletop")
    episodes = generate_demos(tasks, episodes_per_task, expert=config, env_kwargs={"image_size": 8, "layout": layout})
    return sum(e.success for e in episodes) / (len(tasks) * episodes_per_task)


@pytest.mark.parametrize("layout", ["fixed", "slots", "uniform"])
def test_noiseless_expert_solves_every_task(layout):
    assert _success_rate(ExpertConfig(), episodes_per_task=10, layout=layout) == 1.0


def test_mistake_rate_sets_success_rate():
    rate = _success_rate(ExpertConfig(action_noise=0.1, mistake_rate=0.4), episodes_per_task=18)
    # 162 episodes, expected 0.6: 4 binomial standard deviations is +-0.155
    assert abs(rate - 0.6) < 0.155, rate


def test_expert_action_depends_on_the_state_only():
    """No hidden mode: the expert labels a state the same whatever led there (so DART-style noisy demos are
    consistent); checked along noisy trajectories against a fresh expert on each state."""
    env = TabletopEnv("push_blue_to_target", image_size=16)
    noisy = TabletopExpert(ExpertConfig())
    noisy.reset(env.task, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    for seed in range(5):
        env.reset(seed=seed)
        for _ in range(40):
            state = env.privileged_state()
            fresh = TabletopExpert(ExpertConfig())
            fresh.reset(env.task, np.random.default_rng(2))
            action = noisy.act(state)
            np.testing.assert_array_equal(action, fresh.act(state))
            env.step(np.clip(action + rng.normal(0, 0.5, 2), -1, 1))


def test_large_action_noise_lowers_success():
    assert _success_rate(ExpertConfig(action_noise=1.5), episodes_per_task=5) < 0.9


def test_config_validation():
    with pytest.raises(ValueError, match="mistake_rate"):
        ExpertConfig(mistake_rate=1.5)
    with pytest.raises(ValueError, match="action_noise"):
        ExpertConfig(action_noise=-1)
