"""The scanmail command: a pass over incoming (cron), a watch loop (systemd), init."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import click

from scanmail.admin.init import create_spool
from scanmail.cli import (
    admin,
    config_option,
    exit_codes,
    log,
    setup,
    shared_options,
    start,
    summary_line,
    verbose_option,
)
from scanmail.config import DEFAULT_SPOOL, Config, load_config
from scanmail.errors import ExitCode
from scanmail.humanize import plural
from scanmail.logs import setup_logging
from scanmail.privileges import spool_owner
from scanmail.scan import Inspector, runner
from scanmail.scan import watch as service
from scanmail.spool import Spool, list_complete
from scanmail.watcher import Stop

PROGRESS_MIN = 20  # a backlog at least this long gets a progress bar on a terminal


class _Bars:
    """Progress bars for a pass, shown only to a person at a terminal."""

    def __init__(self) -> None:
        self.open: list[Any] = []

    def __call__(self, total: int) -> runner.Progress:
        if total < PROGRESS_MIN or not sys.stderr.isatty():
            return lambda n: None
        bar = click.progressbar(length=total, label="scanning", file=sys.stderr)
        bar.__enter__()
        self.open.append(bar)
        return bar.update

    def close(self) -> None:
        for bar in self.open:
            bar.__exit__(None, None, None)
        self.open.clear()


def _one_pass(config: Config, bars: _Bars) -> int:
    try:
        summary = runner.run(config, bars)
    finally:
        bars.close()
    if summary.locked:
        click.echo("scanmail: another scanmail holds the spool lock; nothing to do", err=True)
        return ExitCode.OK
    summary_line(summary.headline())
    if summary.errors:
        log.error("%s met a bug and stay%s in incoming (see the log)",
                  plural(summary.errors, "message"), "s" if summary.errors == 1 else "")
        return ExitCode.SOFTWARE
    if summary.left:
        log.error("%s left in incoming: %s", plural(summary.left, "message"), summary.why_left)
        return ExitCode.TEMPFAIL
    return ExitCode.OK


@click.group(invoke_without_command=True)
@config_option
@verbose_option
@click.option("--once", is_flag=True, help="Scan the incoming spool once and exit (the default).")
@click.option("--watch", is_flag=True,
              help="A service: scan each message as it arrives, until SIGTERM.")
@click.option("--interval", type=click.FloatRange(0.1, 3600), default=60.0, show_default=True,
              help="Seconds between safety sweeps of incoming with --watch (each message "
                   "is taken as it arrives).")
@click.option("--dry-run", is_flag=True,
              help="Decide every message in incoming and print why; move nothing.")
@click.pass_context
def main(
    ctx: click.Context, config_path: Path | None, verbose: bool, once: bool, watch: bool,
    interval: float, dry_run: bool,
) -> None:
    """Scan the incoming spool for viruses and route every message.

    With no command, one pass: each complete file in SPOOL/incoming goes to outgoing or
    quarantine. Exit 0 when done, 75 when the scanner could not answer (mail is kept for
    the next pass), 78 on a configuration error.
    """
    ctx.ensure_object(dict)
    ctx.obj["config_path"] = config_path
    ctx.obj["verbose"] = verbose
    if ctx.invoked_subcommand is not None:
        if once or watch:
            raise click.UsageError("--once and --watch go without a command")
        return
    if once and watch:
        raise click.UsageError("choose --once or --watch, not both")
    if dry_run and watch:
        raise click.UsageError("--dry-run goes with --once")
    with exit_codes():
        config = start("scanmail", config_path, verbose)
        if dry_run:
            sys.exit(_dry_run(config))
        bars = _Bars()
        if not watch:
            sys.exit(_one_pass(config, bars))
        _watch(config, interval)


def _dry_run(config: Config) -> int:
    inspector = Inspector(config)
    for path in list_complete(Spool(config.spool_dir).incoming):
        try:
            click.echo(inspector.inspect(path).describe())
        except FileNotFoundError:
            continue  # moved by a real pass meanwhile
    return ExitCode.OK


def _watch(config: Config, interval: float) -> None:
    """Decide each message as it arrives (inotify), with a sweep every interval seconds."""
    stop = Stop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    service.serve(config, stop, interval)


@main.command()
@shared_options
@click.option("--spool", "spool_dir", type=click.Path(file_okay=False, path_type=Path),
              default=None, help=f"The spool root (default: SPOOL_DIR or {DEFAULT_SPOOL}).")
@click.option("--user", default=None, help="The service user to own the spool (e.g. uucp).")
@click.pass_context
def init(ctx: click.Context, spool_dir: Path | None, user: str | None) -> None:
    """Create the spool hierarchy and install the default etc/ files (never overwriting)."""
    with exit_codes():
        setup_logging("scanmail", ctx.obj["verbose"])
        if spool_dir is None:
            spool_dir = load_config(ctx.obj["config_path"]).spool_dir
        if user is None and os.geteuid() == 0:  # root upgrading a spool: keep its owner
            owner = spool_owner(spool_dir)
            user = owner.pw_name if owner else None
        for path in create_spool(spool_dir, user):
            click.echo(f"installed {path}")
        click.echo(f"spool ready: {spool_dir}")


admin.register(main)
setup.register(main)
