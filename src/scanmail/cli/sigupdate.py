"""The sigupdate command: keep ClamAV's signatures fresh, reload clamd, alarm when stale."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from scanmail.cli import config_option, exit_codes, start, summary_line, verbose_option
from scanmail.sigupdate import update
from scanmail.sigupdate.freshclam import FRESHCLAM_TIMEOUT
from scanmail.verdict import SigOutcome


@click.command()
@config_option
@verbose_option
@click.option("--check", is_flag=True,
              help="Only report signature versions and ages: exit 0 fresh, 1 stale.")
@click.option("--freshclam-timeout", type=click.FloatRange(1, 86400),
              default=FRESHCLAM_TIMEOUT, show_default=True,
              help="Seconds before freshclam is stopped and the run counts as failed.")
def main(config_path: Path | None, verbose: bool, check: bool, freshclam_timeout: float) -> None:
    """Update ClamAV's signatures, reload clamd and confirm it, alarm when they go stale.

    Runs FRESHCLAM_COMMAND, fetches and checks every SIG_SOURCES file, installs it into
    SIG_DB_DIR, reloads clamd, and compares the newest signatures' age with
    SIG_MAX_AGE_DAYS. Exit 0 done, 75 temporary failure (network), 78 configuration,
    1 any other failure or stale signatures. The admin is alerted once per failing streak.
    """
    with exit_codes():
        config = start("sigupdate", config_path, verbose)
        if check:
            report = update.check(config)
            click.echo("\n".join(report.lines))
        else:
            report = update.update(config, freshclam_timeout)
            if report.verdict is SigOutcome.BUSY or (verbose and report.lines):
                click.echo("\n".join(report.lines), err=True)
            if report.verdict is not SigOutcome.BUSY:  # that one was just said
                summary_line(report.headline())
        sys.exit(int(report.exit_code))
