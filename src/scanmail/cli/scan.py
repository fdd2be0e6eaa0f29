"""The scanmail command: a pass over incoming (cron), a watch loop (systemd), init."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import Any

import click

from scanmail.admin.init import create_spool
from scanmail.cli import admin, config_option, exit_codes, log, start, verbose_option
from scanmail.config import DEFAULT_SPOOL, Config, load_config
from scanmail.errors import ExitCode, GatewayError
from scanmail.logs import setup_logging
from scanmail.scan import Inspector, runner
from scanmail.spool import Spool, list_complete

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
    if sys.stderr.isatty() and summary.seen:
        click.echo(f"scanmail: {summary.describe()}", err=True)
    if summary.errors:
        log.error("%d messages met a bug and stay in incoming (see the log)", summary.errors)
        return ExitCode.SOFTWARE
    if summary.left:
        log.error("%d messages left in incoming: %s", summary.left, summary.why_left)
        return ExitCode.TEMPFAIL
    return ExitCode.OK


@click.group(invoke_without_command=True)
@config_option
@verbose_option
@click.option("--once", is_flag=True, help="Scan the incoming spool once and exit (the default).")
@click.option("--watch", is_flag=True, help="Scan again and again, for a systemd service.")
@click.option("--interval", type=click.FloatRange(0.1, 3600), default=10.0, show_default=True,
              help="Seconds between passes with --watch.")
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
        _watch(config, bars, interval)


def _dry_run(config: Config) -> int:
    inspector = Inspector(config)
    for path in list_complete(Spool(config.spool_dir).incoming):
        try:
            click.echo(inspector.inspect(path).describe())
        except FileNotFoundError:
            continue  # moved by a real pass meanwhile
    return ExitCode.OK


def _watch(config: Config, bars: _Bars, interval: float) -> None:
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    log.info("watching %s every %.1f s", config.spool_dir / "incoming", interval)
    while not stop.is_set():
        try:
            _one_pass(config, bars)
        except GatewayError as exc:  # a failing pass (full disk...): the service goes on
            log.error("pass failed, next try in %.1f s: %s", interval, exc)
        stop.wait(interval)


@main.command()
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
        for path in create_spool(spool_dir, user):
            click.echo(f"installed {path}")
        click.echo(f"spool ready: {spool_dir}")


admin.register(main)
