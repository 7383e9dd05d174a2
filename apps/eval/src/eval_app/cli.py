"""`./pants run apps/eval -- [--policy DIR] [--suite S | --tasks T,...]`: success rates of a policy in tau-sim."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click
from tau_rl.models import PolicyBundle
from tau_rl.policy_adapter import PiPolicy
import numpy as np
from tau_sim import (EvalConfig, LiberoExpertPolicy, TabletopExpertPolicy, evaluate, list_suites, make_env,
                     suite_tasks)
from tau_sim.tabletop_env import LAYOUTS

DEFAULT_POLICY = Path("outputs/default/train/policy")


def load_policy(folder: Path, seed: int, steps: int | None) -> PiPolicy:
    """The acting policy of an `apps/train` (or `apps/rl`) bundle folder: model, normaliser and sample layout."""
    if not (folder / "bundle.json").is_file():
        raise click.ClickException(f"{folder} is no trained policy (no bundle.json); train one with "
                                   "`./pants run apps/train` or pass --policy")
    model, normalizer, bundle = PolicyBundle.load(folder)
    return PiPolicy(model, normalizer, bundle, num_inference_steps=steps, seed=seed)


class RandomPolicy:
    """Uniform random actions in the environment's action box: the lower bound a policy must beat."""

    def __init__(self, task_id: str, seed: int) -> None:
        env = make_env(task_id)
        self.low, self.high = env.action_space.low, env.action_space.high
        env.close()
        self.rng = np.random.default_rng(seed)

    def reset(self) -> None:
        """Nothing to clear."""

    def act(self, observation: dict[str, np.ndarray], prompts: list[str]) -> np.ndarray:
        return self.rng.uniform(self.low, self.high, size=(len(prompts), 1, self.low.size)).astype(np.float32)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--policy", "policy_dir", type=click.Path(path_type=Path), default=DEFAULT_POLICY,
              show_default=True, help="Policy bundle folder written by apps/train or apps/rl.")
@click.option("--expert", is_flag=True, help="Evaluate tau-sim's scripted expert instead (the upper bound).")
@click.option("--random", "random_policy", is_flag=True, help="Evaluate uniform random actions (the lower bound).")
@click.option("--suite", default="tabletop_target", show_default=True,
              help=f"Task suite; one of: {', '.join(list_suites())}.")
@click.option("--tasks", default=None, help="Comma-separated task ids; overrides --suite.")
@click.option("--episodes-per-task", default=10, show_default=True, type=click.IntRange(min=1),
              help="Seeded episodes per task (episode i uses seed + i).")
@click.option("--seed", default=1000, show_default=True, help="Seed of the first episode of every task.")
@click.option("--num-envs", default=2, show_default=True, type=click.IntRange(min=1),
              help="Environments stepped together (one policy call serves all of them).")
@click.option("--action-steps", default=5, show_default=True, type=click.IntRange(min=1),
              help="Actions of each chunk executed open-loop before the policy is asked again.")
@click.option("--inference-steps", default=None, type=click.IntRange(min=1),
              help="Euler steps of flow sampling (default: the model's).")
@click.option("--videos-per-task", default=4, show_default=True, type=click.IntRange(min=0),
              help="Episodes per task recorded into the MP4 grid.")
@click.option("--shard", default="0/1", show_default=True, help="INDEX/COUNT: evaluate tasks[INDEX::COUNT].")
@click.option("--output-dir", type=click.Path(path_type=Path), default=None,
              help="Where summary.json, success.png and videos/ go (default: <policy>/../eval).")
@click.option("--layout", default=None, type=click.Choice(LAYOUTS),
              help="Tabletop scene layout: 'fixed' (default) keeps each colour in its slot, 'slots' shuffles them, "
                   "'uniform' places everything anywhere.")
@click.option("--image-size", default=None, type=click.IntRange(min=8),
              help="Camera resolution in pixels (default: the environment's; LIBERO 256). Match the training data.")
@click.option("--fast-render", is_flag=True,
              help="LIBERO: render without MSAA and reflections (2-3x cheaper on CPU, edges differ slightly).")
@click.option("-v", "--verbose", is_flag=True, help="Log at INFO level.")
def main(policy_dir: Path, expert: bool, random_policy: bool, suite: str, tasks: str | None, episodes_per_task: int, seed: int,
         num_envs: int, action_steps: int | None, inference_steps: int | None, videos_per_task: int, shard: str,
         output_dir: Path | None, layout: str | None, image_size: int | None, fast_render: bool,
         verbose: bool) -> None:
    """Evaluate a trained policy (default: the latest `apps/train` run) on tau-sim tasks and print success rates."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        task_ids = tasks.split(",") if tasks else suite_tasks(suite)
        shard_index, num_shards = (int(part) for part in shard.split("/"))
        config = EvalConfig(episodes_per_task=episodes_per_task, seed=seed, num_envs=num_envs,
                            action_steps=action_steps, videos_per_task=videos_per_task, shard_index=shard_index,
                            num_shards=num_shards)
    except (KeyError, ValueError) as error:
        raise click.ClickException(f"bad evaluation options: {error}") from error
    if layout is not None:
        config.env_kwargs["layout"] = layout
    if image_size is not None:
        config.env_kwargs["image_size"] = image_size
    libero = all(task.startswith("libero") for task in task_ids)
    if fast_render:
        if not libero:
            raise click.ClickException("--fast-render applies to LIBERO tasks only")
        config.env_kwargs["fast_render"] = True
    if expert:
        policy, name = (LiberoExpertPolicy() if libero else TabletopExpertPolicy()), "eval_expert"
        config.env_kwargs["privileged_obs"] = True
    elif random_policy:
        policy, name = RandomPolicy(task_ids[0], seed), "eval_random"
    else:
        policy, name = load_policy(policy_dir, seed, inference_steps), "eval"
        if policy.bundle.state_key == "privileged":
            config.env_kwargs["privileged_obs"] = True
    output_dir = output_dir or (policy_dir.parent / name)
    summary = evaluate(policy, task_ids, config, output_dir=output_dir)
    overall = summary["overall"]
    click.echo(json.dumps({"suites": {name: s["success_rate"] for name, s in summary["suites"].items()},
                           "overall": overall}))
    click.echo(f"success rate {overall['success_rate']:.3f} over {overall['completed']} episodes "
               f"({overall['missing']} missing); summary, chart and videos in {output_dir}")


if __name__ == "__main__":
    sys.exit(main())
