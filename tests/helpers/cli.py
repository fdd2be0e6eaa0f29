"""Running the scanmail command in-process, as cron would run it."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from scanmail.cli.scan import main


def run_scanmail(env: Path, *args: str) -> tuple[int, str]:
    """Run `scanmail --config env args`: the exit code and the output."""
    result = CliRunner().invoke(main, ["--config", str(env), *args])
    return result.exit_code, result.output
