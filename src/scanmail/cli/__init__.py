"""Shared pieces of the command lines: the --config option and the one error handler.

Each command lives in its own module here and is a thin translation:
argv -> config -> one core call -> exit code.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click

from scanmail.config import Config, default_config_path, load_config
from scanmail.errors import ExitCode, GatewayError
from scanmail.logs import setup_logging
from scanmail.privileges import act_as_spool_owner

log = logging.getLogger("scanmail")

F = TypeVar("F", bound=Callable[..., Any])


def config_option(func: F) -> F:
    """--config FILE, shared by every command."""
    return click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="The .env settings file (default: $SPOOL_DIR/etc/scanmail.env).",
    )(func)


def verbose_option(func: F) -> F:
    """--verbose: every log line on stderr too."""
    return click.option(
        "-v", "--verbose", is_flag=True, help="Also write every log line to stderr."
    )(func)


def _remember_config(ctx: click.Context, param: click.Parameter, value: Path | None) -> None:
    if value is not None:
        ctx.find_root().ensure_object(dict)["config_path"] = value


def _remember_verbose(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        ctx.find_root().ensure_object(dict)["verbose"] = True


def shared_options(func: F) -> F:
    """--config and -v on a subcommand too (`scanmail quarantine list --config F`).

    The values land in the root context's obj, where the group put its own: given in
    either place (or both: the later one wins for --config), the command sees them.
    """
    func = click.option(
        "--config", "_config", type=click.Path(dir_okay=False, path_type=Path), default=None,
        expose_value=False, callback=_remember_config,
        help="The .env settings file (default: $SPOOL_DIR/etc/scanmail.env).",
    )(func)
    return click.option(
        "-v", "--verbose", "_verbose", is_flag=True, expose_value=False,
        callback=_remember_verbose, help="Also write every log line to stderr.",
    )(func)


def summary_line(line: str) -> None:
    """The one line that ends a hand run, on stdout when it is a terminal; else nothing.

    A terminal means a person ran the command and wants to know what it did; under cron
    stdout is a pipe, and whatever a job prints becomes a mail, so all-well stays silent.
    """
    if sys.stdout.isatty():
        click.echo(line)


@contextlib.contextmanager
def exit_codes() -> Iterator[None]:
    """Turn a GatewayError into one log line and its exit code; a bug into a traceback and 70.

    70 (EX_SOFTWARE), not 1, marks a bug: 1 means "infected or banned" for `scanmail check`,
    as it does for clamscan, and monitoring must tell the two apart.
    """
    try:
        yield
    except GatewayError as exc:
        log.error("%s", exc)
        sys.exit(int(exc.exit_code))
    except KeyboardInterrupt:
        log.error("interrupted")
        sys.exit(int(ExitCode.TEMPFAIL))
    except Exception:
        log.exception("unexpected error (a bug: please report it)")
        sys.exit(int(ExitCode.SOFTWARE))


def start(
    ident: str, config_path: Path | None, verbose: bool = False, switch: bool = True
) -> Config:
    """Set up logging, act as the spool's owner when root, load the configuration.

    Call inside exit_codes(). With the default settings file, the spool is known from
    SPOOL_DIR before any file is read, so root switches user before reading anything the
    service user can write; an explicit --config (root's own choice) is read once to find
    the spool, then again as its owner. switch=False (the receiver, which binds port 25
    first) leaves the switch to the caller.
    """
    setup_logging(ident, verbose)
    if not switch:
        return load_config(config_path)
    if config_path is None:
        act_as_spool_owner(default_config_path().parent.parent)
    config = load_config(config_path)
    if act_as_spool_owner(config.spool_dir) is not None:
        config = load_config(config_path)
    return config
