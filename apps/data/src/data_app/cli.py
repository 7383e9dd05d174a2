"""`./pants run apps/data -- COMMAND`: dataset tools (info, stats, generate, convert, fit-fast)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

import click
from tau_data import (DatasetError, DatasetSpec, MixtureConfig, MixtureDataset, NormMode, convert_v21_to_v30, info,
                      normalized_action_chunks, write_dataset_stats)
from tau_models import FastTokenizer
from tau_policy import episode_labels, record_episodes
from tau_sim import ExpertConfig, generate_demos, list_suites, suite_tasks
from tau_sim.tabletop_env import LAYOUTS
from tau_train.os_errors import describe_os_error

DEFAULT_SUITE = "tabletop"
ROBOT_TYPE = "tau_sim_tabletop"  # the robot type the demonstrations are recorded with (their norm head)


def _one_line(error: Exception) -> str:
    """A dataset error as it reads; an OS error (no space, read-only, permission) in plain words with its path."""
    return describe_os_error(error) if isinstance(error, OSError) else str(error)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log progress details.")
def main(verbose: bool) -> None:
    """Dataset tools for LeRobot-format datasets (v2.1 and v3.0)."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s")


@main.command("info")
@click.argument("dataset")
def info_command(dataset: str) -> None:
    """Print a dataset's features, episodes, fps and tasks as JSON. DATASET is a local root or a hub repo id."""
    try:
        summary = info(dataset)
    except (DatasetError, OSError) as error:
        raise click.ClickException(_one_line(error)) from error
    click.echo(json.dumps(summary, indent=2))


@main.command("stats")
@click.argument("dataset", type=click.Path(exists=True, file_okay=False))
def stats_command(dataset: str) -> None:
    """Compute exact normalisation statistics (true quantiles) of DATASET and write them next to it."""
    try:
        path = write_dataset_stats(dataset)
    except (DatasetError, OSError) as error:
        raise click.ClickException(_one_line(error)) from error
    click.echo(f"stats written to {path}")


def parse_stds(text: str) -> tuple[float, ...]:
    """'0.2,0.2,0.2' -> (0.2, 0.2, 0.2); '' -> (); a clear error for anything but non-negative numbers."""
    try:
        stds = tuple(float(part) for part in text.split(",")) if text.strip() else ()
    except ValueError as error:
        raise click.BadParameter(f"expected comma-separated numbers, got {text!r}") from error
    if not all(0 <= std < float("inf") for std in stds):
        raise click.BadParameter(f"stds must be finite and >= 0, got {text!r}")
    return stds


@main.command("generate")
@click.option("--output", required=True, type=click.Path(file_okay=False),
              help="Folder of the new LeRobot v3.0 dataset (must not exist).")
@click.option("--suite", default=DEFAULT_SUITE, show_default=True,
              help=f"Task suite to demonstrate; one of: {', '.join(list_suites())}.")
@click.option("--tasks", default=None, help="Comma-separated task ids (e.g. tabletop/push_red_to_target); "
              "overrides --suite.")
@click.option("--episodes-per-task", default=20, show_default=True, type=click.IntRange(min=1),
              help="Scripted episodes per task.")
@click.option("--seed", default=0, show_default=True, help="Seed of the first episode; episode i uses seed + i.")
@click.option("--action-noise", default=0.0, show_default=True, type=click.FloatRange(min=0),
              help="Gaussian noise on the expert's actions (more noise, more failed episodes).")
@click.option("--execution-noise", default="", metavar="STD[,STD...]",
              callback=lambda _ctx, _param, value: parse_stds(value),
              help="Gaussian noise on the executed actions only, one std or one per action dim (LIBERO: dx,dy,dz,"
                   "drx,dry,drz,gripper); the expert's clean actions are recorded (DART).")
@click.option("--mistake-rate", default=0.0, show_default=True, type=click.FloatRange(0, 1),
              help="Probability that the expert commits to a wrong plan in an episode.")
@click.option("--image-size", default=None, type=click.IntRange(min=8),
              help="Camera resolution in pixels (default: the environment's).")
@click.option("--max-steps", default=None, type=click.IntRange(min=1),
              help="Episode step limit (default: the task's; LIBERO: the suite's).")
@click.option("--layout", default=None, type=click.Choice(LAYOUTS),
              help="Tabletop scene layout: 'fixed' (default) keeps each colour in its slot, 'slots' shuffles them, "
                   "'uniform' places everything anywhere.")
@click.option("--fast-render", is_flag=True,
              help="LIBERO: render without MSAA and reflections (2-3x cheaper on CPU, edges differ slightly).")
@click.option("--successes-only", is_flag=True, help="Write only the episodes the expert solved.")
def generate_command(output: str, suite: str, tasks: str | None, episodes_per_task: int, seed: int,
                     action_noise: float, execution_noise: tuple[float, ...], mistake_rate: float,
                     image_size: int | None, max_steps: int | None, layout: str | None, fast_render: bool,
                     successes_only: bool) -> None:
    """Write scripted tau-sim demonstrations (successes and failures) as a LeRobot v3.0 dataset."""
    if Path(output).exists():
        raise click.ClickException(f"{output} already exists; choose a new folder")
    try:
        task_ids = tasks.split(",") if tasks else suite_tasks(suite)
    except KeyError as error:
        raise click.ClickException(str(error)) from error
    options = (("image_size", image_size), ("max_episode_steps", max_steps), ("layout", layout))
    env_kwargs = {k: v for k, v in options if v is not None}
    if fast_render:
        if not all(task.startswith("libero") for task in task_ids):
            raise click.ClickException("--fast-render applies to LIBERO tasks only")
        env_kwargs["fast_render"] = True
    summary = write_demo_dataset(output, task_ids, episodes_per_task, seed, ExpertConfig(action_noise, mistake_rate),
                                 env_kwargs, successes_only, execution_noise)
    click.echo(json.dumps(summary, indent=2))
    click.echo(f"dataset written to {output}")


@main.command("convert")
@click.argument("source", type=click.Path(exists=True, file_okay=False))
@click.argument("destination", type=click.Path())
def convert_command(source: str, destination: str) -> None:
    """Convert a LeRobot v2.1 dataset at SOURCE into a v3.0 dataset at DESTINATION."""
    try:
        path = convert_v21_to_v30(source, destination)
    except (DatasetError, FileNotFoundError, FileExistsError) as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"v3.0 dataset written to {path}")


@main.command("fit-fast")
@click.argument("dataset")
@click.option("--output", required=True, type=click.Path(file_okay=False),
              help="Folder for tokenizer.json + processor_config.json (FastTokenizer.load and the hub format).")
@click.option("--chunk-size", required=True, type=click.IntRange(min=1), help="The policy's chunk_size.")
@click.option("--max-action-dim", required=True, type=click.IntRange(min=1),
              help="The policy's max_action_dim (chunks are zero-padded to it, as the model sees them).")
@click.option("--norm-mode", default=NormMode.QUANTILES.value, show_default=True,
              type=click.Choice([m.value for m in NormMode]), help="How the actions are normalised in training.")
@click.option("--vocab-size", default=1024, show_default=True, type=click.IntRange(min=2), help="BPE vocabulary.")
@click.option("--scale", default=10.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="DCT coefficient scale before rounding.")
@click.option("--max-chunks", default=10000, show_default=True, type=click.IntRange(min=1),
              help="Fit on at most this many chunks, drawn without replacement.")
@click.option("--seed", default=0, show_default=True, help="Seed of the chunk draw.")
def fit_fast_command(dataset: str, output: str, chunk_size: int, max_action_dim: int, norm_mode: str,
                     vocab_size: int, scale: float, max_chunks: int, seed: int) -> None:
    """Fit a FAST tokenizer on DATASET's normalised action chunks (a local root or hub id) and save it."""
    try:
        mixture = MixtureDataset(MixtureConfig(datasets=[DatasetSpec(path=dataset)], num_cameras=0,
                                               image_size=(8, 8), chunk_size=chunk_size, max_action_dim=max_action_dim,
                                               max_state_dim=1024,
                                               norm_modes={"state": NormMode.QUANTILES, "actions": NormMode(norm_mode)}))
        chunks = normalized_action_chunks(mixture, max_chunks, seed)
        tokenizer = FastTokenizer.fit(chunks, scale=scale, vocab_size=vocab_size)
    except (DatasetError, ValueError, OSError) as error:
        raise click.ClickException(str(error)) from error
    tokenizer.save(output)
    lengths = [len(ids) for ids in tokenizer.encode(chunks)]
    click.echo(json.dumps({"chunks": len(chunks), "vocab_size": tokenizer.vocab_size,
                           "mean_tokens": float(sum(lengths) / len(lengths)), "max_tokens": max(lengths)}))
    click.echo(f"FAST tokenizer written to {output}")


def write_demo_dataset(output: str | Path, task_ids: list[str], episodes_per_task: int, seed: int,
                       expert: ExpertConfig, env_kwargs: dict, successes_only: bool = False,
                       execution_noise: tuple[float, ...] = ()) -> dict:
    """Run the scripted expert on every task and write the episodes (with the success and intervention labels RECAP
    reads) as one dataset; with `successes_only` the failed ones are dropped (the summary's "generated" counts
    them)."""
    generated = 0

    def kept(episodes: Iterable) -> Iterator:
        nonlocal generated
        for episode in episodes:
            generated += 1
            if episode.success or not successes_only:
                yield episode

    try:
        episodes = generate_demos(task_ids, episodes_per_task, seed=seed, expert=expert, env_kwargs=env_kwargs,
                                  execution_noise=execution_noise)
        record = record_episodes(kept(episodes), output, robot_type=ROBOT_TYPE, extras=episode_labels)
        return {**record, "generated": generated}
    except (KeyError, ValueError) as error:
        raise click.ClickException(str(error)) from error


if __name__ == "__main__":
    main()
