"""tau-rl: RECAP (pi*0.6-style RL) for pi0.5: rollouts, value function, advantages, advantage-conditioned training.

    config = RecapConfig(run_dir="runs/recap", demos=["data/tabletop_demos"], iterations=2)
    summary = run_recap(config)   # resumable: rerun the same config after a crash

Pure pieces: `normalised_returns` / `frame_returns` (rewards -1 per step, failure penalty, scaled to [-1, 0]),
`n_step_advantages`, `choose_threshold` (target positive fraction), `advantage_labels`, `wilson_interval`.
Stages: `collect_rollouts` (tau-sim episodes of a tau_policy.SimPolicy, recorded with tau_policy.record_episodes
and `recap_columns`: reward, success, intervention), and the per-iteration stages in `tau_rl.stages`.
"""

from tau_rl.advantages import n_step_advantages
from tau_rl.conditioning import advantage_labels, model_conditioning
from tau_rl.confidence import wilson_interval
from tau_rl.config import (
    AdvantageStageConfig,
    EvalSettings,
    PolicyStageConfig,
    RecapConfig,
    TrainingSettings,
    ValueStageConfig,
)
from tau_rl.layout import RunLayout
from tau_rl.recap import run_recap
from tau_rl.returns import ReturnConfig, frame_returns, normalised_returns, recap_columns
from tau_rl.rollouts import CollectConfig, collect_rollouts
from tau_rl.threshold import AdvantageThreshold, choose_threshold

__version__ = "0.1.0"

__all__ = [
    "AdvantageStageConfig",
    "AdvantageThreshold",
    "CollectConfig",
    "EvalSettings",
    "PolicyStageConfig",
    "RecapConfig",
    "ReturnConfig",
    "RunLayout",
    "TrainingSettings",
    "ValueStageConfig",
    "advantage_labels",
    "choose_threshold",
    "collect_rollouts",
    "frame_returns",
    "model_conditioning",
    "n_step_advantages",
    "normalised_returns",
    "recap_columns",
    "run_recap",
    "wilson_interval",
]
