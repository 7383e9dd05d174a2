"""Command line of `./pants run apps/train`."""

import click


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="YAML training config; the embedded default when omitted.")
@click.argument("overrides", nargs=-1)
def main(config_path: str | None, overrides: tuple[str, ...]) -> None:
    """Train a policy. OVERRIDES are dotted `key=value` settings applied on top of the config."""
    raise click.ClickException(
        "training is not wired yet: it needs tau-train's loop, tau-models' pi0.5 and tau-data's loader"
    )


if __name__ == "__main__":
    main()
