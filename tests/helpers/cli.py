"""Running a command in-process with a .env file, as cron would run it."""

from __future__ import annotations

from pathlib import Path

import click
from click.testing import CliRunner

from scanmail.cli.scan import main


def run_command(command: click.Command, env: Path, *args: str) -> tuple[int, str]:
    """Run `command --config env args`: the exit code and the output."""
    result = CliRunner().invoke(command, ["--config", str(env), *args])
    return result.exit_code, result.output


def run_scanmail(env: Path, *args: str) -> tuple[int, str]:
    """Run `scanmail --config env args`: the exit code and the output."""
    return run_command(main, env, *args)
