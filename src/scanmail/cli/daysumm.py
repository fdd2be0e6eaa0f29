"""daysumm: the day's report, mailed to the admin, printed, or written as a statistics page."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path

import click

from scanmail.cli import config_option, exit_codes, start, verbose_option
from scanmail.daysumm import output


def choose_day(day: datetime | None, yesterday: bool) -> date:
    """--date, --yesterday or today; never a day still to come."""
    today = date.today()
    if day is not None and yesterday:
        raise click.UsageError("--date and --yesterday cannot be used together")
    if yesterday:
        return today - timedelta(days=1)
    if day is None:
        return today
    if day.date() > today:
        raise click.BadParameter(f"{day:%Y-%m-%d} has not happened yet", param_hint="--date")
    return day.date()


@click.command()
@config_option
@verbose_option
@click.option("--date", "day", type=click.DateTime(formats=["%Y-%m-%d"]), default=None,
              metavar="YYYY-MM-DD", help="The day to report (default: today so far).")
@click.option("--yesterday", is_flag=True, help="Report yesterday (for cron just after midnight).")
@click.option("--print", "to_stdout", is_flag=True,
              help="Write the text report to stdout instead of mailing it.")
@click.option("--html", "page", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the statistics page to FILE (and mail nothing).")
def main(
    config_path: Path | None, verbose: bool, day: datetime | None, yesterday: bool,
    to_stdout: bool, page: Path | None,
) -> None:
    """Report a day of mail and viruses from the event database; mail it to ADMIN_EMAIL."""
    chosen = choose_day(day, yesterday)
    with exit_codes():
        text = output.run(start("daysumm", config_path, verbose), chosen, to_stdout, page)
    if to_stdout:
        click.echo(text, nl=False)
