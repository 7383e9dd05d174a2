"""Every seed of a RECAP run, derived from `RecapConfig.seed` in this one place so that stages never share a stream.

Iteration k (1-based) rolls out the policy of iteration k-1 on env seeds that no earlier iteration used, and trains
its value model and policy with their own seeds; every evaluation uses the same policy-noise seed (and the fixed
`eval.seed` env seeds), so the rows of a run compare the policies, not the draws.
"""

from __future__ import annotations

from tau_rl.config import RecapConfig


def initial_training(config: RecapConfig) -> int:
    """The supervised pass on the demonstrations that makes the initial policy."""
    return config.seed


def evaluation(config: RecapConfig) -> int:
    """Flow-sampling noise of the policy in every evaluation."""
    return config.seed + 7


def collection_policy(config: RecapConfig, iteration: int) -> int:
    """Flow-sampling noise of the policy rolled out in `iteration`."""
    return config.seed + iteration


def collection_episodes(config: RecapConfig, iteration: int) -> int:
    """The env seed of the first rollout of `iteration`: each iteration takes the next episodes_per_task seeds."""
    return config.collect.seed + (iteration - 1) * config.collect.episodes_per_task


def value_training(config: RecapConfig, iteration: int) -> int:
    """The value model's training in `iteration`."""
    return config.seed + iteration


def policy_training(config: RecapConfig, iteration: int) -> int:
    """The advantage-conditioned policy's fine-tuning in `iteration` (and the control arm's round `iteration`)."""
    return config.seed + 100 + iteration
