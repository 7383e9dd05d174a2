"""`./pants run apps/train -- [--preset NAME | --config FILE] [key=value ...]`: train a policy."""

from __future__ import annotations

import logging
import sys

import click
from tau_data import DatasetError
from tau_sim import LiberoMissingError
from tau_train import (
    CheckpointError,
    ConfigError,
    NonFiniteError,
    TrainingInterrupted,
    config_to_yaml,
    load_config,
)
from tau_train.os_errors import describe_os_error

from train_app.config import PRESETS, TrainAppConfig, preset_path
from train_app.run import train


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--preset", type=click.Choice(PRESETS), default="default", show_default=True,
              help="Bundled config: 'default' trains a tiny pi0.5 on built-in demonstrations (CPU, minutes); "
                   "'libero' fine-tunes the full pi0.5 on LIBERO (GPUs); 'libero-tiny' trains a tiny pi0.5 on "
                   "scripted LIBERO demos (CPU); 'mixture' co-trains on several datasets.")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A YAML config file; replaces --preset.")
@click.option("--print-config", is_flag=True, help="Print the resolved config and exit.")
@click.option("-v", "--verbose", is_flag=True, help="Log at INFO level.")
@click.argument("overrides", nargs=-1)
def main(preset: str, config_path: str | None, print_config: bool, verbose: bool, overrides: tuple[str, ...]) -> None:
    """Train a pi0 / pi0.5 policy on a tau-data mixture through tau-train.

    OVERRIDES are dotted settings applied on top of the config, e.g. train.steps=200 train.batch_size=16
    model.overrides.dropout=0.1. Multi-process: `accelerate launch --config_file <tau_train multi_gpu.yaml> ...`
    (add train.fsdp.enabled=true to shard the model).
    """
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        config = load_config(config_path or preset_path(preset), list(overrides), schema=TrainAppConfig)
    except ConfigError as error:
        raise click.ClickException(str(error)) from error
    if print_config:
        click.echo(config_to_yaml(config))
        return
    try:
        folder = train(config)
    except TrainingInterrupted as error:  # a pause: resumable, nothing exported as trained
        click.echo(f"Paused: {error}", err=True)
        sys.exit(TrainingInterrupted.EXIT_CODE)
    # LiberoMissingError: demos.suite names a LIBERO suite, and this app is built without tau-sim[libero]
    except (ConfigError, DatasetError, CheckpointError, NonFiniteError, LiberoMissingError, ValueError) as error:
        if verbose:
            raise
        raise click.ClickException(str(error)) from error
    except OSError as error:  # no space, read-only, permission: the OS's cause with its path
        if verbose:
            raise
        raise click.ClickException(describe_os_error(error)) from error
    click.echo(f"trained policy written to {folder} (checkpoints, metrics.jsonl and plots in "
               f"{config.train.output_dir})")


if __name__ == "__main__":
    sys.exit(main())
