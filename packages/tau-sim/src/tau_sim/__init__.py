"""tau-sim: Gymnasium simulation evaluators: LIBERO and a fast built-in task family, vectorised.

Public API:
- Tasks and envs: `make_env(task_id)`, `list_suites()`, `suite_tasks(suite)`, `TabletopEnv`, `TABLETOP_TASKS`,
  `TABLETOP_SUITES`, `LiberoEnv`, `LiberoConfig` (LIBERO needs the optional extra `tau-sim[libero]`,
  imported on a LIBERO env's first reset; without it `require_libero()` and the episode loop raise the one-line
  `LiberoMissingError`).
- The episode loop (evaluation, demonstrations and RECAP rollouts all run it): `LoopConfig`, `TakeoverConfig`,
  `EpisodeJob`, `plan_jobs`, `run_episodes`, `collect_episodes`, and the one recorded-episode type `Episode`.
- Evaluation: `Policy`, `EvalConfig`, `evaluate`, `merge_summaries`, `plot_success`.
- Scripted experts and demos: `ExpertConfig`, `TabletopExpert`, `TabletopExpertPolicy`, `LiberoExpert`,
  `LiberoExpertPolicy`, `generate_demos`, `run_expert_episode`.
Gymnasium ids (registered on import): tau_sim/Tabletop-v0, tau_sim/Tabletop<Task>-v0, tau_sim/Libero-v0.
"""

from tau_sim.demos import generate_demos, run_expert_episode
from tau_sim.episode import Episode
from tau_sim.episode_loop import EpisodeJob, LoopConfig, collect_episodes, plan_jobs, run_episodes
from tau_sim.eval_report import EpisodeResult, merge_summaries, plot_success
from tau_sim.evaluation import EvalConfig, evaluate
from tau_sim.expert_policy import ExpertConfig
from tau_sim.libero_env import LiberoConfig, LiberoEnv, LiberoMissingError, require_libero
from tau_sim.libero_expert import LiberoExpert, LiberoExpertPolicy
from tau_sim.policy import Policy
from tau_sim.registry import list_suites, make_env, register_envs, suite_tasks
from tau_sim.tabletop_env import TabletopEnv
from tau_sim.tabletop_expert import TabletopExpert, TabletopExpertPolicy
from tau_sim.tabletop_tasks import TABLETOP_SUITES, TABLETOP_TASKS, TabletopTask
from tau_sim.takeover import TakeoverConfig

__version__ = "0.1.0"

register_envs()

__all__ = [
    "TABLETOP_SUITES",
    "TABLETOP_TASKS",
    "Episode",
    "EpisodeJob",
    "EpisodeResult",
    "EvalConfig",
    "ExpertConfig",
    "LiberoConfig",
    "LiberoEnv",
    "LiberoExpert",
    "LiberoExpertPolicy",
    "LiberoMissingError",
    "LoopConfig",
    "Policy",
    "TabletopEnv",
    "TabletopExpert",
    "TabletopExpertPolicy",
    "TabletopTask",
    "TakeoverConfig",
    "collect_episodes",
    "evaluate",
    "generate_demos",
    "list_suites",
    "make_env",
    "merge_summaries",
    "plan_jobs",
    "plot_success",
    "require_libero",
    "run_episodes",
    "run_expert_episode",
    "suite_tasks",
]
