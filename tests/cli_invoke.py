"""Running an app's click command in process, as the cross-package tests do."""

import click
from click.testing import CliRunner, Result


def invoke(command: click.Command, args: list[str]) -> Result:
    """Run `command` with `args` (exceptions propagate) and require exit code 0, showing its output otherwise."""
    result = CliRunner().invoke(command, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result
