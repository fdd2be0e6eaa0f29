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

from scanmail.config import Config, load_config
from scanmail.errors import ExitCode, GatewayError
from scanmail.logs import setup_logging

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


def start(ident: str, config_path: Path | None, verbose: bool = False) -> Config:
    """Set up logging and load the configuration; call inside exit_codes()."""
    setup_logging(ident, verbose)
    return load_config(config_path)
