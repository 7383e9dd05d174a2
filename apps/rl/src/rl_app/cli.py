"""`./pants run apps/rl -- [--config FILE] [key=value ...]`: N RECAP iterations, resumable after a crash."""

from __future__ import annotations

import json
import logging
import sys
from importlib.resources import files
from pathlib import Path

import click
from tau_data import DatasetError
from tau_rl import RecapConfig, run_recap
from tau_train import CheckpointError, ConfigError, NonFiniteError, TrainingInterrupted, config_to_yaml, load_config
from tau_train.os_errors import describe_os_error


def default_config() -> Path:
    """The bundled config: RECAP on the built-in tabletop tasks, from the embedded default's demonstrations."""
    return Path(str(files(__package__) / "presets" / "default.yaml"))


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="A YAML RecapConfig (default: the bundled tabletop recipe).")
@click.option("--print-config", is_flag=True, help="Print the resolved config and exit.")
@click.option("-v", "--verbose", is_flag=True, help="Log at INFO level.")
@click.argument("overrides", nargs=-1)
def main(config_path: Path | None, print_config: bool, verbose: bool, overrides: tuple[str, ...]) -> None:
    """Run RECAP: collect rollouts -> fit the value model -> advantages -> fit the advantage-conditioned policy ->
    evaluate, for `iterations` iterations. Rerun the same command after a crash: finished stages are kept.

    OVERRIDES are dotted settings, e.g. iterations=3 collect.episodes_per_task=20 policy.guidance_weight=1.5.
    """
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        config = load_config(config_path or default_config(), list(overrides), schema=RecapConfig)
        config.validate()
    except (ConfigError, ValueError) as error:
        raise click.ClickException(str(error)) from error
    if print_config:
        click.echo(config_to_yaml(config))
        return
    missing = [d for d in config.demos if not (Path(d) / "meta" / "info.json").is_file()]
    if missing:
        raise click.ClickException(f"demonstration dataset(s) {missing} not found: run `./pants run apps/train` "
                                   "(it writes outputs/default/demos) or `./pants run apps/data -- generate`")
    try:
        summary = run_recap(config)
    except TrainingInterrupted as error:  # a pause: rerun to resume
        click.echo(f"Paused: {error}", err=True)
        sys.exit(TrainingInterrupted.EXIT_CODE)
    except (DatasetError, CheckpointError, NonFiniteError, ValueError) as error:
        if verbose:
            raise
        raise click.ClickException(str(error)) from error
    except OSError as error:
        if verbose:
            raise
        raise click.ClickException(describe_os_error(error)) from error
    click.echo(json.dumps(summary, indent=2, default=str))
    click.echo(f"RECAP run written to {config.run_dir} (summary.json, per-iteration plots and checkpoints)")


if __name__ == "__main__":
    sys.exit(main())
