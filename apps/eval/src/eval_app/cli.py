"""`./pants run apps/eval -- [--policy DIR | --server ws://HOST:PORT] [--suite S | --tasks T,...]`: success rates of a
policy in tau-sim, acting in process or through a policy server (`apps/serve`)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click
import numpy as np
from tau_policy import SimPolicy, load_policy
from tau_policy.serving import API_KEY_ENV, RemotePolicy, RemotePolicyError
from tau_sim import (EvalConfig, LiberoExpertPolicy, TabletopExpertPolicy, evaluate, list_suites, make_env,
                     suite_tasks)
from tau_sim.tabletop_env import LAYOUTS
from tau_train.os_errors import describe_os_error

DEFAULT_POLICY = Path("outputs/default/train/policy")
LOCAL_ONLY = {"policy_dir": "--policy", "head": "--head", "inference_steps": "--inference-steps",
              "expert": "--expert", "random_policy": "--random", "mode": "--mode"}  # options --server cannot take


def sim_policy(folder: Path, seed: int, steps: int | None, head: str | None, rtc: str | None = None,
               mode: str = "flow") -> SimPolicy:
    """The acting policy of an `apps/train` (or `apps/rl`) bundle folder, behind tau-sim's Policy protocol."""
    if not (folder / "bundle.json").is_file():
        raise click.ClickException(f"{folder} is no trained policy (no bundle.json); train one with "
                                   "`./pants run apps/train` or pass --policy")
    try:
        return SimPolicy(load_policy(folder, head=head, num_inference_steps=steps, rtc=rtc, mode=mode), seed=seed)
    except (ValueError, KeyError) as error:  # DatasetError, bad bundle/config/weights: the message names the file
        raise click.ClickException(f"cannot load the policy {folder}: {error}") from error
    except OSError as error:  # missing weights, permission ...
        raise click.ClickException(f"cannot load the policy {folder}: {describe_os_error(error)}") from error


def remote_policy(url: str, api_key: str | None) -> RemotePolicy:
    """The policy served at `url` (apps/serve, any --keys whose state is one key), behind tau-sim's protocol."""
    try:
        return RemotePolicy(url, api_key=api_key)
    except RemotePolicyError as error:
        raise click.ClickException(str(error)) from error


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
@click.option("--server", default=None, metavar="ws://HOST:PORT",
              help="Evaluate the policy served there (apps/serve) instead of --policy. Serve it with --seed equal "
                   "to this --seed and evaluate with --num-envs 1 to get the episodes of local evaluation.")
@click.option("--api-key", default=None, envvar=API_KEY_ENV, show_envvar=True,
              help="API key of the --server (sent as 'Authorization: Api-Key <key>').")
@click.option("--head", default=None,
              help="Which of a mixture policy's robots to act as (norm head, robot type or dataset name).")
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
              help="Where summary.json, success.png and videos/ go (default: <policy>/../eval; with --server: "
                   "outputs/eval_server).")
@click.option("--layout", default=None, type=click.Choice(LAYOUTS),
              help="Tabletop scene layout: 'fixed' (default) keeps each colour in its slot, 'slots' shuffles them, "
                   "'uniform' places everything anywhere.")
@click.option("--latency-steps", default=0, show_default=True, type=click.IntRange(min=0),
              help="Simulated inference latency in control steps: the old chunk keeps running meanwhile.")
@click.option("--rtc", type=click.Choice(["naive", "inpaint", "prefix"]), default=None,
              help="How a chunk joins the actions executed during the latency (default: 'prefix' for a policy "
                   "trained with rtc_max_delay > 0, else 'naive').")
@click.option("--mode", default="flow", show_default=True, type=click.Choice(["flow", "fast"]),
              help="Act with the flow-matching expert, or by decoding FAST action tokens (a policy trained with a "
                   "FAST loss).")
@click.option("--image-size", default=None, type=click.IntRange(min=8),
              help="Camera resolution in pixels (default: the environment's; LIBERO 256). Match the training data.")
@click.option("--fast-render", is_flag=True,
              help="LIBERO: render without MSAA and reflections (2-3x cheaper on CPU, edges differ slightly).")
@click.option("-v", "--verbose", is_flag=True, help="Log at INFO level.")
@click.pass_context
def main(ctx: click.Context, policy_dir: Path, server: str | None, api_key: str | None, head: str | None,
         expert: bool, random_policy: bool, suite: str, tasks: str | None, episodes_per_task: int, seed: int,
         num_envs: int, action_steps: int | None, inference_steps: int | None, videos_per_task: int, shard: str,
         output_dir: Path | None, layout: str | None, latency_steps: int, rtc: str | None, mode: str,
         image_size: int | None, fast_render: bool,
         verbose: bool) -> None:
    """Evaluate a trained policy (default: the latest `apps/train` run) on tau-sim tasks and print success rates."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        task_ids = tasks.split(",") if tasks else suite_tasks(suite)
        shard_index, num_shards = (int(part) for part in shard.split("/"))
        config = EvalConfig(episodes_per_task=episodes_per_task, seed=seed, num_envs=num_envs,
                            action_steps=action_steps, latency_steps=latency_steps,
                            videos_per_task=videos_per_task, shard_index=shard_index,
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
    if server is not None:
        given = [flag for name, flag in LOCAL_ONLY.items()
                 if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT]
        if given:
            raise click.ClickException(f"--server evaluates the served policy: {', '.join(given)} cannot be "
                                       "combined with it (choose the head and inference steps with apps/serve)")
        policy, name = remote_policy(server, api_key), "eval_server"
        if policy.state_key == "privileged":
            config.env_kwargs["privileged_obs"] = True
    elif expert:
        policy, name = (LiberoExpertPolicy() if libero else TabletopExpertPolicy()), "eval_expert"
        config.env_kwargs["privileged_obs"] = True
    elif random_policy:
        policy, name = RandomPolicy(task_ids[0], seed), "eval_random"
    else:
        policy = sim_policy(policy_dir, seed, inference_steps, head, rtc, mode)
        name = "eval" if mode == "flow" else "eval_fast"
        if policy.state_key == "privileged":
            config.env_kwargs["privileged_obs"] = True
    output_dir = output_dir or (Path("outputs") if server is not None else policy_dir.parent) / name
    try:
        summary = evaluate(policy, task_ids, config, output_dir=output_dir)
    except RemotePolicyError as error:
        raise click.ClickException(str(error)) from error
    except ValueError as error:  # e.g. a policy trained for another state / action size than these tasks give
        if verbose:
            raise
        raise click.ClickException(f"{policy_dir if server is None else server} cannot act in {', '.join(task_ids)}: "
                                   f"{error}") from error
    finally:
        if isinstance(policy, RemotePolicy):
            policy.close()
    overall = summary["overall"]
    click.echo(json.dumps({"suites": {name: s["success_rate"] for name, s in summary["suites"].items()},
                           "overall": overall}))
    click.echo(f"success rate {overall['success_rate']:.3f} over {overall['completed']} episodes "
               f"({overall['missing']} missing); summary, chart and videos in {output_dir}")
    if overall["failure_modes"]:
        click.echo("failed episodes by reason: " + ", ".join(f"{k} {v}" for k, v in overall["failure_modes"].items()))


if __name__ == "__main__":
    sys.exit(main())
