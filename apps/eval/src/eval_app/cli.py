"""Command line of `./pants run apps/eval`."""

import click


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Not wired yet."""
    raise click.ClickException("apps/eval is not wired yet")


if __name__ == "__main__":
    main()
