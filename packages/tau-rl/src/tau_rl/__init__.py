"""tau-rl: RECAP (pi*0.6-style RL) for pi0.5: rollouts, value function, advantages, advantage-conditioned training."""

__version__ = "0.1.0"
